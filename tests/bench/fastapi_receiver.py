"""The webhook receiver teams usually write by hand, as the baseline (c) of `cargo xtask bench http`.

FastAPI under uvicorn: checks the peer address against a list, verifies the Standard Webhooks
HMAC (webhook-id, webhook-timestamp, webhook-signature `v1,BASE64`; whsec_ secret; 300 s
tolerance; several signatures in one header), inserts the event into SQLite (WAL,
synchronous=FULL, one commit per request: the same durability as hookwall's store) and answers
200. A duplicate webhook-id gets 200 and is not stored again.

Configuration from the environment: BENCH_SECRET (whsec_...), BENCH_DB (SQLite path),
BENCH_ALLOW (comma-separated networks, e.g. 127.0.0.0/8).
"""

import base64
import hashlib
import hmac
import ipaddress
import os
import sqlite3
import time

from fastapi import FastAPI, Request, Response

SECRET = base64.b64decode(os.environ["BENCH_SECRET"].removeprefix("whsec_"))
ALLOW = [ipaddress.ip_network(n) for n in os.environ["BENCH_ALLOW"].split(",")]
TOLERANCE = 300

db = sqlite3.connect(os.environ["BENCH_DB"], isolation_level=None, check_same_thread=False)
db.execute("PRAGMA busy_timeout=5000")
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute(
    "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, event_id TEXT UNIQUE NOT NULL, "
    "received_at REAL NOT NULL, body BLOB NOT NULL)"
)

app = FastAPI()


def peer_allowed(host: str | None) -> bool:
    if host is None:
        return False
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(addr in net for net in ALLOW)


def signature_ok(msg_id: str, timestamp: str, body: bytes, header: str) -> bool:
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - ts) > TOLERANCE:
        return False
    mac = hmac.new(SECRET, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode()
    for sig in header.split(" "):
        version, _, value = sig.partition(",")
        if version == "v1" and hmac.compare_digest(value, expected):
            return True
    return False


@app.post("/hooks/sw")
async def webhook(request: Request) -> Response:
    if not peer_allowed(request.client.host if request.client else None):
        return Response(status_code=403)
    body = await request.body()
    h = request.headers
    msg_id, ts, sig = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not (msg_id and ts and sig) or not signature_ok(msg_id, ts, body, sig):
        return Response(status_code=401)
    try:
        db.execute(
            "INSERT INTO events (event_id, received_at, body) VALUES (?, ?, ?)",
            (msg_id, time.time(), body),
        )
    except sqlite3.IntegrityError:
        pass  # a retry of a stored event: success, not stored again
    return Response(content=b'{"received":true}', media_type="application/json")
