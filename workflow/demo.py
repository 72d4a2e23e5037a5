"""Demo data: the agencies of one real commune and its province, their users, ~200 cases.

Idempotent: agencies and users are created once (by code/username) and only the cases missing
to reach the requested number are added. Cases are driven through the real service, so every
one has documents, deadlines and a verifiable audit history.
"""

from __future__ import annotations

import contextlib
import functools
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import func, select
from tqdm import tqdm

from workflow import units
from workflow.actors import Actor, actor_from_user
from workflow.definition import Definition
from workflow.errors import DomainError
from workflow.model import Agency, AgencyUnit, Case, User
from workflow.service import SubjectData
from workflow.simulate import fake_pdf, fill_form, path_to

DEMO_COMMUNE = "17662"  # Xã Đô Lương, tỉnh Nghệ An (vietnam-provinces)
# every demo user signs in to the web pages with this password (printed by scripts/start.sh)
DEMO_PASSWORD = "demo-rehabflow-2026"  # noqa: S105 - a documented demo credential
FAMILY = ("Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Phan", "Vũ", "Đặng", "Bùi", "Đỗ", "Hồ")
MIDDLE_M = ("Văn", "Đức", "Hữu", "Minh", "Quang", "Xuân")
MIDDLE_F = ("Thị", "Thu", "Ngọc", "Thanh")
GIVEN_M = ("Bình", "Hùng", "Nam", "Tuấn", "Dũng", "Long", "Sơn", "Hải", "Phúc", "Thắng", "Kiên")
GIVEN_F = ("Cúc", "Lan", "Hoa", "Mai", "Hương", "Hạnh", "Trang")
STREETS = ("Xóm 1", "Xóm 3", "Xóm 5", "Xóm Trung Sơn", "Xóm Bắc Sơn", "Khối 2", "Khối 4")

NAMES = {  # how the agency of each type is called for the demo commune
    "commune_police": "Công an {commune}",
    "commune_pc": "Ủy ban nhân dân {commune}",
    "health_facility": "Trạm Y tế {commune}",
    "district_labour_office": "Phòng Lao động - Thương binh và Xã hội huyện Đô Lương (cũ)",
    "court": "Tòa án nhân dân khu vực 5 - {province}",
    "procuracy": "Viện kiểm sát nhân dân khu vực 5 - {province}",
    "rehab_facility": "Cơ sở cai nghiện ma túy {province}",
    "provincial_police": "Công an {province}",
    "family": "Đại diện gia đình (demo)",
    "mentor": "Tổ công tác quản lý sau cai nghiện {commune}",
}


def _now() -> datetime:
    return datetime.now(UTC)


@functools.cache
def _demo_password_hash() -> str:
    """One argon2 hash (the parameters of workflow.accounts) shared by every demo user: the
    same known password, hashed once (each hash costs a noticeable fraction of a second)."""
    return PasswordHasher().hash(DEMO_PASSWORD)


def ensure_directory(services: Any, definition: Definition) -> dict[tuple[str, str], Actor]:
    """Create one agency per agency type and one user per (agency type, role) it is given."""
    commune = units.get(DEMO_COMMUNE)
    province = units.get(commune.province_code)
    roles_by_agency: dict[str, set[str]] = {}
    for action in [
        *definition.transitions.values(),
        *definition.activities.values(),
        *([definition.opening] if definition.opening else []),
    ]:
        for p in action.allowed:
            roles_by_agency.setdefault(p.agency, set()).update(p.roles)
    actors: dict[tuple[str, str], Actor] = {}
    with services.session_factory() as session:
        for code, agency_type in definition.agency_types.items():
            covers = commune.code if agency_type.level in ("commune", "none") else province.code
            agency = session.execute(
                select(Agency).where(Agency.code == f"demo-{code}")
            ).scalar_one_or_none()
            if agency is None:
                name = NAMES.get(code, agency_type.label.vi + " - {commune}")
                agency = Agency(
                    code=f"demo-{code}",
                    type=code,
                    name=name.format(commune=commune.name, province=province.name),
                    email=f"{code.replace('_', '.')}@demo.rehabflow.invalid",
                )
                agency.units.append(AgencyUnit(unit_code=covers))
                session.add(agency)
                session.flush()
            for role in sorted(roles_by_agency.get(code, set()) | {"officer"}):
                username = f"{code}.{role}"
                user = session.execute(
                    select(User).where(User.username == username)
                ).scalar_one_or_none()
                if user is None:
                    user = User(
                        username=username,
                        full_name=f"{definition.roles[role].label.vi}"
                        if role in definition.roles
                        else role,
                        agency_id=agency.id,
                        role=role,
                        created_at=_now(),
                        active=True,
                        is_admin=(code, role) == ("commune_pc", "head"),
                    )
                    session.add(user)
                    session.flush()
                if user.password_hash is None:
                    user.password_hash = _demo_password_hash()
                    session.flush()
                session.refresh(user)
                actors[(code, role)] = actor_from_user(user)
        session.commit()
    return actors


def _subject(rng: random.Random, minor: bool, today: date) -> SubjectData:
    female = rng.random() < 0.12
    name = " ".join(
        (
            rng.choice(FAMILY),
            rng.choice(MIDDLE_F if female else MIDDLE_M),
            rng.choice(GIVEN_F if female else GIVEN_M),
        )
    )
    age_days = rng.randint(13 * 365 + 200, 17 * 365) if minor else rng.randint(22 * 365, 48 * 365)
    return SubjectData(
        full_name=name,
        unit_code=DEMO_COMMUNE,
        date_of_birth=today - timedelta(days=age_days),
        sex="female" if female else "male",
        national_id=f"040{rng.randint(0, 999_999_999):09d}",
        address=f"{rng.choice(STREETS)}, {units.get(DEMO_COMMUNE).name}",
    )


def _actor_for(action: Any, actors: dict[tuple[str, str], Actor]) -> Actor | None:
    for p in action.allowed:
        for role in p.roles:
            if (p.agency, role) in actors:
                return actors[(p.agency, role)]
    return None


def _walk(
    services: Any,
    d: Definition,
    path: list[str],
    actors: dict,
    rng: random.Random,
    start: datetime,
    minor: bool,
) -> None:
    svc = services.cases
    opener = actors.get(("commune_police", "officer")) or next(iter(actors.values()))
    now = start
    subject = _subject(rng, minor, now.date())
    case = svc.open_case(
        subject,
        opener,
        now,
        definition_key=d.key,
        version=d.version,
        data=fill_form(d, d.opening, now.date(), rng, DEMO_COMMUNE) if d.opening else None,
    )
    for key in path:
        if minor and key == "open_compulsory_dossier" and "open_minor_dossier" in d.transitions:
            key = "open_minor_dossier"
        t = d.transitions[key]
        actor = _actor_for(t, actors)
        if actor is None:
            return
        now += timedelta(days=rng.randint(1, 4), hours=rng.randint(0, 6))
        for req in t.documents:
            doc_type = rng.choice(req.any_of)
            svc.attach_document(
                case.case_id,
                doc_type,
                fake_pdf(f"{case.case_id}-{doc_type}"),
                actor,
                now,
                filename=f"{doc_type}.pdf",
                media_type="application/pdf",
            )
        for _attempt in range(30):
            try:
                svc.advance(
                    case.case_id, key, fill_form(d, t, now.date(), rng, DEMO_COMMUNE), actor, now
                )
                break
            except DomainError:
                continue
        else:
            return
        state_activities = d.activities_in(t.dest)
        if state_activities and rng.random() < 0.6:
            act = rng.choice(state_activities)
            who = _actor_for(act, actors)
            if who is not None:
                now += timedelta(days=rng.randint(1, 10))
                for req in act.documents:
                    doc_type = rng.choice(req.any_of)
                    svc.attach_document(
                        case.case_id,
                        doc_type,
                        fake_pdf(f"{case.case_id}-{doc_type}-{now}"),
                        who,
                        now,
                        filename=f"{doc_type}.pdf",
                        media_type="application/pdf",
                    )
                with contextlib.suppress(DomainError):
                    svc.record_activity(
                        case.case_id,
                        act.key,
                        fill_form(d, act, now.date(), rng, DEMO_COMMUNE),
                        who,
                        now,
                    )


def load_demo(
    services: Any, *, n_cases: int = 200, seed: int = 2026, progress: bool = False
) -> str:
    """Create the directory and as many cases as are missing to reach ``n_cases``."""
    today = _now()
    d = services.registry.in_force("drug_rehab", today.date())
    actors: dict[tuple[str, str], Actor] = {}
    for version in services.registry.versions("drug_rehab"):
        actors.update(ensure_directory(services, version))
    with services.session_factory() as session:
        existing = session.execute(
            select(func.count()).select_from(Case).where(Case.unit_code == DEMO_COMMUNE)
        ).scalar_one()
    missing = max(0, n_cases - existing)
    targets = [s for s in d.states if s != d.initial_state.key]
    targets.append(d.initial_state.key)
    paths: dict[tuple[int, str], list[str] | None] = {}
    rng = random.Random(seed + existing)
    bar = tqdm(total=missing, desc="demo cases", unit="case", disable=not progress)
    for i in range(missing):
        target = targets[(existing + i) % len(targets)]
        start = today - timedelta(days=rng.randint(60, 760))
        # a case follows the version of the law in force on the day it was opened
        case_def = services.registry.in_force("drug_rehab", start.date())
        if (case_def.version, target) not in paths:
            paths[(case_def.version, target)] = (
                path_to(case_def, target) if target in case_def.states else None
            )
        path = paths[(case_def.version, target)] or []
        minor = "compulsory_dossier" in path_states(case_def, path) and rng.random() < 0.15
        _walk(services, case_def, path, actors, rng, start, minor)
        bar.update(1)
    bar.close()
    with services.session_factory() as session:
        total = session.execute(select(func.count()).select_from(Case)).scalar_one()
        by_state = session.execute(
            select(Case.state, func.count()).group_by(Case.state).order_by(Case.state)
        ).all()
    lines = [
        f"demo: {missing} case(s) added, {total} in the database; users: "
        + ", ".join(sorted(f"{a}.{r}" for a, r in actors))
    ]
    lines += [f"  {state:<28} {n}" for state, n in by_state]
    return "\n".join(lines)


def path_states(d: Definition, path: list[str]) -> list[str]:
    return [d.transitions[k].dest for k in path]
