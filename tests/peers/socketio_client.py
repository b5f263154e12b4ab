"""Seed 003 with PyPI python-socketio, a second client independent of socket.io-client.

Connects over the websocket transport with a merchant API key in the query and with a
client token in the auth payload, receives trade / deposit / withdrawal events published
through POST /v1/events, checks that another merchant's client receives nothing and that
bad credentials raise ConnectionError with the server's connect_error message.

Env: the same as socketio_client.mjs (set by tests/real_peers.rs).
Exits 0 when every scenario passed; prints FAIL lines and exits 1 otherwise.
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

threading.Timer(60, lambda: (print("FAIL: overall timeout of 60s exceeded"), os._exit(1))).start()


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
    assert status == 200, body


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
        assert self.events.empty(), f"unexpected event {self.events.get_nowait()}"

    def close(self):
        self.sio.disconnect()


def refusal(query="", auth=None):
    refusals = []
    try:
        Client(query, auth, refusals).close()
    except socketio.exceptions.ConnectionError:
        assert len(refusals) == 1, refusals
        return refusals[0]["message"]
    raise AssertionError("the connection was accepted")


def api_key_in_the_query_receives_the_three_events():
    client = Client(f"apiKey={API_KEY}")
    publish("trade", {"trade": {"id": "trd_9", "status": "completed"}})
    publish("deposit", {"funding": {"id": "fnd_9", "status": "confirmed"}})
    publish("withdrawal", {"funding": {"id": "fnd_10", "status": "sent"}})
    assert client.next() == ("trade", {"trade": {"id": "trd_9", "status": "completed"}})
    assert client.next() == ("deposit", {"funding": {"id": "fnd_9", "status": "confirmed"}})
    assert client.next() == ("withdrawal", {"funding": {"id": "fnd_10", "status": "sent"}})
    client.close()


def client_token_in_the_auth_payload():
    status, minted = post("/v1/client-tokens", {"user_id": 7, "ttl_secs": 300}, {"x-api-key": API_KEY})
    assert status == 201, minted
    assert minted["user_id"] == "7"
    client = Client(auth={"token": minted["token"]})
    publish("trade", {"trade": {"id": "trd_10", "status": "pending"}})
    assert client.next() == ("trade", {"trade": {"id": "trd_10", "status": "pending"}})
    client.close()


def another_merchant_receives_nothing():
    mine = Client(f"apiKey={API_KEY}")
    theirs = Client(f"apiKey={env('PAYRELAY_API_KEY_OTHER')}")
    publish("trade", {"trade": {"id": "trd_11"}})
    assert mine.next()[0] == "trade"
    theirs.silent_for(0.3)
    mine.close()
    theirs.close()


def bad_credentials_raise_connection_error_with_the_message():
    assert "Missing credentials" in refusal()
    assert "Invalid API key" in refusal("apiKey=prk_wrong")
    assert "Invalid API key" in refusal(f"apiKey={env('PAYRELAY_API_KEY_REVOKED')}")
    assert "Invalid client token" in refusal(auth={"token": "pct_wrong"})


SCENARIOS = [
    api_key_in_the_query_receives_the_three_events,
    client_token_in_the_auth_payload,
    another_merchant_receives_nothing,
    bad_credentials_raise_connection_error_with_the_message,
]

failed = 0
for scenario in SCENARIOS:
    try:
        scenario()
        print(f"ok   {scenario.__name__}")
    except Exception:
        failed += 1
        print(f"FAIL {scenario.__name__}: {traceback.format_exc()}")
os._exit(1 if failed else 0)
