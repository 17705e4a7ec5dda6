#!/usr/bin/env python3
"""Example netanom webhook receiver (Python standard library only).

Verifies Standard Webhooks signatures -- `webhook-signature: v1,<base64 HMAC-SHA256>` over
"{webhook-id}.{webhook-timestamp}.{body}", keyed with the base64-decoded part of the `whsec_...` secret -- rejects
stale timestamps, drops redeliveries of an id it has already seen, and logs each alert as one JSON line.

    WEBHOOK_SECRET=whsec_... python3 receiver.py            # listens on 0.0.0.0:8080, POST /alerts
    python3 receiver.py --self-test                         # checks the verifier against the spec's test vector
"""

import base64
import collections
import hashlib
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET_PREFIX = "whsec_"
TOLERANCE_SECONDS = 5 * 60
MAX_BODY_BYTES = 1 << 20
SEEN_IDS_MAX = 10_000


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("secret must start with whsec_")
    return base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)


def sign(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """The `v1,<base64>` signature of one delivery."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify(key: bytes, msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    """True if any `v1,` signature of the space-separated header matches (constant-time comparison)."""
    expected = sign(key, msg_id, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in header.split(" ") if candidate.startswith("v1,"))


def log(event: str, **fields) -> None:
    print(json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields}), flush=True)


class Handler(BaseHTTPRequestHandler):
    key = b""
    seen = collections.OrderedDict()
    seen_lock = threading.Lock()

    def _reply(self, status: int, reason: str = "") -> None:
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()
        if reason:
            log("rejected", status=status, reason=reason, webhook_id=self.headers.get("webhook-id"))

    def do_GET(self) -> None:
        self._reply(200 if self.path == "/healthz" else 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length <= 0 or length > MAX_BODY_BYTES:
            return self._reply(413 if length > MAX_BODY_BYTES else 400, "body size")
        body = self.rfile.read(length)
        msg_id = self.headers.get("webhook-id", "")
        timestamp = self.headers.get("webhook-timestamp", "")
        signature = self.headers.get("webhook-signature", "")
        if not (msg_id and timestamp.isdigit() and signature):
            return self._reply(400, "missing webhook-id, webhook-timestamp or webhook-signature")
        if abs(time.time() - int(timestamp)) > TOLERANCE_SECONDS:
            return self._reply(401, "timestamp outside tolerance")
        if not verify(self.key, msg_id, timestamp, body, signature):
            return self._reply(401, "bad signature")
        try:
            alert = json.loads(body)
        except ValueError:
            return self._reply(400, "body is not JSON")
        with self.seen_lock:
            duplicate = msg_id in self.seen
            self.seen[msg_id] = True
            if len(self.seen) > SEEN_IDS_MAX:
                self.seen.popitem(last=False)
        if duplicate:
            log("duplicate", webhook_id=msg_id)
            return self._reply(204)
        log("alert", webhook_id=msg_id, alert=alert)
        self._reply(204)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - silence the default access log
        pass


def self_test() -> None:
    """Standard Webhooks specification test vector."""
    key = decode_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body) == sig
    assert verify(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, "v1,bm9wZQ== " + sig)
    assert not verify(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265331", body, sig)
    assert not verify(key, "msg_other", "1614265330", body, sig)
    print("receiver self-test: Standard Webhooks test vector ok")


def main() -> None:
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    Handler.key = decode_secret(os.environ["WEBHOOK_SECRET"])
    port = int(os.environ.get("PORT", "8080"))
    log("listening", port=port)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
