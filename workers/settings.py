"""Worker configuration from the environment (documented in the README)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    user: str | None = None
    password: str | None = None
    starttls: bool = False
    timeout: float = 15.0


@dataclass(frozen=True)
class DeliverySettings:
    max_attempts: int = 6
    base_delay: float = 30.0  # seconds; doubles each attempt, with jitter
    max_delay: float = 3600.0
    visibility_timeout: float = 300.0  # a queued delivery not finished by then is re-queued
    public_url: str = "http://127.0.0.1:8080"


def smtp_settings(env: dict[str, str] | None = None) -> SmtpSettings | None:
    env = dict(os.environ if env is None else env)
    host = env.get("REHABFLOW_SMTP_HOST")
    if not host:
        return None
    return SmtpSettings(
        host=host,
        port=int(env.get("REHABFLOW_SMTP_PORT", "25")),
        sender=env.get("REHABFLOW_SMTP_FROM", "rehabflow@localhost"),
        user=env.get("REHABFLOW_SMTP_USER") or None,
        password=env.get("REHABFLOW_SMTP_PASSWORD") or None,
        starttls=env.get("REHABFLOW_SMTP_STARTTLS", "0") == "1",
    )


def delivery_settings(env: dict[str, str] | None = None) -> DeliverySettings:
    env = dict(os.environ if env is None else env)
    return DeliverySettings(
        max_attempts=int(env.get("REHABFLOW_DELIVERY_MAX_ATTEMPTS", "6")),
        base_delay=float(env.get("REHABFLOW_DELIVERY_BASE_DELAY", "30")),
        max_delay=float(env.get("REHABFLOW_DELIVERY_MAX_DELAY", "3600")),
        visibility_timeout=float(env.get("REHABFLOW_DELIVERY_VISIBILITY_TIMEOUT", "300")),
        public_url=env.get("REHABFLOW_PUBLIC_URL", "http://127.0.0.1:8080"),
    )
