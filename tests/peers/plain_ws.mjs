#!/usr/bin/env node
// Seed 002's plain JSON protocol driven by the npm `ws` library, the WebSocket client a
// Node backend or a React Native app would use. It runs the README's copy-paste example
// first, then every line of the protocol: refusals before the upgrade, origins, the three
// token forms, auto-subscription, user isolation, client messages, clean closes, oversized
// messages (1009), the server's pings, replacement, forced logout and revocation.
//
// Env (set by tests/real_peers.rs):
//   PAYRELAY_HOST, PAYRELAY_PORT, PAYRELAY_KEY, PAYRELAY_SECRET
//     a node whose app has [apps.plain] allowed_origins = ["https://app.example.com",
//     "https://*.example.org"], max_invalid_messages = 2, ping_interval_secs = 1,
//     and pong_timeout_secs = 1 at the node level
//   PAYRELAY_DISABLED_PORT  a second node with [apps.plain] websocket_enabled = false
// Optional: PAYRELAY_ONLY=<substring> runs matching scenarios only.
// Exits 0 when every scenario passed; prints FAIL lines and exits 1 otherwise.

import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { deadline, env, runScenarios, sleep } from './harness.mjs';

const WAIT_MS = 4000;

const HOST = env('PAYRELAY_HOST');
const PORT = env('PAYRELAY_PORT');
const DISABLED_PORT = env('PAYRELAY_DISABLED_PORT');
const BASIC = 'Basic ' + Buffer.from(`${env('PAYRELAY_KEY')}:${env('PAYRELAY_SECRET')}`).toString('base64');

deadline(60);

/**
 * A frame without the `id` and `position` that history adds (so frames compare whole),
 * after checking that every event carries both.
 */
function bare(m) {
  if (!['subscribed', 'unsubscribed', 'error', 'pong'].includes(m.event)) {
    assert.match(m.id, /^evt_[0-9a-f]{32}$/, JSON.stringify(m));
    assert.match(m.position, /^\d+\.[0-9A-Za-z]+$/, JSON.stringify(m));
  }
  const { id, position, ...rest } = m;
  return rest;
}

/** A backend call with the app credentials (HTTP Basic), as the README's curl lines do. */
async function backend(method, path, body, port = PORT) {
  const res = await fetch(`http://${HOST}:${port}${path}`, {
    method,
    headers: { authorization: BASIC, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

async function mint(userId, ttlSecs = 60, port = PORT) {
  const { status, body } = await backend('POST', '/api/v1/tokens', { user_id: userId, ttl_secs: ttlSecs }, port);
  assert.equal(status, 201, JSON.stringify(body));
  return body.data.token;
}

async function publish(body) {
  const res = await backend('POST', '/api/v1/events', body);
  assert.equal(res.status, 200, JSON.stringify(res.body));
  return res.body;
}

/**
 * A `ws` socket whose messages, pings and close are queued so scenarios can await them.
 * Resolves once open; rejects with {status, body} when the server refuses the upgrade.
 */
function open(path, { protocols, ...options } = {}, port = PORT) {
  const ws = new WebSocket(`ws://${HOST}:${port}${path}`, protocols, options);
  const client = {
    ws,
    messages: [],
    waiters: [],
    pings: 0,
    closed: new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))),
    /** The next JSON message, or a failure after WAIT_MS. */
    next(what = 'a message') {
      if (this.messages.length) return Promise.resolve(this.messages.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS);
        this.waiters.push((m) => {
          clearTimeout(timer);
          resolve(m);
        });
      });
    },
    async silentFor(ms) {
      await sleep(ms);
      assert.deepEqual(this.messages, [], 'expected no message');
    },
    send(value) {
      ws.send(typeof value === 'string' ? value : JSON.stringify(value));
    },
    async close() {
      ws.close();
      await this.closed;
    },
  };
  ws.on('message', (data) => {
    const m = bare(JSON.parse(data.toString()));
    const waiter = client.waiters.shift();
    if (waiter) waiter(m);
    else client.messages.push(m);
  });
  ws.on('ping', () => client.pings++);
  return new Promise((resolve, reject) => {
    ws.on('open', () => resolve(client));
    ws.on('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (chunk) => (text += chunk));
      res.on('end', () => reject({ status: res.statusCode, body: JSON.parse(text) }));
    });
    ws.on('error', (e) => reject(e));
  });
}

/** Opens a socket and checks it starts on `settings`, as every socket does. */
async function connect(token, options = {}) {
  const client = await open(`/api/v1/ws?token=${encodeURIComponent(token)}`, options);
  assert.deepEqual(await client.next('the settings subscription'), { event: 'subscribed', channel: 'settings' });
  return client;
}

async function refusal(path, options = {}, port = PORT) {
  try {
    const client = await open(path, options, port);
    await client.close();
  } catch (e) {
    if (e.status) return e;
    throw e;
  }
  throw new Error(`${path}: the upgrade was accepted`);
}

function assertEnvelope(refused, status, message) {
  assert.equal(refused.status, status, JSON.stringify(refused.body));
  const { status_code, message: got, trace_id, data } = refused.body;
  assert.deepEqual({ status_code, message: got, data }, { status_code: status, message, data: null });
  assert.match(trace_id, /^[0-9a-f]{16}$/);
}

async function subscribe(client, channel) {
  client.send({ event: 'subscribe', channel });
  assert.deepEqual(await client.next(`subscribed ${channel}`), { event: 'subscribed', channel });
}

const scenarios = {
  async readme_example() {
    // The README's example, as written, with `ws` standing in for the browser's WebSocket.
    const token = await mint(120045, 3600);
    const received = [];
    const ws = new WebSocket(`ws://${HOST}:${PORT}/api/v1/ws`, ['bearer', token]);
    ws.onmessage = (m) => received.push(bare(JSON.parse(m.data)));
    ws.onopen = () => ws.send(JSON.stringify({ event: 'subscribe', channel: 'notification.events' }));
    const waitFor = async (n) => {
      for (let i = 0; i < 50 && received.length < n; i++) await sleep(50);
      assert.equal(received.length, n, JSON.stringify(received));
    };
    await waitFor(2);
    assert.equal(ws.protocol, 'bearer', 'the server answers the bearer subprotocol');
    await publish({ user_id: 120045, channel: 'notification.events', event: 'NOTIFICATION_UPDATE', data: { unread_count: 3 } });
    await waitFor(3);
    assert.deepEqual(received, [
      { event: 'subscribed', channel: 'settings' },
      { event: 'subscribed', channel: 'notification.events' },
      { event: 'NOTIFICATION_UPDATE', channel: 'notification.events', data: { unread_count: 3 } },
    ]);
    ws.close();
  },

  async refusals_before_the_upgrade() {
    assertEnvelope(await refusal('/api/v1/ws'), 401, 'Missing access token');
    assertEnvelope(await refusal('/api/v1/ws?token=prt_unknown'), 401, 'Invalid or expired token');
    const expired = await mint('u-expired', 1);
    await sleep(2100);
    assertEnvelope(await refusal(`/api/v1/ws?token=${expired}`), 401, 'Invalid or expired token');
    const revoked = await mint('u-revoked');
    assert.equal((await backend('POST', '/api/v1/tokens/revoke', { token: revoked })).status, 200);
    assertEnvelope(await refusal(`/api/v1/ws?token=${revoked}`), 401, 'Invalid or expired token');
    assertEnvelope(
      await refusal('/api/v1/ws', { headers: { authorization: 'Bearer prt_unknown' } }),
      401,
      'Invalid or expired token',
    );

    const good = await mint('u-origin');
    const path = `/api/v1/ws?token=${good}`;
    assertEnvelope(await refusal(path, { origin: 'https://evil.example.com' }), 403, 'Origin not allowed');
    assertEnvelope(await refusal(path, { origin: 'https://example.org.evil.com' }), 403, 'Origin not allowed');
    for (const origin of ['https://app.example.com', 'https://shop.example.org']) {
      await (await connect(good, { origin })).close();
    }

    const elsewhere = await mint('u-disabled', 60, DISABLED_PORT);
    assertEnvelope(await refusal(`/api/v1/ws?token=${elsewhere}`, {}, DISABLED_PORT), 503, 'WebSocket is disabled');
  },

  async three_token_forms() {
    const token = await mint('u-forms');
    await (await connect(token)).close();
    const header = await open('/api/v1/ws', { headers: { authorization: `Bearer ${token}` } });
    assert.deepEqual(await header.next(), { event: 'subscribed', channel: 'settings' });
    await header.close();
    const subprotocol = await open('/api/v1/ws', { protocols: ['bearer', token] });
    assert.equal(subprotocol.ws.protocol, 'bearer');
    assert.deepEqual(await subprotocol.next(), { event: 'subscribed', channel: 'settings' });
    await subprotocol.close();
  },

  async global_events_reach_everyone_and_user_events_only_their_user() {
    const alice = await connect(await mint('120045'));
    const bob = await connect(await mint('777'));
    for (const client of [alice, bob]) await subscribe(client, 'notification.events');
    const settings = { type: 'withdrawal_settings_updated', withdrawal_fee_rate: '1.50' };
    await publish({ channel: 'settings', event: 'withdrawal_settings_updated', data: settings });
    for (const client of [alice, bob]) {
      assert.deepEqual(await client.next('the settings event'), {
        event: 'withdrawal_settings_updated',
        channel: 'settings',
        data: settings,
      });
    }
    const unread = { mobile_user_id: 120045, unread_count: 3, event_type: 'NOTIFICATION_UPDATE' };
    await publish({ user_id: 120045, channel: 'notification.events', event: 'NOTIFICATION_UPDATE', data: unread });
    assert.deepEqual(await alice.next("alice's notification"), {
      event: 'NOTIFICATION_UPDATE',
      channel: 'notification.events',
      data: unread,
    });
    await bob.silentFor(300);
    // Bob is not subscribed to payment_order.events: a publish for him there is not delivered.
    await publish({ user_id: 777, channel: 'payment_order.events', event: 'PAYMENT_ORDER', data: {} });
    await bob.silentFor(300);
    await alice.close();
    await bob.close();
  },

  async client_messages_errors_and_garbage() {
    const client = await connect(await mint('u-messages'));
    client.send({ event: 'ping' });
    assert.deepEqual(await client.next('pong'), { event: 'pong' });
    client.send({ event: 'subscribe', channel: 'secret.events' });
    const error = await client.next('the unknown-channel error');
    assert.equal(error.event, 'error');
    assert.equal(error.channel, 'secret.events');
    assert.equal(error.data.code, 'unknown_channel');
    assert.equal(typeof error.data.message, 'string');

    await subscribe(client, 'kyc.events');
    client.send({ event: 'unsubscribe', channel: 'kyc.events' });
    assert.deepEqual(await client.next('unsubscribed'), { event: 'unsubscribed', channel: 'kyc.events' });
    await publish({ user_id: 'u-messages', channel: 'kyc.events', event: 'KYC', data: {} });
    await client.silentFor(300);

    // max_invalid_messages = 2: two malformed messages get error events, the third closes.
    for (let i = 0; i < 2; i++) {
      client.send('{not json');
      assert.equal((await client.next('the malformed error')).data.code, 'malformed');
    }
    client.send({ event: 'ping' });
    assert.deepEqual(await client.next('pong after garbage'), { event: 'pong' }, 'the socket stayed up');
    client.send('still not json');
    assert.equal((await client.closed).code, 4400);
  },

  async a_normal_close_is_answered_so_the_client_sees_1000() {
    const client = await connect(await mint('u-close'));
    client.ws.close(1000, 'bye');
    // 1006 here means the server dropped the socket without answering the close frame.
    assert.deepEqual(await client.closed, { code: 1000, reason: 'bye' });
  },

  async oversized_messages_close_with_1009() {
    // The default 10 KiB limit: read and refused just over it, refused unread far over it.
    for (const size of [12 * 1024, 4 * 1024 * 1024]) {
      const client = await connect(await mint(`u-big-${size}`));
      client.send({ event: 'ping', pad: 'x'.repeat(size) });
      assert.deepEqual(await client.closed, { code: 1009, reason: 'Message too big' }, `size ${size}`);
    }
  },

  async server_pings_and_drops_a_silent_socket() {
    // `ws` answers pings by itself; ping_interval_secs = 1.
    const lively = await connect(await mint('u-lively'));
    const silent = await connect(await mint('u-silent'), { autoPong: false });
    const { code } = await silent.closed;
    assert.equal(code, 4408, 'a socket that does not answer pings is closed with 4408');
    assert.ok(lively.pings >= 1, `the server pinged (${lively.pings})`);
    lively.send({ event: 'ping' });
    assert.deepEqual(await lively.next(), { event: 'pong' }, 'the answering socket stays');
    await lively.close();
  },

  async a_new_socket_replaces_the_old_one() {
    const token = await mint('u-replaced');
    const old = await connect(token);
    const fresh = await connect(token);
    assert.deepEqual(await old.closed, { code: 4409, reason: 'Replaced by a newer connection' });
    fresh.send({ event: 'ping' });
    assert.deepEqual(await fresh.next(), { event: 'pong' });
    await fresh.close();
  },

  async forced_logout_announces_closes_and_revokes() {
    const token = await mint('120046');
    const client = await connect(token);
    await subscribe(client, 'mobile.force.logout');
    const res = await backend('POST', '/api/v1/users/120046/force-logout', { revoke_tokens: true });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.deepEqual(await client.next('the logout event'), {
      event: 'MOBILE_USER_FORCE_LOGOUT_EVENT',
      channel: 'mobile.force.logout',
      data: { mobile_user_id: 120046, is_force_logout: true },
    });
    assert.deepEqual(await client.closed, { code: 4403, reason: 'Logged out' });
    assertEnvelope(await refusal(`/api/v1/ws?token=${token}`), 401, 'Invalid or expired token');
  },

  async revoking_a_token_closes_its_socket_at_once() {
    const token = await mint('u-doomed');
    const doomed = await connect(token);
    const other = await connect(await mint('u-other'));
    const started = Date.now();
    assert.equal((await backend('POST', '/api/v1/tokens/revoke', { token })).status, 200);
    assert.equal((await doomed.closed).code, 4401);
    assert.ok(Date.now() - started < 900, 'closed at once, not at the next recheck');
    other.send({ event: 'ping' });
    assert.deepEqual(await other.next(), { event: 'pong' }, "another user's socket stays");
    await other.close();
  },
};

await runScenarios(scenarios);
