#!/usr/bin/env node
// Recovery with unmodified pusher-js 8 and the shipped helper (clients/pusher-resume.js).
// pusher-js connects through a TCP proxy in this script; the proxy kills the TCP
// connections (no WebSocket close) while the npm `pusher` library keeps publishing.
// pusher-js reconnects by itself, the helper resubscribes with `resume_from`, and the
// channel must have received every event exactly once, in order. Past the history
// window the channel must get `pusher:resume_failed`. It also proves pusher-js ignores
// the extra `id` and `position` fields: the bound callbacks get the data as published.
//
// Env (set by tests/real_peers.rs): PAYRELAY_HOST, PAYRELAY_PORT, PAYRELAY_APP_ID,
// PAYRELAY_KEY, PAYRELAY_SECRET; the app keeps [apps.history] size = 50.
//
// Across nodes (tests/cluster.rs): PAYRELAY_PORT_2 is a second node sharing Redis. The
// proxy sends pusher-js to the first node until the kill and to the second after it, and
// the backend triggers through both in turn, so what pusher-js recovers is the cluster's
// history in Redis.

import assert from 'node:assert/strict';
import net from 'node:net';
import { createRequire } from 'node:module';

import Pusher from 'pusher-js';
import PusherServer from 'pusher';
import { deadline, env, runScenarios, sleep } from './harness.mjs';

const require = createRequire(import.meta.url);
const { enableResume } = require('../../clients/pusher-resume.js');

const HOST = env('PAYRELAY_HOST');
const PORT = Number(env('PAYRELAY_PORT'));
// The node pusher-js reconnects to (the same one when there is a single node).
const RESUME_PORT = Number(process.env.PAYRELAY_PORT_2 || PORT);
const HISTORY_SIZE = 50;

deadline(90);

const backends = [...new Set([PORT, RESUME_PORT])].map(
  (port) =>
    new PusherServer({
      appId: env('PAYRELAY_APP_ID'),
      key: env('PAYRELAY_KEY'),
      secret: env('PAYRELAY_SECRET'),
      host: HOST,
      port,
      useTLS: false,
    }),
);
let triggered = 0;
/** npm `pusher`, through each node in turn. */
const backend = {
  trigger: (...args) => backends[triggered++ % backends.length].trigger(...args),
};

/**
 * A TCP proxy to the node. `kill()` destroys every proxied connection (both sides, no
 * closing handshake) and sends later connections to the second node (RESUME_PORT); while
 * `hold` is set, new connections wait unconnected.
 */
async function proxy() {
  const live = new Set();
  const waiting = [];
  const forward = (client) => {
    const upstream = net.connect(state.upstream, HOST);
    state.opened.push(state.upstream);
    live.add(client);
    live.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      live.delete(client);
      live.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.resume();
  };
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    if (state.hold) waiting.push(client);
    else forward(client);
  });
  const state = {
    hold: false,
    upstream: PORT,
    opened: [],
    kill() {
      this.upstream = RESUME_PORT;
      for (const socket of live) socket.destroy();
      live.clear();
    },
    release() {
      this.hold = false;
      for (const client of waiting.splice(0)) forward(client);
    },
    close: () => server.close(),
  };
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = server.address().port;
  return state;
}

function client(port) {
  const pusher = new Pusher(env('PAYRELAY_KEY'), {
    cluster: 'mt1',
    wsHost: '127.0.0.1',
    wsPort: port,
    forceTLS: false,
    enabledTransports: ['ws'],
  });
  const resume = enableResume(pusher);
  return { pusher, resume };
}

const within = (promise, ms, what) =>
  Promise.race([promise, sleep(ms).then(() => Promise.reject(new Error(`timed out waiting for ${what}`)))]);

function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.bind('pusher:subscription_succeeded', resolve);
    channel.bind('pusher:subscription_error', reject);
  });
}

const scenarios = {
  async 'pusher-js with the helper gets exactly the events it missed while its TCP connection was dead'() {
    const tcp = await proxy();
    const { pusher, resume } = client(tcp.port);
    const name = 'resume-orders';
    const channel = pusher.subscribe(name);
    const seen = [];
    channel.bind('N', (data, metadata) => {
      // pusher-js hands over the data as published, extra frame fields ignored.
      assert.deepEqual(Object.keys(data), ['n']);
      seen.push(data.n);
    });
    await within(subscribed(channel), 5000, 'the subscription');
    assert.match(resume.position(name), /^0\.[0-9A-Za-z]+$/);
    const TOTAL = 60;
    const reconnected = [];
    pusher.connection.bind('state_change', ({ current }) => reconnected.push(current));
    const publishing = (async () => {
      for (let n = 1; n <= TOTAL; n++) {
        await backend.trigger(name, 'N', { n });
        await sleep(10);
      }
    })();
    while (seen.length < 10) await sleep(5);
    tcp.kill();
    await publishing;
    for (let i = 0; i < 200 && seen.length < TOTAL; i++) await sleep(25);
    await sleep(300); // nothing more may come
    assert.ok(reconnected.includes('connected'), `pusher-js reconnected: ${reconnected}`);
    assert.equal(tcp.opened.at(-1), RESUME_PORT, `connections went to ${tcp.opened}`);
    assert.deepEqual(seen, Array.from({ length: TOTAL }, (_, i) => i + 1), 'every event once, in order');
    assert.equal(resume.position(name).split('.')[0], String(TOTAL));
    pusher.disconnect();
    tcp.close();
  },

  async 'past the history window pusher-js gets pusher:resume_failed on the channel'() {
    const tcp = await proxy();
    const { pusher, resume } = client(tcp.port);
    const name = 'resume-gone';
    const channel = pusher.subscribe(name);
    const seen = [];
    channel.bind('N', (data) => seen.push(data.n));
    await within(subscribed(channel), 5000, 'the subscription');
    const failed = new Promise((resolve) => channel.bind('pusher:resume_failed', resolve));
    tcp.hold = true;
    tcp.kill();
    for (let n = 1; n <= HISTORY_SIZE + 1; n++) await backend.trigger(name, 'N', { n });
    tcp.release();
    const data = await within(failed, 20000, 'pusher:resume_failed');
    assert.match(data.position, new RegExp(`^${HISTORY_SIZE + 1}\\.`));
    assert.equal(resume.position(name), data.position, 'the helper starts again from there');
    assert.deepEqual(seen, [], 'nothing replayed: the client reloads its state instead');
    await backend.trigger(name, 'N', { n: 'live' });
    for (let i = 0; i < 100 && seen.length < 1; i++) await sleep(20);
    assert.deepEqual(seen, ['live']);
    pusher.disconnect();
    tcp.close();
  },
};

await runScenarios(scenarios);
