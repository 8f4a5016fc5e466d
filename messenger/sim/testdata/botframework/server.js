// Serves the bot as `bottender start` does (node_modules/bottender/dist/cli/providers/sh/start.js:
// bottender's production Server behind express, with body-parser keeping the raw body for the
// signature check), on a loopback port, and records every HTTP request it answered as a JSON
// line on stdout. Run by messenger/sim/botframework_test.go; bottender itself is unmodified.
//
// Install: npm ci --ignore-scripts (also set in .npmrc). bottender depends on ngrok, whose install
// script downloads a binary from outside the npm registry; nothing here needs a tunnel.
//
// Environment: BOT_PORT (0 for any free port), MESSENGER_* (read by bottender.config.js),
// BOT_MAX_SECONDS (the process exits by itself after this long; default 120).
//
// Lines: {"kind":"listening","port":N} once, then {"kind":"request",...} per HTTP request, and
// the lines index.js and _error.js print per event.
'use strict';

const crypto = require('crypto');
const bodyParser = require('body-parser');
const express = require('express');
const { bottender } = require('bottender');
const print = require('./print');

const maxSeconds = Number(process.env.BOT_MAX_SECONDS || 120);
setTimeout(() => {
  console.error(`server.js: exiting after ${maxSeconds}s`);
  process.exit(3);
}, maxSeconds * 1000).unref();

async function main() {
  const app = bottender({ dev: false });
  const handle = app.getRequestHandler();
  await app.prepare();

  const server = express();
  // As bottender's start command does; the hash of the exact bytes is this harness's addition.
  const verify = (req, _, buf) => {
    req.rawBody = buf.toString();
    req.rawSha256 = crypto.createHash('sha256').update(buf).digest('hex');
  };
  // Record what bottender answered, once the answer is sent.
  server.use((req, res, next) => {
    const end = res.end;
    let answer = '';
    res.end = function (chunk, ...rest) {
      if (chunk) {
        answer = String(chunk);
      }
      return end.call(this, chunk, ...rest);
    };
    res.on('finish', () => {
      const body = req.body && typeof req.body === 'object' ? req.body : {};
      print({
        kind: 'request',
        method: req.method,
        path: req.path,
        status: res.statusCode,
        answer: answer.slice(0, 2000),
        body_sha256: req.rawSha256 || null,
        x_hub_signature: req.get('x-hub-signature') || null,
        x_hub_signature_256: req.get('x-hub-signature-256') || null,
        entries: Array.isArray(body.entry) ? body.entry.length : 0,
      });
    });
    next();
  });
  server.use(bodyParser.json({ verify }));
  server.use(bodyParser.urlencoded({ extended: false, verify }));
  server.all('*', (req, res) => handle(req, res));

  const listener = server.listen(Number(process.env.BOT_PORT || 0), '127.0.0.1', () => {
    print({ kind: 'listening', port: listener.address().port });
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
