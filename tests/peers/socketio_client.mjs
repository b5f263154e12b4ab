#!/usr/bin/env node
// Seed 003 with the npm socket.io-client, running the seed's own snippet unchanged
// (`io(url, {transports: ['websocket'], query: {apiKey}})`, or `token`), beside pusher-js
// subscribed to the same merchant's Pusher channel: one publish reaches both.
//
// Env (set by tests/real_peers.rs; the node rechecks credentials only every 30 s, so
// revocations seen here within the wait are the API's immediate ones):
//   PAYRELAY_HOST, PAYRELAY_PORT, PAYRELAY_KEY, PAYRELAY_SECRET (app credentials)
//   PAYRELAY_MERCHANT              merchant M (its events go to private-merchant.M)
//   PAYRELAY_API_KEY               a live API key of M
//   PAYRELAY_API_KEY_OTHER         a live API key of another merchant N
//   PAYRELAY_API_KEY_REVOKED       a revoked key of M
//   PAYRELAY_API_KEY_DOOMED        a live key of M that a scenario revokes ...
//   PAYRELAY_API_KEY_DOOMED_ID     ... through DELETE /apps/{id}/keys/{key_id}
// Optional: PAYRELAY_ONLY=<substring> runs matching scenarios only.
// Exits 0 when every scenario passed; prints FAIL lines and exits 1 otherwise.

import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';
import { deadline, env, runScenarios, sleep } from './harness.mjs';

const WAIT_MS = 4000;

const HOST = env('PAYRELAY_HOST');
const PORT = env('PAYRELAY_PORT');
const KEY = env('PAYRELAY_KEY');
const SECRET = env('PAYRELAY_SECRET');
const MERCHANT = env('PAYRELAY_MERCHANT');
const API_KEY = env('PAYRELAY_API_KEY');
const BASE = `http://${HOST}:${PORT}`;
const BASIC = 'Basic ' + Buffer.from(`${KEY}:${SECRET}`).toString('base64');

deadline(60);

/** The seed's client example, verbatim but for the URL and the logging. */
function seedClient(query) {
  const socket = io(`ws://${HOST}:${PORT}`, {
    transports: ['websocket'],
    query,
    reconnection: false,
  });
  return observe(socket);
}

/** Records what a socket receives so scenarios can await it. */
function observe(socket) {
  socket.received = [];
  socket.onAny((event, data) => socket.received.push({ event, data }));
  socket.connected$ = new Promise((resolve, reject) => {
    socket.on('connect', () => resolve(socket));
    socket.on('connect_error', (err) => reject(err));
  });
  socket.disconnected$ = new Promise((resolve) => socket.on('disconnect', (reason) => resolve(reason)));
  return socket;
}

async function connected(socket) {
  return await Promise.race([
    socket.connected$,
    sleep(WAIT_MS).then(() => {
      throw new Error('no connect within the wait');
    }),
  ]);
}

/** The connect_error message a refused socket gets. */
async function refusedWith(socket) {
  try {
    await connected(socket);
  } catch (err) {
    socket.close();
    return err.message;
  }
  socket.close();
  throw new Error('the connection was accepted');
}

async function nextEvent(socket, name) {
  for (let i = 0; i < WAIT_MS / 20; i++) {
    const at = socket.received.findIndex((r) => r.event === name);
    if (at >= 0) return socket.received.splice(at, 1)[0].data;
    await sleep(20);
  }
  throw new Error(`no '${name}' event within the wait (got ${JSON.stringify(socket.received)})`);
}

async function withinWait(promise, what) {
  return await Promise.race([
    promise,
    sleep(WAIT_MS).then(() => {
      throw new Error(`timed out waiting for ${what}`);
    }),
  ]);
}

/** The payment backend publishing for a merchant (POST /v1/events, app credentials). */
async function publish(merchant, event, data) {
  const res = await fetch(`${BASE}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: BASIC },
    body: JSON.stringify({ merchant_id: merchant, kind: 'merchant', event, data }),
  });
  assert.equal(res.status, 200, await res.text());
}

/** The merchant's backend minting a client token with its API key. */
async function mintClientToken(apiKey, body = {}) {
  const res = await fetch(`${BASE}/v1/client-tokens`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': apiKey },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  assert.equal(res.status, 201, JSON.stringify(json));
  return json;
}

const trade = { id: 'trd_1', status: 'completed', game: 'cs2', amount: '12.50' };
const funding = { id: 'fnd_1', status: 'confirmed', currency: 'USDT', amount: '100.00' };

async function receivesTradeDepositWithdrawal(socket) {
  await publish(MERCHANT, 'trade', { trade });
  await publish(MERCHANT, 'deposit', { funding });
  await publish(MERCHANT, 'withdrawal', { funding: { ...funding, id: 'fnd_2' } });
  // The seed's handlers: data.trade and data.funding.
  const t = await nextEvent(socket, 'trade');
  assert.equal(`Trade ${t.trade.id} is now ${t.trade.status}`, 'Trade trd_1 is now completed');
  assert.deepEqual((await nextEvent(socket, 'deposit')).funding, funding);
  assert.deepEqual((await nextEvent(socket, 'withdrawal')).funding.id, 'fnd_2');
  assert.deepEqual(
    socket.received.map((r) => r.event),
    [],
    'nothing but the three events',
  );
}

const scenarios = {
  async 'seed snippet with apiKey receives trade, deposit and withdrawal'() {
    const socket = seedClient({ apiKey: API_KEY });
    await connected(socket);
    await receivesTradeDepositWithdrawal(socket);
    socket.close();
  },

  async 'seed snippet with a client token minted by the merchant backend'() {
    const minted = await mintClientToken(API_KEY, { user_id: 'player_42', ttl_secs: 600 });
    assert.equal(minted.merchant_id, MERCHANT);
    assert.equal(minted.user_id, 'player_42');
    assert.match(minted.token, /^pct_/);
    const socket = seedClient({ token: minted.token });
    await connected(socket);
    await receivesTradeDepositWithdrawal(socket);
    socket.close();
  },

  async 'the auth payload carries the credential as well'() {
    const { token } = await mintClientToken(API_KEY);
    const socket = observe(
      io(`ws://${HOST}:${PORT}`, { transports: ['websocket'], auth: { token }, reconnection: false }),
    );
    await connected(socket);
    await publish(MERCHANT, 'trade', { trade });
    assert.equal((await nextEvent(socket, 'trade')).trade.id, 'trd_1');
    socket.close();
  },

  async "another merchant's client sees nothing of M"() {
    const mine = seedClient({ apiKey: API_KEY });
    const theirs = seedClient({ apiKey: env('PAYRELAY_API_KEY_OTHER') });
    await connected(mine);
    await connected(theirs);
    await publish(MERCHANT, 'trade', { trade });
    await nextEvent(mine, 'trade');
    await sleep(300);
    assert.deepEqual(theirs.received, [], 'merchant N received an event of merchant M');
    mine.close();
    theirs.close();
  },

  async 'one publish reaches the Pusher subscriber and the Socket.IO client of M'() {
    const signer = new PusherServer({ appId: '1', key: KEY, secret: SECRET, host: HOST, port: PORT });
    const pusher = new Pusher(KEY, {
      cluster: 'mt1',
      wsHost: HOST,
      wsPort: Number(PORT),
      forceTLS: false,
      enabledTransports: ['ws'],
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, callback) =>
          callback(null, signer.authorizeChannel(socketId, channelName)),
      },
    });
    try {
      const channel = pusher.subscribe(`private-merchant.${MERCHANT}`);
      await withinWait(
        new Promise((resolve) => channel.bind('pusher:subscription_succeeded', resolve)),
        'the Pusher subscription',
      );
      const viaPusher = new Promise((resolve) => channel.bind('trade', resolve));
      const socket = seedClient({ apiKey: API_KEY });
      await connected(socket);
      await publish(MERCHANT, 'trade', { trade });
      assert.deepEqual(await withinWait(viaPusher, 'the Pusher event'), { trade });
      assert.deepEqual(await nextEvent(socket, 'trade'), { trade });
      socket.close();
    } finally {
      pusher.disconnect();
    }
  },

  async 'bad credentials get connect_error with a message, and no events'() {
    assert.match(await refusedWith(seedClient({})), /Missing credentials/);
    assert.match(await refusedWith(seedClient({ apiKey: 'prk_wrong' })), /Invalid API key/);
    assert.match(
      await refusedWith(seedClient({ apiKey: env('PAYRELAY_API_KEY_REVOKED') })),
      /Invalid API key/,
    );
    assert.match(await refusedWith(seedClient({ token: 'pct_wrong' })), /Invalid client token/);
    assert.match(
      await refusedWith(seedClient({ apiKey: API_KEY, token: 'pct_x' })),
      /either apiKey or token/,
    );
    // An access token of the plain JSON protocol is not a client token.
    const res = await fetch(`${BASE}/api/v1/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: BASIC },
      body: JSON.stringify({ user_id: 'u1', ttl_secs: 60 }),
    });
    const access = (await res.json()).data.token;
    assert.match(await refusedWith(seedClient({ token: access })), /Invalid client token/);
    const expiring = await mintClientToken(API_KEY, { ttl_secs: 1 });
    await sleep(2100);
    assert.match(await refusedWith(seedClient({ token: expiring.token })), /Invalid client token/);
  },

  async 'an expired token is not re-checked mid-connection'() {
    const { token } = await mintClientToken(API_KEY, { ttl_secs: 1 });
    const socket = seedClient({ token });
    await connected(socket);
    await sleep(2100);
    await publish(MERCHANT, 'trade', { trade });
    assert.equal((await nextEvent(socket, 'trade')).trade.id, 'trd_1');
    assert.ok(socket.connected);
    socket.close();
  },

  async 'long-polling is refused'() {
    const res = await fetch(`${BASE}/socket.io/?EIO=4&transport=polling`);
    assert.equal(res.status, 400);
    assert.match((await res.json()).message, /Only the websocket transport/);
    const socket = observe(io(`ws://${HOST}:${PORT}`, { transports: ['polling'], query: { apiKey: API_KEY }, reconnection: false }));
    const err = await withinWait(
      socket.connected$.then(
        () => {
          throw new Error('a polling client connected');
        },
        (e) => e,
      ),
      'the polling refusal',
    );
    assert.match(err.message, /xhr poll error/);
    socket.close();
  },

  async 'revoking a client token disconnects its socket at once'() {
    const { token } = await mintClientToken(API_KEY);
    const socket = seedClient({ token });
    const other = seedClient({ apiKey: API_KEY });
    await connected(socket);
    await connected(other);
    const res = await fetch(`${BASE}/v1/client-tokens/revoke`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': API_KEY },
      body: JSON.stringify({ token }),
    });
    assert.equal(res.status, 200, await res.text());
    assert.equal(await withinWait(socket.disconnected$, 'the disconnect'), 'io server disconnect');
    assert.ok(other.connected, 'a socket of another credential stays');
    other.close();
  },

  async 'revoking an API key disconnects the sockets opened with it'() {
    const socket = seedClient({ apiKey: env('PAYRELAY_API_KEY_DOOMED') });
    await connected(socket);
    const res = await fetch(`${BASE}/apps/1/keys/${env('PAYRELAY_API_KEY_DOOMED_ID')}`, {
      method: 'DELETE',
      headers: { authorization: BASIC },
    });
    assert.equal(res.status, 200, await res.text());
    assert.equal(await withinWait(socket.disconnected$, 'the disconnect'), 'io server disconnect');
  },
};

await runScenarios(scenarios);
