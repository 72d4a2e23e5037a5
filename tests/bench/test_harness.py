"""The benchmark harness works end to end (figures are not judged here: no thresholds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from workflow import rollup
from workflow.audit import verify
from workflow.db import make_engine, make_session_factory
from workflow.model import AuditEvent, AuditHead, Case, Document, OutboxMessage

from ..conftest import PG_AVAILABLE, PG_URL, ROOT


def _run(args: list[str], timeout: int = 600, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(  # noqa: S603 - our own modules
        [sys.executable, "-m", *args],
        cwd=ROOT,
        env={**os.environ, "REHABFLOW_BENCH_PG_URL": PG_URL, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _check_generated(url: str, engine_kwargs: dict | None = None) -> None:
    engine = make_engine(url, **(engine_kwargs or {}))
    try:
        with make_session_factory(engine)() as s:
            assert s.scalar(select(func.count()).select_from(Case)) == 200
            assert s.scalar(select(func.count()).select_from(Document)) > 200
            assert (
                s.scalar(
                    select(func.count())
                    .select_from(OutboxMessage)
                    .where(OutboxMessage.status != "sent")
                )
                == 0
            )
            states = s.scalar(select(func.count(func.distinct(Case.state))))
            assert states > 10  # spread over the definition like the demo
            result = verify(s)
            assert result.ok, result.reason
            assert result.checked > 1000
            # the generator keeps the report counters as the engine would
            assert rollup.check(s) == (0, [])
            # and every lane head's prev_hash (its last event's), which the engine keeps too;
            # each case's events in its lane (PostgreSQL: 8 lanes, SQLite: 1)
            heads = s.execute(select(AuditHead).order_by(AuditHead.id)).scalars().all()
            assert len(heads) == (8 if s.get_bind().dialect.name == "postgresql" else 1)
            for head in heads:
                assert head.prev_hash == s.get(AuditEvent, head.seq).prev_hash
            lanes = s.execute(
                select(
                    AuditEvent.case_id, func.count(func.distinct(AuditEvent.seq % len(heads)))
                ).group_by(AuditEvent.case_id)
            ).all()
            assert lanes and {n for _, n in lanes} == {1}
    finally:
        engine.dispose()


def test_generate_200_cases_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gen.db'}"
    done = _run(["bench.generate", "--cases", "200", "--variants", "1", "--database-url", url])
    assert done.returncode == 0, done.stderr
    assert "200 cases" in done.stdout
    _check_generated(url)
    timed = _run(["bench.report_timing", "--database-url", url, "--top", "3", "--runs", "1"])
    assert timed.returncode == 0, timed.stderr
    lines = timed.stdout.splitlines()
    assert lines[0].startswith("report of the country, ") and len(lines) == 4


@pytest.mark.postgres
def test_generate_200_cases_on_postgresql() -> None:
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable")
    name = f"rfbenchgen_{os.getpid()}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {name}"))
    try:
        url = f"{PG_URL}?options=-csearch_path%3D{name}"
        done = _run(["bench.generate", "--cases", "200", "--variants", "1", "--database-url", url])
        assert done.returncode == 0, done.stderr
        _check_generated(url)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        admin.dispose()


def _positive(block: dict, key: str = "per_s") -> None:
    assert block[key] and block[key] > 0, block
    assert block["p50_ms"] is not None and 0 < block["p50_ms"] <= block["p99_ms"], block


def test_quick_run_produces_every_section(tmp_path: Path) -> None:
    out = tmp_path / "quick.json"
    env = (
        {}
        if PG_AVAILABLE
        else {"REHABFLOW_BENCH_PG_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    )
    done = _run(["bench.run", "--quick", "--output", str(out)], timeout=900, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "measure" in done.stdout  # the table
    res = json.loads(out.read_text())
    assert res["machine"]["cpus"] >= 1
    s = res["sections"]
    _positive(s["embedded"]["floor"])
    _positive(s["embedded"]["engine"])
    for block in s["embedded"].values():  # SQLite: the client's CPU is all there is
        if isinstance(block, dict) and "per_s" in block:
            assert block["client_cpu_ms_per_op"] > 0
    assert res["ratios"]["embedded_engine_to_floor"] > 0
    if not PG_AVAILABLE:
        assert set(res["skipped"]) >= {"floor", "engine", "spiff", "http", "sweep", "report"}
        return
    for name in ("floor", "engine", "spiff"):
        for clients in ("1", "4"):
            _positive(s[name][clients])
            assert s[name][clients]["clients"] == int(clients)
            assert s[name][clients]["client_cpu_ms_per_op"] > 0
            # the machine's busy time holds the clients' own (its clock ticks are coarser)
            machine = s[name][clients]["machine_cpu_ms_per_op"]
            assert machine >= 0.8 * s[name][clients]["client_cpu_ms_per_op"]
    for key in ("engine_to_floor_1", "engine_to_floor_4", "engine_to_spiff_1", "engine_to_spiff_4"):
        assert res["ratios"][key] > 0
        # --quick measures each peer twice, alternated: both rounds' ratios are kept
        assert len(res["ratios"][f"{key}_rounds"]) == res["throughput_rounds"] == 2
    for c in ("1", "4"):  # the floor against Spiff, the ceiling of engine / Spiff
        floor_to_spiff = res["ratios"][f"floor_to_spiff_{c}"]
        assert floor_to_spiff == round(s["floor"][c]["per_s"] / s["spiff"][c]["per_s"], 2)
        assert len(res["ratios"][f"floor_to_spiff_{c}_rounds"]) == 2
        assert f"floor / Spiff, {c}" in done.stdout
    for name in ("floor", "engine", "spiff"):
        for clients in ("1", "4"):
            block = s[name][clients]
            assert len(block["rounds"]) == 2 and block["per_s"] in block["rounds"]
            # what the clients' backends were doing, sampled: the shares of every sample
            backends = block["backends"]
            # (a client's backend is gone once it has finished, before the last polls)
            assert 0 < backends["samples"] <= backends["polls"] * int(clients), backends
            assert abs(sum(backends["share"].values()) - 1) < 0.01, backends
            assert backends["share"].keys() & {"client", "CPU"}, backends
    assert "backends: " in done.stdout
    assert "backends" not in s["embedded"]["engine"]  # SQLite: no server to sample
    # the statements of one advance were counted: the case read (locked), ..., the case written
    sent = s["sql"]["statements"]
    assert s["sql"]["count"] == len(sent) >= 2, sent
    assert sent[0].startswith("SELECT cases.") and any("UPDATE cases" in x for x in sent), sent
    # PostgreSQL: counted at the driver, so the read and the write sent past SQLAlchemy are
    # there too; the advance runs optimistically (no idempotency key): its read and its write,
    # each its own transaction (autocommit), so no BEGIN or COMMIT: each statement is one
    # round trip, and they are all
    assert s["sql"]["count"] == 2 and "FOR UPDATE" not in sent[0], sent
    assert s["sql"]["round_trips"] == s["sql"]["count"], s["sql"]
    assert not s["sql"]["commit_pipelined"]
    http = s["http"]
    assert http["read"]["n"] > 0 and http["transition"]["n"] > 0, http
    assert http["requests_per_s"] > 0
    # the same mix at half that rate, on a schedule: both kinds answered, nothing failed
    http_open = s["http_open"]
    offered = http_open["offered_per_s"]
    assert offered == 10.0 or abs(offered - http["requests_per_s"] / 2) <= 0.1, http_open
    assert http_open["read"]["n"] > 0 and http_open["transition"]["n"] > 0, http_open
    assert not http_open["errors"] and not http["errors"]
    # each load says whether it ran out of fresh cases for its transitions (then it sent
    # reads instead, and its mix is not the stated one)
    assert isinstance(http["ran_out_of_cases"], bool)
    assert isinstance(http_open["ran_out_of_cases"], bool)
    # the machine's share of its cores during each load (Linux: /proc/stat), and its CPU per
    # request; the sync workers by default
    assert http["threads"] == 1
    for load in (http, http_open):
        if Path("/proc/stat").exists():
            assert 0 < load["machine_busy"] <= 1.05, load
            assert load["machine_cpu_ms_per_req"] > 0, load
    assert s["list"]["n"] > 0 and not s["list"]["errors"], s["list"]
    # each filter's pages: one entry per filter, the slowest by median named among them
    by_filter = s["list"]["by_filter"]
    assert len(by_filter) == s["list"]["filters"] and "overdue=true" in by_filter, by_filter
    assert s["list"]["slowest_filter"] in by_filter
    assert all(0 < f["p50_ms"] <= f["max_ms"] for f in by_filter.values()), by_filter
    for which in ("reference", "big"):
        sweep = s["sweep"][which]
        assert sweep["processed"] == sweep["escalations"] == sweep["due"] > 0, sweep
    assert s["sweep"]["ratio_big_to_reference"] > 0
    assert all(s["report"][k] > 0 for k in ("commune", "province", "country"))
    assert all(s["report"]["first"][k] > 0 for k in ("commune", "province", "country"))
    # the report and the list were measured before the run's pools went into their commune
    before = s["report"]["commune_cases"]
    assert before == s["list"]["commune_cases"] > 0
    assert res["database"]["commune_cases_after"] > before
    assert f"commune of {before} cases" in done.stdout


def test_rounds_rotate_the_peers_and_report_the_median_one() -> None:
    from bench.run import median_round, round_order

    peers = ["floor", "engine", "spiff"]
    orders = [round_order(peers, r) for r in range(3)]
    assert orders == [peers, ["engine", "spiff", "floor"], ["spiff", "floor", "engine"]]
    # each peer runs first once and follows each other peer once in three rounds
    assert {o[0] for o in orders} == set(peers)
    runs = [{"per_s": 300.0, "p99_ms": 9.0}, {"per_s": 100.0, "p99_ms": 90.0}, {"per_s": 200.0}]
    assert median_round(runs) == {"per_s": 200.0, "rounds": [300.0, 100.0, 200.0]}
    # an even count takes the lower middle one: a stall is never averaged in or out
    assert median_round(runs[:2])["per_s"] == 100.0


def test_the_machines_busy_time_counts_this_process_work() -> None:
    import time

    from bench.run import busy_cpu_seconds

    if busy_cpu_seconds() is None:
        pytest.skip("no /proc/stat here")
    t0 = busy_cpu_seconds()
    end = time.process_time() + 0.3
    while time.process_time() < end:  # 0.3 s of this process's CPU
        pass
    t1 = busy_cpu_seconds()
    assert t1 - t0 >= 0.25  # the work, whatever else the machine did meanwhile


def test_a_later_run_of_the_same_day_does_not_overwrite_an_earlier_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import run

    monkeypatch.setattr(run, "RESULTS", tmp_path)
    res = {"date": "2026-11-27", "quick": False, "n": 1}
    first = run.write(res, None)
    second = run.write({**res, "n": 2}, None)
    quick = run.write({**res, "quick": True}, None)
    assert [p.name for p in (first, second, quick)] == [
        "2026-11-27.json",
        "2026-11-27-2.json",
        "2026-11-27-quick.json",
    ]
    assert json.loads(first.read_text())["n"] == 1  # the earlier run is still there
    assert json.loads(second.read_text())["n"] == 2


def test_a_load_that_runs_out_of_fresh_cases_counts_it() -> None:
    """Each transition that finds no fresh case is counted (a read goes instead)."""
    from bench.http import Mix

    mix = Mix(0, "t", [1], iter([7]), "request_determination", {})
    assert mix.fresh_case() == 7 and mix.ran_out == 0
    assert mix.fresh_case() is None and mix.fresh_case() is None
    assert mix.ran_out == 2
