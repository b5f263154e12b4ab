#!/usr/bin/env node
// End-to-end compatibility check of a payrelay server with unmodified
// third-party Pusher libraries:
//   - pusher-js 8 (Node build) as the WebSocket client,
//   - npm `pusher` 5 as the HTTP API client and as the signer behind this
//     script's own channel-authorization / user-authentication endpoint,
//   - PyPI `pusher` (via pusher_py_trigger.py) as a second HTTP API client,
//   - `ws` for a few raw protocol-7 frame checks.
//
// Env: PAYRELAY_HOST, PAYRELAY_PORT, PAYRELAY_APP_ID, PAYRELAY_KEY,
//      PAYRELAY_SECRET, PAYRELAY_PYTHON (venv python for the PyPI scenario).
// Optional: PAYRELAY_ONLY=<substring>  run only scenarios whose name contains it
//           PAYRELAY_DEBUG=1           pusher-js debug logging + all frames
//           PAYRELAY_PEER_TIMEOUT_S    overall timeout (default 30)
// The app must have client events enabled.
// Exits 0 when every scenario passed; otherwise prints FAIL lines and exits 1.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';

import Pusher from 'pusher-js';
import PusherServer from 'pusher';
import WebSocket from 'ws';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const PUSHER_JS_VERSION = require('pusher-js/package.json').version;
const DEBUG = !!process.env.PAYRELAY_DEBUG;
const OVERALL_S = Number(process.env.PAYRELAY_PEER_TIMEOUT_S || 30);
const WAIT_MS = 4000; // any single expected thing must happen within this

function env(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`FAIL: environment variable ${name} is not set`);
    process.exit(2);
  }
  return v;
}

const HOST = env('PAYRELAY_HOST');
const PORT = Number(env('PAYRELAY_PORT'));
const APP_ID = env('PAYRELAY_APP_ID');
const KEY = env('PAYRELAY_KEY');
const SECRET = env('PAYRELAY_SECRET');

process.on('unhandledRejection', (e) => {
  console.error('FAIL: unhandled rejection:', e);
  process.exit(1);
});
process.on('uncaughtException', (e) => {
  console.error('FAIL: uncaught exception:', e);
  process.exit(1);
});

const overall = setTimeout(() => {
  console.error(`FAIL: overall timeout of ${OVERALL_S}s exceeded`);
  process.exit(1);
}, OVERALL_S * 1000);

// The Node build exports PusherWithEncryption, whose constructor copies these
// statics onto the core class, so setting them here works.
Pusher.logToConsole = DEBUG;

const server = new PusherServer({
  appId: APP_ID,
  key: KEY,
  secret: SECRET,
  host: HOST,
  port: PORT,
  useTLS: false,
  timeout: WAIT_MS,
});
// Signs with a wrong secret: used to produce auth the server must reject.
const forger = new PusherServer({
  appId: APP_ID, key: KEY, secret: SECRET + '-wrong', host: HOST, port: PORT, useTLS: false,
});

const tag = randomBytes(4).toString('hex');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...a) => console.log('  ', ...a);

// ------------------------------------------------------------------ helpers

/** Polls `pred` until true; throws (with `diag()` appended) after `ms`. */
async function until(pred, label, diag = () => '', ms = WAIT_MS) {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) {
      const d = diag();
      throw new Error(`timed out after ${ms}ms waiting for: ${label}${d ? '\n' + d : ''}`);
    }
    await sleep(10);
  }
}

/** Records every event a pusher-js channel emits (incl. pusher:* ones), in order. */
function record(channel) {
  const seen = [];
  channel.bind_global((event, data) => seen.push({ event, data }));
  return seen;
}

// ----------------------------------------------------- auth endpoint (node:http)
// pusher-js (Node build, transport 'ajax') POSTs application/x-www-form-urlencoded
// `socket_id=..&channel_name=..` (channel auth) or `socket_id=..` (user auth),
// plus the `params` given in the client options — the only way to tell this
// endpoint which user the client is.
const authLog = [];
const authServer = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    const form = new URLSearchParams(body);
    const entry = {
      path: req.url,
      method: req.method,
      contentType: req.headers['content-type'],
      form: Object.fromEntries(form),
    };
    authLog.push(entry);
    const reply = (status, obj) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    try {
      const socketId = form.get('socket_id');
      if (req.method !== 'POST') return reply(405, { error: 'POST only' });
      if (req.url === '/auth/channel') {
        const channel = form.get('channel_name');
        const signer = channel.includes('-denied-') ? forger : server;
        if (channel.startsWith('presence-')) {
          const presenceData = {
            user_id: form.get('user_id'),
            user_info: { name: form.get('user_name') },
          };
          return reply(200, signer.authorizeChannel(socketId, channel, presenceData));
        }
        return reply(200, signer.authorizeChannel(socketId, channel));
      }
      if (req.url === '/auth/user') {
        return reply(200, server.authenticateUser(socketId, { id: form.get('user_id'), user_info: {} }));
      }
      reply(404, { error: 'unknown path' });
    } catch (e) {
      console.error('   auth endpoint error:', e);
      reply(500, { error: String(e) });
    }
  });
});
await new Promise((r) => authServer.listen(0, '127.0.0.1', r));
const AUTH_BASE = `http://127.0.0.1:${authServer.address().port}`;

// ------------------------------------------------------------- pusher-js clients
let clients = []; // of the running scenario, disconnected after it

/** A connected pusher-js client; `user` = {id, name} tells the auth endpoint who it is. */
async function client(label, user = {}) {
  const p = new Pusher(KEY, {
    cluster: 'mt1', // required by pusher-js; ignored because wsHost is set
    wsHost: HOST,
    wsPort: PORT,
    forceTLS: false,
    enabledTransports: ['ws'],
    channelAuthorization: {
      endpoint: `${AUTH_BASE}/auth/channel`,
      transport: 'ajax',
      params: { user_id: user.id || '', user_name: user.name || '' },
    },
    userAuthentication: {
      endpoint: `${AUTH_BASE}/auth/user`,
      transport: 'ajax',
      params: { user_id: user.id || '' },
    },
  });
  p.label = label;
  p.frames = []; // every decoded frame received, for diagnostics
  p.errors = []; // connection 'error' events (pusher:error frames, close codes)
  p.states = ['initialized'];
  p.sent = []; // every frame pusher-js sent (wrapped below), for ordering checks
  const send = p.connection.send_event.bind(p.connection);
  p.connection.send_event = (event, data, channel) => {
    p.sent.push({ event, data, channel });
    if (DEBUG) console.log(`   [${label}] ->`, JSON.stringify({ event, data, channel }));
    return send(event, data, channel);
  };
  p.connection.bind('message', (m) => {
    p.frames.push(m);
    if (DEBUG) console.log(`   [${label}] <-`, JSON.stringify(m));
  });
  p.connection.bind('error', (e) => p.errors.push(e));
  p.connection.bind('state_change', (s) => p.states.push(s.current));
  clients.push(p);
  await until(() => p.connection.state === 'connected', `${label} pusher-js state 'connected'`, () => diag(p));
  return p;
}

function diag(...ps) {
  return ps
    .map((p) => {
      const frames = p.frames.slice(-12).map((f) => '      ' + JSON.stringify(f)).join('\n');
      return `    [${p.label}] states=${p.states.join('>')} errors=${JSON.stringify(p.errors)}\n` +
        `    [${p.label}] last frames:\n${frames || '      (none)'}`;
    })
    .join('\n');
}

async function subscribed(p, name) {
  const ch = p.subscribe(name);
  if (!ch.subscribed) {
    const errs = [];
    const onErr = (e) => errs.push(e);
    ch.bind('pusher:subscription_error', onErr);
    await until(() => ch.subscribed || errs.length, `${p.label} subscription_succeeded on ${name}`, () => diag(p));
    ch.unbind('pusher:subscription_error', onErr);
    if (!ch.subscribed) throw new Error(`${p.label}: subscription to ${name} failed: ${JSON.stringify(errs)}\n${diag(p)}`);
  }
  return ch;
}

let barrierSeq = 0;
/** Triggers a fresh event on `name` and waits until every channel in `chans` got it.
 * Events sent to a connection before the barrier arrive before it, so anything
 * that has not arrived by then was not sent. */
async function barrier(name, chans) {
  const ev = `barrier-${++barrierSeq}`;
  const got = chans.map(() => false);
  const cbs = chans.map((ch, i) => {
    const cb = () => (got[i] = true);
    ch.bind(ev, cb);
    return cb;
  });
  const res = await server.trigger(name, ev, {});
  assert.equal(res.status, 200);
  await until(() => got.every(Boolean), `barrier ${ev} on ${name}`, () => diag(...chans.map((c) => c.pusher)));
  chans.forEach((ch, i) => ch.unbind(ev, cbs[i]));
}

/** Sends pusher:ping and waits for the pong: the server has then processed
 * every frame this client sent before. */
async function roundTrip(p) {
  const before = p.frames.filter((f) => f.event === 'pusher:pong').length;
  p.send_event('pusher:ping', {});
  await until(() => p.frames.filter((f) => f.event === 'pusher:pong').length > before,
    `${p.label} pusher:pong`, () => diag(p));
}

/** Resolves `promise`, or throws after `ms`. */
async function within(promise, label, diagFn = () => '', ms = WAIT_MS) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for: ${label}\n${diagFn()}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(t);
  }
}

async function readJson(res) {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`HTTP API answered ${res.status} with non-JSON body: ${text}`);
  }
}

/** `occupied` of GET /channels/<name>. */
async function occupied(name) {
  const res = await server.get({ path: `/channels/${name}` });
  return (await readJson(res)).occupied;
}

// ---------------------------------------------------------------- scenarios

const scenarios = [];
const scenario = (name, fn) => scenarios.push({ name, fn });

function parseFrame(m) {
  try {
    return JSON.parse(m.toString());
  } catch {
    return { unparseable: m.toString() };
  }
}

scenario('raw protocol frames (ws)', async () => {
  const ws = new WebSocket(`ws://${HOST}:${PORT}/app/${KEY}?protocol=7&client=js&version=${PUSHER_JS_VERSION}&flash=false`);
  const frames = [];
  ws.on('message', (m) => frames.push(parseFrame(m)));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const show = () => 'frames: ' + JSON.stringify(frames);
  await until(() => frames.length >= 1, 'pusher:connection_established', show);
  const est = frames[0];
  assert.equal(est.event, 'pusher:connection_established', show());
  assert.equal(typeof est.data, 'string', 'connection_established data must be a JSON string');
  const { socket_id, activity_timeout } = JSON.parse(est.data);
  assert.match(socket_id, /^\d+\.\d+$/, 'socket_id format');
  assert.ok(Number.isInteger(activity_timeout) && activity_timeout > 0, 'activity_timeout');
  log(`connection_established socket_id=${socket_id} activity_timeout=${activity_timeout}`);

  ws.send(JSON.stringify({ event: 'pusher:ping', data: {} }));
  await until(() => frames.some((f) => f.event === 'pusher:pong'), 'pusher:pong after pusher:ping', show);

  const ch = `raw-${tag}`;
  ws.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: ch } }));
  await until(() => frames.some((f) => f.event === 'pusher_internal:subscription_succeeded' && f.channel === ch),
    'pusher_internal:subscription_succeeded', show);
  await server.trigger(ch, 'evt', { n: 1 });
  await until(() => frames.some((f) => f.event === 'evt'), 'evt frame', show);
  const { id, position, ...evt } = frames.find((f) => f.event === 'evt');
  // payrelay's extra fields (pusher_fields): the event id and its position in the channel.
  assert.match(id, /^evt_[0-9a-f]{32}$/);
  assert.match(position, /^1\.[0-9A-Za-z]+$/);
  assert.deepEqual(evt, { event: 'evt', channel: ch, data: '{"n":1}' },
    'a triggered event reaches the socket as {event, channel, data:<the JSON string as triggered>}');
  ws.close();

  // Unknown app key: pusher:error 4001 then close (pusher-js maps 4000-4099 to "refused").
  const bad = new WebSocket(`ws://${HOST}:${PORT}/app/no-such-key-${tag}?protocol=7&client=js&version=${PUSHER_JS_VERSION}&flash=false`);
  const badFrames = [];
  let closeCode = null;
  bad.on('message', (m) => badFrames.push(parseFrame(m)));
  bad.on('close', (code) => (closeCode = code));
  bad.on('error', () => {});
  await until(() => closeCode !== null, 'server closes a socket with an unknown app key',
    () => 'frames: ' + JSON.stringify(badFrames));
  const err = badFrames.find((f) => f.event === 'pusher:error');
  log(`unknown key -> frames ${JSON.stringify(badFrames)} close code ${closeCode}`);
  assert.ok(err, 'expected a pusher:error frame before close for an unknown app key');
  const errData = typeof err.data === 'string' ? JSON.parse(err.data) : err.data;
  assert.equal(errData.code, 4001, 'unknown app key -> pusher:error code 4001');
});

scenario('oversized messages get pusher:error 4300 and close 1009 (ws)', async () => {
  // The test node's limit is the default 10 KiB; the server reads up to twice that and
  // refuses anything larger from its frame header, unread. Both must look the same.
  for (const size of [15 * 1024, 4 * 1024 * 1024]) {
    const ws = new WebSocket(`ws://${HOST}:${PORT}/app/${KEY}?protocol=7&client=js&version=${PUSHER_JS_VERSION}`);
    const frames = [];
    let closed = null;
    ws.on('message', (m) => frames.push(parseFrame(m)));
    ws.on('close', (code, reason) => (closed = { code, reason: reason.toString() }));
    ws.on('error', () => {});
    const show = () => `size ${size}: frames ${JSON.stringify(frames)} close ${JSON.stringify(closed)}`;
    await until(() => frames.some((f) => f.event === 'pusher:connection_established'), 'connection_established', show);
    ws.send(JSON.stringify({ event: 'pusher:ping', data: { pad: 'x'.repeat(size) } }));
    await until(() => closed !== null, 'the close after an oversized message', show);
    const err = frames.find((f) => f.event === 'pusher:error');
    assert.ok(err, `a pusher:error before the close; ${show()}`);
    assert.equal(err.data.code, 4300, show());
    assert.match(err.data.message, /exceeds the limit/, show());
    assert.equal(closed.code, 1009, show());
  }
});

scenario('public channel', async () => {
  const a = await client('A');
  const name = `public-${tag}`;
  const ch = await subscribed(a, name);
  const seen = record(ch);
  const res = await server.trigger(name, 'evt', { n: 1 });
  assert.equal(res.status, 200, 'trigger HTTP status');
  log('trigger response body:', await res.text());
  await until(() => seen.some((e) => e.event === 'evt'), 'evt on public channel', () => diag(a));
  await barrier(name, [ch]);
  const evts = seen.filter((e) => e.event === 'evt');
  assert.equal(evts.length, 1, 'evt received exactly once');
  assert.deepEqual(evts[0].data, { n: 1 });
});

scenario('private channel (auth endpoint) + triggerBatch', async () => {
  const a = await client('A');
  const name = `private-orders-${tag}`;
  const before = authLog.length;
  const ch = await subscribed(a, name);
  const req = authLog.slice(before).find((r) => r.form.channel_name === name);
  assert.ok(req, 'pusher-js called the channel auth endpoint');
  assert.equal(req.contentType, 'application/x-www-form-urlencoded');
  assert.equal(req.form.socket_id, a.connection.socket_id);
  log('auth request form:', JSON.stringify(req.form));

  const seen = record(ch);
  await server.trigger(name, 'evt', { n: 2 });
  await until(() => seen.some((e) => e.event === 'evt'), 'evt on private channel', () => diag(a));
  assert.deepEqual(seen.find((e) => e.event === 'evt').data, { n: 2 });

  const res = await server.triggerBatch([
    { channel: name, name: 'b1', data: { i: 1 } },
    { channel: name, name: 'b2', data: { i: 2 } },
  ]);
  assert.equal(res.status, 200, 'triggerBatch HTTP status');
  log('triggerBatch response body:', await res.text());
  await until(() => seen.filter((e) => e.event.startsWith('b')).length >= 2, 'b1 and b2', () => diag(a));
  const batch = seen.filter((e) => e.event === 'b1' || e.event === 'b2');
  assert.deepEqual(batch, [
    { event: 'b1', data: { i: 1 } },
    { event: 'b2', data: { i: 2 } },
  ], 'both batch events, in order');

  // A signature made with the wrong secret must not subscribe the socket.
  const denied = `private-denied-${tag}`;
  const dch = a.subscribe(denied);
  const dseen = record(dch);
  await until(() => a.sent.some((f) => f.event === 'pusher:subscribe' && f.data.channel === denied),
    'pusher-js sends pusher:subscribe with the forged auth', () => diag(a));
  await roundTrip(a); // the server has handled that subscribe now
  await server.trigger(denied, 'leak', { secret: true });
  await barrier(name, [ch]);
  assert.ok(!dch.subscribed, `${denied} must not be subscribed with a forged signature\n${diag(a)}`);
  assert.ok(!dseen.some((e) => e.event === 'leak'), 'event on a channel with failed auth was delivered');
  const answer = a.frames.filter((f) => f.event === 'pusher:error' || f.event === 'pusher:subscription_error');
  log('server answer to forged auth:', JSON.stringify(answer));
  assert.equal(a.connection.state, 'connected', 'forged auth must not kill the connection');
});

scenario('presence channel (members, multi-socket user)', async () => {
  const name = `presence-room-${tag}`;
  const a = await client('A', { id: 'alice', name: 'Alice' });
  const chA = await subscribed(a, name);
  assert.equal(chA.members.count, 1, 'A alone');
  assert.deepEqual(chA.members.me, { id: 'alice', info: { name: 'Alice' } });
  const addedOnA = [];
  chA.bind('pusher:member_added', (m) => addedOnA.push(m));

  const b = await client('B', { id: 'bob', name: 'Bob' });
  const chB = await subscribed(b, name);
  const addedOnB = [];
  const removedOnB = [];
  chB.bind('pusher:member_added', (m) => addedOnB.push(m));
  chB.bind('pusher:member_removed', (m) => removedOnB.push(m));
  assert.equal(chB.members.count, 2, 'B sees alice and bob');
  assert.deepEqual(chB.members.get('alice'), { id: 'alice', info: { name: 'Alice' } });
  assert.deepEqual(chB.members.me, { id: 'bob', info: { name: 'Bob' } });
  await until(() => addedOnA.length >= 1, 'member_added(bob) on A', () => diag(a));
  assert.deepEqual(addedOnA, [{ id: 'bob', info: { name: 'Bob' } }]);
  assert.equal(chA.members.count, 2);

  // Second socket for alice: no second member_added on B.
  const c = await client('C', { id: 'alice', name: 'Alice' });
  const chC = await subscribed(c, name);
  assert.equal(chC.members.count, 2, 'C sees 2 distinct users');
  const probe = `probe-${tag}`;
  await subscribed(c, probe);
  await barrier(name, [chA, chB, chC]);
  assert.deepEqual(addedOnB, [], `a second socket of alice must not emit member_added on B\n${diag(b)}`);
  assert.equal(chB.members.count, 2);

  // Closing that second socket: no member_removed (alice still has A).
  c.disconnect();
  await until(() => c.connection.state === 'disconnected', 'C disconnected');
  const end = Date.now() + WAIT_MS;
  while (await occupied(probe)) {
    if (Date.now() > end) throw new Error(`${probe} still occupied ${WAIT_MS}ms after C disconnected`);
    await sleep(25);
  }
  await barrier(name, [chA, chB]);
  assert.deepEqual(removedOnB, [], `closing alice's 2nd socket must not emit member_removed\n${diag(b)}`);
  assert.equal(chB.members.count, 2);

  a.disconnect();
  await until(() => removedOnB.length >= 1, 'member_removed(alice) on B after A disconnects', () => diag(b));
  assert.deepEqual(removedOnB, [{ id: 'alice', info: { name: 'Alice' } }]);
  assert.equal(chB.members.count, 1);
});

scenario('client events', async () => {
  const name = `private-chat-${tag}`;
  const a = await client('A');
  const b = await client('B');
  const chA = await subscribed(a, name);
  const chB = await subscribed(b, name);
  const onA = record(chA);
  const onB = record(chB);
  assert.ok(chA.trigger('client-typing', { x: 1 }), 'channel.trigger returned false');
  await until(() => onB.some((e) => e.event === 'client-typing'), 'client-typing on B', () => diag(a, b));
  assert.deepEqual(onB.find((e) => e.event === 'client-typing').data, { x: 1 });
  await barrier(name, [chA, chB]);
  assert.ok(!onA.some((e) => e.event === 'client-typing'), 'client event echoed back to its sender');
  assert.equal(onB.filter((e) => e.event === 'client-typing').length, 1, 'client event delivered once');

  // On presence channels the server adds the sender's user_id (pusher-js passes it as metadata).
  const pname = `presence-chat-${tag}`;
  const pa = await client('PA', { id: 'alice', name: 'Alice' });
  const pb = await client('PB', { id: 'bob', name: 'Bob' });
  const pchA = await subscribed(pa, pname);
  const pchB = await subscribed(pb, pname);
  let got = null;
  pchB.bind('client-wave', (data, meta) => (got = { data, meta }));
  pchA.trigger('client-wave', { hi: 1 });
  await until(() => got, 'client-wave on presence channel', () => diag(pa, pb));
  assert.deepEqual(got, { data: { hi: 1 }, meta: { user_id: 'alice' } },
    'client event on presence channel carries user_id of the sender');
  const raw = pb.frames.find((f) => f.event === 'client-wave');
  log('client event frame on presence channel:', JSON.stringify(raw));

  // Client events on public channels are not allowed.
  const pub = `public-chat-${tag}`;
  const qa = await subscribed(a, pub);
  const qb = await subscribed(b, pub);
  const onQB = record(qb);
  qa.trigger('client-nope', { x: 1 });
  await roundTrip(a); // the server has handled client-nope now
  await barrier(pub, [qa, qb]);
  assert.ok(!onQB.some((e) => e.event === 'client-nope'), 'client event on a public channel was delivered');
  log('server answer to client event on public channel:',
    JSON.stringify(a.frames.filter((f) => f.event === 'pusher:error')));
});

scenario('cache channels', async () => {
  const name = `cache-rates-${tag}`;
  await server.trigger(name, 'rate', { v: 1 });
  await server.trigger(name, 'rate', { v: 2 });
  const a = await client('A');
  const ch = a.subscribe(name);
  const seen = record(ch);
  await until(() => seen.some((e) => e.event === 'rate'), 'cached event after subscribe', () => diag(a));
  await barrier(name, [ch]);
  const order = seen.map((e) => e.event).filter((e) => !e.startsWith('barrier-'));
  assert.deepEqual(order, ['pusher:subscription_succeeded', 'rate'],
    'subscription_succeeded then exactly one cached event');
  assert.deepEqual(seen.find((e) => e.event === 'rate').data, { v: 2 }, 'the LAST event is cached');

  const empty = `cache-empty-${tag}`;
  const ech = a.subscribe(empty);
  const eseen = record(ech);
  await until(() => eseen.some((e) => e.event === 'pusher:cache_miss'), 'pusher:cache_miss', () => diag(a));
  assert.deepEqual(eseen.map((e) => e.event), ['pusher:subscription_succeeded', 'pusher:cache_miss']);
  log('cache miss frame:', JSON.stringify(a.frames.find((f) => f.event === 'pusher:cache_miss')));
});

scenario('socket_id exclusion', async () => {
  const name = `excl-${tag}`;
  const a = await client('A');
  const b = await client('B');
  const chA = await subscribed(a, name);
  const chB = await subscribed(b, name);
  const onA = record(chA);
  const onB = record(chB);
  await server.trigger(name, 'evt', { n: 3 }, { socket_id: a.connection.socket_id });
  await server.triggerBatch([{ channel: name, name: 'bevt', data: { n: 4 }, socket_id: a.connection.socket_id }]);
  await until(() => onB.some((e) => e.event === 'bevt'), 'evt and bevt on B', () => diag(b));
  await barrier(name, [chA, chB]);
  assert.deepEqual(onB.filter((e) => !e.event.startsWith('barrier-')),
    [{ event: 'evt', data: { n: 3 } }, { event: 'bevt', data: { n: 4 } }]);
  assert.ok(!onA.some((e) => e.event === 'evt'), 'trigger socket_id: excluded socket got the event');
  assert.ok(!onA.some((e) => e.event === 'bevt'), 'batch socket_id: excluded socket got the event');
});

scenario('user sign-in, sendToUser, terminateUserConnections', async () => {
  const u = await client('U', { id: 'u1' });
  const v = await client('V', { id: 'u2' });
  const signinErrors = [];
  u.user.bind('pusher:signin_error', (e) => signinErrors.push(e));
  u.signin();
  v.signin();
  await within(u.user.signinDonePromise, 'U signin done (pusher:signin_success)', () => diag(u));
  await within(v.user.signinDonePromise, 'V signin done (pusher:signin_success)', () => diag(v));
  assert.ok(u.user.user_data && u.user.user_data.id === 'u1',
    `U not signed in (signin_error: ${JSON.stringify(signinErrors)})\n${diag(u)}`);
  assert.equal(v.user.user_data?.id, 'u2', `V not signed in\n${diag(v)}`);
  const ok = u.frames.find((f) => f.event === 'pusher:signin_success');
  log('signin_success frame (decoded):', JSON.stringify(ok));
  // pusher-js subscribes to #server-to-user-<id> right after signin_success;
  // give the server's answer to that a moment (it is not required to send one).
  await until(() => u.user.serverToUserChannel?.subscribed, '', () => '', 1000).catch(() => {});
  log(`#server-to-user-u1 subscription confirmed: ${!!u.user.serverToUserChannel?.subscribed}`);
  if (u.errors.length) log('U errors so far:', JSON.stringify(u.errors));

  const gotU = [];
  const gotV = [];
  u.user.bind('hello', (d) => gotU.push(d));
  v.user.bind('hello', (d) => gotV.push(d));
  v.user.bind('ping', (d) => gotV.push({ ping: d }));
  const res = await server.sendToUser('u1', 'hello', { msg: 'hi u1' });
  assert.equal(res.status, 200);
  await until(() => gotU.length >= 1, 'user event hello on U', () => diag(u));
  assert.deepEqual(gotU, [{ msg: 'hi u1' }]);
  await server.sendToUser('u2', 'ping', { n: 1 });
  await until(() => gotV.length >= 1, 'user event ping on V', () => diag(v));
  assert.deepEqual(gotV, [{ ping: { n: 1 } }], 'V (u2) must only get its own user events');

  const mark = u.states.length;
  const tres = await server.terminateUserConnections('u1');
  assert.equal(tres.status, 200);
  log('terminateUserConnections response body:', await tres.text());
  await until(() => u.states.length > mark, "U's connection leaves 'connected'", () => diag(u));
  log(`U after terminate: states=${u.states.join('>')} errors=${JSON.stringify(u.errors)}`);
  await sleep(50);
  assert.equal(v.connection.state, 'connected', "u2's connection was terminated too");
  await server.sendToUser('u2', 'ping', { n: 2 });
  await until(() => gotV.length >= 2, 'V still gets user events after u1 terminated', () => diag(v));
});

scenario('HTTP API reads (channels, users)', async () => {
  const name = `presence-api-${tag}`;
  const a = await client('A', { id: 'alice', name: 'Alice' });
  const b = await client('B', { id: 'bob', name: 'Bob' });
  await subscribed(a, name);
  await subscribed(b, name);

  const list = await readJson(await server.get({
    path: '/channels', params: { filter_by_prefix: 'presence-', info: 'user_count' },
  }));
  log('GET /channels?filter_by_prefix=presence-&info=user_count ->', JSON.stringify(list));
  assert.deepEqual(list.channels?.[name], { user_count: 2 });
  for (const n of Object.keys(list.channels)) assert.ok(n.startsWith('presence-'), `prefix filter leaked ${n}`);

  const one = await readJson(await server.get({ path: `/channels/${name}`, params: { info: 'user_count' } }));
  log(`GET /channels/${name}?info=user_count ->`, JSON.stringify(one));
  assert.equal(one.occupied, true);
  assert.equal(one.user_count, 2);

  const users = await readJson(await server.get({ path: `/channels/${name}/users` }));
  log(`GET /channels/${name}/users ->`, JSON.stringify(users));
  const ids = (users.users || []).map((u) => u.id).sort();
  assert.deepEqual(ids, ['alice', 'bob']);

  // A request the server must refuse: the npm lib rejects with a RequestError carrying the status.
  const bad = new PusherServer({ appId: APP_ID, key: KEY, secret: SECRET + '-wrong', host: HOST, port: PORT, useTLS: false });
  const err = await bad.get({ path: '/channels' }).then(() => null, (e) => e);
  assert.ok(err, 'wrong secret was accepted');
  assert.equal(err.status, 401, `wrong secret -> ${err.status} ${err.body}`);
});

scenario('PyPI pusher trigger reaches pusher-js', async () => {
  const py = process.env.PAYRELAY_PYTHON;
  if (!py) throw new Error('PAYRELAY_PYTHON is not set (path of .venv/bin/python; see scripts/setup-test-deps)');
  const name = `py-relay-${tag}`;
  const a = await client('A');
  const ch = await subscribed(a, name);
  const seen = record(ch);
  const data = { from: 'python', n: 7, s: 'héllo "quoted"' };
  const proc = spawn(py, [path.join(HERE, 'pusher_py_trigger.py'), name, 'py-evt', JSON.stringify(data)], {
    env: process.env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout.on('data', (d) => (out += d));
  proc.stderr.on('data', (d) => (out += d));
  const code = await new Promise((resolve) => {
    proc.on('exit', (c, sig) => resolve(c ?? sig));
    proc.on('error', (e) => resolve(`spawn error: ${e.message}`));
  });
  for (const line of out.trimEnd().split('\n')) log('|', line);
  assert.equal(code, 0, `pusher_py_trigger.py exited with ${code}`);
  await until(() => seen.filter((e) => e.event.startsWith('py-evt')).length >= 3,
    'py-evt, py-evt-batch-1, py-evt-batch-2', () => diag(a));
  assert.deepEqual(seen.filter((e) => e.event.startsWith('py-evt')), [
    { event: 'py-evt', data },
    { event: 'py-evt-batch-1', data: { i: 1 } },
    { event: 'py-evt-batch-2', data: { i: 2 } },
  ]);
});

// ---------------------------------------------------------------- runner

function describe(e) {
  if (!(e instanceof Object)) return String(e);
  let out = `${e.name || 'Error'}: ${e.message}`;
  // npm pusher's RequestError: {message, url, error (cause), status, body}
  if (e.status !== undefined) out += ` (HTTP ${e.status}, body ${JSON.stringify(e.body)})`;
  if (e.error) out += ` (cause: ${e.error.message || e.error})`;
  if (e.url) out += ` [${e.url.replace(/auth_signature=[0-9a-f]+/, 'auth_signature=…')}]`;
  const stack = (e.stack || '').split('\n').slice(1).filter((l) => l.includes('pusher_js_channels')).slice(0, 3);
  return [out, ...stack].join('\n');
}

// Fail fast (instead of once per scenario) when nothing listens on the port.
await new Promise((resolve) => {
  const sock = net.connect({ host: HOST, port: PORT });
  sock.setTimeout(3000);
  const bad = (why) => {
    console.error(`FAIL: cannot reach the server at ${HOST}:${PORT}: ${why}`);
    process.exit(1);
  };
  sock.once('connect', () => {
    sock.destroy();
    resolve();
  });
  sock.once('timeout', () => bad('connect timed out'));
  sock.once('error', (e) => bad(e.message));
});

const only = process.env.PAYRELAY_ONLY;
const failures = [];
let passed = 0;
console.log(`pusher-js ${PUSHER_JS_VERSION} against ws://${HOST}:${PORT} app ${APP_ID} (tag ${tag}); auth endpoint ${AUTH_BASE}`);
for (const s of scenarios) {
  if (only && !s.name.includes(only)) continue;
  console.log(`-- ${s.name}`);
  const t0 = Date.now();
  try {
    await s.fn();
    passed++;
    console.log(`PASS ${s.name} (${Date.now() - t0}ms)`);
  } catch (e) {
    failures.push(s.name);
    console.log(`FAIL ${s.name}: ${describe(e)}`);
  } finally {
    for (const p of clients) p.disconnect();
    clients = [];
  }
}
clearTimeout(overall);
authServer.close();
console.log(`${passed} passed, ${failures.length} failed`);
if (failures.length) console.log(`failed: ${failures.join('; ')}`);
process.exit(failures.length || passed === 0 ? 1 : 0);
