"""Where a load's database backends spend their time, from ``pg_stat_activity`` samples.

A throughput figure says how fast; it does not say whether the server was busy, waiting on a
lock, flushing its WAL, or idle waiting for the client's next statement. ``WaitSampler``
polls ``pg_stat_activity`` from a thread of the benchmark's own process while a load runs and
counts, for every client backend of the load's database, what it was doing at each poll:

- ``client``: idle (in a transaction or not), waiting for its client's next statement (the
  client's own time, the round trips' network time);
- ``CPU``: running a statement, in no instrumented wait (executing, or waiting for a core);
- ``Lock:transactionid``, ``IO:WALSync`` …: running a statement, in that wait event (a row
  lock held by another transaction, the commit's WAL flush, …); ``Client:ClientRead`` there
  is a statement waiting for more of its client's message (a large parameter still on its
  way, or the next message of an extended-protocol exchange).

The shares are of all samples, so they add up to 1. Polling costs a little CPU on the same
machine (one small query every ``interval`` seconds, 20 ms by default: well under 1 % of a
core), which the machine's CPU per operation then includes, for every peer alike.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg

_SAMPLE = """
SELECT state, wait_event_type, wait_event FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
    AND application_name = %s
"""
# the application name of a load's connections: a client process sets it (libpq reads
# PGAPPNAME for every connection it opens), so the samples are of the load's backends only
LOAD_APPLICATION = "rfbench-load"


def label(state: str | None, wait_type: str | None, wait_event: str | None) -> str | None:
    """What one sample of one backend says it was doing (see the module docstring); None for
    a backend in no state a load's can be in (starting, a fast-path call)."""
    if state is not None and state.startswith("idle"):  # idle in transaction (aborted) too
        return "client"
    if state != "active":
        return None
    return "CPU" if wait_type is None else f"{wait_type}:{wait_event}"


class WaitSampler:
    """Samples the backends of ``conninfo``'s database whose application is ``application``
    (a load's: :data:`LOAD_APPLICATION`) every ``interval`` seconds between ``start()`` and
    ``stop()``."""

    def __init__(
        self, conninfo: str, interval: float = 0.02, application: str = LOAD_APPLICATION
    ) -> None:
        self.conninfo, self.interval, self.application = conninfo, interval, application
        self.counts: Counter[str] = Counter()
        self.polls = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self) -> WaitSampler:
        self._conn = psycopg.connect(self.conninfo, autocommit=True)
        self._thread = threading.Thread(target=self._run, name="wait-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for row in self._conn.execute(_SAMPLE, (self.application,)).fetchall():
                    if (what := label(*row)) is not None:
                        self.counts[what] += 1
                self.polls += 1
                self._stop.wait(self.interval)
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self._error = exc

    def stop(self) -> dict[str, Any]:
        """Stop sampling; the figures (:meth:`figures`). Raises what stopped the sampling
        early, if anything did."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._conn.close()
        if self._error is not None:
            raise self._error
        return self.figures()

    def figures(self, top: int = 6) -> dict[str, Any]:
        """``polls``, ``samples`` and each activity's share of the samples, largest first;
        past the ``top`` largest, the rest are summed as ``other``."""
        total = sum(self.counts.values())
        share: dict[str, float] = {}
        if total:
            ranked = self.counts.most_common()
            for name, n in ranked[:top]:
                share[name] = round(n / total, 3)
            if rest := sum(n for _, n in ranked[top:]):
                share["other"] = round(rest / total, 3)
        return {"polls": self.polls, "samples": total, "share": share}


def summary(figures: dict[str, Any] | None, top: int = 4) -> str:
    """``figures``' largest shares as table text: ``client 52%, CPU 21%, Lock:tuple 15%``."""
    if not figures or not figures.get("samples"):
        return ""
    parts = list(figures["share"].items())[:top]
    return ", ".join(f"{name} {share:.0%}" for name, share in parts)
