// Drives bottender's messaging-api-messenger, unmodified, against the Messenger Platform
// simulator, acting as the bot app. Run by messenger/sim/thirdparty_test.go, which checks every
// answer against the simulator's own truth.
//
// Environment: SIM_BASE_URL (the simulator's base URL, e.g. http://127.0.0.1:1234), SIM_PSID,
// SIM_PAGE_TOKEN and SIM_APP_SECRET (the bot app's), SIM_TARGET_APP_ID (the RingCX app).
//
// Prints one JSON line per call, in order:
//   {"step":"...","call":"<Graph edge>","ok":true,"result":...}
//   {"step":"...","call":"...","ok":false,"status":400,"code":100,"subcode":2534037,"type":"...","message":"...","fbtrace_id":"..."}
//   {"step":"...","call":"...","ok":false,"client_error":"TypeError: ..."}  (failed inside the library, no HTTP error)
'use strict';

const FormData = require('form-data');
const { MessengerClient } = require('messaging-api-messenger');

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`client.js: environment variable ${name} is required`);
    process.exit(2);
  }
  return v;
}

const origin = env('SIM_BASE_URL');
const psid = env('SIM_PSID');
const accessToken = env('SIM_PAGE_TOKEN');
const appSecret = env('SIM_APP_SECRET');
const ringcx = env('SIM_TARGET_APP_ID');

// origin is the library's documented base-URL option; the version is left at the library's
// default (v6.0), which the simulator must accept. appSecret makes it add appsecret_proof.
const client = new MessengerClient({ accessToken, appSecret, origin });
// Same token, wrong secret: every request carries a wrong appsecret_proof.
const wrongProof = new MessengerClient({ accessToken, appSecret: 'not-the-secret', origin });
// A token the simulator does not know.
const wrongToken = new MessengerClient({ accessToken: 'no-such-token', appSecret, origin });

function print(line) {
  process.stdout.write(JSON.stringify(line) + '\n');
}

async function step(name, call, fn) {
  try {
    const result = await fn();
    print({ step: name, call, ok: true, result: result === undefined ? null : result });
  } catch (err) {
    const line = { step: name, call, ok: false };
    // The library throws an axios-error AxiosError carrying the HTTP response; its
    // transformResponse camel-cases the body's keys (error_subcode -> errorSubcode).
    const res = err && err.response;
    const e = res && res.data && res.data.error;
    if (res) {
      line.status = res.status;
    }
    if (e) {
      line.code = e.code;
      line.subcode = e.errorSubcode !== undefined ? e.errorSubcode : e.error_subcode;
      line.type = e.type;
      line.message = e.message;
      line.fbtrace_id = e.fbtraceId !== undefined ? e.fbtraceId : e.fbtrace_id;
      line.library_message = err.message;
    } else {
      line.client_error = `${err && err.name}: ${err && err.message}`;
    }
    print(line);
  }
}

async function main() {
  // The customer wrote first: the bot, the page's Primary Receiver, owns the thread.
  await step('owner_initial', 'thread_owner', () => client.getThreadOwner(psid));
  // Taking a thread it already owns: success in hop_v2 (a simulator choice, window restarted).
  await step('take_own', 'take_thread_control', () => client.takeThreadControl(psid, 'bot takes'));
  await step('pass_to_ringcx', 'pass_thread_control', () => client.passThreadControl(psid, Number(ringcx), 'over to an agent'));
  // Refused by Meta: the bot no longer owns the thread.
  await step('pass_not_owner', 'pass_thread_control', () => client.passThreadControl(psid, Number(ringcx), 'again'));
  await step('send_blocked', 'messages', () => client.sendText(psid, 'the agent owns this thread'));
  await step('owner_ringcx', 'thread_owner', () => client.getThreadOwner(psid));
  await step('request', 'request_thread_control', () => client.requestThreadControl(psid, 'bot asks back'));
  // The Primary Receiver takes control back from RingCX.
  await step('take_back', 'take_thread_control', () => client.takeThreadControl(psid, 'bot takes back'));
  await step('typing_on', 'messages', () => client.typingOn(psid));
  await step('send_text', 'messages', () => client.sendText(psid, 'hello from messaging-api-messenger'));
  // The library's multipart Send API (meant for file uploads), with a text message.
  await step('send_form_data', 'messages', () => {
    const form = new FormData();
    form.append('message', JSON.stringify({ text: 'multipart hello' }));
    return client.sendMessageFormData(psid, form);
  });
  await step('secondary_receivers', 'secondary_receivers', () => client.getSecondaryReceivers());
  // messaging-api-messenger 1.1.0 has no release_thread_control (nor extend_thread_control):
  // the call goes through the client's documented underlying axios instance, so base URL,
  // version and appsecret_proof are still the library's.
  await step('release_via_axios', 'release_thread_control', () =>
    client.axios
      .post(`/me/release_thread_control?access_token=${accessToken}`, { recipient: { id: psid } })
      .then((res) => res.data));
  // Idle thread: the simulator answers {"data":[]}; the library reads data[0] and throws.
  await step('owner_idle', 'thread_owner', () => client.getThreadOwner(psid));
  await step('wrong_proof', 'thread_owner', () => wrongProof.getThreadOwner(psid));
  await step('wrong_token', 'thread_owner', () => wrongToken.getThreadOwner(psid));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
