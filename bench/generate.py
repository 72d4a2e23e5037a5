"""Fill a database with N realistic cases, fast (COPY on PostgreSQL, executemany on SQLite).

    python -m bench.generate --cases 1000000 [--database-url URL] [--now ISO] [--seed 2026]

The engine is not called per case. It is run once per *template*: a few hundred walks of the
real ``CaseService`` through the definitions (the demo's walk: documents attached, forms
filled, activities recorded) in a scratch SQLite database, one or more per (law version,
target state). Each generated case copies one template's rows (subject, case, documents,
activity records, deadlines, audit events, outbox messages) with fresh ids, a new person and
a new commune, shifted in time by whole weeks (so working days stay working days) to an
opening date drawn like the demo's (60 to 760 days ago; the law version in force on that
date). The audit events are re-chained from the database's current heads (each case's in
its lane, ``workflow.audit``), so ``rehabflow audit verify`` stays valid; outbox messages
are written as delivered; open deadlines that fell due before ``now`` are left as the sweep
would have left them (ladder walked, next action in the future or none), so a fresh
database owes the sweep nothing.

Data is appended: running it twice gives 2N cases. On PostgreSQL the load is one transaction
holding the audit heads' locks; with 50,000 cases or more (and at least as many as the
database holds) the secondary indexes are dropped and rebuilt after the load, the report
counters recounted into their tables with their keys and indexes dropped, and foreign-key
triggers skipped (superuser only); with 20,000 or more, the rows are sent from a process of
their own (``SinkProcess``). That is what makes a million cases fit in minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import multiprocessing as mp
import queue
import random
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import Engine
from tqdm import tqdm

from workflow import deadlines, rollup, schema, units
from workflow.audit import canonical
from workflow.calendar import BUSINESS_TZ, WorkingCalendar, business_date
from workflow.config import load_settings
from workflow.db import make_engine, make_session_factory
from workflow.definition import Definition
from workflow.demo import DEMO_COMMUNE, _walk, ensure_directory, path_states
from workflow.model import (
    ActivityRecord,
    Agency,
    AuditEvent,
    AuditHead,
    Case,
    Deadline,
    Document,
    OutboxMessage,
    Subject,
    User,
)
from workflow.registry import Registry
from workflow.service import CaseService, SubjectData, fold
from workflow.simulate import fake_pdf, fill_form, path_to
from workflow.storage import MemoryBlobStore

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "definitions"
KEY = "drug_rehab"
TABLES = (Subject, Case, Document, ActivityRecord, Deadline, AuditEvent, OutboxMessage)
SERIAL = (Subject, Case, Document, ActivityRecord, Deadline)
JSON_COLUMNS = {"fields", "data", "documents", "extra", "recipients", "payload"}
BIG_LOAD = 50_000
PARALLEL_LOAD = 20_000  # a load of this many cases or more sends its rows from a process of
# its own (SinkProcess); below, starting that process costs more than it saves
CHUNK = 5_000
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
ISO_MOMENT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")

FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Phan", "Vũ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô")
MIDDLE_M = ("Văn", "Đức", "Hữu", "Minh", "Quang", "Xuân", "Công", "Đình")
MIDDLE_F = ("Thị", "Thu", "Ngọc", "Thanh", "Kim")
GIVEN_M = ("Bình", "Hùng", "Nam", "Tuấn", "Dũng", "Long", "Sơn", "Hải", "Phúc", "Thắng", "Kiên")
GIVEN_F = ("Cúc", "Lan", "Hoa", "Mai", "Hương", "Hạnh", "Trang", "Yến")
STREETS = ("Xóm 1", "Xóm 3", "Xóm 5", "Xóm Trung Sơn", "Xóm Bắc Sơn", "Khối 2", "Khối 4")


def columns(model: Any) -> list[str]:
    return [c.name for c in model.__table__.columns]


ROLLUP_EVENT_COLUMNS = ("case_id", "at", "action", "definition", "from_state", "to_state")


# ------------------------------------------------------------------------------ templates
@dataclass
class Template:
    """The rows one engine walk produced for one case, to be copied with new ids and dates."""

    version: int
    target: str
    minor: bool
    start: datetime
    end: datetime
    case: dict[str, Any]
    documents: list[dict[str, Any]]
    activities: list[dict[str, Any]]
    deadlines: list[dict[str, Any]]
    events: list[dict[str, Any]]
    outbox: list[dict[str, Any]]
    users: dict[int, str] = field(default_factory=dict)  # scratch user id -> username
    agencies: dict[int, str] = field(default_factory=dict)  # scratch agency id -> code


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def template_starts(registry: Registry, now: datetime) -> dict[int, datetime]:
    """A Monday 9:00 (Vietnam) inside each version's validity where a walk can run to its end."""
    today = business_date(now)
    out = {}
    for d in registry.versions(KEY):
        lo = max(d.effective_from, today - timedelta(days=760))
        hi = min(d.effective_to or today, today - timedelta(days=60))
        if lo > hi:
            continue
        day = _monday(lo + timedelta(days=7))
        if day > hi:
            day = _monday(hi)
        out[d.version] = datetime.combine(day, dtime(9), tzinfo=BUSINESS_TZ).astimezone(UTC)
    return out


class TemplateBuilder:
    """Runs the real engine in a scratch SQLite database and reads back what each walk wrote."""

    def __init__(self, registry: Registry, workdir: Path) -> None:
        self.registry = registry
        self.engine = make_engine(f"sqlite:///{workdir / 'templates.db'}")
        schema.upgrade(self.engine)
        self.factory = make_session_factory(self.engine)
        self.service = CaseService(self.factory, registry, blobs=MemoryBlobStore())
        self.services = SimpleNamespace(
            session_factory=self.factory, cases=self.service, registry=registry
        )
        self.actors: dict[tuple[str, str], Any] = {}
        for d in registry.versions(KEY):
            self.actors.update(ensure_directory(self.services, d))

    def close(self) -> None:
        self.engine.dispose()

    def _last_case_id(self) -> int:
        with self.engine.connect() as conn:
            return conn.scalar(select(func.max(Case.id))) or 0

    def walk(
        self, d: Definition, target: str, start: datetime, rng: random.Random, minor: bool
    ) -> Template | None:
        path = path_to(d, target) if target in d.states else None
        if path is None:
            return None
        before = self._last_case_id()
        _walk(self.services, d, path, self.actors, rng, start, minor)
        case_id = self._last_case_id()
        if case_id == before:
            return None
        return self.read(case_id, d.version, target, minor)

    def pool_walk(self, d: Definition, transition: str, start: datetime) -> Template:
        """A case in the initial state holding the documents ``transition`` needs."""
        opener = self.actors[("commune_police", "officer")]
        rng = random.Random(1)
        case = self.service.open_case(
            SubjectData("Nguyễn Văn Thử", DEMO_COMMUNE, date(1990, 1, 1), "male"),
            opener,
            start,
            version=d.version,
            data=fill_form(d, d.opening, start.date(), rng, DEMO_COMMUNE) if d.opening else None,
        )
        t = d.transitions[transition]
        for i, req in enumerate(t.documents):
            self.service.attach_document(
                case.case_id,
                req.any_of[0],
                fake_pdf(f"pool-{i}"),
                opener,
                start + timedelta(minutes=5 * (i + 1)),
                filename=f"{req.any_of[0]}.pdf",
                media_type="application/pdf",
            )
        return self.read(case.case_id, d.version, f"pool:{transition}", False)

    def read(self, case_id: int, version: int, target: str, minor: bool) -> Template:
        with self.engine.connect() as conn:

            def rows(model: Any, where: Any, order: Any) -> list[dict[str, Any]]:
                t = model.__table__
                return [
                    dict(r._mapping) for r in conn.execute(select(t).where(where).order_by(order))
                ]

            case = rows(Case, Case.id == case_id, Case.id)[0]
            subject = rows(Subject, Subject.id == case["subject_id"], Subject.id)[0]
            case["_subject_dob"] = subject["date_of_birth"]
            docs = rows(Document, Document.case_id == case_id, Document.id)
            acts = rows(ActivityRecord, ActivityRecord.case_id == case_id, ActivityRecord.id)
            dls = rows(Deadline, Deadline.case_id == case_id, Deadline.id)
            events = rows(AuditEvent, AuditEvent.case_id == case_id, AuditEvent.seq)
            outbox = rows(OutboxMessage, OutboxMessage.case_id == case_id, OutboxMessage.audit_seq)
            users = dict(conn.execute(select(User.id, User.username)).all())
            agencies = dict(conn.execute(select(Agency.id, Agency.code)).all())
        moments = [case["opened_at"], case["updated_at"]] + [e["at"] for e in events]
        return Template(
            version,
            target,
            minor,
            case["opened_at"],
            max(moments),
            case,
            docs,
            acts,
            dls,
            events,
            outbox,
            users,
            agencies,
        )


def build_templates(
    registry: Registry, now: datetime, *, variants: int = 4, seed: int = 2026
) -> list[Template]:
    """``variants`` walks per (version, reachable state), plus minors' compulsory dossiers."""
    starts = template_starts(registry, now)
    out: list[Template] = []
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="rfgen-") as tmp:
        builder = TemplateBuilder(registry, Path(tmp))
        try:
            for version, start in sorted(starts.items()):
                d = registry.get(KEY, version)
                for target in d.states:
                    path = path_to(d, target) or []
                    dossier = "compulsory_dossier" in path_states(d, path)
                    for v in range(variants):
                        minor = dossier and v == variants - 1 and variants > 1
                        t = builder.walk(d, target, start, random.Random(rng.random()), minor)
                        if t is not None:
                            out.append(t)
        finally:
            builder.close()
    return out


def build_pool_template(registry: Registry, now: datetime, transition: str) -> Template:
    d = registry.in_force(KEY, business_date(now))
    start = now - timedelta(days=7)
    with tempfile.TemporaryDirectory(prefix="rfgen-") as tmp:
        builder = TemplateBuilder(registry, Path(tmp))
        try:
            return builder.pool_walk(d, transition, start)
        finally:
            builder.close()


# ------------------------------------------------------------------------------- targets
@dataclass
class Target:
    """The database being filled: its directory (agencies, users) and its id counters."""

    engine: Engine
    users: dict[str, int]  # username -> id
    agencies: dict[str, int]  # agency code -> id

    @classmethod
    def prepare(cls, engine: Engine, registry: Registry) -> Target:
        ensure_schema(engine)
        factory = make_session_factory(engine)
        services = SimpleNamespace(session_factory=factory, registry=registry)
        for d in registry.versions(KEY):
            ensure_directory(services, d)
        with engine.connect() as conn:
            users = {u: i for i, u in conn.execute(select(User.id, User.username)).all()}
            agencies = {c: i for i, c in conn.execute(select(Agency.id, Agency.code)).all()}
        return cls(engine, users, agencies)


def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; leave an existing one as it is (upgrading a
    million-case database is ``rehabflow init-db``'s decision, not a benchmark's)."""
    if schema.current_revision(engine) is None:
        schema.upgrade(engine)


# PostgreSQL: how many cases ``bench.generate`` added (one row per generation), so that
# ``bench.run`` can tell a database as generated from one its earlier runs' pools grew (each
# full run adds tens of thousands of fresh cases to the demo commune, and the report, the list
# and the sweep then measure another distribution). A bench-owned table beside rehabflow's
# (in the schema of the connection's search path: a test's private schema, or ``public``).
GENERATED = "rfbench_generated"


def record_generated(engine: Engine, cases: int, at: datetime) -> None:
    """Note that a generation added ``cases`` cases (PostgreSQL; nothing on SQLite)."""
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        conn.execute(
            text(
                f"CREATE TABLE IF NOT EXISTS {GENERATED}"
                " (at timestamptz NOT NULL, cases bigint NOT NULL)"
            )
        )
        conn.execute(
            text(f"INSERT INTO {GENERATED} VALUES (:at, :cases)"), {"at": at, "cases": cases}
        )


def generated_cases(engine: Engine) -> int | None:
    """The cases the generations recorded by :func:`record_generated` added; None when none
    was recorded (SQLite, or a database generated before generations were recorded)."""
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        if conn.scalar(text("SELECT to_regclass(:t)"), {"t": GENERATED}) is None:
            return None
        total = conn.scalar(text(f"SELECT sum(cases) FROM {GENERATED}"))
    return None if total is None else int(total)


def unit_chooser(rng: random.Random) -> Iterator[tuple[str, str]]:
    """(commune, province) of each case: 10 % the demo commune, 50 % the rest of its province,
    40 % the communes of the other provinces."""
    demo = units.get(DEMO_COMMUNE)
    home = [u for u in units.communes_of(demo.province_code) if u.code != demo.code]
    others = [
        u
        for u in units.all_units()
        if u.level == "commune" and u.province_code != demo.province_code
    ]
    while True:
        r = rng.random()
        u = demo if r < 0.10 else rng.choice(home) if r < 0.60 else rng.choice(others)
        yield u.code, u.province_code


# ---------------------------------------------------------------------------- replicator
def shift_json(value: Any, days: int) -> Any:
    """Dates and moments inside JSON (ISO strings) moved by ``days``."""
    if isinstance(value, dict):
        return {k: shift_json(v, days) for k, v in value.items()}
    if isinstance(value, list):
        return [shift_json(v, days) for v in value]
    if isinstance(value, str):
        if ISO_DATE.match(value):
            return (date.fromisoformat(value) + timedelta(days=days)).isoformat()
        if ISO_MOMENT.match(value):
            try:
                return (datetime.fromisoformat(value) + timedelta(days=days)).isoformat()
            except ValueError:
                return value
    return value


class Pattern:
    """A JSON text with holes: rendered by joining constant parts with per-case values.

    Built from an object whose varying values are marker numbers (``marker(n)``) or the
    string ``AT``; ``render(values)`` fills hole ``n`` with ``values[n]`` (already text)."""

    AT = "@@at@@"
    SPLIT = re.compile(r'(-7700000\d\d|"@@at@@")')

    def __init__(self, text_with_markers: str) -> None:
        pieces = self.SPLIT.split(text_with_markers)
        self.parts = pieces[0::2]
        self.holes = [-1 if p == f'"{self.AT}"' else int(p[-2:]) for p in pieces[1::2]]

    def render(self, values: list[str], at: str) -> str:
        out = [self.parts[0]]
        for hole, part in zip(self.holes, self.parts[1:]):
            out.append(f'"{at}"' if hole < 0 else values[hole])
            out.append(part)
        return "".join(out)


def marker(n: int) -> int:
    return -770000000 - n


HOLE_SEQ, HOLE_CASE, HOLE_SUBJECT, HOLE_NUMBER, HOLE_UNIT, HOLE_PROVINCE, HOLE_DOCS = range(7)


@dataclass
class Prepared:
    users: dict[int, int]
    events: list[tuple[Pattern, Pattern, Pattern, tuple]]
    outbox: list[tuple[Pattern, Pattern]]
    fields: str | None  # the JSON text when it holds no date to shift
    activity_data: list[str | None]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _has_dates(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_dates(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_dates(v) for v in value)
    return isinstance(value, str) and bool(ISO_DATE.match(value) or ISO_MOMENT.match(value))


def _json_or_none(value: Any) -> str | None:
    """The JSON text of a value that needs no shifting; None when it holds dates."""
    return None if _has_dates(value or {}) else _dumps(value or {})


def _sh(value: Any, delta: timedelta) -> Any:
    return None if value is None else value + delta


@dataclass
class Batch:
    rows: dict[str, list[tuple]] = field(
        default_factory=lambda: {m.__tablename__: [] for m in TABLES}
    )

    def __len__(self) -> int:
        return len(self.rows["cases"])


class Replicator:
    """Turns templates into rows of new cases, chaining their audit events from ``head``
    (the lanes' heads, lane by lane)."""

    def __init__(
        self,
        registry: Registry,
        target: Target,
        templates: list[Template],
        now: datetime,
        head: list[tuple[int, str]],
        next_ids: dict[str, int],
        *,
        seed: int,
        secret_key: str,
        calendar: WorkingCalendar,
    ) -> None:
        self.registry = registry
        self.target = target
        self.now = now
        self.today = business_date(now)
        # the audit lanes' heads (seq, hash), lane by lane: a case's events go to lane
        # case id mod lanes, a stride of lanes apart (workflow.audit)
        self.heads = [list(h) for h in head]
        self.ids = dict(next_ids)
        self.rng = random.Random(seed)
        self.secret = secret_key.encode()
        self.calendar = calendar
        self.by_key: dict[tuple[int, str], list[Template]] = {}
        for t in templates:
            self.by_key.setdefault((t.version, t.target), []).append(t)
        self.targets = {
            v: sorted({t for (vv, t) in self.by_key if vv == v})
            for v in {t.version for t in templates}
        }
        self.units = unit_chooser(self.rng)
        self.uuid_prefix = f"{self.rng.getrandbits(32):08x}"
        self.uuid_n = 0
        self.cols = {m.__tablename__: columns(m) for m in TABLES}
        self._prepared: dict[int, Prepared] = {}

    # -- ids and maps
    def _next(self, table: str) -> int:
        n = self.ids[table]
        self.ids[table] = n + 1
        return n

    def _uuid(self) -> str:
        self.uuid_n += 1
        h = f"{self.uuid_n:024x}"
        return f"{self.uuid_prefix}-{h[:4]}-4{h[5:8]}-8{h[9:12]}-{h[12:]}"

    # -- choosing a template and a date
    def pick(self) -> tuple[Template, timedelta]:
        opening = self.today - timedelta(days=self.rng.randint(60, 760))
        d = self.registry.in_force(KEY, opening)
        target = self.rng.choice(self.targets.get(d.version) or self.targets[max(self.targets)])
        t = self.rng.choice(self.by_key[(d.version, target)])
        return t, self.shift_for(t, opening, d)

    def shift_for(self, t: Template, opening: date, d: Definition) -> timedelta:
        weeks = round((opening - business_date(t.start)).days / 7)
        for _ in range(200):
            delta = timedelta(weeks=weeks)
            day = business_date(t.start + delta)
            if t.end + delta > self.now:
                weeks -= 1
            elif not d.in_force_on(day):
                weeks += 1 if day < d.effective_from else -1
            else:
                break
        return timedelta(weeks=weeks)

    # -- one case
    def subject(self, minor: bool, opened: date, unit: str) -> tuple:
        female = self.rng.random() < 0.12
        parts = (
            self.rng.choice(FAMILY),
            self.rng.choice(MIDDLE_F if female else MIDDLE_M),
            self.rng.choice(GIVEN_F if female else GIVEN_M),
        )
        name = " ".join(parts)
        age = (
            self.rng.randint(13 * 365 + 200, 17 * 365)
            if minor
            else self.rng.randint(20 * 365, 50 * 365)
        )
        nid = f"0{self.rng.randint(0, 99):02d}{self.rng.randint(0, 999_999_999):09d}"
        sid = self._next("subjects")
        row = (
            sid,
            name,
            _fold(name),
            opened - timedelta(days=age),
            "female" if female else "male",
            nid,
            hmac.new(self.secret, nid.encode(), hashlib.sha256).hexdigest(),
            f"{self.rng.choice(STREETS)}, {_unit_name(unit)}",
            unit,
        )
        return row

    def prepare(self, t: Template) -> Prepared:
        """The template's JSON as patterns with holes for this target's ids (once per load)."""
        key = id(t)
        if key in self._prepared:
            return self._prepared[key]
        users = {k: self.target.users[v] for k, v in t.users.items() if v in self.target.users}
        agencies = {
            k: self.target.agencies[v] for k, v in t.agencies.items() if v in self.target.agencies
        }
        doc_hole = {x["id"]: marker(HOLE_DOCS + i) for i, x in enumerate(t.documents)}
        events = []
        for e in t.events:
            docs = [
                {"id": doc_hole.get(x["id"], x["id"]), "type": x["type"], "sha256": x["sha256"]}
                for x in e["documents"] or []
            ]
            extra = dict(e["extra"] or {})
            if "subject_id" in extra:
                extra["subject_id"] = marker(HOLE_SUBJECT)
            body = {
                "seq": marker(HOLE_SEQ),
                "case_id": marker(HOLE_CASE),
                "at": Pattern.AT,
                "actor_id": users.get(e["actor_id"]),
                "actor": e["actor"],
                "agency_id": agencies.get(e["agency_id"]),
                "agency_type": e["agency_type"],
                "role": e["role"],
                "action": e["action"],
                "from_state": e["from_state"],
                "to_state": e["to_state"],
                "definition": e["definition"],
                "data_hash": e["data_hash"],
                "documents": docs,
                "extra": extra,
            }
            events.append(
                (
                    Pattern(canonical(body)),
                    Pattern(json.dumps(docs, ensure_ascii=False)),
                    Pattern(json.dumps(extra, ensure_ascii=False)),
                    (
                        body["actor_id"],
                        e["actor"],
                        body["agency_id"],
                        e["agency_type"],
                        e["role"],
                        e["action"],
                        e["from_state"],
                        e["to_state"],
                        e["definition"],
                        e["data_hash"],
                    ),
                )
            )
        outbox = []
        for o in t.outbox:
            payload = dict(o["payload"])
            payload.update(
                case_id=marker(HOLE_CASE), case_number=marker(HOLE_NUMBER), at=Pattern.AT
            )
            recipients = dict(o["recipients"])
            recipients.update(unit_code=marker(HOLE_UNIT), province_code=marker(HOLE_PROVINCE))
            outbox.append(
                (
                    Pattern(json.dumps(recipients, ensure_ascii=False)),
                    Pattern(json.dumps(payload, ensure_ascii=False)),
                )
            )
        p = Prepared(
            users,
            events,
            outbox,
            _json_or_none(t.case["fields"]),
            [_json_or_none(a["data"]) for a in t.activities],
        )
        self._prepared[key] = p
        return p

    def case(self, batch: Batch, t: Template, delta: timedelta, unit: str, province: str) -> int:
        days = delta.days
        p = self.prepare(t)
        users = p.users
        opened = t.case["opened_at"] + delta
        subj = self.subject(t.minor, business_date(opened), unit)
        batch.rows["subjects"].append(subj)
        cid = self._next("cases")
        number = f"{unit}-{business_date(opened).year}-{cid:06d}"
        c = t.case
        batch.rows["cases"].append(
            (
                cid,
                number,
                subj[0],
                c["definition_key"],
                c["definition_version"],
                c["state"],
                c["state_group"],
                c["version"],
                unit,
                province,
                p.fields if p.fields is not None else _dumps(shift_json(c["fields"], days)),
                opened,
                c["state_entered_at"] + delta,
                _sh(c["closed_at"], delta),
                c["updated_at"] + delta,
            )
        )
        holes = [
            "",
            str(cid),
            str(subj[0]),
            json.dumps(number),
            json.dumps(unit),
            json.dumps(province),
        ]
        for x in t.documents:
            did = self._next("documents")
            holes.append(str(did))
            batch.rows["documents"].append(
                (
                    did,
                    cid,
                    x["type"],
                    x["filename"],
                    x["media_type"],
                    x["size"],
                    x["sha256"],
                    x["note"],
                    users.get(x["uploaded_by"]),
                    x["uploaded_at"] + delta,
                    _sh(x["revoked_at"], delta),
                    users.get(x["revoked_by"]),
                    x["revoke_reason"],
                )
            )
        seqs: dict[int, int] = {}
        events = batch.rows["audit_events"]
        lane = self.heads[cid % len(self.heads)]
        seq, hash_ = lane
        for e, (canon, docs, extra, consts) in zip(t.events, p.events):
            seq += len(self.heads)
            seqs[e["seq"]] = seq
            holes[HOLE_SEQ] = str(seq)
            at = e["at"] + delta
            iso = at.isoformat(timespec="microseconds")
            prev = hash_
            hash_ = hashlib.sha256((prev + canon.render(holes, iso)).encode("utf-8")).hexdigest()
            events.append(
                (
                    seq,
                    cid,
                    at,
                    *consts,
                    docs.render(holes, iso),
                    extra.render(holes, iso),
                    prev,
                    hash_,
                )
            )
        lane[:] = seq, hash_
        for a, data in zip(t.activities, p.activity_data):
            batch.rows["activity_records"].append(
                (
                    self._next("activity_records"),
                    cid,
                    a["key"],
                    a["at"] + delta,
                    users.get(a["actor_id"]),
                    data if data is not None else _dumps(shift_json(a["data"], days)),
                    seqs.get(a["audit_seq"], a["audit_seq"]),
                )
            )
        d = self.registry.get(c["definition_key"], c["definition_version"])
        for x in t.deadlines:
            row = [
                self._next("deadlines"),
                cid,
                x["key"],
                x["status"],
                x["started_at"] + delta,
                x["anchor_on"] + delta,
                x["due_on"] + delta,
                _sh(x["remind_on"], delta),
                _sh(x["next_action_on"], delta),
                x["escalation_level"],
                _sh(x["reminded_on"], delta),
                x["auto_transition"],
                _sh(x["closed_at"], delta),
                x["closed_by"],
            ]
            if row[3] == "open" and row[8] is not None and row[8] <= self.today:
                row[8], row[9], row[10] = self.swept(d, x["key"], row[6], row[7], c["fields"] or {})
            batch.rows["deadlines"].append(tuple(row))
        for o, (recipients, payload) in zip(t.outbox, p.outbox):
            at = o["created_at"] + delta
            iso = at.isoformat()
            batch.rows["outbox"].append(
                (
                    self._uuid(),
                    cid,
                    seqs.get(o["audit_seq"], o["audit_seq"]),
                    o["topic"],
                    recipients.render(holes, iso),
                    payload.render(holes, iso),
                    "sent",
                    1,
                    at,
                    at,
                    at + timedelta(seconds=2),
                    None,
                )
            )
        return cid

    def swept(
        self, d: Definition, key: str, due: date, remind_on: date | None, fields: dict
    ) -> tuple[date | None, int, date | None]:
        """(next_action_on, escalation_level, reminded_on) after the sweeps up to today."""
        return _swept(
            self.calendar, d, key, due, remind_on, self.today, json.dumps(fields, sort_keys=True)
        )


@lru_cache(maxsize=200_000)
def _swept(
    calendar: WorkingCalendar,
    d: Definition,
    key: str,
    due: date,
    remind_on: date | None,
    today: date,
    fields_json: str,
) -> tuple[date | None, int, date | None]:
    spec = d.deadlines.get(key)
    if spec is None or spec.on_due:
        # an automatic transition that did not happen: nothing more the sweep would do today
        return None, 0, remind_on
    fields = json.loads(fields_json)
    reminded = remind_on if remind_on is not None else None
    level = 0
    while level < len(spec.escalation):
        day = deadlines.escalation_day(calendar, spec, level + 1, due, d, fields)
        if day >= today:
            break
        level += 1
    nxt = deadlines.next_action(
        calendar,
        spec,
        d,
        due=due,
        remind_on=remind_on,
        reminded=True,
        level=level,
        case_fields=fields,
    )
    return nxt, level, reminded


@lru_cache(maxsize=4096)
def _unit_name(code: str) -> str:
    u = units.get(code)
    return u.name if u else code


@lru_cache(maxsize=100_000)
def _fold(name: str) -> str:
    return fold(name)


# ---------------------------------------------------------------------------------- sinks
class PgSink:
    """COPY into PostgreSQL, in one transaction holding the audit heads' locks."""

    def __init__(self, engine: Engine, big: bool) -> None:
        self.raw = engine.raw_connection()
        self.conn = self.raw.driver_connection
        self.cur = self.conn.cursor()
        self.big = big
        self.fresh = False
        self.indexes: list[tuple[str, str]] = []
        self.phases: dict[str, float] = {}  # seconds of finish()'s steps, by name
        self.cur.execute("SET synchronous_commit = off")
        if big:
            self.cur.execute("SET maintenance_work_mem = '512MB'")
            superuser = self.cur.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            if superuser and superuser[0]:
                # our rows are consistent by construction: skip the per-row foreign-key checks
                self.cur.execute("SET session_replication_role = replica")

    def head(self) -> list[tuple[int, str]]:
        rows = self.cur.execute("SELECT seq, hash FROM audit_head ORDER BY id FOR UPDATE")
        return [(seq, hash_) for seq, hash_ in rows.fetchall()]

    def next_ids(self) -> dict[str, int]:
        out = {}
        for m in SERIAL:
            t = m.__tablename__
            out[t] = (self.cur.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0]) + 1
        self.fresh = out.get("cases", 1) == 1
        return out

    def drop_indexes(self) -> None:
        names = [m.__tablename__ for m in TABLES]
        self.indexes = self.cur.execute(
            """
            SELECT c.relname, pg_get_indexdef(i.indexrelid)
            FROM pg_index i
            JOIN pg_class c ON c.oid = i.indexrelid
            JOIN pg_class t ON t.oid = i.indrelid
            WHERE t.relname = ANY(%s) AND t.relnamespace = current_schema()::regnamespace
              AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
            """,
            (names,),
        ).fetchall()
        for name, _ in self.indexes:
            self.cur.execute(f'DROP INDEX "{name}"')

    def write(self, batch: Batch) -> None:
        for m in TABLES:
            t = m.__tablename__
            rows = batch.rows[t]
            if not rows:
                continue
            cols = columns(m)
            json_at = [i for i, c in enumerate(cols) if c in JSON_COLUMNS]
            names = ", ".join(f'"{c}"' for c in cols)
            with self.cur.copy(f"COPY {t} ({names}) FROM STDIN") as copy:
                for row in rows:
                    if json_at:
                        row = list(row)
                        for i in json_at:
                            if not isinstance(row[i], str):
                                row[i] = _dumps(row[i])
                    copy.write_row(row)

    def finish(self, head: list[tuple[int, str]], progress: bool) -> None:
        self.cur.executemany(
            "UPDATE audit_head SET seq = %s, hash = %s, prev_hash = coalesce("
            "(SELECT prev_hash FROM audit_events WHERE seq = %s), prev_hash) WHERE id = %s",
            [(seq, hash_, seq, lane + 1) for lane, (seq, hash_) in enumerate(head)],
        )
        for m in SERIAL:
            t = m.__tablename__
            self.cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{t}', 'id'), "
                f"greatest((SELECT max(id) FROM {t}), 1))"
            )
        t0 = time.perf_counter()
        for _name, ddl in tqdm(self.indexes, desc="indexes", disable=not progress):
            self.cur.execute(ddl)
        self.conn.commit()
        if self.indexes:
            self.phases["indexes"] = time.perf_counter() - t0
        self.conn.autocommit = True
        tables = ", ".join(m.__tablename__ for m in TABLES)
        t0 = time.perf_counter()
        if self.big:
            # VACUUM too, not only ANALYZE: a freshly loaded table has no visibility map, so
            # PostgreSQL cannot answer the reports' queries from their covering indexes alone
            self.cur.execute("VACUUM (ANALYZE) " + tables)
        elif self.fresh:
            self.cur.execute("ANALYZE " + tables)  # a new schema has no statistics yet
        if self.big or self.fresh:
            self.phases["vacuum" if self.big else "analyze"] = time.perf_counter() - t0
        # a small append to a big database (bench.run's pools of fresh cases) is left to
        # autovacuum: VACUUM (ANALYZE) of a 17 GB database took minutes of disk on the
        # benchmark machine, right before the section it was preparing
        self.conn.autocommit = False

    def close(self) -> None:
        self.cur.close()
        self.raw.close()


class SqliteSink:
    """executemany into SQLite (BEGIN IMMEDIATE: one writer for the whole load)."""

    def __init__(self, engine: Engine, big: bool) -> None:
        self.phases: dict[str, float] = {}
        self.conn = engine.connect()
        self.tx = self.conn.begin()

    def head(self) -> list[tuple[int, str]]:
        rows = self.conn.execute(select(AuditHead.seq, AuditHead.hash).order_by(AuditHead.id))
        return [(seq, hash_) for seq, hash_ in rows]

    def next_ids(self) -> dict[str, int]:
        return {
            m.__tablename__: (self.conn.scalar(select(func.max(m.__table__.c.id))) or 0) + 1
            for m in SERIAL
        }

    def drop_indexes(self) -> None:
        pass

    def write(self, batch: Batch) -> None:
        for m in TABLES:
            rows = batch.rows[m.__tablename__]
            if rows:
                cols = columns(m)
                json_at = [c for c in cols if c in JSON_COLUMNS]
                dicts = [dict(zip(cols, r)) for r in rows]
                for row in dicts:
                    for c in json_at:
                        if isinstance(row[c], str):
                            row[c] = json.loads(row[c])
                self.conn.execute(insert(m.__table__), dicts)

    def finish(self, head: list[tuple[int, str]], progress: bool) -> None:
        for lane, (seq, hash_) in enumerate(head):
            last = select(AuditEvent.prev_hash).where(AuditEvent.seq == seq).scalar_subquery()
            self.conn.execute(
                AuditHead.__table__.update()
                .where(AuditHead.id == lane + 1)
                .values(seq=seq, hash=hash_, prev_hash=func.coalesce(last, AuditHead.prev_hash))
            )
        self.tx.commit()

    def close(self) -> None:
        self.conn.close()


class SinkProcess:
    """A :class:`PgSink` in a process of its own (``multiprocessing``, spawned): the COPY of
    the rows (psycopg's formatting of each row, about a third of a load's time in this
    process) runs on another core while this one builds the next batch. Same methods as
    the sink; ``write`` does not wait (at most two batches queued), and an error in the
    other process is raised by the next call that waits for it (``finish`` at the latest);
    the load is one transaction there, so a failed load leaves nothing behind."""

    def __init__(self, engine: Engine, big: bool) -> None:
        ctx = mp.get_context("spawn")
        self.requests: Any = ctx.Queue(maxsize=2)
        self.replies: Any = ctx.Queue()
        url = engine.url.render_as_string(hide_password=False)
        self.proc = ctx.Process(
            target=_serve_sink, args=(url, big, self.requests, self.replies), daemon=True
        )
        self.proc.start()
        self.phases: dict[str, float] = {}

    def _call(self, name: str, *args: Any) -> Any:
        self._send(name, *args)
        while True:
            try:
                ok, value = self.replies.get(timeout=1)
                break
            except queue.Empty:
                self._check_alive()
        if not ok:
            raise RuntimeError(f"the sink's process failed: {value}")
        return value

    def _send(self, name: str, *args: Any) -> None:
        while True:
            try:
                self.requests.put((name, args), timeout=1)
                return
            except queue.Full:
                self._check_alive()

    def _check_alive(self) -> None:
        """While this process waits on a queue: the other one must still be there."""
        if not self.proc.is_alive():
            raise RuntimeError(f"the sink's process ended (exit code {self.proc.exitcode})")

    def head(self) -> list[tuple[int, str]]:
        return self._call("head")

    def next_ids(self) -> dict[str, int]:
        return self._call("next_ids")

    def drop_indexes(self) -> None:
        self._call("drop_indexes")

    def write(self, batch: Batch) -> None:
        self._send("write", batch)

    def finish(self, head: list[tuple[int, str]], progress: bool) -> None:
        self.phases = self._call("finish", head, progress)

    def close(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(queue.Full):
                self.requests.put(("close", ()), timeout=5)
            self.proc.join(timeout=60)
        if self.proc.is_alive():
            self.proc.terminate()  # its transaction is rolled back with its connection
            self.proc.join()


def _serve_sink(url: str, big: bool, requests: Any, replies: Any) -> None:
    """The other end of :class:`SinkProcess`: a :class:`PgSink` that runs its requests."""
    engine = make_engine(url)
    sink = None
    failed: str | None = None
    try:
        while True:
            name, args = requests.get()
            if name == "close":
                break
            if failed is None:
                try:
                    if sink is None:
                        sink = PgSink(engine, big)
                    value = getattr(sink, name)(*args)
                    if name == "finish":
                        value = sink.phases
                except Exception as exc:  # noqa: BLE001 - reported to the loading process
                    failed = f"{type(exc).__name__}: {exc}"
            if name != "write":
                replies.put((True, value) if failed is None else (False, failed))
    finally:
        if sink is not None:
            sink.close()
        engine.dispose()


# ----------------------------------------------------------------------------------- api
@dataclass
class Report:
    cases: int
    templates: int
    seconds: float
    rows: dict[str, int]
    case_ids: list[int] = field(default_factory=list)
    # seconds by step: "rows" (building and sending them), then what a sink does after
    # ("indexes" rebuilt, "vacuum" or "analyze"), then "counters"
    phases: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        per = ", ".join(f"{k} {v}" for k, v in self.rows.items())
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in self.phases.items())
        return (
            f"{self.cases} cases from {self.templates} templates in {self.seconds:.1f} s "
            f"({self.cases / max(self.seconds, 1e-9):.0f} cases/s; {steps}): {per}"
        )


def load(
    engine: Engine,
    registry: Registry,
    templates: list[Template],
    n: int,
    now: datetime,
    *,
    seed: int = 2026,
    progress: bool = False,
    chooser: Iterable[tuple[str, str]] | None = None,
    keep_ids: bool = False,
    pick: Any = None,
) -> Report:
    """Append ``n`` cases copied from ``templates`` to the database of ``engine``."""
    t0 = time.perf_counter()
    target = Target.prepare(engine, registry)
    settings = load_settings()
    big = n >= BIG_LOAD and engine.dialect.name == "postgresql" and n >= _cases_held(engine)
    if engine.dialect.name != "postgresql":
        sink: PgSink | SqliteSink | SinkProcess = SqliteSink(engine, big)
    elif n >= PARALLEL_LOAD:
        sink = SinkProcess(engine, big)
    else:
        sink = PgSink(engine, big)
    counts = {m.__tablename__: 0 for m in TABLES}
    ids: list[int] = []
    tally = rollup.Tally()
    try:
        head = sink.head()
        rep = Replicator(
            registry,
            target,
            templates,
            now,
            head,
            sink.next_ids(),
            seed=seed,
            secret_key=settings.secret_key,
            calendar=settings.calendar,
        )
        if chooser is not None:
            rep.units = iter(chooser)
        if big:
            sink.drop_indexes()
        bar = tqdm(total=n, desc="cases", unit="case", disable=not progress, smoothing=0.05)
        done = 0
        while done < n:
            batch = Batch()
            for _ in range(min(CHUNK, n - done)):
                t, delta = pick() if pick else rep.pick()
                unit, province = next(rep.units)
                cid = rep.case(batch, t, delta, unit, province)
                if keep_ids:
                    ids.append(cid)
            sink.write(batch)
            if not big:
                _tally(tally, batch)
            for k, v in batch.rows.items():
                counts[k] += len(v)
            done += len(batch)
            bar.update(len(batch))
        bar.close()
        phases = {"rows": time.perf_counter() - t0}
        sink.finish([(seq, hash_) for seq, hash_ in rep.heads], progress)
        phases.update(sink.phases)
    finally:
        sink.close()
    t1 = time.perf_counter()
    _store_counters(engine, tally, big)
    phases["counters"] = time.perf_counter() - t1
    return Report(n, len(templates), time.perf_counter() - t0, counts, ids, phases)


_EVENT_AT = [columns(AuditEvent).index(c) for c in ROLLUP_EVENT_COLUMNS]
_DEADLINE_AT = [
    columns(Deadline).index(c) for c in ("case_id", "due_on", "key", "status", "closed_at")
]
_CASE_AT = [columns(Case).index(c) for c in ("id", "unit_code", "province_code")]


def _tally(tally: rollup.Tally, batch: Batch) -> None:
    """The report counters of a batch's events and deadlines (workflow.rollup)."""
    i, u, p = _CASE_AT
    places = {row[i]: (row[u], row[p]) for row in batch.rows["cases"]}
    events = (tuple(row[k] for k in _EVENT_AT) for row in batch.rows["audit_events"])
    rollup.tally_events(tally, events, places)  # type: ignore[arg-type]
    deadlines = (tuple(row[k] for k in _DEADLINE_AT) for row in batch.rows["deadlines"])
    rollup.tally_deadlines(tally, deadlines, places)  # type: ignore[arg-type]


def _cases_held(engine: Engine) -> int:
    """About how many cases the database holds (PostgreSQL's estimate, from its statistics).

    A load of at least ``BIG_LOAD`` cases drops the indexes and rebuilds them (and the report
    counters) afterwards, which pays only when the load is at least as big as what is there:
    a pool of 82,000 fresh cases for ``bench.run --only engine`` appended to a million
    rebuilt every index of the million and recounted all its counters: the run took 12
    minutes, of which one measured the engine."""
    with engine.connect() as conn:
        estimate = conn.exec_driver_sql(
            "SELECT reltuples FROM pg_class WHERE oid = 'cases'::regclass"
        ).scalar()
    return max(int(estimate or 0), 0)  # -1: never analysed (a new table)


def _store_counters(engine: Engine, tally: rollup.Tally, big: bool) -> None:
    """Add a small load's counters; a big one recounts them all in SQL (set-based), into
    the counter tables with their keys and indexes dropped and built again after (in the
    same transaction): the 510,000 rows of ``report_moves`` that 100,000 cases make took
    16.1 s to insert with them in place, 2.9 s without, then 6.3 s to build the two."""
    with make_session_factory(engine)() as session:
        if big:
            if engine.dialect.name == "postgresql":
                session.execute(text("SET LOCAL work_mem = '256MB'"))
                session.execute(text("SET LOCAL maintenance_work_mem = '512MB'"))
                restore = _drop_counter_indexes(session)
                rollup.rebuild(session)
                for ddl in restore:
                    session.execute(text(ddl))
            else:
                rollup.rebuild(session)
        else:
            rollup.add(session, tally)
        session.commit()
    if big and engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM (ANALYZE) report_moves, report_deadlines")


def _drop_counter_indexes(session: Any) -> list[str]:
    """Drop the report counters' primary keys and indexes (PostgreSQL); returns the DDL
    that makes them again."""
    tables = [rollup.MOVES.name, rollup.DEADLINES.name]
    keys = session.execute(
        text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE contype = 'p' AND conrelid::regclass::text = ANY(:t)"
        ),
        {"t": tables},
    ).all()
    indexes = session.execute(
        text(
            "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            " WHERE i.indrelid::regclass::text = ANY(:t) AND NOT i.indisprimary"
        ),
        {"t": tables},
    ).all()
    for table, name, _ in keys:
        session.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    for name, _ in indexes:
        session.execute(text(f'DROP INDEX "{name}"'))
    return [f'ALTER TABLE {t} ADD CONSTRAINT "{n}" {d}' for t, n, d in keys] + [
        ddl for _, ddl in indexes
    ]


def generate(
    engine: Engine,
    n: int,
    *,
    now: datetime | None = None,
    registry: Registry | None = None,
    seed: int = 2026,
    variants: int = 4,
    progress: bool = False,
) -> Report:
    """Append ``n`` realistic cases (see the module docstring)."""
    now = now or datetime.now(UTC)
    registry = registry or Registry.from_directory(DEFINITIONS)
    templates = build_templates(registry, now, variants=variants, seed=seed)
    return load(engine, registry, templates, n, now, seed=seed, progress=progress)


def make_pool(
    engine: Engine,
    registry: Registry,
    n: int,
    now: datetime,
    *,
    transition: str = "request_determination",
    seed: int = 7,
) -> list[int]:
    """``n`` new cases of the demo commune, opened a week ago, holding the documents of
    ``transition`` (the benchmarks fire it on each)."""
    if n <= 0:
        return []
    t = build_pool_template(registry, now, transition)
    t.target = "pool"
    commune = units.get(DEMO_COMMUNE)

    def here() -> Iterator[tuple[str, str]]:
        while True:
            yield commune.code, commune.province_code

    report = load(
        engine,
        registry,
        [t],
        n,
        now,
        seed=seed,
        chooser=here(),
        keep_ids=True,
        pick=lambda: (t, timedelta(0)),
    )
    return report.case_ids


def database_url(url: str | None) -> str:
    url = url or load_settings().database_url
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=int, required=True, help="how many cases to add")
    p.add_argument("--database-url", default=None, help="default: DATABASE_URL or the SQLite file")
    p.add_argument("--now", default=None, help="the reference time, ISO 8601 (default: now)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--variants", type=int, default=4, help="template walks per state (4)")
    args = p.parse_args(argv)
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    if now.tzinfo is None:
        raise SystemExit("--now needs a time zone, e.g. 2026-11-26T09:00+07:00")
    engine = make_engine(database_url(args.database_url))
    registry = Registry.from_directory(DEFINITIONS)
    t0 = time.perf_counter()
    templates = build_templates(registry, now, variants=args.variants, seed=args.seed)
    print(f"{len(templates)} template walks in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    report = load(engine, registry, templates, args.cases, now, seed=args.seed, progress=True)
    record_generated(engine, args.cases, now)
    print(report)
    engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
