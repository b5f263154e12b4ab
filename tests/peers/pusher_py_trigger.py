#!/usr/bin/env python3
"""Trigger events on a payrelay server with the PyPI `pusher` server library.

Usage: pusher_py_trigger.py <channel> <event> <json-data>

Env: PAYRELAY_HOST, PAYRELAY_PORT, PAYRELAY_APP_ID, PAYRELAY_KEY, PAYRELAY_SECRET.

Sends, in this order (each request waits for the previous one's response):
  1. trigger(<channel>, <event>, <json-data parsed>)
  2. trigger_batch([<channel>/<event>-batch-1 {"i":1}, <channel>/<event>-batch-2 {"i":2}])
Then reads channels_info(prefix_filter=<channel>) and
channel_info(<channel>, ['subscription_count']) and prints both.

Exits 0 on success, non-zero (with a message) on any exception or bad answer.
A caller that subscribed to <channel> beforehand can expect to receive
<event>, <event>-batch-1, <event>-batch-2 in that order.
"""
import json
import os
import signal
import sys
import traceback

TIMEOUT_S = 20


def fail(msg):
    print("FAIL pusher_py_trigger: %s" % msg, file=sys.stderr, flush=True)
    sys.exit(1)


def on_alarm(_signum, _frame):
    fail("timed out after %ds" % TIMEOUT_S)


def env(name):
    v = os.environ.get(name)
    if not v:
        fail("environment variable %s is not set" % name)
    return v


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TIMEOUT_S)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

    if len(sys.argv) != 4:
        fail("usage: pusher_py_trigger.py <channel> <event> <json-data>")
    channel, event, raw = sys.argv[1], sys.argv[2], sys.argv[3]
    try:
        data = json.loads(raw)
    except ValueError as e:
        fail("json-data argument is not valid JSON: %s" % e)

    import pusher  # imported late so a missing venv gives a clear traceback below

    client = pusher.Pusher(
        app_id=env("PAYRELAY_APP_ID"),
        key=env("PAYRELAY_KEY"),
        secret=env("PAYRELAY_SECRET"),
        host=env("PAYRELAY_HOST"),
        port=int(env("PAYRELAY_PORT")),
        ssl=False,
        timeout=5,
    )

    res = client.trigger(channel, event, data)
    print("py: trigger %s/%s -> %r" % (channel, event, res), flush=True)
    if not isinstance(res, dict):
        fail("trigger response is not a JSON object: %r" % (res,))

    batch = [
        {"channel": channel, "name": event + "-batch-1", "data": {"i": 1}},
        {"channel": channel, "name": event + "-batch-2", "data": {"i": 2}},
    ]
    res = client.trigger_batch(batch)
    print("py: trigger_batch (2 events) -> %r" % (res,), flush=True)
    if not isinstance(res, dict):
        fail("trigger_batch response is not a JSON object: %r" % (res,))

    info = client.channels_info(prefix_filter=channel)
    print("py: channels_info(prefix_filter=%r) -> %r" % (channel, info), flush=True)
    if not isinstance(info, dict) or not isinstance(info.get("channels"), dict):
        fail("channels_info: expected {'channels': {...}}, got %r" % (info,))

    cinfo = client.channel_info(channel, ["subscription_count"])
    print("py: channel_info(%r, ['subscription_count']) -> %r" % (channel, cinfo), flush=True)
    if not isinstance(cinfo, dict) or "occupied" not in cinfo:
        fail("channel_info: expected an object with 'occupied', got %r" % (cinfo,))
    if cinfo["occupied"] and channel not in info["channels"]:
        fail("channel %r is occupied but missing from channels_info %r" % (channel, info))

    print("py: ok", flush=True)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - any library error is a failure
        traceback.print_exc()
        fail("%s: %s" % (type(e).__name__, e))
