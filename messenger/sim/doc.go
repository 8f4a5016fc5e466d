// Package sim is an in-memory Messenger Platform simulator, good enough that a Messenger client
// library pointed at its base URL, and a bot framework receiving its webhooks, work unchanged.
//
// One http.Handler (Sim.Handler) serves:
//
//   - Graph API endpoints, with or without a version prefix (/v2.6/, /v19.0/, ...), on the node
//     "me" or the page id: pass_thread_control, take_thread_control, request_thread_control,
//     release_thread_control, extend_thread_control, pass_thread_metadata (POST),
//     thread_owner, secondary_receivers (GET) and the Send API, messages (POST). Parameters
//     come from the query string, a form or multipart body, or a JSON body; the caller is the
//     app whose page access token is given (parameter or Authorization header);
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
// Where Meta's documentation is silent, the simulator makes a choice and says so where it is
// coded; the main ones:
//   - Refusals for role or mode (take without the right, request in cr, secondary_receivers by
//     a non-primary) answer code 200 "Permissions error: <reason>"; other invalid requests
//     (target is the owner itself, request by the owner, bad duration, unknown target) code 100.
//   - take_thread_control by the current owner succeeds in hop_v1/hop_v2 (window restarted, no
//     webhook) and is refused in cr, as the Conversation Routing docs say.
//   - hop_v2's thread_owner shows owner and expiration to every connected app.
//   - Sending on an idle thread does not claim it; a user message never shortens an
//     extend_thread_control window; an extension sets the expiry to now + duration.
//   - A primary app does not get a pass_thread_control webhook when an idle thread is routed
//     to it by a customer message; handover webhooks go to their one documented recipient.
//   - pass_thread_metadata sends the target {previous_owner_app_id: caller, new_owner_app_id:
//     target, metadata} and changes no owner.
//   - The Page Inbox (263902037430900) is connected to every page and receives no webhooks.
//   - Any PSID names a thread; a new hop_v1 thread belongs to the Primary Receiver.
//
// The package depends on the standard library only, so that threadctl's Graph client is tested
// against an independent implementation rather than against itself.
package sim
