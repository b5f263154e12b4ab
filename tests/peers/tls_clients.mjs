#!/usr/bin/env node
// A node serving TLS natively (tls_cert_file / tls_key_file), driven by unmodified
// clients that verify its certificate against a CA the Rust test generated (rcgen):
//   - pusher-js with forceTLS (wss://) and npm `pusher` with useTLS (https://),
//   - socket.io-client over wss:// with the seed's snippet,
//   - npm `ws` on the plain JSON protocol, given the CA through its own `ca` option,
//   - and the same clients refusing a server their CA list does not vouch for.
// Verification is never turned off: trust comes from NODE_EXTRA_CA_CERTS (set by the
// test to the CA file) or from the client's `ca` option.
//
// Env (set by tests/real_peers.rs):
//   PAYRELAY_HOST, PAYRELAY_PORT, PAYRELAY_APP_ID, PAYRELAY_KEY, PAYRELAY_SECRET
//   PAYRELAY_TLS_CA         the CA that signed the node's certificate (PEM file)
//   PAYRELAY_OTHER_CA       an unrelated CA (PEM file)
//   PAYRELAY_MERCHANT       merchant M, with PAYRELAY_API_KEY a live API key of M
//   NODE_EXTRA_CA_CERTS     the same file as PAYRELAY_TLS_CA
// Optional: PAYRELAY_ONLY=<substring> runs matching scenarios only.
// Exits 0 when every scenario passed; prints FAIL lines and exits 1 otherwise.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import Pusher from 'pusher-js';
import PusherServer from 'pusher';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import { deadline, env, runScenarios } from './harness.mjs';

const WAIT_MS = 4000;

const HOST = env('PAYRELAY_HOST');
const PORT = Number(env('PAYRELAY_PORT'));
const APP_ID = env('PAYRELAY_APP_ID');
const KEY = env('PAYRELAY_KEY');
const SECRET = env('PAYRELAY_SECRET');
const CA = readFileSync(env('PAYRELAY_TLS_CA'));
const OTHER_CA = readFileSync(env('PAYRELAY_OTHER_CA'));
const MERCHANT = env('PAYRELAY_MERCHANT');
const API_KEY = env('PAYRELAY_API_KEY');
const BASE = `https://${HOST}:${PORT}`;
const BASIC = 'Basic ' + Buffer.from(`${KEY}:${SECRET}`).toString('base64');

assert.equal(process.env.NODE_EXTRA_CA_CERTS, env('PAYRELAY_TLS_CA'), 'the CA is trusted through NODE_EXTRA_CA_CERTS');

deadline(60);

/** Resolves with the first value `subscribe` hands its callback, or fails after WAIT_MS. */
function within(what, subscribe) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS);
    subscribe((value) => {
      clearTimeout(timer);
      resolve(value);
    });
  });
}

/** The app's backend over HTTPS (Node's fetch, trusting NODE_EXTRA_CA_CERTS). */
async function backend(method, path, body) {
  const res = await fetch(`${BASE}${path}`, {
    method,
    headers: { authorization: BASIC, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

const scenarios = {
  async pusher_js_force_tls_and_npm_pusher_use_tls() {
    const client = new Pusher(KEY, {
      cluster: 'mt1',
      wsHost: HOST,
      wssPort: PORT,
      forceTLS: true,
      enabledTransports: ['ws', 'wss'],
    });
    try {
      await within('pusher-js to connect over wss', (done) => client.connection.bind('connected', done));
      const channel = client.subscribe('tls-orders');
      await within('the subscription', (done) => channel.bind('pusher:subscription_succeeded', done));
      const received = within('the event', (done) => channel.bind('order-paid', done));
      const server = new PusherServer({ appId: APP_ID, key: KEY, secret: SECRET, host: HOST, port: String(PORT), useTLS: true });
      const res = await server.trigger('tls-orders', 'order-paid', { id: 42 });
      assert.equal(res.status, 200);
      assert.deepEqual(await received, { id: 42 });
    } finally {
      client.disconnect();
    }
  },

  async socketio_client_over_wss() {
    const socket = io(BASE, { transports: ['websocket'], query: { apiKey: API_KEY }, reconnection: false });
    try {
      await within('socket.io-client to connect over wss', (done) => {
        socket.on('connect', done);
        socket.on('connect_error', (e) => done(Promise.reject(e)));
      });
      assert.equal(socket.io.engine.transport.name, 'websocket');
      const trade = within('the trade event', (done) => socket.on('trade', done));
      const res = await fetch(`${BASE}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: BASIC },
        body: JSON.stringify({ merchant_id: MERCHANT, kind: 'merchant', event: 'trade', data: { trade: { id: 'trd_tls' } } }),
      });
      assert.equal(res.status, 200, await res.text());
      assert.deepEqual(await trade, { trade: { id: 'trd_tls' } });
    } finally {
      socket.close();
    }
  },

  async ws_with_its_ca_option_on_the_plain_protocol() {
    const minted = await backend('POST', '/api/v1/tokens', { user_id: 120045, ttl_secs: 60 });
    assert.equal(minted.status, 201, JSON.stringify(minted.body));
    const token = minted.body.data.token;
    const ws = new WebSocket(`wss://${HOST}:${PORT}/api/v1/ws?token=${encodeURIComponent(token)}`, { ca: CA });
    const messages = [];
    const waiters = [];
    ws.on('message', (data) => {
      // Without the `id` and `position` history adds, so frames compare whole.
      const { id, position, ...m } = JSON.parse(data.toString());
      const waiter = waiters.shift();
      if (waiter) waiter(m);
      else messages.push(m);
    });
    const next = (what) => (messages.length ? Promise.resolve(messages.shift()) : within(what, (done) => waiters.push(done)));
    try {
      await within('ws to open over wss', (done) => {
        ws.on('open', done);
        ws.on('error', (e) => done(Promise.reject(e)));
      });
      assert.deepEqual(await next('the settings subscription'), { event: 'subscribed', channel: 'settings' });
      ws.send(JSON.stringify({ event: 'subscribe', channel: 'notification.events' }));
      assert.deepEqual(await next('subscribed'), { event: 'subscribed', channel: 'notification.events' });
      const published = await backend('POST', '/api/v1/events', {
        user_id: 120045,
        channel: 'notification.events',
        event: 'NOTIFICATION_UPDATE',
        data: { unread_count: 1 },
      });
      assert.equal(published.status, 200, JSON.stringify(published.body));
      assert.deepEqual(await next('the event'), {
        event: 'NOTIFICATION_UPDATE',
        channel: 'notification.events',
        data: { unread_count: 1 },
      });
    } finally {
      ws.close();
    }
  },

  async a_client_that_does_not_trust_the_ca_refuses_the_server() {
    // `ca` replaces the trusted list (NODE_EXTRA_CA_CERTS included) with another CA.
    const ws = new WebSocket(`wss://${HOST}:${PORT}/app/${KEY}?protocol=7`, { ca: OTHER_CA });
    const error = await within('a certificate error', (done) => {
      ws.on('error', done);
      ws.on('open', () => done(new Error('connected to a server it should not trust')));
    });
    assert.match(String(error.code), /CERT|SIGNATURE|ISSUER/, String(error));
  },

  async plain_ws_on_the_tls_port_gets_no_websocket() {
    const ws = new WebSocket(`ws://${HOST}:${PORT}/app/${KEY}?protocol=7`);
    const outcome = await within('the plain attempt to fail', (done) => {
      ws.on('open', () => done('open'));
      ws.on('error', () => done('error'));
      ws.on('close', () => done('close'));
    });
    assert.notEqual(outcome, 'open');
  },
};

await runScenarios(scenarios);
