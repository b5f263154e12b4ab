#!/usr/bin/env node
// Seed 000 from a merchant's side, with unmodified pusher-js 8: the client's
// channel authorizer calls payrelay's own POST /v1/websocket/auth with a JWT and
// an API key (the merchant never holds the app secret).
//
// Env (set by tests/real_peers.rs):
//   PAYRELAY_HOST, PAYRELAY_PORT, PAYRELAY_KEY, PAYRELAY_SECRET
//   PAYRELAY_MERCHANT            the merchant the good credentials belong to
//   PAYRELAY_JWT                 a valid JWT for that merchant
//   PAYRELAY_API_KEY             a live API key of that merchant
//   PAYRELAY_JWT_EXPIRED         an expired JWT for that merchant
//   PAYRELAY_JWT_ALG_NONE        an unsigned (`alg: none`) token for that merchant
//   PAYRELAY_API_KEY_REVOKED     a revoked key of that merchant
//   PAYRELAY_API_KEY_OTHER       a live key of another merchant
//   PAYRELAY_APP_ID              the app's id (for the npm `pusher` library)
//   PAYRELAY_ENCRYPTION_MASTER_KEY  the app's encryption_master_key_base64
// Exits 0 when every scenario passed; prints FAIL lines and exits 1 otherwise.

import assert from 'node:assert/strict';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';
import { deadline, env, runScenarios, sleep } from './harness.mjs';

const WAIT_MS = 4000;

const HOST = env('PAYRELAY_HOST');
const PORT = Number(env('PAYRELAY_PORT'));
const KEY = env('PAYRELAY_KEY');
const SECRET = env('PAYRELAY_SECRET');
const MERCHANT = env('PAYRELAY_MERCHANT');
const GOOD = { jwt: env('PAYRELAY_JWT'), apiKey: env('PAYRELAY_API_KEY') };
const BASE = `http://${HOST}:${PORT}`;

deadline(30);

/** pusher-js with a custom authorizer that calls /v1/websocket/auth with `creds`. */
function merchantClient(creds) {
  return new Pusher(KEY, {
    cluster: 'mt1',
    wsHost: HOST,
    wsPort: PORT,
    forceTLS: false,
    enabledTransports: ['ws'],
    channelAuthorization: {
      customHandler: async ({ socketId, channelName }, callback) => {
        try {
          const res = await fetch(`${BASE}/v1/websocket/auth`, {
            method: 'POST',
            headers: {
              'content-type': 'application/json',
              authorization: `Bearer ${creds.jwt}`,
              'x-api-key': creds.apiKey,
            },
            body: JSON.stringify({ socket_id: socketId, channel_name: channelName }),
          });
          const body = await res.json();
          if (!res.ok) {
            callback(new Error(`${res.status} ${body.error}`), null);
          } else {
            callback(null, body);
          }
        } catch (e) {
          callback(e, null);
        }
      },
    },
  });
}

/** Subscribes and resolves with {ok: true, channel} or {ok: false, error}. */
function subscribe(pusher, channelName) {
  return new Promise((resolve, reject) => {
    const channel = pusher.subscribe(channelName);
    const timer = setTimeout(
      () => reject(new Error(`no answer to the subscription of ${channelName}`)),
      WAIT_MS,
    );
    channel.bind('pusher:subscription_succeeded', (members) => {
      clearTimeout(timer);
      resolve({ ok: true, channel, members });
    });
    channel.bind('pusher:subscription_error', (error) => {
      clearTimeout(timer);
      resolve({ ok: false, error });
    });
  });
}

/** The backend's side: POST /v1/events with the app credentials. */
async function publish(kind, event, data) {
  const res = await fetch(`${BASE}/v1/events`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      authorization: 'Basic ' + Buffer.from(`${KEY}:${SECRET}`).toString('base64'),
    },
    body: JSON.stringify({ merchant_id: MERCHANT, kind, event, data }),
  });
  assert.equal(res.status, 200, await res.text());
}

/** The backend's side with the npm `pusher` library, encrypting for encrypted channels. */
const backend = new PusherServer({
  appId: env('PAYRELAY_APP_ID'),
  key: KEY,
  secret: SECRET,
  host: HOST,
  port: PORT,
  useTLS: false,
  encryptionMasterKeyBase64: env('PAYRELAY_ENCRYPTION_MASTER_KEY'),
});

const scenarios = {
  async 'own channel subscribes and receives the backend event'() {
    const pusher = merchantClient(GOOD);
    try {
      const sub = await subscribe(pusher, `private-payments.${MERCHANT}`);
      assert.ok(sub.ok, `refused: ${JSON.stringify(sub.error)}`);
      const got = new Promise((resolve) => sub.channel.bind('payment.updated', resolve));
      await publish('payments', 'payment.updated', { payment_id: 'pay_1', status: 'paid' });
      const data = await Promise.race([got, sleep(WAIT_MS).then(() => 'timeout')]);
      assert.deepEqual(data, { payment_id: 'pay_1', status: 'paid' });
    } finally {
      pusher.disconnect();
    }
  },

  async 'presence form of an own channel names the merchant as the member'() {
    const pusher = merchantClient(GOOD);
    try {
      const sub = await subscribe(pusher, `presence-merchant.${MERCHANT}`);
      assert.ok(sub.ok, `refused: ${JSON.stringify(sub.error)}`);
      assert.equal(sub.members.me.id, MERCHANT);
    } finally {
      pusher.disconnect();
    }
  },

  async 'encrypted channel: pusher-js decrypts what the npm pusher library encrypted'() {
    const pusher = merchantClient(GOOD);
    const channelName = `private-encrypted-merchant.${MERCHANT}`;
    try {
      const sub = await subscribe(pusher, channelName);
      assert.ok(sub.ok, `refused: ${JSON.stringify(sub.error)}`);
      const got = new Promise((resolve) => sub.channel.bind('payment.secret', resolve));
      // A raw listener on the same socket sees what payrelay relayed: ciphertext only.
      const raw = new Promise((resolve) =>
        pusher.connection.bind('message', (m) => m.event === 'payment.secret' && resolve(m)),
      );
      const plaintext = { payment_id: 'pay_enc', card: '4111…1111' };
      await backend.trigger(channelName, 'payment.secret', plaintext);
      const data = await Promise.race([got, sleep(WAIT_MS).then(() => 'timeout')]);
      assert.deepEqual(data, plaintext, 'pusher-js decrypted the event');
      const relayed = await Promise.race([raw, sleep(WAIT_MS).then(() => 'timeout')]);
      const wire = JSON.stringify(relayed.data);
      assert.ok(!wire.includes('pay_enc'), `plaintext on the wire: ${wire}`);
      assert.match(wire, /ciphertext/);
    } finally {
      pusher.disconnect();
    }
  },

  async "another merchant's channel is refused with 403"() {
    const pusher = merchantClient(GOOD);
    try {
      const sub = await subscribe(pusher, 'private-merchant.someone_else');
      assert.ok(!sub.ok, 'subscribed to another merchant');
      assert.match(sub.error.error, /^403 /);
    } finally {
      pusher.disconnect();
    }
  },

  async 'bad credentials are refused with 401'() {
    const cases = {
      'expired JWT': { jwt: env('PAYRELAY_JWT_EXPIRED'), apiKey: GOOD.apiKey },
      'alg none JWT': { jwt: env('PAYRELAY_JWT_ALG_NONE'), apiKey: GOOD.apiKey },
      'revoked API key': { jwt: GOOD.jwt, apiKey: env('PAYRELAY_API_KEY_REVOKED') },
      "another merchant's API key": { jwt: GOOD.jwt, apiKey: env('PAYRELAY_API_KEY_OTHER') },
    };
    for (const [name, creds] of Object.entries(cases)) {
      const pusher = merchantClient(creds);
      try {
        const sub = await subscribe(pusher, `private-merchant.${MERCHANT}`);
        assert.ok(!sub.ok, `${name}: subscribed`);
        assert.match(sub.error.error, /^401 /, `${name}: ${JSON.stringify(sub.error)}`);
        console.log(`   ${name}: ${sub.error.error}`);
      } finally {
        pusher.disconnect();
      }
    }
  },
};

await runScenarios(scenarios);
