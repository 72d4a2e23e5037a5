"""The benchmark: engine vs the raw-SQL floor and vs SpiffWorkflow, HTTP, sweep, report, list.

    python -m bench.run [--quick] [--database-url URL] [--only SECTION ...]

One process invocation runs every section and prints a table; the figures (with the machine)
go to ``bench/results/<YYYY-MM-DD>.json`` (``--quick`` runs to ``<date>-quick.json``).

Without ``--database-url`` it works in a private schema of the test PostgreSQL database
(``REHABFLOW_BENCH_PG_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
filled by ``bench.generate`` with ``--cases`` cases, and dropped at the end. With
``--database-url`` (e.g. the million-case ``rehabflow_bench``) it uses that database as it is
(filling it first only if it holds no case). Either way it adds, through the generator, the
fresh cases it fires transitions on (``detected`` cases of the demo commune holding the
``determination_request`` document); those stay behind in ``addiction_determination``.
So the report (section 7) and the list (section 8), whose commune is the demo commune, are
measured first, before the run writes its pools (the table gives that commune's cases).

Concurrent clients are separate **processes** (no shared GIL), started before the clock and
released together by a barrier; throughput = operations of all clients / the longest client's
wall time. The HTTP load's 16 clients are threads of this process (they mostly wait on
sockets). The SQLite part uses a temporary file database (WAL, as ``workflow.db`` sets it up).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, insert, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bench import floor, spiff, waits
from bench import generate as gen
from workflow import rollup
from workflow.db import make_engine, make_session_factory
from workflow.demo import DEMO_COMMUNE
from workflow.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PG_URL = os.environ.get(
    "REHABFLOW_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TRANSITION = floor.TRANSITION
ACTOR = "commune_police.officer"
SECTIONS = ("floor", "engine", "spiff", "embedded", "http", "sweep", "report", "list", "sql")


@dataclass(frozen=True)
class Plan:
    quick: bool
    seconds: float  # per throughput measurement
    http_seconds: float
    http_clients: int
    base_cases: int  # cases generated when the database is empty (private schema: always)
    sqlite_cases: int
    sweep_reference: int  # open cases of the sweep's reference database
    sweep_due: int
    list_requests: int
    variants: int  # template walks per state
    rounds: int = 3  # alternated measurements of each throughput peer
    http_threads: int = 1  # threads per gunicorn worker (1: sync workers; more: gthread)

    @classmethod
    def make(cls, quick: bool, cases: int | None) -> Plan:
        if quick:
            return cls(True, 1.5, 6.0, 16, cases or 3000, 500, 1000, 200, 40, 1, rounds=2)
        return cls(False, 10.0, 20.0, 16, cases or 10_000, 5000, 10_000, 1000, 200, 4, rounds=3)


def quantiles(xs: list[float]) -> dict[str, float | None]:
    if not xs:
        return {"n": 0, "p50_ms": None, "p99_ms": None}
    xs = sorted(xs)
    return {
        "n": len(xs),
        "p50_ms": round(xs[len(xs) // 2] * 1000, 2),
        "p99_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.99))] * 1000, 2),
    }


def code_version() -> dict[str, Any]:
    """The commit measured, and the files of the working tree that differ from it."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(  # noqa: S603 - fixed git command lines
            ["git", *args],  # noqa: S607
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout

    changed = [line[3:] for line in git("status", "--porcelain").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted": changed}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    try:
        model = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        info["cpu"] = model[0] if model else platform.processor()
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["memory_gb"] = round(int(mem) / 1024 / 1024, 1)
        info["load_avg"] = list(os.getloadavg())
    except OSError:
        pass
    return info


# ------------------------------------------------------------------------------ databases
@dataclass
class Db:
    url: str  # SQLAlchemy URL (with ?options=-csearch_path=... for a private schema)
    engine: Engine
    conninfo: str  # psycopg / sqlite path
    schema: str | None = None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


def _conninfo(url: str, search_path: str | None) -> str:
    import psycopg

    u = make_url(url)
    kw: dict[str, Any] = {
        "host": u.host or "127.0.0.1",
        "port": u.port or 5432,
        "user": u.username,
        "dbname": u.database,
    }
    if u.password:
        kw["password"] = u.password
    if search_path:
        kw["options"] = f"-csearch_path={search_path}"
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in kw.items() if v is not None})


@contextmanager
def pg_database(url: str | None, name: str) -> Iterator[Db]:
    """The given database as it is, or a private schema ``name`` of the test database."""
    if url:
        url = gen.database_url(url)
        engine = make_engine(url)
        try:
            yield Db(url, engine, _conninfo(url, None))
        finally:
            engine.dispose()
        return
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {name}"))
    full = f"{PG_URL}?options=-csearch_path%3D{name}"
    engine = make_engine(full)
    try:
        yield Db(full, engine, _conninfo(PG_URL, name), name)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()


def pg_available() -> bool:
    try:
        engine = make_engine(PG_URL, connect_args={"connect_timeout": 2})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not here"
        return False


def count_cases(engine: Engine) -> int:
    from workflow.model import Case

    gen.ensure_schema(engine)
    with engine.connect() as conn:
        return conn.scalar(select(func.count()).select_from(Case)) or 0


def actor_row(engine: Engine) -> dict[str, Any]:
    from workflow.actors import actor_for

    with make_session_factory(engine)() as s:
        a = actor_for(s, ACTOR)
    return {
        "user_id": a.user_id,
        "username": a.username,
        "agency_id": a.agency_id,
        "agency_type": a.agency_type,
        "role": a.role,
    }


# -------------------------------------------------------------------------------- clients
def _clock() -> datetime:
    return datetime.now(UTC)


def transition_form(registry: Registry, now: datetime) -> dict[str, Any]:
    from workflow.calendar import business_date

    d = registry.in_force(gen.KEY, business_date(now))
    form: dict[str, Any] = {"request_date": business_date(now).isoformat()}
    t = d.transitions[TRANSITION]
    for f in t.fields:
        if f.name == "reason" and f.choices:
            form["reason"] = f.choices[0].value
    return form


def make_step(kind: str, conf: dict[str, Any]) -> Callable[[int], None]:
    """The operation a client repeats (built in the client's own process)."""
    if kind == "floor-pg":
        return floor.pg_step(conf["conninfo"], conf["actor"], _clock)
    if kind == "floor-sqlite":
        return floor.sqlite_step(conf["conninfo"], conf["actor"], _clock)
    if kind == "spiff":
        return spiff.step_factory(conf["conninfo"], conf["spiff_schema"])
    if kind == "engine":
        from workflow.actors import actor_for
        from workflow.service import CaseService
        from workflow.storage import MemoryBlobStore

        engine = make_engine(conf["url"])
        factory = make_session_factory(engine)
        service = CaseService(
            factory, Registry.from_directory(gen.DEFINITIONS), blobs=MemoryBlobStore()
        )
        with factory() as s:
            actor = actor_for(s, ACTOR)
        form = conf["form"]

        def step(case_id: int) -> None:
            service.advance(case_id, TRANSITION, form, actor, _clock())

        step.close = engine.dispose  # type: ignore[attr-defined]
        return step
    raise ValueError(kind)


def _client(
    kind: str, conf: dict, ids: list[int], cycle: bool, seconds: float, barrier: Any, out: Any
) -> None:
    try:
        os.environ["PGAPPNAME"] = waits.LOAD_APPLICATION  # libpq: this client's connections
        step = make_step(kind, conf)
        step(ids[0])  # warm-up: connection, caches (not timed)
        barrier.wait()
        lat: list[float] = []
        source = itertools.cycle(ids[1:]) if cycle else iter(ids[1:])
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        stop = t0 + seconds
        exhausted = True
        for case_id in source:
            if time.perf_counter() >= stop:
                exhausted = False
                break
            s = time.perf_counter()
            step(case_id)
            lat.append(time.perf_counter() - s)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        out.put(("ok", len(lat), wall, lat, exhausted, cpu))
        getattr(step, "close", lambda: None)()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        with contextlib.suppress(Exception):
            barrier.abort()
        out.put(("error", repr(exc), 0.0, [], False, 0.0))


def busy_cpu_seconds() -> float | None:
    """The CPU time the whole machine has spent busy (every core, every process, the kernel),
    from ``/proc/stat``; None where there is no such file."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal …: user to softirq but idle and iowait
    # (steal is time the hypervisor gave to others; guest time is counted in user already)
    ticks = sum(int(x) for i, x in enumerate(fields[:7]) if i not in (3, 4))
    return ticks / os.sysconf("SC_CLK_TCK")


def drive(
    kind: str, conf: dict, ids: list[int], clients: int, seconds: float, *, cycle: bool = False
) -> dict[str, Any]:
    """``clients`` processes, each with its own slice of ``ids``; throughput and latencies.

    Besides the clients' own CPU time, the machine's busy CPU time over the timed loops is
    counted per operation: on a machine where the database runs beside the clients and
    nothing else runs, that is the whole cost of an operation (client, server, WAL, kernel),
    which is what bounds the throughput once the cores are saturated."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(clients + 1)  # and this process, to start counting the machine's CPU
    out = ctx.Queue()
    per = len(ids) // clients
    procs = [
        ctx.Process(
            target=_client,
            args=(kind, conf, ids[i * per : (i + 1) * per], cycle, seconds, barrier, out),
        )
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    on_pg = make_url(conf["url"]).get_backend_name() == "postgresql"  # SQLite: no backends
    sampler = waits.WaitSampler(conf["conninfo"]) if on_pg else None
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed: it says why
        barrier.wait(timeout=600)
    if sampler is not None:
        sampler.start()
    try:
        busy0 = busy_cpu_seconds()
        results = [out.get(timeout=600) for _ in procs]
        busy1 = busy_cpu_seconds()
    except BaseException:
        if sampler is not None:  # its thread and connection go too; the load's error stands
            with contextlib.suppress(Exception):
                sampler.stop()
        raise
    backends = sampler.stop() if sampler is not None else None
    for p in procs:
        p.join(timeout=60)
    errors = [r[1] for r in results if r[0] == "error"]
    if errors:
        raise RuntimeError(f"{kind} client failed: {errors[0]}")
    ops = sum(r[1] for r in results)
    wall = max(r[2] for r in results)
    lat = [x for r in results for x in r[3]]
    return {
        "clients": clients,
        "ops": ops,
        "seconds": round(wall, 3),
        "per_s": round(ops / wall, 1) if wall else None,
        **quantiles(lat),
        "ran_out_of_cases": any(r[4] for r in results),
        # CPU per operation of the clients' own processes (their timed loop)
        "client_cpu_ms_per_op": round(sum(r[5] for r in results) / ops * 1000, 3) if ops else None,
        "machine_cpu_ms_per_op": (
            round((busy1 - busy0) / ops * 1000, 3) if ops and busy0 is not None else None
        ),
        # PostgreSQL: what the clients' backends were doing (bench.waits)
        **({"backends": backends} if backends is not None else {}),
    }


def pool_size(rate_per_client: float, clients: int, seconds: float) -> int:
    return int(rate_per_client * seconds * clients) + 2 * clients


# ------------------------------------------------------------------------------- sections
def count_statements(db: Db, registry: Registry, case_id: int, form: dict) -> dict[str, Any]:
    """The SQL statements one ``advance`` sends (``BEGIN`` and ``COMMIT`` not counted), and
    in how many round trips, its ``BEGIN``'s and ``COMMIT``'s included.

    PostgreSQL: as the driver sends them (psycopg's ``Cursor.execute``, and
    ``workflow.prepared.fetch``: the engine sends its command's statements past SQLAlchemy,
    through libpq's prepared-statement calls in autocommit); statements sent in one pipeline
    would be one round trip, and a ``COMMIT`` sent in one would ride with them. psycopg sends
    a ``BEGIN`` of its own before a statement outside autocommit that finds no transaction
    open, and a ``COMMIT`` only for a transaction open (in autocommit, none). SQLite: SQLAlchemy's
    ``before_cursor_execute``, one round trip each (and the ``COMMIT``)."""
    import psycopg

    from workflow import prepared  # (here: bench.profile --compare imports older trees)
    from workflow.actors import actor_for
    from workflow.service import CaseService
    from workflow.storage import MemoryBlobStore

    factory = make_session_factory(db.engine)
    service = CaseService(factory, registry, blobs=MemoryBlobStore())
    with factory() as s:
        actor = actor_for(s, ACTOR)
    seen: list[tuple[str, int | None]] = []  # (statement, its pipeline's id)
    commits: list[int | None] = []  # the pipeline each COMMIT was sent in
    begins = 0  # BEGINs psycopg sent on its own (outside a pipeline)

    def short(statement: str | bytes) -> str:
        text_ = statement if isinstance(statement, str) else statement.decode()
        return " ".join(text_.split())[:240]

    def pipeline_of(connection: Any) -> int | None:
        pipeline = connection._pipeline  # noqa: SLF001 - no public accessor
        return None if pipeline is None else id(pipeline)

    if db.engine.dialect.name == "postgresql":
        real, real_commit = psycopg.Cursor.execute, psycopg.Connection.commit

        def idle(connection: psycopg.Connection) -> bool:
            return connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE

        def execute(self, query, params=None, **kw):  # noqa: ANN001, ANN202
            nonlocal begins
            pipeline = pipeline_of(self.connection)
            begins += pipeline is None and not self.connection.autocommit and idle(self.connection)
            seen.append((short(query), pipeline))
            return real(self, query, params, **kw)

        def commit(self):  # noqa: ANN001, ANN202
            if not idle(self):  # (in autocommit, or after a rollback, nothing is sent)
                commits.append(pipeline_of(self))
            return real_commit(self)

        real_fetch = prepared.fetch

        def fetch(raw, sql, values, *, first):  # noqa: ANN001, ANN202
            # libpq's prepared-statement calls on a connection in autocommit: no BEGIN, and
            # never in a pipeline
            seen.append((short(sql), None))
            return real_fetch(raw, sql, values, first=first)

        psycopg.Cursor.execute = execute  # type: ignore[method-assign]
        psycopg.Connection.commit = commit  # type: ignore[method-assign]
        prepared.fetch = fetch
        try:
            service.advance(case_id, TRANSITION, form, actor, _clock())
        finally:
            psycopg.Cursor.execute = real  # type: ignore[method-assign]
            psycopg.Connection.commit = real_commit  # type: ignore[method-assign]
            prepared.fetch = real_fetch
        # the command's COMMIT, if any; SQLAlchemy's own after it (the unit of work's) finds
        # no transaction open and sends nothing
        commits = commits[:1]
    else:

        def record(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
            seen.append((short(statement), None))

        event.listen(db.engine, "before_cursor_execute", record)
        try:
            service.advance(case_id, TRANSITION, form, actor, _clock())
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        commits = [None]
    pipelines = {pid for _, pid in seen if pid is not None}
    alone = sum(pid is None for _, pid in seen) + sum(pid not in pipelines for pid in commits)
    return {
        "count": len(seen),
        "round_trips": len(pipelines) + alone + begins,
        "commit_pipelined": any(pid in pipelines for pid in commits),
        "statements": [statement for statement, _ in seen],
    }


PEERS = ("floor", "engine", "spiff")


def round_order(peers: list[str], r: int) -> list[str]:
    """Round ``r``'s order of the peers: rotated, so no peer always runs first (right after
    the set-up's write-back) or always follows the same one."""
    k = r % len(peers) if peers else 0
    return peers[k:] + peers[:k]


def median_round(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median throughput (the lower middle one of an even count), with every
    round's throughput beside it."""
    ranked = sorted(runs, key=lambda b: b["per_s"] or 0)
    mid = ranked[(len(ranked) - 1) // 2]
    return {**mid, "rounds": [b["per_s"] for b in runs]}


def throughput(
    db: Db, registry: Registry, plan: Plan, templates: list, now: datetime, which: set[str]
) -> dict[str, Any]:
    """Sections 1-3 on PostgreSQL: floor, engine and SpiffWorkflow at 1 and 4 clients.

    Each is measured ``plan.rounds`` times, the peers alternating within each round (in a
    rotated order): a stall of the machine lands in one measurement of one peer, not in all
    of a peer's. A peer's figure is its median round; the per-round ratios are kept too."""
    out: dict[str, Any] = {}
    form = transition_form(registry, now)
    actor = actor_row(db.engine)
    conf = {"conninfo": db.conninfo, "url": db.url, "actor": actor, "form": form}
    rounds = plan.rounds
    # fresh cases (workflows) per measurement, for more than the fastest rate seen per client
    # (engine 1,148/s alone, 355/s each of 4, on 28/11's AMD EPYC; Spiff 488/s and 221/s): a
    # client that runs out stops early, and the table says so
    sizes = {1: pool_size(1600, 1, plan.seconds), 4: pool_size(500, 4, plan.seconds)}
    spiff_sizes = {1: pool_size(900, 1, plan.seconds), 4: pool_size(400, 4, plan.seconds)}
    need = 2 + 4000 * ("floor" in which) + rounds * sum(sizes.values()) * ("engine" in which)
    ids = gen.make_pool(db.engine, registry, need, now)
    check = ids.pop()
    floor_ids = [ids.pop() for _ in range(4000)] if "floor" in which else []
    schema = f"rfbench_spiff_{os.getpid()}"
    wf_ids: list[int] = []
    peers = [p for p in PEERS if p in which]
    try:
        if "spiff" in which:
            wf_ids = spiff.prepare(db.conninfo, rounds * sum(spiff_sizes.values()), schema)
            conf["spiff_schema"] = schema
        settle(db.engine)
        out["sql"] = count_statements(db, registry, check, form)
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {p: {1: [], 4: []} for p in peers}
        for r in range(rounds):
            for c in (1, 4):
                for peer in round_order(peers, r):
                    if peer == "floor":
                        block = drive("floor-pg", conf, floor_ids, c, plan.seconds, cycle=True)
                    elif peer == "engine":
                        chunk = [ids.pop() for _ in range(sizes[c])]
                        block = drive("engine", conf, chunk, c, plan.seconds)
                    else:
                        chunk = [wf_ids.pop() for _ in range(spiff_sizes[c])]
                        block = drive("spiff", conf, chunk, c, plan.seconds)
                    runs[peer][c].append(block)
    finally:
        if "spiff" in which:
            spiff.drop(db.conninfo, schema)
    for peer in peers:
        out[peer] = {str(c): median_round(runs[peer][c]) for c in (1, 4)}
    out["rounds"] = rounds
    return out


def embedded(registry: Registry, plan: Plan, templates: list, now: datetime) -> dict[str, Any]:
    """Section 4: floor and engine on a SQLite file (WAL), one client."""
    with tempfile.TemporaryDirectory(prefix="rfbench-sqlite-") as tmp:
        path = Path(tmp) / "bench.db"
        url = f"sqlite:///{path}"
        engine = make_engine(url)
        gen.load(engine, registry, templates, plan.sqlite_cases, now)
        n = pool_size(1500, 1, plan.seconds)  # the engine did 947/s here
        ids = gen.make_pool(engine, registry, n + 2000, now)
        conf = {
            "conninfo": str(path),
            "url": url,
            "actor": actor_row(engine),
            "form": transition_form(registry, now),
        }
        db = Db(url, engine, str(path))
        sql = count_statements(db, registry, ids.pop(), conf["form"])
        engine.dispose()
        floor_run = drive("floor-sqlite", conf, ids[:2000], 1, plan.seconds, cycle=True)
        engine_run = drive("engine", conf, ids[2000:], 1, plan.seconds)
        return {
            "cases": plan.sqlite_cases,
            "floor": floor_run,
            "engine": engine_run,
            "sql": {"count": sql["count"]},
        }


def plant_due(engine: Engine, registry: Registry, n: int, now: datetime) -> None:
    """``n`` new cases each owing its level-1 escalation today (bench.sweep's rows)."""
    from bench import sweep as bsweep
    from workflow.calendar import business_date
    from workflow.model import Case, Deadline, Subject

    today = business_date(now)
    group = registry.get("drug_rehab", 1).states[bsweep.STATE].group
    with engine.begin() as conn:
        base = {
            m: conn.scalar(select(func.coalesce(func.max(m.id), 0))) or 0
            for m in (Subject, Case, Deadline)
        }
        subjects, cases, deadlines = [], [], []
        for s, c, d in bsweep.rows(0, n, today, now, group):
            s["id"] += base[Subject]
            c["id"] += base[Case]
            c["subject_id"] = s["id"]
            c["number"] = f"SWEEP-{c['id']}"
            d["id"] += base[Deadline]
            d["case_id"] = c["id"]
            subjects.append(s)
            cases.append(c)
            deadlines.append(d)
        conn.execute(insert(Subject.__table__), subjects)
        conn.execute(insert(Case.__table__), [_case_cols(c) for c in cases])
        conn.execute(insert(Deadline.__table__), deadlines)
        # and the report counters of those deadlines, as the engine would have kept them
        tally = rollup.Tally()
        places = {c["id"]: (c["unit_code"], c["province_code"]) for c in cases}
        rows = [(d["case_id"], d["due_on"], d["key"], d["status"], None) for d in deadlines]
        rollup.tally_deadlines(tally, rows, places)
        with Session(bind=conn) as session:
            rollup.add(session, tally)
        if engine.dialect.name == "postgresql":
            for t in ("subjects", "cases", "deadlines"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                        f"(SELECT max(id) FROM {t}))"
                    )
                )


def _case_cols(c: dict[str, Any]) -> dict[str, Any]:
    return c  # bench.sweep's rows already use the column names (state_group)


def timed_sweep(engine: Engine, registry: Registry, n_due: int, now: datetime) -> dict[str, Any]:
    from workflow.service import CaseService
    from workflow.storage import MemoryBlobStore
    from workflow.sweep import sweep_deadlines

    service = CaseService(make_session_factory(engine), registry, blobs=MemoryBlobStore())
    t0 = time.perf_counter()
    drained = sweep_deadlines(service, now)  # whatever fell due on its own: not timed
    drain_s = time.perf_counter() - t0
    plant_due(engine, registry, n_due, now)
    with engine.connect() as conn:
        open_cases = conn.scalar(text("SELECT count(*) FROM cases WHERE closed_at IS NULL"))
    t0 = time.perf_counter()
    report = sweep_deadlines(service, now)
    seconds = time.perf_counter() - t0
    return {
        "open_cases": open_cases,
        "due": n_due,
        "processed": report.rows,
        "escalations": report.escalations,
        "seconds": round(seconds, 3),
        "items_per_s": round(report.rows / seconds, 1) if seconds else None,
        "drained_before": drained.rows,
        "drain_seconds": round(drain_s, 3),
    }


def sweep_section(db: Db, registry: Registry, plan: Plan, templates: list, now: datetime) -> dict:
    big = timed_sweep(db.engine, registry, plan.sweep_due, now)
    name = f"rfbench_sweepref_{os.getpid()}"
    with pg_database(None, name) as ref:
        gen.load(ref.engine, registry, templates, plan.sweep_reference, now)
        small = timed_sweep(ref.engine, registry, plan.sweep_due, now)
    return {
        "reference": small,
        "big": big,
        "ratio_big_to_reference": round(big["seconds"] / small["seconds"], 2),
    }


def commune_cases(engine: Engine) -> int:
    """The demo commune's cases: the report's and the list's commune, where the benchmark's
    pools of fresh cases go too (a database reused by several runs holds theirs)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM cases WHERE unit_code = :u"), {"u": DEMO_COMMUNE}
            ).scalar_one()
        )


def report_section(db: Db, registry: Registry, now: datetime) -> dict[str, Any]:
    """Section 7: the indicator report of the year for the demo commune, its province and the
    country, each timed twice: the first time (``first``: what the first reader of the day
    waits) and again (the figure)."""
    from workflow import reports
    from workflow.calendar import WorkingCalendar, business_date
    from workflow.units import get

    today = business_date(now)
    start, end = reports.period(str(today.year))
    out: dict[str, Any] = {
        "period": f"{start.isoformat()}..{end.isoformat()}",
        "commune_cases": commune_cases(db.engine),
        "first": {},
    }
    cal = WorkingCalendar()
    factory = make_session_factory(db.engine)

    def timed(unit: str | None) -> float:
        with factory() as s:
            t0 = time.perf_counter()
            reports.indicators(s, registry, unit, start, end, today=today, calendar=cal)
            return round(time.perf_counter() - t0, 3)

    for label, unit in (
        ("commune", DEMO_COMMUNE),
        ("province", get(DEMO_COMMUNE).province_code),
        ("country", None),
    ):
        out["first"][label] = timed(unit)
        out[label] = timed(unit)
    return out


def settle(engine: Engine) -> None:
    """After a section's set-up wrote its pool of fresh cases: have PostgreSQL write its dirty
    buffers (``CHECKPOINT``, when the role may) and the kernel its dirty pages (``sync``)
    before the clock starts, so the timed load does not share the disk with the set-up's
    write-back. A precaution, not a cure: on the benchmark's virtual machine the floor, the
    first section timed, still stalled in some runs with it (p99 68 ms against a p50 of
    1.9 ms; bench/README.md)."""
    if engine.dialect.name == "postgresql":
        with contextlib.suppress(DBAPIError), engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("CHECKPOINT"))
    os.sync()


def warm_up(engine: Engine, case_ids: list[int]) -> None:
    """Read the rows (and index pages) a case page of ``case_ids`` reads, untimed: the load
    then measures a server whose working set is in memory, as a running one's is, not the
    first reads of a freshly generated database from disk (at 1M cases it is larger than
    the page cache; cold, those reads made the p99)."""
    with engine.connect() as conn:
        for sql in (
            "SELECT count(s.full_name) FROM cases c JOIN subjects s ON s.id = c.subject_id"
            " WHERE c.id = ANY(:ids)",
            "SELECT count(due_on) FROM deadlines WHERE case_id = ANY(:ids) AND status = 'open'",
            "SELECT count(sha256) FROM documents WHERE case_id = ANY(:ids)",
            "SELECT count(*) FROM access_log WHERE case_id = ANY(:ids)",
        ):
            conn.execute(text(sql), {"ids": case_ids})


def http_figures(samples: Any, wall: float) -> dict[str, Any]:
    """Throughput and latencies by kind of one HTTP load (``bench.http.Samples``)."""
    total = sum(len(v) for v in samples.ok.values())
    return {
        "seconds": round(wall, 2),
        "requests_per_s": round(total / wall, 1),
        "read": quantiles(samples.ok.get("read", [])),
        "transition": quantiles(samples.ok.get("transition", [])),
        "errors": samples.errors,
    }


def _busy(h: dict[str, Any]) -> str:
    """The table's words for :func:`machine_load`'s figures (absent from older results)."""
    if h.get("machine_busy") is None:
        return ""
    return f"; machine {h['machine_busy']:.0%} busy, {h['machine_cpu_ms_per_req']} ms CPU/req"


def machine_load(busy0: float | None, wall: float, samples: Any) -> dict[str, Any]:
    """How busy the whole machine was during a load that just ended (``busy0``: the machine's
    busy CPU seconds when it started) — its share of all cores — and its busy CPU time per
    answered request: a server held back by waits, not by CPU, shows a share well under 1
    (everything runs here: gunicorn, PostgreSQL and the load's own threads)."""
    busy = busy_cpu_seconds()
    if busy0 is None or busy is None or wall <= 0:
        return {}
    total = sum(len(v) for v in samples.ok.values())
    return {
        "machine_busy": round((busy - busy0) / wall / (os.cpu_count() or 1), 2),
        "machine_cpu_ms_per_req": round((busy - busy0) / total * 1000, 2) if total else None,
    }


def http_section(
    db: Db, registry: Registry, plan: Plan, now: datetime, which: set[str]
) -> dict[str, Any]:
    """Sections 5 (mixed load) and 8 (filtered list pages) against gunicorn."""
    from bench import http as bhttp
    from workflow.accounts import Accounts

    factory = make_session_factory(db.engine)
    token = Accounts(factory, registry).create_token(ACTOR, now).token
    form = transition_form(registry, now)
    with db.engine.connect() as conn:
        read_ids = list(
            conn.execute(
                text("SELECT id FROM cases WHERE unit_code = :u ORDER BY random() LIMIT 3000"),
                {"u": DEMO_COMMUNE},
            ).scalars()
        )
    warm_up(db.engine, read_ids)
    out: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="rfbench-http-") as tmp,
        bhttp.Server(db.url, Path(tmp), threads=plan.http_threads) as server,
    ):
        if "list" in which:
            # before this section's pool: the demo commune's cases as they were (see main)
            d = registry.in_force(gen.KEY, now.date())
            states = [s for s in d.states if s != "closed"]
            filters = [f"state={s}" for s in states]
            filters += [
                "group=compulsory_dossier",
                "overdue=true",
                "q=nguyen",
                "unit=" + DEMO_COMMUNE,
            ]
            paths = [
                f"/api/v1/cases?{filters[i % len(filters)]}&limit=50"
                for i in range(plan.list_requests)
            ]
            # each filter's page once, untimed: the workers' first use of each query (its
            # compilation, its prepared statement) is not a steady server's latency (as the
            # read set of section 5 is warmed first)
            bhttp.timed_gets(server.port, token, paths[: len(filters)])
            lat, errors, by_path = bhttp.timed_gets(server.port, token, paths)
            # each filter's median and slowest page: which filter makes the tail
            pages = {
                path.split("?", 1)[1].split("&limit=")[0]: {
                    "p50_ms": round(statistics.median(xs) * 1000, 2),
                    "max_ms": round(max(xs) * 1000, 2),
                }
                for path, xs in by_path.items()
            }
            slowest = max(pages, key=lambda k: pages[k]["p50_ms"], default=None)
            out["list"] = {
                **quantiles(lat),
                "errors": errors,
                "filters": len(filters),
                "commune_cases": commune_cases(db.engine),
                "by_filter": pages,
                "slowest_filter": slowest,
            }
        if "http" in which:
            # fresh cases for the transitions of both loads (a fifth of up to ~1,200 req/s,
            # then of half that): a load that runs out sends reads instead, and says so
            writes = gen.make_pool(db.engine, registry, int(360 * plan.http_seconds) + 100, now)
            write_ids = iter(writes)
            settle(db.engine)
            mix = bhttp.Mix(server.port, token, read_ids, write_ids, TRANSITION, form)
            busy0 = busy_cpu_seconds()
            samples, wall = bhttp.load(mix, clients=plan.http_clients, seconds=plan.http_seconds)
            out["http"] = {
                "clients": plan.http_clients,
                **http_figures(samples, wall),
                **machine_load(busy0, wall, samples),
                "workers": 2,
                "threads": plan.http_threads,
                "ran_out_of_cases": mix.ran_out > 0,
            }
            mix.ran_out = 0
            # the same mix at half that throughput, arriving on a schedule (open loop)
            rate = max(out["http"]["requests_per_s"] / 2, 10.0)
            busy0 = busy_cpu_seconds()
            samples, wall, late = bhttp.open_loop(mix, rate=rate, seconds=plan.http_seconds)
            out["http_open"] = {
                "offered_per_s": round(rate, 1),
                **http_figures(samples, wall),
                **machine_load(busy0, wall, samples),
                "sent_late": late,
                "ran_out_of_cases": mix.ran_out > 0,
            }
    return out


# ----------------------------------------------------------------------------------- main
def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def summarise(res: dict[str, Any]) -> None:
    s = res["sections"]
    r: dict[str, Any] = {}
    for c in ("1", "4"):
        eng = s.get("engine", {}).get(c, {})
        for peer in ("floor", "spiff"):
            other = s.get(peer, {}).get(c, {})
            # the ratio of the median rounds, and each round's own (measured side by side)
            r[f"engine_to_{peer}_{c}"] = ratio(eng.get("per_s"), other.get("per_s"))
            pairs = zip(eng.get("rounds", []), other.get("rounds", []), strict=False)
            r[f"engine_to_{peer}_{c}_rounds"] = [ratio(a, b) for a, b in pairs]
        # the hand-written transaction against SpiffWorkflow: what engine / Spiff would be
        # if the engine cost no more than the floor (its ceiling, short of beating the floor)
        floor, spiff_ = s.get("floor", {}).get(c, {}), s.get("spiff", {}).get(c, {})
        r[f"floor_to_spiff_{c}"] = ratio(floor.get("per_s"), spiff_.get("per_s"))
        pairs = zip(floor.get("rounds", []), spiff_.get("rounds", []), strict=False)
        r[f"floor_to_spiff_{c}_rounds"] = [ratio(a, b) for a, b in pairs]
    emb = s.get("embedded")
    if emb:
        r["embedded_engine_to_floor"] = ratio(emb["engine"]["per_s"], emb["floor"]["per_s"])
    if "sweep" in s:
        r["sweep_big_to_reference"] = s["sweep"]["ratio_big_to_reference"]
    res["ratios"] = r


def cpu_detail(block: dict[str, Any]) -> str:
    """The CPU time of one operation: the client's, and the machine's (client, server, kernel)."""
    client = block.get("client_cpu_ms_per_op")
    machine = block.get("machine_cpu_ms_per_op")
    out = "" if client is None else f"; client CPU/op {client} ms"
    return out + ("" if machine is None else f", machine {machine} ms")


def backends_detail(block: dict[str, Any]) -> str:
    """What the clients' PostgreSQL backends were doing, largest shares first (bench.waits)."""
    text_ = waits.summary(block.get("backends"))
    return f"; backends: {text_}" if text_ else ""


def rounds_detail(block: dict[str, Any]) -> str:
    """Every round's throughput, when there were several (the row shows the median one)."""
    each = block.get("rounds") or []
    return "" if len(each) < 2 else "; rounds " + " / ".join(f"{x:.0f}" for x in each)


def grown_row(database: dict[str, Any] | None) -> tuple[str, str, str, str] | None:
    """A row saying the database held more cases than were generated into it (earlier runs'
    pools) when this run started, and what that means; None when it held no more, or when
    no generation was recorded."""
    if not database or database.get("generated_cases") is None:
        return None
    more = database["cases_before"] - database["generated_cases"]
    if more <= 0:
        return None
    return (
        "  database grown",
        f"+{more} cases",
        f"{database['cases_before']} cases, {database['generated_cases']} of them generated:"
        " earlier runs' pools, mostly in the demo commune; the report, the list and the sweep"
        " no longer measure the database as generated",
        "generate afresh",
    )


def table(res: dict[str, Any]) -> str:
    s, r = res["sections"], res.get("ratios", {})
    rows: list[tuple[str, str, str, str]] = []
    if grown := grown_row(res.get("database")):
        rows.append(grown)

    def tp(name: str, block: dict | None, key: str, goal: str = "") -> None:
        if block:
            rows.append(
                (
                    name,
                    f"{block['per_s']:.0f}/s",
                    f"p50 {block['p50_ms']} ms, p99 {block['p99_ms']} ms ({block['ops']} ops)"
                    + cpu_detail(block)
                    + rounds_detail(block)
                    + backends_detail(block)
                    + ("; ran out of cases" if block.get("ran_out_of_cases") else ""),
                    goal,
                )
            )

    for c in ("1", "4"):
        tp(f"1 floor (psycopg), {c} client(s)", s.get("floor", {}).get(c), "per_s")
        tp(f"2 engine advance, {c} client(s)", s.get("engine", {}).get(c), "per_s")
        tp(f"3 SpiffWorkflow, {c} client(s)", s.get("spiff", {}).get(c), "per_s")
        for peer, name, goal in (("floor", "floor", ">= 0.6"), ("spiff", "Spiff", ">= 2")):
            key = f"engine_to_{peer}_{c}"
            if r.get(key) is not None:
                each = ", ".join(f"{x}x" for x in r.get(f"{key}_rounds") or [])
                rows.append((f"  engine / {name}, {c}", f"{r[key]}x", f"rounds: {each}", goal))
        if r.get(f"floor_to_spiff_{c}") is not None:
            each = ", ".join(f"{x}x" for x in r.get(f"floor_to_spiff_{c}_rounds") or [])
            rows.append(
                (
                    f"  floor / Spiff, {c}",
                    f"{r[f'floor_to_spiff_{c}']}x",
                    f"rounds: {each} (engine / Spiff's ceiling at the floor's cost)",
                    "",
                )
            )
    emb = s.get("embedded")
    if emb:
        tp("4 SQLite floor, 1 client", emb["floor"], "per_s")
        tp("4 SQLite engine, 1 client", emb["engine"], "per_s")
        rows.append(("  SQLite engine / floor", f"{r['embedded_engine_to_floor']}x", "", ""))
    h = s.get("http")
    if h:
        rows.append(
            (
                f"5 HTTP {h['clients']} clients, gunicorn -w 2"
                + (f" --threads {h['threads']}" if h.get("threads", 1) > 1 else ""),
                f"{h['requests_per_s']:.0f} req/s",
                f"read p50 {h['read']['p50_ms']} / p99 {h['read']['p99_ms']} ms; "
                f"transition p50 {h['transition']['p50_ms']} / p99 {h['transition']['p99_ms']} ms"
                + _busy(h)
                + (f"; errors {h['errors']}" if h["errors"] else "")
                + ("; ran out of cases" if h.get("ran_out_of_cases") else ""),
                "read p99 < 50, transition p99 < 100",
            )
        )
    ho = s.get("http_open")
    if ho:
        rows.append(
            (
                f"5 HTTP open loop, {ho['offered_per_s']:.0f} req/s offered",
                f"{ho['requests_per_s']:.0f} req/s",
                f"read p50 {ho['read']['p50_ms']} / p99 {ho['read']['p99_ms']} ms; "
                f"transition p50 {ho['transition']['p50_ms']} / "
                f"p99 {ho['transition']['p99_ms']} ms (half the closed loop's throughput)"
                + _busy(ho)
                + (f"; errors {ho['errors']}" if ho["errors"] else "")
                + (f"; {ho['sent_late']} sent > 10 ms late" if ho["sent_late"] else "")
                + ("; ran out of cases" if ho.get("ran_out_of_cases") else ""),
                "",
            )
        )
    sw = s.get("sweep")
    if sw:
        rows.append(
            (
                "6 sweep, due among reference",
                f"{sw['reference']['seconds']} s",
                f"{sw['reference']['due']} due / {sw['reference']['open_cases']} open",
                "",
            )
        )
        rows.append(
            (
                "6 sweep, due among the big set",
                f"{sw['big']['seconds']} s",
                f"{sw['big']['due']} due / {sw['big']['open_cases']} open; "
                f"ratio {sw['ratio_big_to_reference']}",
                "ratio <= 1.5",
            )
        )
    rep = s.get("report")
    if rep:
        rows.append(
            (
                "7 indicator report",
                f"{rep['country']} s country",
                f"province {rep['province']} s, commune {rep['commune']} s"
                + (
                    f"; the first time {rep['first']['country']} / {rep['first']['province']}"
                    f" / {rep['first']['commune']} s"
                    if rep.get("first")
                    else ""
                )
                + (
                    f"; commune of {rep['commune_cases']} cases" if rep.get("commune_cases") else ""
                ),
                "< 2 s",
            )
        )
    li = s.get("list")
    if li:
        rows.append(
            (
                "8 GET /api/v1/cases filtered",
                f"p99 {li['p99_ms']} ms",
                f"p50 {li['p50_ms']} ms over {li['n']} pages"
                + (f"; commune of {li['commune_cases']} cases" if li.get("commune_cases") else "")
                + (
                    f"; slowest filter {slow}: p50 {li['by_filter'][slow]['p50_ms']} ms"
                    if (slow := li.get("slowest_filter"))
                    else ""
                ),
                "",
            )
        )
    if "sql" in s:
        sql = s["sql"]
        trips = sql.get("round_trips")
        detail = "PostgreSQL" + (
            f", in {trips} round trips, BEGIN and COMMIT included" if trips else ""
        )
        rows.append(("  SQL statements / advance", str(sql["count"]), detail, ""))
    w = [max(len(x[i]) for x in rows) for i in range(4)] if rows else [0] * 4
    head = ("measure", "value", "detail", "goal")
    w = [max(w[i], len(head[i])) for i in range(4)]
    lines = [
        " | ".join(h.ljust(w[i]) for i, h in enumerate(head)),
        "-|-".join("-" * x for x in w),
    ]
    lines += [" | ".join(c.ljust(w[i]) for i, c in enumerate(row)) for row in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    plan = Plan.make(args.quick, args.cases)
    if args.seconds:
        plan = replace(plan, seconds=args.seconds)
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    if args.http_threads:
        plan = replace(plan, http_threads=args.http_threads)
    which = set(args.only or SECTIONS)
    registry = Registry.from_directory(gen.DEFINITIONS)
    now = datetime.now(UTC)
    res: dict[str, Any] = {
        "date": date.today().isoformat(),
        "started_at": now.isoformat(timespec="seconds"),
        "quick": plan.quick,
        "machine": machine(),
        "code": code_version(),
        "clients": "processes (multiprocessing spawn); HTTP load: threads",
        "sections": {},
        "skipped": {},
    }
    t_start = time.perf_counter()
    t0 = time.perf_counter()
    templates = gen.build_templates(registry, now, variants=plan.variants)
    res["template_walks"] = {"count": len(templates), "seconds": round(time.perf_counter() - t0, 1)}
    say = print if args.verbose else (lambda *a, **k: None)
    say(f"{len(templates)} templates in {res['template_walks']['seconds']} s", file=sys.stderr)
    pg = bool(args.database_url) or pg_available()
    if pg:
        with pg_database(args.database_url, f"rfbench_{os.getpid()}") as db:
            existing = count_cases(db.engine)
            if existing == 0:
                t0 = time.perf_counter()
                gen.load(db.engine, registry, templates, plan.base_cases, now)
                gen.record_generated(db.engine, plan.base_cases, now)
                say(
                    f"generated {plan.base_cases} in {time.perf_counter() - t0:.1f} s",
                    file=sys.stderr,
                )
                existing = plan.base_cases
            res["database"] = {
                "url": make_url(db.url).render_as_string(hide_password=True),
                "cases_before": existing,
                # None: no generation recorded (a database generated before they were)
                "generated_cases": gen.generated_cases(db.engine),
            }
            sections = res["sections"]
            # the report and the list first, before this run writes its pools of fresh cases
            # into the demo commune (their commune): a run on a database as generated measures
            # them on the generated distribution
            if "report" in which:
                sections["report"] = report_section(db, registry, now)
                say("report done", file=sys.stderr)
            if which & {"http", "list"}:
                sections.update(http_section(db, registry, plan, now, which))
                say("http done", file=sys.stderr)
            if which & {"floor", "engine", "spiff", "sql"}:
                out = throughput(db, registry, plan, templates, now, which)
                sql = out.pop("sql")
                res["throughput_rounds"] = out.pop("rounds")
                sections.update(out)
                sections["sql"] = sql
                say("throughput done", file=sys.stderr)
            if "sweep" in which:
                sections["sweep"] = sweep_section(db, registry, plan, templates, now)
                say("sweep done", file=sys.stderr)
            res["database"]["commune_cases_after"] = commune_cases(db.engine)
    else:
        if os.environ.get("REHABFLOW_REQUIRE_PG") == "1":
            raise SystemExit("REHABFLOW_REQUIRE_PG=1 but PostgreSQL does not answer")
        for name in ("floor", "engine", "spiff", "http", "list", "sweep", "report", "sql"):
            res["skipped"][name] = "PostgreSQL not reachable"
    if "embedded" in which:
        res["sections"]["embedded"] = embedded(registry, plan, templates, now)
        say("embedded done", file=sys.stderr)
    summarise(res)
    res["seconds"] = round(time.perf_counter() - t_start, 1)
    return res


def write(res: dict[str, Any], out: Path | None) -> Path:
    """To ``out``, or to ``results/<date>[-quick].json``; a later run of the same day goes to
    ``<date>-2.json``, ``<date>-3.json``…, never over an earlier one."""
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        stem = f"{res['date']}{'-quick' if res['quick'] else ''}"
        out = RESULTS / f"{stem}.json"
        n = 1
        while out.exists():
            n += 1
            out = RESULTS / f"{stem}-{n}.json"
    out.write_text(json.dumps(res, indent=2, ensure_ascii=False) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small scale, short runs (< 2 min)")
    p.add_argument("--database-url", default=None, help="use this database as it is")
    p.add_argument("--cases", type=int, default=None, help="cases to generate when empty")
    p.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    p.add_argument("--seconds", type=float, default=None, help="per throughput measurement")
    p.add_argument(
        "--rounds", type=int, default=None, help="alternated measurements of each peer (3; 2 quick)"
    )
    p.add_argument(
        "--http-threads",
        type=int,
        default=None,
        help="threads per gunicorn worker in section 5 (1: sync workers, the default)",
    )
    p.add_argument("--output", type=Path, default=None, help="JSON file (default results/)")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)
    res = run(args)
    path = write(res, args.output)
    print(table(res))
    if res["skipped"]:
        print("skipped: " + ", ".join(f"{k} ({v})" for k, v in res["skipped"].items()))
    print(f"{res['seconds']} s; results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
