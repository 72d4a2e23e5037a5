"""The HTTP part of the benchmark: the app under gunicorn on loopback, and a bounded load.

``Server`` starts ``gunicorn -w 2 'api.app:create_app()'`` on a free loopback port with the
database given in ``DATABASE_URL`` and waits for ``/healthz``. ``load`` runs ``clients``
threads for ``seconds``, each sending, one after the other, case reads
(``GET /api/v1/cases/{id}``) and, with probability ``write_share``, transitions
(``POST /api/v1/cases/{id}/transitions/{key}``, each on a case not used before), over
``http.client`` with a new connection per request (gunicorn's sync workers close it anyway).
The client threads share one process; at these rates they spend most of their time waiting.
``open_loop`` sends the same mix at a set rate instead (requests arrive whether or not the
earlier ones were answered, as users' do).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(
        self, database_url: str, data_dir: Path, workers: int = 2, threads: int = 1
    ) -> None:
        self.port = free_port()
        self.database_url = database_url
        self.data_dir = data_dir
        self.workers = workers
        self.threads = threads  # more than 1: gunicorn's gthread workers
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        env = dict(os.environ)
        env.update(DATABASE_URL=self.database_url, REHABFLOW_DATA_DIR=str(self.data_dir))
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self.log = open(self.data_dir / "gunicorn.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(  # noqa: S603 - our own command line
            [
                str(gunicorn),
                "-w",
                str(self.workers),
                "--threads",
                str(self.threads),
                "-b",
                f"127.0.0.1:{self.port}",
                "--timeout",
                "120",
                "--backlog",
                "256",
                # the schema is the benchmark's business: no migration at start-up
                "api.app:create_app({'INIT_DB': False})",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited; see {self.data_dir / 'gunicorn.log'}")
            try:
                status, _ = request(self.port, "GET", "/healthz")
                if status == 200:
                    # every worker imports the app before it serves; warm both
                    for _ in range(4):
                        request(self.port, "GET", "/healthz")
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer within 90 s")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def request(
    port: int, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class Samples:
    ok: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, seconds: float, status: int) -> None:
        if 200 <= status < 300:
            self.ok.setdefault(kind, []).append(seconds)
        else:
            key = f"{kind}:{status}"
            self.errors[key] = self.errors.get(key, 0) + 1


@dataclass
class Mix:
    """What both loads send: case reads of ``read_ids`` and transitions ``transition`` (with
    ``form``) on fresh cases taken from ``write_ids`` (shared between threads and loads)."""

    port: int
    token: str
    read_ids: list[int]
    write_ids: Iterator[int]
    transition: str
    form: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock)
    ran_out: int = 0  # transitions that found no fresh case (a read was sent instead)

    def fresh_case(self) -> int | None:
        """The next case for a transition; None once they ran out (a read is sent then)."""
        with self.lock:
            case = next(self.write_ids, None)
            self.ran_out += case is None
            return case

    def send(self, write_case: int | None, read_case: int) -> tuple[str, int]:
        """A transition on ``write_case``, or else a read of ``read_case``: (kind, status)."""
        if write_case is not None:
            kind, method, body = "transition", "POST", {"data": self.form}
            path = f"/api/v1/cases/{write_case}/transitions/{self.transition}"
        else:
            kind, method, body, path = "read", "GET", None, f"/api/v1/cases/{read_case}"
        try:
            status, _ = request(self.port, method, path, self.token, body)
        except OSError:
            status = 599
        return kind, status


def _run_threads(target: Any, n: int) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def load(
    mix: Mix,
    *,
    clients: int = 16,
    seconds: float = 20.0,
    write_share: float = 0.2,
    seed: int = 5,
) -> tuple[Samples, float]:
    """Run the mixed load; (samples by kind, wall seconds)."""
    samples = Samples()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        rng = random.Random(seed + n)
        while time.monotonic() < stop:
            write = mix.fresh_case() if rng.random() < write_share else None
            t0 = time.perf_counter()
            kind, status = mix.send(write, rng.choice(mix.read_ids))
            with lock:
                samples.add(kind, time.perf_counter() - t0, status)

    t0 = time.perf_counter()
    _run_threads(client, clients)
    return samples, time.perf_counter() - t0


def open_loop(
    mix: Mix,
    *,
    rate: float,
    seconds: float,
    write_share: float = 0.2,
    seed: int = 7,
    threads: int = 48,
) -> tuple[Samples, float, int]:
    """The same mix sent at a set rate (open loop): arrivals on a Poisson schedule of
    ``rate`` requests per second for ``seconds``, sent by ``threads`` threads (more than
    are ever in flight at rates the server keeps up with). A request's latency counts from
    the time it was due, not from when a thread got to send it, so a server that falls
    behind shows it (no coordinated omission). (samples by kind, wall seconds, requests
    sent late by more than 10 ms: a sign the load generator, not the server, lagged.)"""
    rng = random.Random(seed)
    due: list[float] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            break
        due.append(t)
    writes = [rng.random() < write_share for _ in due]
    reads = [rng.choice(mix.read_ids) for _ in due]
    samples = Samples()
    lock = threading.Lock()
    next_index = iter(range(len(due)))
    late = 0
    start = time.perf_counter() + 0.05

    def sender(_: int) -> None:
        nonlocal late
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            write = mix.fresh_case() if writes[i] else None
            at = start + due[i]
            wait = at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif wait < -0.01:
                with lock:
                    late += 1
            kind, status = mix.send(write, reads[i])
            with lock:
                samples.add(kind, time.perf_counter() - at, status)

    _run_threads(sender, threads)
    return samples, time.perf_counter() - start, late


def timed_gets(
    port: int, token: str, paths: list[str]
) -> tuple[list[float], dict[str, int], dict[str, list[float]]]:
    """Each path once, sequentially; (latencies of the 200s, error counts by status, the
    latencies of the 200s by path)."""
    out: list[float] = []
    errors: dict[str, int] = {}
    by_path: dict[str, list[float]] = {}
    for path in paths:
        t0 = time.perf_counter()
        status, _ = request(port, "GET", path, token)
        if status == 200:
            out.append(time.perf_counter() - t0)
            by_path.setdefault(path, []).append(out[-1])
        else:
            errors[str(status)] = errors.get(str(status), 0) + 1
    return out, errors, by_path
