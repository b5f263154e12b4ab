#!/usr/bin/env node
// A socket.io-client that stops reading is closed as a slow consumer the way a node
// shutting down closes its clients: its transport goes, socket.io-client reports
// "transport close" and reconnects by itself. (A Socket.IO DISCONNECT packet would be
// final: "io server disconnect", and the client would stay away for good.)
//
// Env (set by tests/real_peers.rs):
//   PAYRELAY_HOST, PAYRELAY_PORT, PAYRELAY_KEY, PAYRELAY_SECRET (app credentials)
//   PAYRELAY_MERCHANT, PAYRELAY_API_KEY   merchant M and a live API key of M
//   the node runs with outbound_queue_size = 16 and pong_timeout_secs = 1, so a socket
//   that stops reading is given up on within seconds.
// Optional: PAYRELAY_ONLY=<substring> runs matching scenarios only.
// Exits 0 when every scenario passed; prints FAIL lines and exits 1 otherwise.

import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { deadline, env, runScenarios, sleep } from './harness.mjs';

const WAIT_MS = 20000;

const HOST = env('PAYRELAY_HOST');
const PORT = env('PAYRELAY_PORT');
const MERCHANT = env('PAYRELAY_MERCHANT');
const API_KEY = env('PAYRELAY_API_KEY');
const BASE = `http://${HOST}:${PORT}`;
const BASIC = 'Basic ' + Buffer.from(`${env('PAYRELAY_KEY')}:${env('PAYRELAY_SECRET')}`).toString('base64');

deadline(90);

async function publish(event, data) {
  const res = await fetch(`${BASE}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: BASIC },
    body: JSON.stringify({ merchant_id: MERCHANT, kind: 'merchant', event, data }),
  });
  assert.equal(res.status, 200, await res.text());
}

/** The node's count of connections closed as slow consumers (Prometheus text). */
async function slowConsumerCloses() {
  const text = await (await fetch(`${BASE}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('payrelay_slow_consumer_disconnects_total'));
  return line ? Number(line.split(/\s+/).pop()) : 0;
}

async function until(check, what) {
  const end = Date.now() + WAIT_MS;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const scenarios = {
  async 'a slow consumer is closed at the transport and reconnects by itself'() {
    const socket = io(`ws://${HOST}:${PORT}`, {
      transports: ['websocket'],
      query: { apiKey: API_KEY },
      reconnectionDelay: 100,
      reconnectionDelayMax: 500,
    });
    let connects = 0;
    const reasons = [];
    const received = [];
    socket.on('connect', () => connects++);
    socket.on('disconnect', (reason) => reasons.push(reason));
    socket.on('trade', (data) => received.push(data));
    try {
      await until(() => connects === 1, 'the first connect');

      // Stop reading: the server's writes back up into the TCP buffers, then its queues.
      const tcp = socket.io.engine.transport.ws._socket;
      tcp.pause();
      const before = await slowConsumerCloses();
      const pad = 'x'.repeat(8000);
      let published = 0;
      await until(async () => {
        await Promise.all(
          Array.from({ length: 20 }, () => publish('trade', { trade: { id: `t${published++}`, pad } })),
        );
        return (await slowConsumerCloses()) > before;
      }, 'the node to close the socket as a slow consumer');

      // Read again: what was buffered, then the end of the transport.
      tcp.resume();
      await until(() => reasons.length > 0, 'the disconnect');
      assert.notEqual(reasons[0], 'io server disconnect', 'a Socket.IO DISCONNECT is final for socket.io-client');
      assert.match(reasons[0], /^transport (close|error)$/, `disconnect reason ${reasons[0]}`);

      // socket.io-client reconnects on its own, and the new socket receives events.
      await until(() => connects === 2 && socket.connected, 'the automatic reconnect');
      received.length = 0;
      await publish('trade', { trade: { id: 'after-reconnect' } });
      await until(() => received.some((d) => d.trade.id === 'after-reconnect'), 'an event after the reconnect');
    } finally {
      socket.close();
    }
  },
};

await runScenarios(scenarios);
