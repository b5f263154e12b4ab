#!/usr/bin/env python3
"""Standalone HTTP-API check of a payrelay server with the PyPI `pusher` library.

Env: PAYRELAY_HOST, PAYRELAY_PORT, PAYRELAY_APP_ID, PAYRELAY_KEY, PAYRELAY_SECRET.

To have occupied channels to ask about, it opens one raw protocol-7 WebSocket
(PyPI `websockets`) and subscribes to a public channel and to a presence
channel, the latter signed by `pusher.Pusher.authenticate` (whose channel_data
is json.dumps output *with spaces*, so the server must verify the signature
over the exact channel_data string it received).

Checks:
  - channels_info(prefix_filter=...) lists the public channel
  - channels_info(prefix_filter='presence-...', ['user_count']) -> user_count 1
  - channel_info(name, ['subscription_count']) -> occupied, subscription_count 1
  - channel_info(untouched channel) -> occupied False
  - users_info(presence channel) -> [{'id': 'py-user'}]
  - a wrong secret -> pusher.errors.PusherBadAuth (HTTP 401)
  - a 9000-byte payload is accepted; an 11 KiB one -> PusherBadStatus "413: ..."
  - terminate_user_connections (the library posts to /users/{id}/terminate_connections,
    without the /apps/{id} prefix) closes a socket signed in with authenticate_user,
    with close code 4009
Exits 0 on success; non-zero with a FAIL line otherwise; 20 s overall timeout.
"""
import json
import os
import random
import signal
import sys
import traceback

TIMEOUT_S = 20


def fail(msg):
    print("FAIL pusher_py_channels: %s" % msg, file=sys.stderr, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def on_alarm(_signum, _frame):
    fail("timed out after %ds" % TIMEOUT_S)


def env(name):
    v = os.environ.get(name)
    if not v:
        fail("environment variable %s is not set" % name)
    return v


def step(name):
    print("py-channels: %s" % name, flush=True)


def recv_event(ws, want_event, want_channel=None, timeout=5.0):
    """Reads frames until one with the wanted event (and channel) arrives."""
    import time

    deadline = time.monotonic() + timeout
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            fail("no %r frame (channel %r) within %.0fs; frames seen: %s"
                 % (want_event, want_channel, timeout, seen))
        try:
            raw = ws.recv(timeout=left)
        except TimeoutError:
            continue
        seen.append(raw if len(raw) < 300 else raw[:300] + "...")
        try:
            msg = json.loads(raw)
        except ValueError:
            fail("server sent a non-JSON frame: %r" % raw)
        if msg.get("event") == "pusher:error":
            fail("server sent pusher:error while waiting for %r: %s" % (want_event, raw))
        if msg.get("event") == want_event and (want_channel is None or msg.get("channel") == want_channel):
            return msg


def decode_data(msg):
    """Protocol 7: `data` of server frames is a JSON-encoded string."""
    data = msg.get("data")
    check(isinstance(data, str),
          "%s: 'data' must be a JSON-encoded string in protocol 7, got %r" % (msg.get("event"), data))
    return json.loads(data)


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TIMEOUT_S)
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

    import pusher
    from pusher.errors import PusherBadAuth, PusherBadStatus
    from websockets.sync.client import connect

    host, port = env("PAYRELAY_HOST"), int(env("PAYRELAY_PORT"))
    app_id, key, secret = env("PAYRELAY_APP_ID"), env("PAYRELAY_KEY"), env("PAYRELAY_SECRET")
    client = pusher.Pusher(app_id=app_id, key=key, secret=secret,
                           host=host, port=port, ssl=False, timeout=5)

    tag = "%08x" % random.getrandbits(32)
    pub = "py-pub-%s" % tag
    presence = "presence-py-%s" % tag
    untouched = "py-untouched-%s" % tag

    step("connect raw websocket")
    url = "ws://%s:%d/app/%s?protocol=7&client=python-websockets&version=17.4&flash=false" % (host, port, key)
    with connect(url, open_timeout=5, close_timeout=2, proxy=None) as ws:
        est = recv_event(ws, "pusher:connection_established")
        est_data = decode_data(est)
        socket_id = est_data.get("socket_id")
        check(isinstance(socket_id, str) and socket_id.count(".") == 1,
              "connection_established without a socket_id like '123.456': %r" % (est_data,))
        check(isinstance(est_data.get("activity_timeout"), int),
              "connection_established without an integer activity_timeout: %r" % (est_data,))

        step("subscribe %s" % pub)
        ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": pub}}))
        recv_event(ws, "pusher_internal:subscription_succeeded", pub)

        step("subscribe %s (auth by pusher.Pusher.authenticate)" % presence)
        auth = client.authenticate(channel=presence, socket_id=socket_id,
                                   custom_data={"user_id": "py-user", "user_info": {"name": "Py"}})
        check(", " in auth["channel_data"], "expected python's spaced json in channel_data")
        ws.send(json.dumps({"event": "pusher:subscribe",
                            "data": {"channel": presence, "auth": auth["auth"],
                                     "channel_data": auth["channel_data"]}}))
        ok = recv_event(ws, "pusher_internal:subscription_succeeded", presence)
        pres = decode_data(ok).get("presence", {})
        check(pres.get("count") == 1 and pres.get("ids") == ["py-user"]
              and pres.get("hash") == {"py-user": {"name": "Py"}},
              "presence subscription_succeeded data unexpected: %r" % (pres,))

        step("channels_info(prefix_filter=%r)" % "py-pub-")
        info = client.channels_info(prefix_filter="py-pub-")
        print("  ->", info, flush=True)
        check(pub in info.get("channels", {}), "%s missing from channels_info: %r" % (pub, info))
        check(all(name.startswith("py-pub-") for name in info["channels"]),
              "prefix filter not applied: %r" % (info,))

        step("channels_info(prefix_filter='presence-py-', attributes=['user_count'])")
        info = client.channels_info(prefix_filter="presence-py-", attributes=["user_count"])
        print("  ->", info, flush=True)
        check(info.get("channels", {}).get(presence) == {"user_count": 1},
              "expected %s: {'user_count': 1}, got %r" % (presence, info))

        step("channel_info(%r, ['subscription_count'])" % pub)
        cinfo = client.channel_info(pub, ["subscription_count"])
        print("  ->", cinfo, flush=True)
        check(cinfo.get("occupied") is True, "expected occupied=True, got %r" % (cinfo,))
        check(cinfo.get("subscription_count") == 1,
              "expected subscription_count=1, got %r" % (cinfo,))

        step("channel_info(%r) (nobody subscribed)" % untouched)
        cinfo = client.channel_info(untouched)
        print("  ->", cinfo, flush=True)
        check(cinfo.get("occupied") is False, "expected occupied=False, got %r" % (cinfo,))

        step("users_info(%r)" % presence)
        users = client.users_info(presence)
        print("  ->", users, flush=True)
        check(users == {"users": [{"id": "py-user"}]}, "unexpected users_info: %r" % (users,))

        step("wrong secret -> PusherBadAuth (401)")
        bad = pusher.Pusher(app_id=app_id, key=key, secret=secret + "-wrong",
                            host=host, port=port, ssl=False, timeout=5)
        try:
            res = bad.channels_info()
        except PusherBadAuth as e:
            print("  -> raised PusherBadAuth:", e, flush=True)
        else:
            fail("request signed with a wrong secret succeeded: %r" % (res,))
        try:
            res = bad.trigger(pub, "should-not-arrive", {"x": 1})
        except PusherBadAuth as e:
            print("  -> trigger raised PusherBadAuth:", e, flush=True)
        else:
            fail("trigger signed with a wrong secret succeeded: %r" % (res,))

        step("9000-byte payload is accepted")
        res = client.trigger(pub, "big-ok", "x" * 9000)
        check(isinstance(res, dict), "trigger response is not a JSON object: %r" % (res,))
        msg = recv_event(ws, "big-ok", pub)
        check(msg.get("data") == "x" * 9000, "9000-byte payload arrived altered")

        step("11 KiB payload -> HTTP 413")
        # trigger() checks only sys.getsizeof(data) > 30720 locally, so this reaches
        # the server. (trigger_batch would refuse > 10240 locally with ValueError.)
        try:
            res = client.trigger(pub, "too-big", "y" * (11 * 1024))
        except PusherBadStatus as e:
            print("  -> raised PusherBadStatus:", str(e)[:120], flush=True)
            check(str(e).startswith("413"), "expected HTTP 413, got: %s" % e)
        else:
            fail("11 KiB payload was accepted: %r" % (res,))

        step("no event from the rejected requests reached the subscriber")
        ws.send(json.dumps({"event": "pusher:ping", "data": {}}))
        while True:
            msg = json.loads(ws.recv(timeout=5))
            check(msg.get("event") not in ("should-not-arrive", "too-big"),
                  "a rejected trigger was delivered: %r" % (msg,))
            if msg.get("event") == "pusher:pong":
                break

    step("terminate_user_connections closes the signed-in socket with 4009")
    from websockets.exceptions import ConnectionClosed
    with connect(url, open_timeout=5, close_timeout=2, proxy=None) as ws:
        socket_id = decode_data(recv_event(ws, "pusher:connection_established"))["socket_id"]
        signin = client.authenticate_user(socket_id, {"id": "py-term", "user_info": {}})
        ws.send(json.dumps({"event": "pusher:signin", "data": signin}))
        recv_event(ws, "pusher:signin_success")
        res = client.terminate_user_connections("py-term")
        print("  ->", res, flush=True)
        try:
            while True:
                ws.recv(timeout=5)
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            check(code == 4009, "expected close code 4009, got %r" % (code,))

    print("py-channels: ok", flush=True)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        traceback.print_exc()
        fail("%s: %s" % (type(e).__name__, e))
