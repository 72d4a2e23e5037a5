"""Signed webhooks.

The body is JSON. ``X-Rehabflow-Timestamp`` is the Unix time of sending and
``X-Rehabflow-Signature`` is ``sha256=`` + HMAC-SHA256(secret, f"{timestamp}.{body}"). A receiver
checks the signature with :func:`verify` and refuses timestamps older than a few minutes, so a
captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any


class WebhookFailed(Exception):
    pass


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    *,
    now: float | None = None,
    tolerance: int = 300,
) -> bool:
    """True if the signature is right and the timestamp is within ``tolerance`` seconds."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature)


def send(
    url: str,
    secret: str,
    message_id: str,
    payload: dict[str, Any],
    *,
    timeout: float = 10.0,
    now: float | None = None,
) -> int:
    """POST the payload; raise WebhookFailed on anything but a 2xx answer."""
    if not url.startswith(("https://", "http://")):
        raise WebhookFailed("webhook URLs must be http(s)")
    body = json.dumps(payload, ensure_ascii=False, sort_keys=True).encode("utf-8")
    ts = int(now if now is not None else time.time())
    req = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "rehabflow-webhook/1",
            "X-Rehabflow-Id": message_id,
            "X-Rehabflow-Timestamp": str(ts),
            "X-Rehabflow-Signature": sign(secret, ts, body),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.status
    except urllib.error.HTTPError as exc:
        raise WebhookFailed(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise WebhookFailed(type(exc).__name__) from None
