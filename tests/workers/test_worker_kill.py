"""A real ``rehabflow worker`` process killed with SIGKILL in the middle of a job: the
delivery is re-queued once the visibility timeout has passed, a fresh worker completes it, and
the inbox holds each (message, agency) once.

"The middle" is made deterministic by a webhook receiver that holds the first request until
the test has killed the worker: the RQ work-horse (a forked child in its own process group)
is blocked in that request when the worker and its horse are killed together, as when a
machine or container dies."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from rq import Queue
from sqlalchemy.engine import Engine

from workers.queue import QUEUE, connect
from workers.relay import relay, requeue
from workers.tasks import rq_enqueue
from workflow.bootstrap import Services

from ..conftest import ROOT
from ..integration.helpers import Driver
from .conftest import redis_server
from .helpers import DAY, Hook, add_agency, at, deliveries, expected_recipients, inbox_pairs
from .helpers import start_hook as start_receiver

VISIBILITY = 60  # seconds


@pytest.fixture
def engine(sqlite_engine: Engine) -> Engine:
    """SQLite only: two worker processes cost ~5 s per database, and the PostgreSQL path of
    the jobs is already run by test_relay's RQ worker."""
    return sqlite_engine


@pytest.fixture
def redis14(tmp_path: Path) -> Iterator[str]:
    yield from redis_server(14, tmp_path)


@pytest.fixture
def hook() -> Iterator[Hook]:
    receiver = Hook(hold_first=True)
    stop = start_receiver(receiver)
    try:
        yield receiver
    finally:
        stop()


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def kill(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "api.cli", "worker", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_worker_killed_mid_job(
    services: Services,
    actors,  # noqa: ANN001
    redis14: str,
    hook: Hook,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REHABFLOW_DELIVERY_VISIBILITY_TIMEOUT", str(VISIBILITY))
    monkeypatch.setenv("REDIS_URL", redis14)
    env = dict(os.environ)
    # jobs in relay order: the first message's inbox item; then the second message to this
    # agency (inbox item written, webhook blocks), and behind it the other agencies' items
    hooked = add_agency(services, "commune_pc", webhook_url=hook.url, webhook_secret="k")
    add_agency(services, "family")
    drive = Driver(services.cases, actors)
    cid = drive.open(DAY).case_id
    drive.fire(cid, "request_determination", DAY)
    later = DAY + timedelta(days=2)
    drive.fire(cid, "record_addiction_result", later, result_date=later.isoformat())
    queue = Queue(QUEUE, connection=connect(redis14))
    now = at(later, 10)
    assert relay(services, rq_enqueue(queue), now) == 2
    expected = expected_recipients(services)
    assert len(expected) >= 4 and hooked in {a for _, a in expected}
    [webhook] = deliveries(services, "webhook")

    procs: list[subprocess.Popen] = []
    horses: list[int] = []
    try:
        worker = start_worker(env)
        procs.append(worker)
        if not hook.arrived.wait(60):
            worker.kill()
            pytest.fail("the worker never called the webhook:\n" + worker.communicate()[0])
        horses = children(worker.pid)  # the work-horse (and the scheduler's process)
        assert horses, "no work-horse found"
        kill([worker.pid, *horses])  # all die at once, the horse in the middle of its request
        worker.wait(10)
        assert worker.returncode == -signal.SIGKILL
        # the webhook was not answered: its delivery is still queued, its attempt not counted
        row = next(d for d in deliveries(services) if d.id == webhook.id)
        assert (row.status, row.attempts) == ("queued", 0)
        done = [d for d in deliveries(services) if d.status == "delivered"]
        assert 1 <= len(done) < len(deliveries(services))
        partial = inbox_pairs(services)
        assert len(set(partial)) == len(partial) < len(expected)

        # within the visibility timeout nothing is taken back; after it the lost deliveries
        # are (the killed one, and the ones still waiting in Redis behind it: duplicates)
        assert requeue(services, rq_enqueue(queue), now + timedelta(seconds=VISIBILITY - 1)) == 0
        lost = [d for d in deliveries(services) if d.status == "queued"]
        after = now + timedelta(seconds=VISIBILITY + 1)
        assert requeue(services, rq_enqueue(queue), after) == len(lost)

        fresh = start_worker(env, "--burst")
        procs.append(fresh)
        out, _ = fresh.communicate(timeout=90)
        assert fresh.returncode == 0, out
    finally:
        hook.release.set()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        kill(horses)

    assert {d.status for d in deliveries(services)} == {"delivered"}, out
    assert inbox_pairs(services) == expected  # each (message, agency) exactly once
    # at-least-once to the channel: the killed request and the one that succeeded
    assert len(hook.requests) == 2
    assert len({h["X-Rehabflow-Id"] for h, _ in hook.requests}) == 1
    assert queue.count == 0
