"""What a worker process needs, built once from the environment (jobs carry only ids)."""

from __future__ import annotations

from functools import lru_cache

from workflow.bootstrap import Services, bootstrap


@lru_cache(maxsize=1)
def services() -> Services:
    return bootstrap()
