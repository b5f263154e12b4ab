#!/usr/bin/env node
// Recovery on the plain JSON protocol with the npm `ws` client: the TCP connection is
// killed (`terminate()`: no closing handshake) while the backend keeps publishing; the
// client reconnects and subscribes with `since` = the position of the last event it saw,
// and must end up with every event exactly once, in order. Past the history window it
// must get the explicit `resume_failed`.
//
// Env (set by tests/real_peers.rs): PAYRELAY_HOST, PAYRELAY_PORT, PAYRELAY_KEY,
// PAYRELAY_SECRET; the app keeps [apps.history] size = 50.
//
// Across nodes (tests/cluster.rs): PAYRELAY_PORT_2 is a second node sharing Redis. The
// client starts on the first node and reconnects to the second, and the backend publishes
// through both in turn, so what the client recovers is the cluster's history in Redis.

import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { deadline, env, runScenarios, sleep } from './harness.mjs';

const HOST = env('PAYRELAY_HOST');
const PORT = env('PAYRELAY_PORT');
// The node a client reconnects to (the same one when there is a single node).
const RESUME_PORT = process.env.PAYRELAY_PORT_2 || PORT;
const PORTS = [...new Set([PORT, RESUME_PORT])];
const BASIC = 'Basic ' + Buffer.from(`${env('PAYRELAY_KEY')}:${env('PAYRELAY_SECRET')}`).toString('base64');
const HISTORY_SIZE = 50;

deadline(60);

let published = 0;
/** Posts to the HTTP API, through each node in turn. */
async function backend(path, body) {
  const port = PORTS[published++ % PORTS.length];
  const res = await fetch(`http://${HOST}:${port}${path}`, {
    method: 'POST',
    headers: { authorization: BASIC, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  assert.ok(res.status < 300, JSON.stringify(json));
  return json;
}

const mint = async (user) => (await backend('/api/v1/tokens', { user_id: user, ttl_secs: 60 })).data.token;
const publish = (user, n) =>
  backend('/api/v1/events', { user_id: user, channel: 'notification.events', event: 'N', data: { n } });

/** A socket whose frames queue up; `next()` waits for one. */
function open(token, port) {
  const ws = new WebSocket(`ws://${HOST}:${port}/api/v1/ws?token=${encodeURIComponent(token)}`);
  const queue = [];
  const waiters = [];
  ws.on('message', (data) => {
    const m = JSON.parse(data.toString());
    const waiter = waiters.shift();
    if (waiter) waiter(m);
    else queue.push(m);
  });
  const client = {
    ws,
    next(what) {
      if (queue.length) return Promise.resolve(queue.shift());
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), 5000);
        waiters.push((m) => {
          clearTimeout(timer);
          resolve(m);
        });
      });
    },
    send: (v) => ws.send(JSON.stringify(v)),
  };
  return new Promise((resolve, reject) => {
    ws.on('open', () => resolve(client));
    ws.on('error', reject);
  });
}

/**
 * Opens a socket for `token` and subscribes to notification.events (resuming from
 * `since`): on the first node, or on the second when resuming.
 */
async function subscribe(token, since) {
  const client = await open(token, since ? RESUME_PORT : PORT);
  assert.equal((await client.next('settings')).event, 'subscribed');
  client.send({ event: 'subscribe', channel: 'notification.events', ...(since ? { since } : {}) });
  const subscribed = await client.next('subscribed');
  assert.equal(subscribed.event, 'subscribed', JSON.stringify(subscribed));
  return { client, subscribed };
}

const scenarios = {
  async 'a killed TCP connection resumes with exactly the missed events, in order'() {
    const user = 'u-resume';
    const token = await mint(user);
    const TOTAL = 40;
    let { client, subscribed } = await subscribe(token);
    let last = subscribed.position;
    assert.match(last, /^0\.[0-9A-Za-z]+$/);
    const seen = [];
    const ids = new Set();
    const take = async (c) => {
      const m = await c.next('an event');
      assert.equal(m.event, 'N', JSON.stringify(m));
      assert.match(m.id, /^evt_[0-9a-f]{32}$/);
      assert.ok(!ids.has(m.id), `duplicate ${m.id}`);
      ids.add(m.id);
      seen.push(m.data.n);
      last = m.position;
    };
    // The backend publishes all along, drop and reconnect included.
    const publishing = (async () => {
      for (let n = 1; n <= TOTAL; n++) {
        await publish(user, n);
        await sleep(10);
      }
    })();
    while (seen.length < 10) await take(client);
    client.ws.terminate();
    await sleep(150);
    ({ client, subscribed } = await subscribe(token, last));
    assert.equal(subscribed.position, last, 'the replay starts right after the last event seen');
    while (seen.length < TOTAL) await take(client);
    await publishing;
    assert.deepEqual(seen, Array.from({ length: TOTAL }, (_, i) => i + 1));
    await sleep(200);
    client.ws.terminate();
  },

  async 'past the history window the resume fails explicitly'() {
    const user = 'u-gone';
    const token = await mint(user);
    let { client, subscribed } = await subscribe(token);
    const last = subscribed.position;
    client.ws.terminate();
    for (let n = 1; n <= HISTORY_SIZE + 1; n++) await publish(user, n);
    ({ client, subscribed } = await subscribe(token, last));
    const failed = await client.next('resume_failed');
    assert.deepEqual(failed, { event: 'resume_failed', channel: 'notification.events', position: subscribed.position });
    assert.equal(subscribed.position.split('.')[0], String(HISTORY_SIZE + 1));
    // Live events go on after the failure.
    await publish(user, 'live');
    const live = await client.next('a live event');
    assert.equal(live.data.n, 'live');
    client.ws.terminate();
  },
};

await runScenarios(scenarios);
