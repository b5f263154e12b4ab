#!/usr/bin/env python3
"""Writes the seed corpus in fuzz/seeds/ (committed; re-run only to change it).

The seeds are real inputs: frames from the seed documents, PROTOCOLS.md and the tests,
requests signed as the Pusher server libraries sign them, tokens signed with the test
fixtures' keys. Signatures use the development app (key `app-key`, secret `app-secret`)
and the timestamp the HTTP target verifies at, so the fuzzer starts from inputs that
pass every check and mutates from there.

Needs Python 3 and, for the RS256/ES256 tokens, the `cryptography` package.
"""

import base64
import hashlib
import hmac
import json
import pathlib
import shutil
import struct
import urllib.parse

HERE = pathlib.Path(__file__).resolve().parent
SEEDS = HERE / "seeds"
FIXTURES = HERE.parent / "tests" / "fixtures" / "jwt"
KEY, SECRET = "app-key", "app-secret"
NOW = 1_700_000_000  # pusher_http_auth verifies at this time
FAR_FUTURE = 4_102_444_800  # 2100-01-01: the JWT seeds stay valid
HS_SECRET = "merchant-jwt-secret-0123456789"


def sign(text: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()


def auth(text: str) -> str:
    return f"{KEY}:{sign(text)}"


def compact(value) -> str:
    return json.dumps(value, separators=(",", ":"))


# ---- a minimal MessagePack encoder (maps, strings, ints, bools, nil, arrays) ----------
def pack(value) -> bytes:
    if value is None:
        return b"\xc0"
    if value is True:
        return b"\xc3"
    if value is False:
        return b"\xc2"
    if isinstance(value, int):
        if 0 <= value < 128:
            return bytes([value])
        if -32 <= value < 0:
            return struct.pack("b", value)
        return b"\xd3" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"\xcb" + struct.pack(">d", value)
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) < 32:
            return bytes([0xA0 | len(raw)]) + raw
        if len(raw) < 256:
            return b"\xd9" + bytes([len(raw)]) + raw
        return b"\xda" + struct.pack(">H", len(raw)) + raw
    if isinstance(value, list):
        head = bytes([0x90 | len(value)]) if len(value) < 16 else b"\xdc" + struct.pack(">H", len(value))
        return head + b"".join(pack(v) for v in value)
    if isinstance(value, dict):
        head = bytes([0x80 | len(value)]) if len(value) < 16 else b"\xde" + struct.pack(">H", len(value))
        return head + b"".join(pack(k) + pack(v) for k, v in value.items())
    raise TypeError(value)


def write(target: str, files: dict):
    folder = SEEDS / target
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode()
        (folder / name).write_bytes(data)


SOCKET = "1234.1234"
PRESENCE_DATA = compact({"user_id": "42", "user_info": {"name": "Ada"}})
USER_DATA = compact({"id": "u1", "user_info": {"name": "Ada"}})


def pusher_frames() -> dict:
    return {
        # seed 000's wscat transcript and its merchant subscription
        "subscribe-public": {"event": "pusher:subscribe", "data": {"auth": "", "channel": "test-channel"}},
        "subscribe-merchant": {
            "event": "pusher:subscribe",
            "data": {
                "auth": "pagCMLx6TXrb:d561d8e1618b72770d31a78a0ab23fe59c2c26f7f51239508c81221a76e1b9f9",
                "channel": "private-merchant.merchant_001",
            },
        },
        "subscribe-private": {
            "event": "pusher:subscribe",
            "data": {"channel": "private-foobar", "auth": auth(f"{SOCKET}:private-foobar")},
        },
        "subscribe-presence": {
            "event": "pusher:subscribe",
            "data": {
                "channel": "presence-room",
                "auth": auth(f"{SOCKET}:presence-room:{PRESENCE_DATA}"),
                "channel_data": PRESENCE_DATA,
            },
        },
        "subscribe-cache": {"event": "pusher:subscribe", "data": {"channel": "cache-rates"}},
        "subscribe-server-to-user": {"event": "pusher:subscribe", "data": {"channel": "#server-to-user-u1"}},
        "subscribe-data-as-string": {"event": "pusher:subscribe", "data": compact({"channel": "test-channel"})},
        "unsubscribe": {"event": "pusher:unsubscribe", "data": {"channel": "test-channel"}},
        "signin": {
            "event": "pusher:signin",
            "data": {"auth": auth(f"{SOCKET}::user::{USER_DATA}"), "user_data": USER_DATA},
        },
        "ping": {"event": "pusher:ping", "data": {}},
        "pong": {"event": "pusher:pong", "data": {}},
        "client-event": {"event": "client-typing", "channel": "private-chat", "data": {"user": "u1", "n": 1}},
        "client-event-string": {"event": "client-note", "channel": "presence-room", "data": "hello"},
        "unknown-event": {"event": "pusher:watchlist", "data": None},
    }


def main():
    frames = pusher_frames()
    write("pusher_frame_json", {name: compact(frame) for name, frame in frames.items()})
    msgpack = {name: pack(frame) for name, frame in frames.items()}
    # Found by the first long run: `data` a float JSON cannot hold (NaN).
    msgpack["nan-data"] = pack({"event": "pusher:ping", "data": float("nan")})
    # Found by the second: data nested deeper than JSON allows (127 arrays in `data`).
    deep = 1
    for _ in range(127):
        deep = [deep]
    msgpack["deep-data"] = pack({"event": "client-x", "data": deep})
    write("pusher_frame_msgpack", msgpack)

    write(
        "pusher_channel_auth",
        {
            "private": "\n".join([SOCKET, "private-foobar", "", "", auth(f"{SOCKET}:private-foobar")]),
            # PROTOCOLS.md's published vector
            "published-vector": "\n".join(
                [SOCKET, "private-foobar", "", "", "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"]
            ),
            "presence": "\n".join(
                [SOCKET, "presence-room", PRESENCE_DATA, "", auth(f"{SOCKET}:presence-room:{PRESENCE_DATA}")]
            ),
            "presence-numeric-id": "\n".join(
                [SOCKET, "presence-room", compact({"user_id": 7}), "", ""]
            ),
            "signin": "\n".join([SOCKET, "", "", USER_DATA, auth(f"{SOCKET}::user::{USER_DATA}")]),
            "merchant-channel": "\n".join(
                ["merchant_001", "private-encrypted-payments.merchant_001", "", "", "app-key:00"]
            ),
            "readme-socket-id": "\n".join(["957523923.7566984777", "presence-merchant.m1", compact({"user_id": "m1"}), "", ""]),
        },
    )

    def signed_request(method, path, body=b"", extra=()):
        params = {"auth_key": KEY, "auth_timestamp": str(NOW), "auth_version": "1.0"}
        if body:
            params["body_md5"] = hashlib.md5(body).hexdigest()
        for k, v in extra:
            params[k.lower()] = v
        to_sign = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        params["auth_signature"] = sign(f"{method}\n{path}\n{to_sign}")
        return urllib.parse.urlencode(sorted(params.items()))

    basic = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
    event = compact({"name": "my-event", "channel": "my-channel", "data": compact({"message": "hello"})}).encode()
    batch = compact({"batch": [{"name": "e", "channel": "a", "data": "1"}, {"name": "e", "channel": "b", "data": "2"}]}).encode()
    write(
        "pusher_http_auth",
        {
            "trigger": b"\n".join([b"POST", b"/apps/1/events", signed_request("POST", "/apps/1/events", event).encode(), b"", event]),
            "batch": b"\n".join([b"POST", b"/apps/1/batch_events", signed_request("POST", "/apps/1/batch_events", batch).encode(), b"", batch]),
            "channels": "\n".join(
                [
                    "GET",
                    "/apps/1/channels",
                    signed_request("GET", "/apps/1/channels", extra=[("filter_by_prefix", "presence-"), ("info", "user_count")]),
                    "",
                    "",
                ]
            ).encode(),
            "terminate": "\n".join(
                ["POST", "/apps/1/users/u1/terminate_connections", signed_request("POST", "/apps/1/users/u1/terminate_connections"), "", ""]
            ).encode(),
            "basic": b"\n".join([b"POST", b"/v1/events", b"", basic.encode(), event]),
            "basic-no-colon": b"\n".join([b"POST", b"/v1/events", b"", b"Basic " + base64.b64encode(b"nocolon"), b""]),
        },
    )

    write(
        "http_bodies",
        {
            "trigger": event,
            "trigger-channels": compact(
                {"name": "e", "channels": ["a", "private-b", "presence-c"], "data": {"n": 1}, "socket_id": SOCKET, "info": "subscription_count,user_count"}
            ),
            "trigger-encrypted": compact({"name": "e", "channel": "private-encrypted-x", "data": compact({"ciphertext": "YQ==", "nonce": "Yg=="})}),
            "trigger-readme-socket-id": compact({"name": "e", "channel": "a", "data": "x", "socket_id": "957523923.7566984777"}),
            "batch": batch,
            "merchant-auth-json": compact({"socket_id": SOCKET, "channel_name": "private-merchant.merchant_001"}),
            "merchant-auth-form": "socket_id=1234.1234&channel_name=private-merchant.merchant_001",
            "info": "user_count,subscription_count,cache",
        },
    )

    write(
        "plain_message",
        {
            "subscribe": compact({"event": "subscribe", "channel": "notification.events"}),
            "unsubscribe": compact({"event": "unsubscribe", "channel": "settings"}),
            "ping": compact({"event": "ping"}),
            "user-channel": "120045\nnotification.events\n",
            "data-object": compact({"orderId": "A1", "amount": 12.5, "status": "PAID"}),
            "data-text": "not json at all",
        },
    )

    write(
        "socketio_connect",
        {
            # seed 003's snippet: the API key in the query
            "query-api-key": "EIO=4&transport=websocket&apiKey=prk_live_123\n40",
            "payload-token": "EIO=4&transport=websocket\n40" + compact({"token": "pct_abc"}),
            "payload-api-key": "EIO=4&transport=websocket\n40" + compact({"apiKey": "prk_live_123"}),
            "both": "EIO=4&token=pct_abc\n40" + compact({"apiKey": "prk_live_123"}),
            "namespace": "EIO=4\n40/admin," + compact({"token": "pct_abc"}),
            "missing": "EIO=4&transport=websocket\n40",
            "event": "EIO=4\n42" + compact(["trade", {"id": 1}]),
        },
    )

    write("jwt", jwt_seeds())

    # Endpoint bodies as the README's "Callbacks" section and tests/webhooks.rs send them.
    write(
        "webhook_bodies",
        {
            "create-readme": compact(
                {"url": "https://merchant.example.com/payrelay", "merchant_id": "merchant_001", "events": ["trade", "payment.*"]}
            ),
            "create-described": compact({"url": "http://127.0.0.1:8080/hooks", "merchant_id": "m1", "description": "ledger"}),
            "create-minimal": compact({"url": "https://[2001:db8::1]:8443/cb?x=1"}),
            "patch-events-null": compact({"events": None, "enabled": True}),
            "patch-all": compact({"url": "https://hooks.example.com/v2", "events": ["trade"], "enabled": False, "description": None}),
            # Found by the first long run: serde read a struct from an array of its fields.
            "array-body": compact(["https://merchant.example.com/payrelay", "merchant_001"]),
            # Found by the second: within the length limit as sent, over it once encoded.
            "encoded-too-long": compact({"url": "https://example.com/" + "é" * 1000}),
        },
    )

    write(
        "payload_request",
        {
            # README "Payment requests" / tests/peers/xumm_sdk.mjs
            "readme-example": compact(
                {
                    "txjson": {"TransactionType": "Payment", "Destination": "rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY", "Amount": "1000000"},
                    "options": {"expire": 5, "return_url": {"web": "https://shop.example/paid/{id}"}},
                    "custom_meta": {"identifier": "order-42", "instruction": "Pay order 42"},
                }
            ),
            # xumm-sdk's own test fixtures (validPayload, invalidPayload)
            "sdk-valid": compact({"txjson": {"TransactionType": "Payment", "Destination": "rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY", "DestinationTag": 495}}),
            "sdk-invalid": compact(
                {
                    "user_token": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                    "txblob": "1200002400000003614000000002FAF0806840000000000000C8732",
                    "txjson": {"TransactionType": "Payment", "Destination": "rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY", "DestinationTag": 495, "Amount": "65000"},
                }
            ),
            "bare-transaction": compact({"TransactionType": "SignIn"}),
            "every-option": compact(
                {
                    "txjson": {"TransactionType": "SignIn"},
                    "options": {"expire": 0.05, "submit": False, "multisign": False, "pathfinding": True, "return_url": {"app": "shop://{id}?tx={txid}", "web": "https://shop/{cid}"}},
                    "custom_meta": {"identifier": "order-1", "blob": {"cart": [1, 2.5, None]}, "instruction": "Pay\nnow"},
                    "user_token": "c5bc4ccc-28fa-4080-b702-0d3aac97b993",
                    "unknown": {"ignored": True},
                }
            ),
            "resolve": compact({"signed": True, "txid": "9B124C14528ED14C0BDA17075A39B90ABED598B77A22DFEEBD913CAC07A513BC", "account": "rPEPPER7kfTD9w2To4CQk6UCfuHM9c6GDY", "user_token": "c5bc4ccc-28fa-4080-b702-0d3aac97b993"}),
            "opened": compact({"opened_by_deeplink": True}),
            "route-uuid": "0F1E2D3C-AAAA-4BBB-8CCC-0123456789AB\n",
        },
    )

    write("publish_bodies", publish_bodies())


def publish_bodies() -> dict:
    """The first line: the merchant of the calling API key (empty: app credentials)."""
    app = lambda body: "\n" + compact(body)
    key = lambda merchant, body: merchant + "\n" + compact(body)
    return {
        # README "Merchant events" / tests/merchant_admin.rs
        "merchant-event": app({"merchant_id": "merchant_001", "kind": "payments", "event": "payment.completed", "data": {"order": "42", "amount": "10.00"}}),
        "merchant-event-user": app({"merchant_id": "m1", "kind": "merchant", "event": "trade", "data": "plain text", "user_id": 42, "idempotency_key": "order-42-paid"}),
        "merchant-event-wide": app({"merchant_id": "m1", "kind": "payments", "event": "maintenance", "data": [1, 2], "merchant_wide": True}),
        # Seed 002 / tests/plain_protocol.rs
        "plain-user-event": app({"user_id": "120045", "channel": "notification.events", "event": "new_notification", "data": {"id": 7, "text": "Hi"}}),
        "plain-global-event": app({"channel": "settings", "event": "maintenance", "data": None, "idempotency_key": "k1"}),
        "access-token": app({"user_id": 120045, "ttl_secs": 3600}),
        "token-revoke": app({"token": "prt_0123456789abcdef"}),
        # Seed 003 / tests/socketio_gateway.rs
        "client-token-app": app({"merchant_id": "merchant_001", "user_id": "u-7", "ttl_secs": 900}),
        "client-token-key": key("merchant_001", {"user_id": 7}),
        "client-token-other-merchant": key("merchant_001", {"merchant_id": "merchant_002"}),
        "client-token-revoke": app({"token": "pct_0123456789abcdef"}),
    }


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(header: dict, claims: dict, signer) -> str:
    signing_input = f"{b64url(compact(header).encode())}.{b64url(compact(claims).encode())}"
    return f"{signing_input}.{b64url(signer(signing_input.encode()))}"


def jwt_seeds() -> dict:
    claims = {"merchant_id": "merchant_001", "exp": FAR_FUTURE, "iat": NOW}
    hs = lambda data: hmac.new(HS_SECRET.encode(), data, hashlib.sha256).digest()
    seeds = {
        "hs256": jwt({"alg": "HS256", "typ": "JWT"}, claims, hs),
        "hs256-sub": jwt({"alg": "HS256", "typ": "JWT"}, {"sub": "m2", "exp": FAR_FUTURE}, hs),
        "hs256-expired": jwt({"alg": "HS256", "typ": "JWT"}, {"merchant_id": "m", "exp": NOW}, hs),
        "hs256-kid": jwt({"alg": "HS256", "kid": "k1"}, claims, hs),
        "alg-none": f"{b64url(compact({'alg': 'none'}).encode())}.{b64url(compact(claims).encode())}.",
        "merchant-and-kid": "merchant_001\nk1\n",
        "jwks": compact(
            {"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": b64url(HS_SECRET.encode())}]}
        ),
    }
    try:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, padding
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    except ImportError:
        print("cryptography is not installed: no RS256/ES256 seeds")
        return seeds
    rsa_key = serialization.load_pem_private_key((FIXTURES / "rs256-private.pem").read_bytes(), None)
    ec_key = serialization.load_pem_private_key((FIXTURES / "es256-private.pem").read_bytes(), None)

    def rs(data):
        return rsa_key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def es(data):
        r, s = decode_dss_signature(ec_key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    seeds["rs256"] = jwt({"alg": "RS256", "typ": "JWT"}, claims, rs)
    seeds["es256"] = jwt({"alg": "ES256", "typ": "JWT"}, claims, es)
    numbers = rsa_key.public_key().public_numbers()
    as_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")
    seeds["jwks-rsa"] = compact(
        {"keys": [{"kty": "RSA", "kid": "r1", "alg": "RS256", "use": "sig", "n": b64url(as_bytes(numbers.n)), "e": b64url(as_bytes(numbers.e))}]}
    )
    return seeds


if __name__ == "__main__":
    main()
