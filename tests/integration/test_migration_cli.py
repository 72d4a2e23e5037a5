"""``rehabflow cases migrate`` as a real process: dry run on the demo database, then a run
killed midway (SIGKILL) and started again, which must leave every case migrated exactly once
and the audit chain valid."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import DEFINITIONS

ROOT = Path(__file__).resolve().parents[2]


def cli(env: dict[str, str], *args: str, **kw) -> subprocess.CompletedProcess:  # noqa: ANN003
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        **kw,
    )


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path]:
    data = tmp_path_factory.mktemp("migrate")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")} | {
        "REHABFLOW_DATA_DIR": str(data),
        "REHABFLOW_DEFINITIONS_DIR": str(DEFINITIONS),
    }
    for args in (("init-db",), ("demo", "--cases", "150", "--seed", "11")):
        r = cli(env, *args)
        assert r.returncode == 0, r.stderr
    return env, data / "rehabflow.db"


def query(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_dry_run_then_killed_run_resumes_and_moves_each_case_once(
    demo_db: tuple[dict[str, str], Path],
) -> None:
    env, db = demo_db
    by_state = dict(
        query(db, "select state, count(*) from cases where definition_version = 1 group by state")
    )
    unmapped = {"court_review", "court_decided", "postponed"}  # the v3 plan's unmapped states
    movable = sum(n for s, n in by_state.items() if s not in unmapped)
    assert movable > 10 and by_state.keys() & unmapped  # the demo has both kinds
    others = dict(
        query(db, "select id, version from cases where definition_version <> 1")
    )  # v2/v3 cases: must not be touched

    r = cli(env, "cases", "migrate", "--from", "drug_rehab@1", "--to", "drug_rehab@3",
            "--dry-run", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["cases"] == sum(by_state.values())
    assert report["movable"] == movable
    assert {row["from_state"]: row["cases"] for row in report["states"]} == by_state
    assert {row["from_state"] for row in report["states"] if row["to_state"] is None} == (
        by_state.keys() & unmapped
    )
    assert query(db, "select count(*) from audit_events where action = 'migration'") == [(0,)]

    # a real run, killed as soon as it has moved a few cases
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "api.cli", "cases", "migrate",
         "--from", "drug_rehab@1", "--to", "drug_rehab@3"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    moved = 0
    while time.monotonic() < deadline:
        try:
            moved = query(db, "select count(*) from audit_events where action = 'migration'")[0][0]
        except sqlite3.OperationalError:
            moved = 0  # locked for a moment
        if moved >= 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert 3 <= moved < movable, "the run was not caught midway"
    interrupted = query(db, "select id, status, moved from migration_runs")
    assert len(interrupted) == 1 and interrupted[0][1] == "running"

    r = cli(env, "cases", "migrate", "--from", "drug_rehab@1", "--to", "drug_rehab@3", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["run"] == interrupted[0][0]  # the same run, resumed
    assert summary["cannot_move"] == sum(n for s, n in by_state.items() if s in unmapped)

    per_case = query(
        db,
        "select case_id, count(*) from audit_events where action = 'migration' group by case_id",
    )
    assert len(per_case) == movable and {n for _, n in per_case} == {1}
    assert query(db, "select status, moved from migration_runs") == [("finished", movable)]
    left = dict(
        query(db, "select state, count(*) from cases where definition_version = 1 group by state")
    )
    assert left == {s: n for s, n in by_state.items() if s in unmapped}
    after = dict(query(db, "select id, version from cases"))
    assert {k: after[k] for k in others} == others  # v2/v3 cases untouched
    verify = cli(env, "audit", "verify")
    assert verify.returncode == 0, verify.stderr
