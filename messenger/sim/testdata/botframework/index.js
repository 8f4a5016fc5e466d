// The bot: bottender's entry action (index.js, as in a `bottender init` project), run by
// bottender unmodified for every event its Messenger connector accepted. It answers a text
// with "fw: <text>" through bottender's own Messenger client, hands the thread over when
// another app asks for it, and records every event as a JSON line on stdout (see print.js).
'use strict';

const print = require('./print');

function ids(o) {
  // App ids arrive as JSON numbers (production's habit); print them as strings.
  const out = {};
  for (const [k, v] of Object.entries(o || {})) {
    out[k] = v === null || v === undefined ? null : String(v);
  }
  return out;
}

module.exports = async function App(context) {
  const { event } = context;
  const psid = context.session && context.session.user ? context.session.user.id : null;
  const base = { kind: 'event', psid, standby: event.isStandby, timestamp: event.timestamp };

  if (event.isRequestThreadControl) {
    const req = event.requestThreadControl;
    print({ ...base, event: 'request_thread_control', ...ids({ requested_owner_app_id: req.requestedOwnerAppId }), metadata: req.metadata });
    // A polite bot: give the thread to the app that asked for it.
    await context.passThreadControl(req.requestedOwnerAppId, 'fw: over to you');
    print({ kind: 'passed', psid, ...ids({ target_app_id: req.requestedOwnerAppId }) });
    return;
  }
  if (event.isPassThreadControl) {
    const h = event.passThreadControl;
    print({ ...base, event: 'pass_thread_control', ...ids({ previous_owner_app_id: h.previousOwnerAppId, new_owner_app_id: h.newOwnerAppId }), metadata: h.metadata });
    return;
  }
  if (event.isTakeThreadControl) {
    const h = event.takeThreadControl;
    print({ ...base, event: 'take_thread_control', ...ids({ previous_owner_app_id: h.previousOwnerAppId, new_owner_app_id: h.newOwnerAppId }), metadata: h.metadata });
    return;
  }
  if (event.isAppRoles) {
    print({ ...base, event: 'app_roles', app_roles: event.appRoles });
    return;
  }
  if (event.isText && !event.isEcho) {
    print({ ...base, event: 'text', mid: event.message.mid, text: event.text });
    if (event.isStandby) {
      return; // another app owns the thread: listen only
    }
    const res = await context.sendText(`fw: ${event.text}`);
    print({ kind: 'replied', psid, text: `fw: ${event.text}`, mid: res && res.messageId, recipient_id: res && res.recipientId });
    return;
  }
  print({ ...base, event: 'other', raw: event.rawEvent });
};
