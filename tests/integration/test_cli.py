"""The ``rehabflow`` command line, run in-process with click's CliRunner.

SQLite by default (``REHABFLOW_DATA_DIR`` = a temporary folder, no ``DATABASE_URL``); the
database commands that make sense there (``init-db``, ``demo`` + ``audit verify``) also run on
PostgreSQL, in a private schema selected by ``options=-csearch_path=...`` in ``DATABASE_URL``.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import re
import sqlite3
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from click.testing import CliRunner, Result
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Engine

from workflow import audit, schema
from workflow.cli import main
from workflow.db import make_engine, make_session_factory
from workflow.definition import Definition
from workflow.model import Agency, AuditEvent, AuditHead, Base, Case, Document, User
from workflow.registry import Registry

from ..conftest import DEFINITIONS, PG_AVAILABLE, PG_URL

DEFINITION_FILES = sorted(DEFINITIONS.glob("*.yaml"))
V1 = DEFINITIONS / "drug_rehab.v1.yaml"
PROBLEM = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<key>[\w.\[\]-]+): (?P<message>.+)$")

needs_diagram = pytest.mark.skipif(
    importlib.util.find_spec("workflow.diagram") is None,
    reason="workflow.diagram is not written yet (rehabflow definitions diagram cannot run)",
)


# ---------------------------------------------------------------------------- plumbing
def run(env: dict[str, str | None], *args: str) -> Result:
    """``rehabflow ARGS`` in-process; exceptions other than exits propagate."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def sqlite_env(data_dir: Path) -> dict[str, str | None]:
    return {
        "REHABFLOW_DATA_DIR": str(data_dir),
        "REHABFLOW_DEFINITIONS_DIR": str(DEFINITIONS),
        "DATABASE_URL": None,
    }


@dataclass
class Db:
    """Where a CLI invocation's database lives, and an engine to look at it."""

    env: dict[str, str | None]
    engine: Engine
    dialect: str

    def tamper(self, sql: str, **params: object) -> None:
        """Edit the audit log behind the application's back (past the PG trigger)."""
        if self.dialect == "sqlite":
            path = self.engine.url.database
            with sqlite3.connect(path) as conn:
                conn.execute(sql, params)
            return
        with self.engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text(sql), params)


_schemas = count(1)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Db]:
    env = sqlite_env(tmp_path / "instance")
    engine = make_engine(f"sqlite:///{tmp_path / 'instance' / 'rehabflow.db'}")
    yield Db(env, engine, "sqlite")
    engine.dispose()


@pytest.fixture
def postgresql_db(tmp_path: Path) -> Iterator[Db]:
    """A private schema; DATABASE_URL selects it with options=-csearch_path=<schema>."""
    if not PG_AVAILABLE:
        pytest.skip("PostgreSQL is not reachable")
    name = f"rfcli_{os.getpid()}_{next(_schemas)}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {name}"))
    url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{name}"
    engine = make_engine(url)
    env = {**sqlite_env(tmp_path / "instance"), "DATABASE_URL": url}
    yield Db(env, engine, "postgresql")
    engine.dispose()
    gc.collect()  # engines made by the commands run in-process hold pooled connections
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest) -> Db:
    return request.getfixturevalue(f"{request.param}_db")


@pytest.fixture(scope="module")
def definition() -> Definition:
    return Registry.from_directory(DEFINITIONS).versions("drug_rehab")[-1]


# ---------------------------------------------------------------------------- definitions
class TestValidate:
    def test_shipped_definitions_are_valid(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(DEFINITIONS.parent)
        names = [str(p.relative_to(DEFINITIONS.parent)) for p in DEFINITION_FILES]
        result = run({}, "definitions", "validate", *names)
        assert result.exit_code == 0, result.output
        assert result.stderr == ""
        for name in names:
            assert re.search(rf"^{re.escape(name)}: ok \(drug_rehab@\d+: ", result.stdout, re.M)

    @staticmethod
    def broken_copy(tmp_path: Path) -> tuple[Path, int, int]:
        """v1 with an unknown target state and an unknown document type in one transition."""
        lines = V1.read_text(encoding="utf-8").splitlines(keepends=True)
        start = lines.index("  - key: start_illegal_use_management\n")
        to_i = next(i for i in range(start, len(lines)) if lines[i].strip().startswith("to:"))
        doc_i = next(i for i in range(start, len(lines)) if "documents:" in lines[i])
        assert lines[to_i].strip() == "to: illegal_use_management"
        lines[to_i] = lines[to_i].replace("illegal_use_management", "nowhere_state")
        lines[doc_i] = lines[doc_i].replace("management_decision", "no_such_document")
        path = tmp_path / "broken.yaml"
        path.write_text("".join(lines), encoding="utf-8")
        return path, to_i + 1, doc_i + 1

    def test_broken_copy_reports_both_errors_with_their_lines(self, tmp_path: Path) -> None:
        path, to_line, doc_line = self.broken_copy(tmp_path)
        result = run({}, "definitions", "validate", str(path))
        assert result.exit_code == 1, result.output
        assert "ok (" not in result.stdout
        problems = [PROBLEM.match(line) for line in result.stderr.splitlines()]
        assert problems and all(problems), result.stderr  # every line is file:line: key: msg
        found = {(int(m["line"]), m["key"]): m["message"] for m in problems}
        assert {m["file"] for m in problems} == {str(path)}
        key = "transitions.start_illegal_use_management"
        assert "nowhere_state" in found[(to_line, f"{key}.to")], result.stderr
        assert "no_such_document" in found[(doc_line, f"{key}.documents")], result.stderr

    def test_a_good_and_a_bad_file_together_fail_but_report_the_good_one(
        self, tmp_path: Path
    ) -> None:
        path, _, _ = self.broken_copy(tmp_path)
        result = run({}, "definitions", "validate", str(V1), str(path))
        assert result.exit_code == 1
        assert f"{V1}: ok (" in result.stdout
        assert f"{path}:" in result.stderr and f"{V1}:" not in result.stderr

    def test_missing_file(self, tmp_path: Path) -> None:
        result = run({}, "definitions", "validate", str(tmp_path / "nope.yaml"))
        assert result.exit_code == 1
        assert result.stderr.strip() == f"{tmp_path / 'nope.yaml'}:0: file: does not exist"

    def test_same_version_twice(self, tmp_path: Path) -> None:
        copy = tmp_path / "copy.yaml"
        copy.write_text(V1.read_text(encoding="utf-8"), encoding="utf-8")
        result = run({}, "definitions", "validate", str(V1), str(copy))
        assert result.exit_code == 1
        assert f"{copy}:1: version: drug_rehab@1 is also defined in {V1}" in result.stderr


class TestShow:
    def test_lists_every_state_transition_and_deadline(
        self, tmp_path: Path, definition: Definition
    ) -> None:
        result = run(sqlite_env(tmp_path), "definitions", "show", "drug_rehab")
        assert result.exit_code == 0, result.output
        out = result.stdout
        sections = dict.fromkeys(("STATES", "TRANSITIONS", "ACTIVITIES", "DEADLINES"))
        for name in sections:
            assert f"\n{name}\n" in out
        states_part = out.split("\nSTATES\n")[1].split("\nTRANSITIONS\n")[0]
        transitions_part = out.split("\nTRANSITIONS\n")[1].split("\nACTIVITIES\n")[0]
        deadlines_part = out.split("\nDEADLINES\n")[1]
        for key, state in definition.states.items():
            assert re.search(rf"^  {key} ", states_part, re.M), key
            assert state.label.get("vi") in states_part
        for key in definition.transitions:
            assert re.search(rf"^  {key}: ", transitions_part, re.M), key
        for key in definition.deadlines:
            assert re.search(rf"^  {key}: ", deadlines_part, re.M), key
        assert definition.title.get("vi") in out

    def test_in_english(self, tmp_path: Path, definition: Definition) -> None:
        result = run(sqlite_env(tmp_path), "definitions", "show", "drug_rehab", "--lang", "en")
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith(f"{definition.ref} — {definition.title.get('en')}")
        for state in definition.states.values():
            assert state.label.get("en") in result.stdout
        assert definition.title.get("vi") not in result.stdout

    def test_explicit_version_and_unknown_key(self, tmp_path: Path) -> None:
        env = sqlite_env(tmp_path)
        assert run(env, "definitions", "show", "drug_rehab", "--version", "1").exit_code == 0
        result = run(env, "definitions", "show", "no_such_key")
        assert result.exit_code == 1
        assert "no definition no_such_key" in result.stderr
        result = run(env, "definitions", "show", "drug_rehab", "--version", "99")
        assert result.exit_code == 1
        assert "no definition drug_rehab@99" in result.stderr


@needs_diagram
class TestDiagram:
    def test_mermaid(self, tmp_path: Path, definition: Definition) -> None:
        result = run(sqlite_env(tmp_path), "definitions", "diagram", "drug_rehab")
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert out.startswith("stateDiagram-v2")
        for key in definition.states:
            assert re.search(rf"\bas {key}_?$", out, re.M), key
        assert "current" not in out

    def test_dot(self, tmp_path: Path, definition: Definition) -> None:
        result = run(
            sqlite_env(tmp_path), "definitions", "diagram", "drug_rehab", "--format", "dot"
        )
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("digraph ")
        assert result.stdout.rstrip().endswith("}")
        for key in definition.states:
            assert f'"{key}" [' in result.stdout, key
        assert "filled" not in result.stdout

    def test_svg(self, tmp_path: Path, definition: Definition) -> None:
        result = run(
            sqlite_env(tmp_path),
            "definitions",
            "diagram",
            "drug_rehab",
            "--format",
            "svg",
            "--lang",
            "en",
        )
        assert result.exit_code == 0, result.output
        root = ET.fromstring(result.stdout)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        for state in definition.states.values():
            assert state.label.get("en").split()[0] in result.stdout
        assert 'class="current"' not in result.stdout


# ---------------------------------------------------------------------------- init-db
class TestInitDb:
    def test_twice_creates_then_leaves_the_schema_at_head(self, db: Db) -> None:
        head = ScriptDirectory.from_config(schema.alembic_config("sqlite://")).get_current_head()
        for _ in range(2):
            result = run(db.env, "init-db")
            assert result.exit_code == 0, result.output
            assert result.stdout.strip() == f"database at revision {head}"
        tables = set(inspect(db.engine).get_table_names())
        assert set(Base.metadata.tables) | {"alembic_version"} <= tables
        assert schema.current_revision(db.engine) == head
        lanes = 8 if db.dialect == "postgresql" else 1  # migration 0010's default lanes
        heads = [(1 + lane - lanes, audit.GENESIS) for lane in range(lanes)]
        with db.engine.connect() as conn:
            stored = select(AuditHead.seq, AuditHead.hash).order_by(AuditHead.id)
            assert conn.execute(stored).all() == heads
        if db.dialect == "sqlite":
            assert (Path(db.env["REHABFLOW_DATA_DIR"]) / "rehabflow.db").is_file()


# ---------------------------------------------------------------------------- demo
@dataclass
class Demo:
    env: dict[str, str | None]
    engine: Engine
    first: Result
    seconds: float


DEMO_CASES = 30


def tally(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            model.__name__: conn.scalar(select(func.count()).select_from(model))
            for model in (Agency, User, Case, Document, AuditEvent)
        }


def states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(Case.state, func.count()).group_by(Case.state)).all())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """One ``rehabflow demo --cases 30`` on SQLite, shared by the read-only tests below."""
    data_dir = tmp_path_factory.mktemp("demo") / "instance"
    env = sqlite_env(data_dir)
    started = time.perf_counter()
    first = run(env, "demo", "--cases", str(DEMO_CASES))
    seconds = time.perf_counter() - started
    assert first.exit_code == 0, first.output
    engine = make_engine(f"sqlite:///{data_dir / 'rehabflow.db'}")
    yield Demo(env, engine, first, seconds)
    engine.dispose()


class TestDemo:
    def test_creates_the_directory_and_the_cases(self, demo: Demo, definition: Definition) -> None:
        counts = tally(demo.engine)
        # one agency per agency type of every version of the law (cases follow the version in
        # force on their opening day)
        registry = Registry.from_directory(DEFINITIONS)
        every_type = {a for d in registry.versions("drug_rehab") for a in d.agency_types}
        assert definition.agency_types.keys() <= every_type
        assert counts["Agency"] == len(every_type)
        assert counts["User"] >= len(every_type)
        assert counts["Case"] == DEMO_CASES
        assert counts["Document"] > DEMO_CASES
        assert counts["AuditEvent"] > 3 * DEMO_CASES
        with demo.engine.connect() as conn:
            usernames = set(conn.scalars(select(User.username)))
        assert {"commune_police.officer", "commune_pc.head"} <= usernames
        assert demo.seconds < 60, f"demo --cases {DEMO_CASES} took {demo.seconds:.1f} s"

    def test_cases_are_spread_over_several_states(self, demo: Demo, definition: Definition) -> None:
        by_state = states(demo.engine)
        assert set(by_state) <= set(definition.states)
        assert len(by_state) >= 10, by_state
        assert max(by_state.values()) <= DEMO_CASES // 4, by_state
        groups = {definition.states[s].group for s in by_state}
        assert len(groups) >= 6, groups

    def test_summary_is_printed(self, demo: Demo) -> None:
        out = demo.first.stdout
        assert out.startswith(f"demo: {DEMO_CASES} case(s) added, {DEMO_CASES} in the database")
        for state, n in states(demo.engine).items():
            assert re.search(rf"^  {state} +{n}$", out, re.M), (state, n)

    def test_history_verifies(self, demo: Demo) -> None:
        with make_session_factory(demo.engine)() as session:
            result = audit.verify(session)
        assert result.ok and result.checked == tally(demo.engine)["AuditEvent"], result

    def test_running_it_again_adds_nothing(self, demo: Demo) -> None:
        before, before_states = tally(demo.engine), states(demo.engine)
        again = run(demo.env, "demo", "--cases", str(DEMO_CASES))
        assert again.exit_code == 0, again.output
        assert again.stdout.startswith(f"demo: 0 case(s) added, {DEMO_CASES} in the database")
        assert tally(demo.engine) == before
        assert states(demo.engine) == before_states

    def test_audit_verify_passes(self, demo: Demo) -> None:
        result = run(demo.env, "audit", "verify")
        assert result.exit_code == 0, result.output
        n = tally(demo.engine)["AuditEvent"]
        assert result.stdout.strip() == f"audit chain intact: {n} events"

    @needs_diagram
    @pytest.mark.parametrize("fmt", ["mermaid", "dot", "svg"])
    def test_diagram_highlights_the_case_state(self, demo: Demo, fmt: str) -> None:
        with demo.engine.connect() as conn:
            case_id, state = conn.execute(
                select(Case.id, Case.state)
                .where(Case.state.not_in(["detected", "closed"]))
                .order_by(Case.id)
            ).first()
        result = run(
            demo.env,
            "definitions",
            "diagram",
            "drug_rehab",
            "--format",
            fmt,
            "--case",
            str(case_id),
        )
        assert result.exit_code == 0, result.output
        out = result.stdout
        if fmt == "mermaid":
            assert re.findall(r"^\s*class (\S+) current$", out, re.M) == [state]
        elif fmt == "dot":
            filled = [line for line in out.splitlines() if "fillcolor" in line]
            assert len(filled) == 1 and filled[0].lstrip().startswith(f'"{state}" ['), filled
        else:
            ns = {"svg": "http://www.w3.org/2000/svg"}
            root = ET.fromstring(out)
            current = [g for g in root.iterfind(".//svg:g", ns) if g.get("class") == "current"]
            assert len(current) == 1
            assert state in ET.tostring(current[0], encoding="unicode")

    @needs_diagram
    def test_diagram_of_a_missing_case(self, demo: Demo) -> None:
        result = run(demo.env, "definitions", "diagram", "drug_rehab", "--case", "999999")
        assert result.exit_code == 1
        assert "case 999999 not found" in result.stderr


# ---------------------------------------------------------------------------- audit verify
class TestAuditVerify:
    def test_fails_naming_the_edited_event(self, db: Db) -> None:
        result = run(db.env, "demo", "--cases", "3")
        assert result.exit_code == 0, result.output
        ok = run(db.env, "audit", "verify")
        assert ok.exit_code == 0, ok.output
        n = int(re.fullmatch(r"audit chain intact: (\d+) events", ok.stdout.strip())[1])
        assert n == tally(db.engine)["AuditEvent"] > 10

        with db.engine.connect() as conn:  # (PostgreSQL's lanes: seqs are not 1..n)
            seqs = sorted(conn.scalars(select(AuditEvent.seq)))
        target = seqs[n // 2]
        db.tamper("UPDATE audit_events SET action = 'forged' WHERE seq = :seq", seq=target)
        broken = run(db.env, "audit", "verify")
        assert broken.exit_code == 1
        assert broken.stdout == ""
        assert broken.stderr.startswith(f"audit chain BROKEN at event {target}: "), broken.stderr
        assert f"({n // 2} events verified before it)" in broken.stderr

    def test_fails_when_the_newest_event_is_deleted(self, db: Db) -> None:
        assert run(db.env, "demo", "--cases", "2").exit_code == 0
        with db.engine.connect() as conn:
            n = conn.scalar(select(func.max(AuditEvent.seq)))
        db.tamper("DELETE FROM audit_events WHERE seq = :seq", seq=n)
        broken = run(db.env, "audit", "verify")
        assert broken.exit_code == 1
        assert broken.stderr.startswith(f"audit chain BROKEN at event {n}: "), broken.stderr

    def test_on_an_empty_database(self, db: Db) -> None:
        assert run(db.env, "init-db").exit_code == 0
        result = run(db.env, "audit", "verify")
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == "audit chain intact: 0 events"

    def test_before_init_db_says_what_to_do(self, tmp_path: Path) -> None:
        env = sqlite_env(tmp_path / "instance")
        result = CliRunner().invoke(main, ["audit", "verify"], env=env)
        assert result.exit_code == 1
        assert isinstance(result.exception, SystemExit), result.exception
        assert "init-db" in result.stderr


class TestAuditLanes:
    def test_shows_splits_and_refuses_to_split_lanes_that_hold_events(self, db: Db) -> None:
        assert run(db.env, "init-db").exit_code == 0
        lanes = 8 if db.dialect == "postgresql" else 1  # migration 0010's default
        shown = run(db.env, "audit", "lanes")
        assert shown.exit_code == 0, shown.output
        assert shown.stdout.startswith(f"{lanes} lane(s) since event 0 ")
        assert shown.stdout.count("0 event(s)") == lanes
        assert run(db.env, "demo", "--cases", "2").exit_code == 0
        n = tally(db.engine)["AuditEvent"]
        if db.dialect == "postgresql":  # lanes that hold events: no new split
            refused = run(db.env, "audit", "lanes", "4")
            assert refused.exit_code == 1 and "cannot be split again" in refused.stderr
            return
        split = run(db.env, "audit", "lanes", "4")  # one lane: split at its end
        assert split.exit_code == 0, split.output
        assert split.stdout.startswith(f"4 lane(s) since event {n} ")
        assert run(db.env, "demo", "--cases", "4").exit_code == 0  # two more cases
        verified = run(db.env, "audit", "verify")
        assert (
            verified.stdout.strip()
            == f"audit chain intact: {tally(db.engine)['AuditEvent']} events"
        )
        shown = run(db.env, "audit", "lanes").stdout
        held = [int(line.split(": ")[1].split()[0]) for line in shown.splitlines()[1:]]
        assert sum(held) == tally(db.engine)["AuditEvent"] - n > 0
        assert "cannot be split again" in run(db.env, "audit", "lanes", "2").stderr


# ---------------------------------------------------------------------------- report counters
class TestCounters:
    def test_check_finds_a_wrong_counter_and_rebuild_repairs_it(self, db: Db) -> None:
        assert run(db.env, "demo", "--cases", "4").exit_code == 0
        ok = run(db.env, "counters", "check")
        assert ok.exit_code == 0, ok.output
        assert ok.stdout.strip() == "report counters match a recount"

        assert run(db.env, "counters", "fold").exit_code == 0  # PostgreSQL: deltas folded
        db.tamper("UPDATE report_moves SET n = n + 5 WHERE action = 'case.opened'")
        db.tamper("DELETE FROM report_deadlines WHERE level = 'province'")
        broken = run(db.env, "counters", "check")
        assert broken.exit_code == 1
        assert re.match(r"\d+ report counter\(s\) differ from a recount:", broken.stderr)
        assert "report_deadlines province" in broken.stderr, broken.stderr
        assert "rehabflow counters rebuild" in broken.stderr

        rebuilt = run(db.env, "counters", "rebuild")
        assert rebuilt.exit_code == 0, rebuilt.output
        assert re.fullmatch(
            r"report_moves: \d+ rows, report_deadlines: \d+ rows", rebuilt.stdout.strip()
        )
        assert run(db.env, "counters", "check").exit_code == 0
