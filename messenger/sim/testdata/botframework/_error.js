// bottender's error entry (_error.js): called when index.js throws, e.g. when a Graph call made
// through bottender's client is refused. Recorded so that the Go test fails on it.
'use strict';

const print = require('./print');

module.exports = async function HandleError(context, props) {
  const err = props.error || {};
  const res = err.response;
  print({
    kind: 'error',
    psid: context.session && context.session.user ? context.session.user.id : null,
    message: String(err.message || err),
    status: res ? res.status : undefined,
    body: res ? res.data : undefined,
  });
};
