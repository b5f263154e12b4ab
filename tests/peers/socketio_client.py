"""Seed 003 with PyPI python-socketio, a second client independent of socket.io-client.

Connects over the websocket transport with a merchant API key in the query and with a
client token in the auth payload, receives trade / deposit / withdrawal events published
through POST /v1/events, checks that another merchant's client receives nothing and that
bad credentials raise ConnectionError with the server's connect_error message.

Env: the same as socketio_client.mjs (set by tests/real_peers.rs).
Exits 0 when every scenario passed; prints FAIL lines and exits 1 otherwise, and 1 when
no scenario ran. Checks are explicit (`check`, `equal`) rather than `assert`, which
`python -O` removes.
"""

import base64
import json
import os
import queue
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request

import socketio

WAIT_S = 4.0


def overall_timeout():
    # A scenario stuck in a blocking call cannot be interrupted from here, so this is the
    # one place that ends the process with os._exit; flush first so the line is not lost.
    print("FAIL: overall timeout of 60s exceeded", flush=True)
    sys.stderr.flush()
    os._exit(1)


deadline = threading.Timer(60, overall_timeout)
# A daemon timer does not keep the interpreter alive once the scenarios are done.
deadline.daemon = True
deadline.start()


class CheckFailed(Exception):
    """A scenario's expectation did not hold."""


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def equal(got, want, what=""):
    if got != want:
        raise CheckFailed(f"{what + ': ' if what else ''}expected {want!r}, got {got!r}")


def env(name):
    value = os.environ.get(name)
    if not value:
        print(f"FAIL: environment variable {name} is not set")
        sys.exit(2)
    return value


HOST, PORT = env("PAYRELAY_HOST"), env("PAYRELAY_PORT")
BASE = f"http://{HOST}:{PORT}"
BASIC = "Basic " + base64.b64encode(f"{env('PAYRELAY_KEY')}:{env('PAYRELAY_SECRET')}".encode()).decode()
MERCHANT = env("PAYRELAY_MERCHANT")
API_KEY = env("PAYRELAY_API_KEY")


def post(path, body, headers):
    request = urllib.request.Request(
        BASE + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=WAIT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def publish(event, data, merchant=MERCHANT):
    status, body = post(
        "/v1/events",
        {"merchant_id": merchant, "kind": "merchant", "event": event, "data": data},
        {"authorization": BASIC},
    )
    equal(status, 200, f"publish {event}: {body}")


class Client:
    """A python-socketio client that queues every event it receives."""

    def __init__(self, query="", auth=None, refusals=None):
        self.events = queue.Queue()
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("*", lambda event, data: self.events.put((event, data)))
        # python-socketio hands the server's connect_error payload to this handler and
        # raises a generic ConnectionError from connect().
        if refusals is not None:
            self.sio.on("connect_error", lambda data: refusals.append(data))
        url = BASE + (f"?{query}" if query else "")
        self.sio.connect(url, transports=["websocket"], auth=auth, wait_timeout=WAIT_S)

    def next(self):
        return self.events.get(timeout=WAIT_S)

    def silent_for(self, seconds):
        time.sleep(seconds)
        if not self.events.empty():
            raise CheckFailed(f"unexpected event {self.events.get_nowait()}")

    def close(self):
        self.sio.disconnect()


def refusal(query="", auth=None):
    refusals = []
    try:
        Client(query, auth, refusals).close()
    except socketio.exceptions.ConnectionError:
        equal(len(refusals), 1, f"connect_error payloads {refusals}")
        return refusals[0]["message"]
    raise CheckFailed("the connection was accepted")


def api_key_in_the_query_receives_the_three_events():
    client = Client(f"apiKey={API_KEY}")
    publish("trade", {"trade": {"id": "trd_9", "status": "completed"}})
    publish("deposit", {"funding": {"id": "fnd_9", "status": "confirmed"}})
    publish("withdrawal", {"funding": {"id": "fnd_10", "status": "sent"}})
    equal(client.next(), ("trade", {"trade": {"id": "trd_9", "status": "completed"}}))
    equal(client.next(), ("deposit", {"funding": {"id": "fnd_9", "status": "confirmed"}}))
    equal(client.next(), ("withdrawal", {"funding": {"id": "fnd_10", "status": "sent"}}))
    client.close()


def client_token_in_the_auth_payload():
    status, minted = post("/v1/client-tokens", {"user_id": 7, "ttl_secs": 300}, {"x-api-key": API_KEY})
    equal(status, 201, f"mint {minted}")
    equal(minted["user_id"], "7", "user_id")
    client = Client(auth={"token": minted["token"]})
    publish("trade", {"trade": {"id": "trd_10", "status": "pending"}})
    equal(client.next(), ("trade", {"trade": {"id": "trd_10", "status": "pending"}}))
    client.close()


def another_merchant_receives_nothing():
    mine = Client(f"apiKey={API_KEY}")
    theirs = Client(f"apiKey={env('PAYRELAY_API_KEY_OTHER')}")
    publish("trade", {"trade": {"id": "trd_11"}})
    equal(mine.next()[0], "trade")
    theirs.silent_for(0.3)
    mine.close()
    theirs.close()


def bad_credentials_raise_connection_error_with_the_message():
    for expected, message in [
        ("Missing credentials", refusal()),
        ("Invalid API key", refusal("apiKey=prk_wrong")),
        ("Invalid API key", refusal(f"apiKey={env('PAYRELAY_API_KEY_REVOKED')}")),
        ("Invalid client token", refusal(auth={"token": "pct_wrong"})),
    ]:
        check(expected in message, f"expected {expected!r} in {message!r}")


SCENARIOS = [
    api_key_in_the_query_receives_the_three_events,
    client_token_in_the_auth_payload,
    another_merchant_receives_nothing,
    bad_credentials_raise_connection_error_with_the_message,
]

def main():
    only = os.environ.get("PAYRELAY_ONLY")
    failed = ran = 0
    for scenario in SCENARIOS:
        if only and only not in scenario.__name__:
            continue
        ran += 1
        try:
            scenario()
            print(f"ok   {scenario.__name__}", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {scenario.__name__}: {traceback.format_exc()}", flush=True)
    if ran == 0:
        print(f"FAIL no scenario ran: PAYRELAY_ONLY={only!r} matches none of {len(SCENARIOS)}")
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    # sys.exit flushes stdout and stderr on the way out, unlike os._exit.
    sys.exit(main())
