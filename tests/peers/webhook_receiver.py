"""A payrelay callback receiver in Python, as the README's "Callbacks" section shows it:
verify with the official `standardwebhooks` library (the raw body, the three webhook-*
headers), de-duplicate by webhook-id, answer 2xx fast.

    WEBHOOK_SECRET=whsec_... PORT=8080 python webhook_receiver.py

For tests/real_peers.rs it prints one JSON line per request: {"verified": id, "type": ...}
or {"rejected": reason}.
"""
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook

webhook = Webhook(os.environ["WEBHOOK_SECRET"])
seen = set()  # use your database in production: ids repeat on retries


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            event = webhook.verify(body, headers)  # raises unless signed and fresh
        except Exception as err:  # WebhookVerificationError
            print(json.dumps({"rejected": str(err)}), flush=True)
            self.send_response(400)
            self.end_headers()
            return
        if headers["webhook-id"] not in seen:
            seen.add(headers["webhook-id"])
            # event["type"], event["data"], event["merchant_id"]: credit the balance here.
            print(json.dumps({"verified": headers["webhook-id"], "type": event["type"], "data": event["data"]}), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Receiver)
# PORT=0: the system picks a free port, printed in the first line.
print(json.dumps({"listening": True, "port": server.server_address[1]}), flush=True)
server.serve_forever()
