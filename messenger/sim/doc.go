// Package sim is an in-memory Messenger Platform simulator, good enough that a Messenger client
// library pointed at its base URL, and a bot framework receiving its webhooks, work unchanged.
//
// One http.Handler (Sim.Handler) serves:
//
//   - Graph API endpoints, with or without a version prefix (/v2.6/, /v19.0/, ...), on the node
//     "me" or the page id: pass_thread_control, take_thread_control, request_thread_control,
//     release_thread_control, extend_thread_control, pass_thread_metadata (POST),
//     thread_owner, secondary_receivers (GET), the Send API, messages (POST), and the page
//     node itself (GET /me, GET /{page_id}) with fields=id,messaging_feature_status.
//     Parameters come from the query string, a form or multipart body, or a JSON body; the
//     caller is the app whose page access token is given (parameter or Authorization header);
//     appsecret_proof is checked when present. Errors use Meta's envelope.
//   - The control API under /_sim/: PUT and GET /_sim/pages/{page_id}, POST
//     /_sim/pages/{page_id}/customers/{psid}/messages, GET /_sim/pages/{page_id}/threads/{psid},
//     POST /_sim/pages/{page_id}/apps/{app_id}/verify, GET /_sim/log?page_id=&psid=, GET, PUT
//     and DELETE /_sim/faults, POST /_sim/settle?timeout=.
//
// Each page follows one mode (hop_v1, hop_v2, cr, cr_zero) with the rules of threadctl's
// reference on Meta's platform (meta-handover-protocol.md, §12 and §4). Webhooks are signed
// (X-Hub-Signature-256 and the legacy X-Hub-Signature) with each app's secret over the exact
// bytes sent, which are written as Meta writes JSON (\uXXXX escapes, "\/"), delivered per app
// in order, batched, and retried on failure. An app configured with a BotConfig is the
// reference bot, run inside the simulator.
//
// # Conversation Routing
//
// Mode cr is Conversation Routing with a default app (primary_app_id), cr_zero without one
// ("zero-config"). In both, control expires 24 h after the last activity, can be extended up
// to 7 days, and the Send API accepts thread_control. In cr: an idle thread goes to the
// default app on the customer's next message; only the default app may send on an idle
// thread; take_thread_control works only for an app whose takeover setting (takeover_allowed)
// is on, and not for the current owner; request_thread_control is refused. In cr_zero: every
// app receives the customer's messages on an idle thread and may send; take_thread_control is
// blocked; request_thread_control on an idle thread gives control to the caller (the first
// caller wins, and gets pass_thread_control), on an owned thread it sends the owner
// request_thread_control. In both, any app may pass an idle thread (to itself too), only the
// owner an owned one; only the owner may release (the thread becomes idle, no webhook) or
// extend.
//
// A page can be switched between modes (PUT /_sim/pages/{page_id}) while it has threads: every
// thread keeps its owner and its control window, and the next call follows the new mode's
// rules.
//
// # Faults
//
// PUT /_sim/faults makes matching Graph calls (by edge, or "*", and optionally by app) fail:
// status answers Meta's error without applying the call; reset closes the client's connection
// without an answer (the client sees a connection reset; a reference bot's call is logged as a
// network error), without applying the call; delay_ms holds the call, and a call whose client
// gives up meanwhile is logged as abandoned and not applied, since the call never reached
// Meta; apply_late applies the call even though its answer is lost (after the delay though the
// client has gone, or before a status or reset answer), which models Meta applying a call
// whose answer never came back. A fault ends after count calls or for_ms milliseconds (on the
// simulator's clock), whichever comes first: "Meta unreachable for 60 s" is
// {"call":"*","reset":true,"for_ms":60000}. Go's http.Transport retries a GET that was reset
// on a reused connection by itself, so a reset GET may need count 2 or more to be seen. Settle
// waits for calls held by a delay.
//
// # Choices where Meta is silent
//
// Where Meta's documentation is silent, the simulator makes a choice and says so where it is
// coded; the main ones:
//   - Refusals for role or mode (take by a secondary in hop_v1, without the takeover setting
//     in cr, or at all in cr_zero; request in cr, by anyone; secondary_receivers by a
//     non-primary) answer code 200 "Permissions error: <reason>"; other invalid requests
//     (target is the owner itself, request by the owner outside cr, take by the owner in cr,
//     bad duration, unknown target) code 100. The old "Handover Protocol APIs disabled for this
//     page" answer is not used. Acting on a thread another app owns is 100/2534037.
//   - take_thread_control by the current owner succeeds in hop_v1/hop_v2 (window restarted, no
//     webhook) and is refused in cr, as the Conversation Routing docs say.
//   - The takeover setting of an app (cr only) defaults to on for the default app and off for
//     the other apps.
//   - messaging_feature_status: Meta does not define its flags. hop_v2 is true when the page is
//     in mode hop_v2, msgr_multi_app when it is in cr or cr_zero, ig_multi_app is always false
//     (no Instagram here); a hop_v1 page answers all three false.
//   - hop_v2's thread_owner shows owner and expiration to every connected app.
//   - Sending on an idle thread does not claim it; a user message never shortens an
//     extend_thread_control window; an extension sets the expiry to now + duration (1 to
//     604800 s; beyond is code 100). The 24 h window restarts on a customer message and on
//     every change of owner; an app's own messages do not restart it.
//   - release_thread_control and the Send API's release leave the thread idle (not owned by the
//     default app); in cr the customer's next message gives it to the default app.
//   - The Send API's thread_control is applied only in cr and cr_zero and ignored in hop_v1 and
//     hop_v2. pass without app_id goes to the default app, which cr_zero does not have (code
//     100). A thread_control that cannot apply refuses the whole call before the message is
//     sent; with a sender_action instead of a message it is checked but not applied. Its
//     pass_thread_control webhook carries no metadata.
//   - A primary app does not get a pass_thread_control webhook when an idle thread is routed
//     to it by a customer message; handover webhooks go to their one documented recipient.
//   - pass_thread_metadata sends the target {previous_owner_app_id: caller, new_owner_app_id:
//     target, metadata} and changes no owner.
//   - The Page Inbox (263902037430900) is connected to every page and receives no webhooks.
//   - Any PSID names a thread; a new hop_v1 thread belongs to the Primary Receiver.
//   - Replacing a page keeps its threads; control that had already expired becomes idle first,
//     and an owner no longer connected loses control.
//
// # The reference bot
//
// The reference bot (BotConfig) claims idle threads with request_thread_control, answers
// "echo: <text>", and honours request_thread_control by passing control to the requester.
// With handover_text it also hands a thread over by itself, as a Conversation Routing bot
// does: when a customer message containing that text reaches it in messaging while it owns the
// thread, it passes control to handover_app_id instead of replying, with pass_thread_control
// (handover_via "pass_thread_control", the default) or with a Send API message "Transferring
// you to an agent" carrying thread_control pass (handover_via "send_api"; on a hop_v1 or
// hop_v2 page, which has no Send API thread control, it falls back to pass_thread_control).
// Its calls go through the same Graph logic, faults and log as any app's (via "bot").
//
// The package depends on the standard library only, so that threadctl's Graph client is tested
// against an independent implementation rather than against itself.
package sim
