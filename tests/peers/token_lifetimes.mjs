#!/usr/bin/env node
// Token lifetimes and scopes as real clients see them: npm `ws` on the plain protocol
// when its access token expires, socket.io-client when its client token expires (with
// `disconnect_on_token_expiry`) and reconnecting with a fresh one the way the README
// says, and two socket.io-client front ends of one merchant whose tokens are scoped to
// their users (`client_token_scope = "user"`).
//
// Env (set by tests/real_peers.rs):
//   PAYRELAY_HOST, PAYRELAY_PORT, PAYRELAY_KEY, PAYRELAY_SECRET (app credentials of an app
//   with [apps.socketio] disconnect_on_token_expiry = true, client_token_scope = "user")
//   PAYRELAY_MERCHANT              the merchant whose clients these are
// Optional: PAYRELAY_ONLY=<substring> runs matching scenarios only.
// Exits 0 when every scenario passed; prints FAIL lines and exits 1 otherwise.

import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { deadline, env, runScenarios, sleep } from './harness.mjs';

const WAIT_MS = 6000;

const HOST = env('PAYRELAY_HOST');
const PORT = env('PAYRELAY_PORT');
const MERCHANT = env('PAYRELAY_MERCHANT');
const BASE = `http://${HOST}:${PORT}`;
const BASIC =
  'Basic ' + Buffer.from(`${env('PAYRELAY_KEY')}:${env('PAYRELAY_SECRET')}`).toString('base64');

deadline(60);

async function post(path, body) {
  const res = await fetch(`${BASE}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: BASIC },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  assert.ok(res.ok, `${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/** The app's backend minting a client token of the merchant. */
async function clientToken(body) {
  return (await post('/v1/client-tokens', { merchant_id: MERCHANT, ...body })).token;
}

/** The payment backend publishing a trade for the merchant, marked as `mark` says. */
async function publishTrade(n, mark = {}) {
  await post('/v1/events', {
    merchant_id: MERCHANT,
    kind: 'merchant',
    event: 'trade',
    data: { trade: { n } },
    ...mark,
  });
}

async function within(promise, what) {
  return await Promise.race([
    promise,
    sleep(WAIT_MS).then(() => {
      throw new Error(`timed out waiting for ${what}`);
    }),
  ]);
}

/**
 * A front end with socket.io-client; `auth` is read again on every (re)connect. It starts
 * connecting at once, so what happens to it is recorded from the start: a listener
 * attached later (after awaiting something else) would miss a connect that came first.
 */
function frontEnd(auth) {
  const socket = io(`ws://${HOST}:${PORT}`, { transports: ['websocket'], auth, reconnection: false });
  socket.trades = [];
  socket.connectErrors = [];
  socket.disconnects = [];
  socket.on('trade', (data) => socket.trades.push(data.trade.n));
  socket.on('connect_error', (e) => socket.connectErrors.push(e));
  socket.on('disconnect', (reason) => socket.disconnects.push(reason));
  return socket;
}

/** Waits until `check()` returns something other than undefined, and returns it. */
const until = (check, what) =>
  within(
    (async () => {
      for (;;) {
        const v = check();
        if (v !== undefined) return v;
        await sleep(20);
      }
    })(),
    what,
  );

/** Waits for the socket's (re)connect; throws its connect_error. */
async function connect(socket) {
  await until(() => {
    if (socket.connectErrors.length) throw socket.connectErrors.shift();
    return socket.connected ? true : undefined;
  }, 'the connect');
}

/** The reason of the socket's next disconnect (one that already happened counts). */
const disconnect = (socket) => until(() => socket.disconnects.shift(), 'the disconnect');

async function tradesUntil(socket, n) {
  await until(() => (socket.trades.includes(n) ? true : undefined), `trade ${n}`).catch((e) => {
    throw new Error(`${e.message} (got ${JSON.stringify(socket.trades)})`);
  });
  return socket.trades;
}

const scenarios = {
  async 'ws: the plain socket closes with 4401 when its access token expires'() {
    const minted = await post('/api/v1/tokens', { user_id: 'u1', ttl_secs: 2 });
    const ws = new WebSocket(`ws://${HOST}:${PORT}/api/v1/ws`, ['bearer', minted.data.token]);
    // A refused upgrade is an `error` event: fail with it rather than crash on it.
    const refused = new Promise((_, reject) => ws.on('error', reject));
    const closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve([code, `${reason}`])));
    const first = await within(
      Promise.race([refused, new Promise((resolve) => ws.once('message', (m) => resolve(JSON.parse(m))))]),
      'the settings subscription',
    );
    assert.deepEqual({ ...first, position: undefined }, { event: 'subscribed', channel: 'settings', position: undefined });
    assert.deepEqual(await within(closed, 'the close'), [4401, 'Token expired']);
  },

  async 'socket.io-client: an expired client token is disconnected; a fresh one reconnects'() {
    let token = await clientToken({ ttl_secs: 2 });
    // The README's pattern: auth as a function, so a reconnect sends the current token.
    const socket = frontEnd((cb) => cb({ token }));
    await connect(socket);
    assert.equal(await disconnect(socket), 'io server disconnect');
    // `io server disconnect` is not retried; the front end gets a new token and connects.
    token = await clientToken({ ttl_secs: 600 });
    socket.connect();
    await connect(socket);
    await publishTrade(1, { merchant_wide: true });
    assert.deepEqual(await tradesUntil(socket, 1), [1]);
    socket.close();
  },

  async 'socket.io-client: user-scoped tokens get their own trades and merchant-wide ones'() {
    const alice = frontEnd({ token: await clientToken({ user_id: 'alice', ttl_secs: 600 }) });
    const bob = frontEnd({ token: await clientToken({ user_id: 'bob', ttl_secs: 600 }) });
    await connect(alice);
    await connect(bob);
    await publishTrade(1, { user_id: 'alice' });
    await publishTrade(2, { user_id: 'bob' });
    await publishTrade(3);
    await publishTrade(4, { merchant_wide: true });
    assert.deepEqual(await tradesUntil(alice, 4), [1, 4]);
    assert.deepEqual(await tradesUntil(bob, 4), [2, 4]);
    alice.close();
    bob.close();
  },
};

await runScenarios(scenarios);
