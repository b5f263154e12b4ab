#!/usr/bin/env node
// Three payrelay nodes that behave as one, driven by unmodified clients: pusher-js on one
// node hears what npm `pusher` triggers through another, presence members on two nodes
// see each other, the plain JSON protocol's one-socket-per-user replaces across nodes
// (npm `ws`), and socket.io-client on a third node gets `/v1/events` posted to the
// first and is dropped when its API key is revoked through the second.
//
// Env (set by tests/cluster.rs):
//   PAYRELAY_NODES        host:port of nodes A, B and C, comma-separated
//   PAYRELAY_APP_ID, PAYRELAY_KEY, PAYRELAY_SECRET   the app (client events on)
//   PAYRELAY_MERCHANT     a merchant M
//   PAYRELAY_API_KEY      a live API key of M, which the last scenario revokes ...
//   PAYRELAY_API_KEY_ID   ... through DELETE /apps/{id}/keys/{key_id} on node B
// Optional: PAYRELAY_ONLY=<substring> runs matching scenarios only.
// Exits 0 when every scenario passed; prints FAIL lines and exits 1 otherwise.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import Pusher from 'pusher-js';
import PusherServer from 'pusher';
import WebSocket from 'ws';
import { io } from 'socket.io-client';

import { deadline, env, runScenarios, sleep } from './harness.mjs';

const WAIT_MS = 5000;
const NODES = env('PAYRELAY_NODES').split(',').map((hostPort) => {
  const at = hostPort.lastIndexOf(':');
  return { host: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)), base: `http://${hostPort}` };
});
assert.equal(NODES.length, 3, 'three nodes');
const [A, B, C] = NODES;
const APP_ID = env('PAYRELAY_APP_ID');
const KEY = env('PAYRELAY_KEY');
const SECRET = env('PAYRELAY_SECRET');
const BASIC = 'Basic ' + Buffer.from(`${KEY}:${SECRET}`).toString('base64');
const tag = randomBytes(4).toString('hex');

deadline(60);

/** npm `pusher` pointed at one node: the HTTP API client, and the signer. */
function backend(node) {
  return new PusherServer({ appId: APP_ID, key: KEY, secret: SECRET, host: node.host, port: node.port, useTLS: false });
}

/** pusher-js connected to `node`; `user` (if any) is who presence auth signs for. */
function client(node, user) {
  const signer = backend(node);
  return new Pusher(KEY, {
    cluster: 'mt1',
    wsHost: node.host,
    wsPort: node.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, callback) => {
        const presence =
          user && channelName.startsWith('presence-') ? { user_id: user, user_info: { name: user } } : undefined;
        callback(null, signer.authorizeChannel(socketId, channelName, presence));
      },
    },
  });
}

async function until(pred, label) {
  const end = Date.now() + WAIT_MS;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${label}`);
    await sleep(10);
  }
}

function subscribed(pusher, name) {
  const channel = pusher.subscribe(name);
  return new Promise((resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', () => resolve(channel));
    channel.bind('pusher:subscription_error', (e) => reject(new Error(`subscription error ${JSON.stringify(e)}`)));
  });
}

function memberIds(channel) {
  const ids = [];
  channel.members.each((m) => ids.push(m.id));
  return ids.sort();
}

const scenarios = {
  async 'pusher-js private and presence on A hear npm pusher triggering through B'() {
    const alice = client(A, 'alice');
    try {
      const priv = await subscribed(alice, `private-orders-${tag}`);
      const pres = await subscribed(alice, `presence-desk-${tag}`);
      const got = [];
      priv.bind('paid', (data) => got.push(['private', data]));
      pres.bind('paid', (data) => got.push(['presence', data]));
      const viaB = backend(B);
      await viaB.trigger([`private-orders-${tag}`, `presence-desk-${tag}`], 'paid', { amount: '12.50' });
      await until(() => got.length === 2, 'both events');
      assert.deepEqual(got.map(([c]) => c).sort(), ['presence', 'private']);
      for (const [, data] of got) assert.deepEqual(data, { amount: '12.50' });
      // The HTTP API through C answers for the cluster.
      const res = await backend(C).get({ path: `/channels/presence-desk-${tag}/users` });
      assert.equal(res.status, 200);
      assert.deepEqual((await res.json()).users, [{ id: 'alice' }]);
    } finally {
      alice.disconnect();
    }
  },

  async 'presence members joined on A and C see each other, once'() {
    const name = `presence-room-${tag}`;
    const alice = client(A, 'alice');
    const bob = client(C, 'bob');
    const bobAgain = client(B, 'bob');
    try {
      const onA = await subscribed(alice, name);
      const added = [];
      const removed = [];
      onA.bind('pusher:member_added', (m) => added.push(m.id));
      onA.bind('pusher:member_removed', (m) => removed.push(m.id));
      const onC = await subscribed(bob, name);
      assert.deepEqual(memberIds(onC), ['alice', 'bob'], 'bob on C sees alice on A');
      assert.equal(onC.members.get('alice').info.name, 'alice');
      await until(() => added.length === 1, 'member_added on A');
      assert.deepEqual(memberIds(onA), ['alice', 'bob']);
      // Bob's second socket, on B: no second member_added.
      const onB = await subscribed(bobAgain, name);
      assert.deepEqual(memberIds(onB), ['alice', 'bob']);
      await sleep(300);
      assert.deepEqual(added, ['bob']);
      bob.disconnect();
      await sleep(500);
      assert.deepEqual(removed, [], 'bob still has a socket on B');
      bobAgain.disconnect();
      await until(() => removed.length === 1, 'member_removed on A');
      assert.deepEqual(memberIds(onA), ['alice']);
    } finally {
      alice.disconnect();
      bob.disconnect();
      bobAgain.disconnect();
    }
  },

  async 'plain JSON protocol: a newer socket on C replaces the one on A with 4409'() {
    const res = await fetch(`${A.base}/api/v1/tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: BASIC },
      body: JSON.stringify({ user_id: `u-${tag}`, ttl_secs: 600 }),
    });
    const body = await res.json();
    assert.equal(res.status, 201, JSON.stringify(body));
    const token = body.data.token;
    const open = (node) =>
      new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://${node.host}:${node.port}/api/v1/ws?token=${token}`);
        ws.closed = new Promise((done) => ws.on('close', (code, reason) => done([code, reason.toString()])));
        ws.once('message', (m) => {
          assert.equal(JSON.parse(m.toString()).event, 'subscribed');
          resolve(ws);
        });
        ws.once('error', reject);
      });
    const older = await open(A);
    const newer = await open(C);
    const [code, reason] = await Promise.race([
      older.closed,
      sleep(WAIT_MS).then(() => {
        throw new Error('the older socket was not replaced');
      }),
    ]);
    assert.equal(code, 4409);
    assert.equal(reason, 'Replaced by a newer connection');
    assert.equal(newer.readyState, WebSocket.OPEN);
    newer.close();
  },

  async 'socket.io-client on C gets /v1/events posted to A, dropped when its key is revoked through B'() {
    const merchant = env('PAYRELAY_MERCHANT');
    const socket = io(`ws://${C.host}:${C.port}`, {
      transports: ['websocket'],
      query: { apiKey: env('PAYRELAY_API_KEY') },
      reconnection: false,
    });
    const received = [];
    socket.onAny((event, data) => received.push({ event, data }));
    const disconnected = new Promise((resolve) => socket.on('disconnect', resolve));
    try {
      await Promise.race([
        new Promise((resolve, reject) => {
          socket.on('connect', resolve);
          socket.on('connect_error', reject);
        }),
        sleep(WAIT_MS).then(() => {
          throw new Error('no connect');
        }),
      ]);
      const res = await fetch(`${A.base}/v1/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: BASIC },
        body: JSON.stringify({ merchant_id: merchant, kind: 'merchant', event: 'trade', data: { trade: { id: 'trd_1' } } }),
      });
      assert.equal(res.status, 200, await res.text());
      await until(() => received.length === 1, 'the trade on C');
      assert.deepEqual(received[0], { event: 'trade', data: { trade: { id: 'trd_1' } } });
      const revoke = await fetch(`${B.base}/apps/${APP_ID}/keys/${env('PAYRELAY_API_KEY_ID')}`, {
        method: 'DELETE',
        headers: { authorization: BASIC },
      });
      assert.equal(revoke.status, 200, await revoke.text());
      const reason = await Promise.race([
        disconnected,
        sleep(WAIT_MS).then(() => {
          throw new Error('the socket was not dropped');
        }),
      ]);
      assert.equal(reason, 'io server disconnect');
    } finally {
      socket.close();
    }
  },
};

await runScenarios(scenarios);
