// bottender's project config, as `bottender init` writes it for Messenger, plus `origin`: the
// documented option of bottender's Messenger connector (passed on to messaging-api-messenger)
// that points its Graph client at the simulator instead of graph.facebook.com.
'use strict';

module.exports = {
  session: {
    driver: 'memory',
    stores: { memory: { maxSize: 500 } },
  },
  channels: {
    messenger: {
      enabled: true,
      path: '/webhooks/messenger',
      pageId: process.env.MESSENGER_PAGE_ID,
      accessToken: process.env.MESSENGER_ACCESS_TOKEN,
      appId: process.env.MESSENGER_APP_ID,
      appSecret: process.env.MESSENGER_APP_SECRET,
      verifyToken: process.env.MESSENGER_VERIFY_TOKEN,
      origin: process.env.MESSENGER_GRAPH_ORIGIN,
    },
  },
};
