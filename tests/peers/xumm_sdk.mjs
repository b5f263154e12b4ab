#!/usr/bin/env node
// Seed 001 with the unmodified npm xumm-sdk (1.11), pointed at payrelay with
// `sdk.setEndpoint(…)`: create, get, cancel and subscribe to payment requests. This script
// also plays the signing side (the wallet), which reports with the app credentials
// through `POST /v1/payloads/{uuid}/opened` and `/resolve`.
//
// Env (set by tests/real_peers.rs):
//   PAYRELAY_HOST, PAYRELAY_PORT
//   PAYRELAY_XUMM_KEY, PAYRELAY_XUMM_SECRET   an app whose key and secret are UUIDs
// Optional: PAYRELAY_ONLY=<substring> runs matching scenarios only ("keepalive" is the
// minute-long one, which tests/real_peers.rs runs on its own).
// Exits 0 when every scenario passed; prints FAIL lines and exits 1 otherwise.

import assert from 'node:assert/strict';
import { XummSdk } from 'xumm-sdk';
import { deadline, env, runScenarios, sleep } from './harness.mjs';

const HOST = env('PAYRELAY_HOST');
const PORT = env('PAYRELAY_PORT');
const APP_KEY = env('PAYRELAY_XUMM_KEY');
const APP_SECRET = env('PAYRELAY_XUMM_SECRET');
const BASE = `http://${HOST}:${PORT}`;
const BASIC = 'Basic ' + Buffer.from(`${APP_KEY}:${APP_SECRET}`).toString('base64');

deadline(Number(process.env.PAYRELAY_PEER_TIMEOUT_S ?? 85));

// xumm-sdk narrates its socket on console.log; keep the lines to count reconnects.
const sdkLog = [];
const log = console.log.bind(console);
console.log = (...args) => {
  const line = args.map(String).join(' ');
  if (line.includes('Payload ') || line.includes('WebSocket')) sdkLog.push(line);
  log(...args);
};

/** The signing side: reports that the end user opened, then resolved, payload `uuid`. */
async function wallet(uuid, { signed = true, delayMs = 300 } = {}) {
  const report = async (what, body) => {
    const res = await fetch(`${BASE}/v1/payloads/${uuid}/${what}`, {
      method: 'POST',
      headers: { authorization: BASIC, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 200, `${what}: ${await res.text()}`);
  };
  await sleep(delayMs);
  await report('opened', { opened_by_deeplink: true });
  await sleep(delayMs);
  await report('resolve', signed
    ? { signed: true, txid: '9B124C14528ED14C0BDA17075A39B90ABED598B77A22DFEEBD913CAC07A513BC', account: 'rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY', user_token: 'c5bc4ccc-28fa-4080-b702-0d3aac97b993' }
    : { signed: false });
}

const scenarios = {
  // The README's example ("Payment requests"), as written there but for the wallet,
  // which here is this script.
  async 'readme example: createAndSubscribe, the wallet signs, the backend checks'() {
    const events = [];
    // --- README example ---
    const sdk = new XummSdk(APP_KEY, APP_SECRET);      // the app's key and secret (UUIDs)
    sdk.setEndpoint(BASE);                              // e.g. 'https://rt.example.com'

    const subscription = await sdk.payload.createAndSubscribe({
      txjson: { TransactionType: 'Payment', Destination: 'rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY', Amount: '1000000' },
      options: { expire: 5, return_url: { web: 'https://shop.example/paid/{id}' } },
      custom_meta: { identifier: 'order-42', instruction: 'Pay order 42' },
    }, (event) => {
      console.log(event.data);                          // {expires_in_seconds}, {opened}, …
      events.push(event.data);                          // (the test's own record)
      if (event.data.signed !== undefined) return event.data;   // resolved: unsubscribe
    });
    console.log('open to sign:', subscription.created.next.always);
    wallet(subscription.created.uuid);                  // … the end user opens and signs it in their wallet …
    const resolution = await subscription.resolved;
    // The socket says `signed`; the backend confirms with the payload itself.
    const payload = await sdk.payload.get(subscription.created.uuid);
    const paid = payload.meta.signed && payload.response.txid !== null;
    // --- end of the README example ---

    assert.equal(paid, true);
    const uuid = subscription.created.uuid;
    assert.match(uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(subscription.created.refs.websocket_status, `ws://${HOST}:${PORT}/sign/${uuid}`);
    assert.ok(events.some((e) => typeof e.expires_in_seconds === 'number' && e.expires_in_seconds > 290), JSON.stringify(events));
    assert.ok(events.some((e) => e.opened === true), 'the callback saw opened');
    assert.ok(events.some((e) => e.message === `Welcome ${uuid}`), 'the callback saw the welcome');
    assert.equal(resolution.signed, true);
    assert.equal(resolution.payload_uuidv4, uuid);
    assert.equal(resolution.opened_by_deeplink, true);
    assert.equal(resolution.user_token, true);
    assert.equal(resolution.return_url.web, `https://shop.example/paid/${uuid}`);
    assert.equal(resolution.custom_meta.identifier, 'order-42');
    assert.equal(resolution.txid, '9B124C14528ED14C0BDA17075A39B90ABED598B77A22DFEEBD913CAC07A513BC');
    // The SDK's own follow-up GET (on the `signed` message) updated its copy.
    assert.equal(subscription.payload.meta.resolved, true);
    assert.equal(payload.meta.resolved, true);
    assert.equal(payload.response.account, 'rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY');
    assert.equal(payload.custom_meta.instruction, 'Pay order 42');
    // The subscription ended: the SDK closed its socket with 1000.
    await sleep(200);
    assert.equal(subscription.websocket.readyState, subscription.websocket.CLOSED);
  },

  async 'subscribe to an existing payload, rejected by the user'() {
    const sdk = new XummSdk(APP_KEY, APP_SECRET);
    sdk.setEndpoint(BASE);
    const created = await sdk.payload.create({ TransactionType: 'SignIn' }, true);   // a bare transaction
    assert.ok(created?.next?.always, JSON.stringify(created));
    const seen = [];
    const subscription = await sdk.payload.subscribe(created.uuid, (event) => {
      seen.push(event.data);
      if (event.data.signed !== undefined) return event.data;
    });
    wallet(created.uuid, { signed: false });
    const resolution = await subscription.resolved;
    assert.equal(resolution.signed, false);
    assert.equal(resolution.txid, null);
    const payload = await sdk.payload.get(created.uuid);
    assert.equal(payload.meta.resolved, true);
    assert.equal(payload.meta.signed, false);
    assert.equal(payload.payload.tx_type, 'SignIn');
  },

  async 'get and cancel'() {
    const sdk = new XummSdk(APP_KEY, APP_SECRET);
    sdk.setEndpoint(BASE);
    const created = await sdk.payload.create({
      txjson: { TransactionType: 'SignIn' },
      custom_meta: { blob: { cart: ['tea'] } },
    });
    const before = await sdk.payload.get(created);
    assert.equal(before.meta.uuid, created.uuid);
    assert.equal(before.meta.cancelled, false);
    assert.deepEqual(before.custom_meta.blob, { cart: ['tea'] });
    const cancelled = await sdk.payload.cancel(created.uuid);
    assert.deepEqual(cancelled.result, { cancelled: true, reason: 'OK' });
    assert.equal(cancelled.meta.cancelled, true);
    const after = await sdk.payload.get(created.uuid);
    assert.equal(after.meta.expired, true);
    const again = await sdk.payload.cancel(after);
    assert.deepEqual(again.result, { cancelled: false, reason: 'ALREADY_CANCELLED' });
  },

  async 'an expired payload ends the subscription'() {
    const sdk = new XummSdk(APP_KEY, APP_SECRET);
    sdk.setEndpoint(BASE);
    const started = Date.now();
    const subscription = await sdk.payload.createAndSubscribe(
      { txjson: { TransactionType: 'SignIn' }, options: { expire: 0.05 } },   // 3 seconds
      (event) => { if (event.data.expired) return event.data; },
    );
    const ended = await subscription.resolved;
    assert.deepEqual(ended, { expired: true });
    const took = Date.now() - started;
    assert.ok(took >= 2500 && took < 5000, `expired after ${took} ms`);
    assert.equal(subscription.payload.meta.expired, true, 'the SDK re-read the payload');
    const payload = await sdk.payload.get(subscription.created.uuid);
    assert.equal(payload.meta.expired, true);
    assert.equal(payload.meta.resolved, false);
  },

  async 'unknown payloads and refused bodies'() {
    const sdk = new XummSdk(APP_KEY, APP_SECRET);
    sdk.setEndpoint(BASE);
    const unknown = '0f1e2d3c-aaaa-4bbb-8ccc-0123456789ab';
    assert.equal(await sdk.payload.get(unknown), null);
    await assert.rejects(sdk.payload.get(unknown, true), /Error code 404/);
    await assert.rejects(sdk.payload.subscribe(unknown, () => {}), /404|Could not|couldn't/i);
    await assert.rejects(
      sdk.payload.create({ txjson: { TransactionType: 'SignIn' }, options: { expire: 100000 } }, true),
      /Error code 400/,
    );
    assert.equal(await sdk.payload.create({ txjson: { TransactionType: 'SignIn' }, custom_meta: { blob: { x: 'y'.repeat(5000) } } }), null);
    const wrong = new XummSdk(APP_KEY, '00000000-0000-4000-8000-000000000000');
    wrong.setEndpoint(BASE);
    await assert.rejects(wrong.payload.create({ TransactionType: 'SignIn' }, true), /Error code 401/);
  },

  async 'keepalive: a minute of subscription without a reconnect'() {
    const sdk = new XummSdk(APP_KEY, APP_SECRET);
    sdk.setEndpoint(BASE);
    const before = sdkLog.length;
    const countdowns = [];
    const subscription = await sdk.payload.createAndSubscribe(
      { txjson: { TransactionType: 'SignIn' }, options: { expire: 10 } },
      (event) => {
        if (typeof event.data.expires_in_seconds === 'number') countdowns.push(event.data.expires_in_seconds);
      },
    );
    await sleep(62_000);
    const lines = sdkLog.slice(before);
    const opened = lines.filter((l) => l.includes('subscription active')).length;
    const trouble = lines.filter((l) => /keepalive response timeout|reconnecting|lost/i.test(l));
    assert.equal(opened, 1, `one socket opened: ${JSON.stringify(lines)}`);
    assert.deepEqual(trouble, []);
    // At once, then every 15 s: 5 in 62 s.
    assert.equal(countdowns.length, 5, JSON.stringify(countdowns));
    subscription.resolve();
  },
};

await runScenarios(scenarios);
