"""Plan targets per unit and reporting year, set by administrators; plan vs actual.

A target is a whole number for one unit (commune or province), one reporting year and one
indicator: the people to manage in a reporting group ("60 home/community rehab, 30 voluntary at
a facility, 15 compulsory, 250 methadone"), a count (compulsory dossiers made, court decisions)
or a percentage (support after rehab, family commitments, complete management dossiers).

The plan of a unit for an indicator is its own target; a province (and the country) with none
of its own gets the sum of its communes' (provinces') targets; a percentage is never summed and
falls back to the plans' default (80 %, 100 %, 100 %). ``source`` says which.

Every change is an audit event (no case; ``extra`` holds unit, year, indicator, target and the
previous target), in the same hash chain as the cases' events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from workflow import audit, units
from workflow.actors import Actor
from workflow.errors import NotPermitted, ValidationFailed
from workflow.model import ReportTarget
from workflow.registry import Registry
from workflow.uow import UnitOfWork

if TYPE_CHECKING:
    from sqlalchemy import Select

MIN_YEAR, MAX_YEAR = 2000, 2100
SET_ACTION = "target.set"
DELETE_ACTION = "target.deleted"

# the reporting groups a target may be set for (people under management), in report order
TARGET_GROUPS = (
    "voluntary_home",
    "voluntary_facility",
    "substitution",
    "compulsory",
    "post_rehab",
    "illegal_use",
)
# names used in the plans for some groups
ALIASES = {
    "home_community": "voluntary_home",
    "facility": "voluntary_facility",
    "methadone": "substitution",
}


@dataclass(frozen=True)
class Indicator:
    """A target-able indicator: ``kind`` is people (a group), count or percent."""

    key: str
    label_vi: str
    label_en: str
    kind: str
    figure: str | None = None  # the report figure that is the actual (count, percent)
    rows: str | None = None  # the drill key of the rows behind the actual
    default: int | None = None  # percent: the plans' target when none is set

    def label(self, lang: str) -> str:
        return self.label_en if lang == "en" else self.label_vi


OTHER_INDICATORS = (
    Indicator(
        "dossiers_made",
        "Hồ sơ đề nghị đưa vào cơ sở cai nghiện bắt buộc đã lập",
        "Compulsory-rehab dossiers made",
        "count",
        "compulsory.dossiers_made",
        "compulsory.dossiers_made",
    ),
    Indicator(
        "compulsory_decided",
        "Người được Tòa án quyết định đưa vào cơ sở cai nghiện bắt buộc",
        "People the court sent to compulsory rehab",
        "count",
        "compulsory.decided",
        "compulsory.decided",
    ),
    Indicator(
        "support_share",
        "Tỷ lệ người hoàn thành cai nghiện được hỗ trợ học nghề, vay vốn, việc làm (%)",
        "Share of people who finished rehab and got support (%)",
        "percent",
        "support.share",
        "support.supported",
        80,
    ),
    Indicator(
        "family_commitment_share",
        "Tỷ lệ gia đình ký cam kết phối hợp (%)",
        "Share of families with a signed commitment (%)",
        "percent",
        "family_commitment.share",
        "family_commitment.signed",
        100,
    ),
    Indicator(
        "management_dossier_share",
        "Tỷ lệ người có hồ sơ quản lý đầy đủ (%)",
        "Share of people with a complete management dossier (%)",
        "percent",
        "management_dossier.share",
        "management_dossier.complete",
        100,
    ),
)


def catalogue(registry: Registry) -> dict[str, Indicator]:
    """Every indicator a target may be set for: the reporting groups of the definitions (of
    people under management) and :data:`OTHER_INDICATORS`, in report order."""
    labels: dict[str, Any] = {}
    for d in registry.all():
        for code, g in d.groups.items():
            labels[code] = g.label
    out: dict[str, Indicator] = {}
    for g in TARGET_GROUPS:
        if g in labels:
            out[g] = Indicator(g, labels[g].vi, labels[g].en, "people", None, f"targets.{g}.actual")
    out.update({i.key: i for i in OTHER_INDICATORS})
    return out


def canonical(registry: Registry, indicator: str) -> str:
    """The indicator key (aliases resolved); ValidationFailed naming ``indicator`` if unknown."""
    key = ALIASES.get(indicator.strip(), indicator.strip())
    known = catalogue(registry)
    if key not in known:
        raise ValidationFailed(
            f"unknown indicator {indicator!r}",
            errors={"indicator": [f"one of {', '.join([*known, *ALIASES])}"]},
        )
    return key


@dataclass(frozen=True)
class Plan:
    target: int
    source: str  # unit | communes | provinces | default
    units: int  # how many units' targets were summed (1 for the unit's own)


def _rows(session: Session, year: int, codes: Iterable[str] | None = None) -> list[ReportTarget]:
    stmt = select(ReportTarget).where(ReportTarget.year == year)
    if codes is not None:
        stmt = stmt.where(ReportTarget.unit_code.in_(sorted(codes)))
    return list(session.execute(stmt).scalars())


def plans(session: Session, registry: Registry, unit: str | None, year: int) -> dict[str, Plan]:
    """The plan of ``unit`` (None: the country) for ``year``, per indicator."""
    known = catalogue(registry)
    level = "country" if unit is None else (units.get(unit).level if units.get(unit) else None)
    if level is None:
        raise ValidationFailed(f"unknown unit {unit!r}", errors={"unit": ["unknown unit"]})
    out: dict[str, Plan] = {}
    if level == "commune":
        for r in _rows(session, year, [unit]):
            out[r.indicator] = Plan(r.target, "unit", 1)
    elif level == "province":
        communes = [c.code for c in units.communes_of(unit)]
        rows = _rows(session, year, [unit, *communes])
        own = {r.indicator: r.target for r in rows if r.unit_code == unit}
        out.update({k: Plan(v, "unit", 1) for k, v in own.items()})
        out.update(_summed(rows, known, own, "communes", lambda r: r.unit_code != unit))
    else:
        rows = _rows(session, year)
        province_own = {(r.unit_code, r.indicator) for r in rows if _is_province(r.unit_code)}

        def counted(r: ReportTarget) -> bool:
            if _is_province(r.unit_code):
                return True
            found = units.get(r.unit_code)
            return found is not None and (found.province_code, r.indicator) not in province_own

        out.update(_summed(rows, known, {}, "provinces", counted))
    for key, ind in known.items():
        if ind.kind == "percent" and key not in out and ind.default is not None:
            out[key] = Plan(ind.default, "default", 0)
    return out


def _summed(
    rows: list[ReportTarget],
    known: dict[str, Indicator],
    own: dict[str, int],
    source: str,
    counted: Any,
) -> dict[str, Plan]:
    totals: dict[str, list[int]] = {}
    for r in rows:
        ind = known.get(r.indicator)
        if ind is None or ind.kind == "percent" or r.indicator in own or not counted(r):
            continue
        acc = totals.setdefault(r.indicator, [0, 0])
        acc[0] += r.target
        acc[1] += 1
    return {k: Plan(v[0], source, v[1]) for k, v in totals.items()}


def plan_vs_actual(
    session: Session, registry: Registry, report: dict[str, Any], *, lang: str = "vi"
) -> list[dict[str, Any]]:
    """One row per indicator with a plan: plan, actual (of the report's period), % achieved."""
    from workflow.reports import figure_value

    found = plans(session, registry, report["unit"], report["year"])
    groups = {g["group"]: g for g in report["groups"]}
    out = []
    for key, ind in catalogue(registry).items():
        plan = found.get(key)
        if plan is None:
            continue
        if ind.kind == "people":
            g = groups.get(key)
            actual: float | int | None = g["at_start"] + g["new"] if g else 0
        elif ind.kind == "percent":
            share = figure_value(report, ind.figure or "")
            actual = None if share is None else round(share * 100, 2)
        else:
            actual = figure_value(report, ind.figure or "")
        achieved = round(actual / plan.target, 4) if actual is not None and plan.target else None
        out.append(
            {
                "indicator": key,
                "label": ind.label(lang),
                "kind": ind.kind,
                "plan": plan.target,
                "actual": actual,
                "achieved": achieved,
                "source": plan.source,
                "units": plan.units,
                "drill": ind.rows,
            }
        )
    return out


def actual_population(q: Any, indicator: str, figure: str) -> Select:
    """The rows behind the actual of a target (the drill key ``targets.<indicator>.actual``)."""
    from workflow.reports import population, union

    ind = catalogue(q.registry).get(indicator)
    if ind is None:
        raise ValidationFailed(
            f"unknown figure {figure!r}", errors={"figure": ["unknown indicator"]}
        )
    if ind.kind == "people":
        return union(q.group_at(q.t0, (indicator,)), q.moves(indicator, entering=True))
    return population(q, ind.rows or "")


# ---------------------------------------------------------------------------- administration
class Targets:
    """Set, list and delete targets (administrators only; every change audited)."""

    def __init__(self, session_factory: sessionmaker[Session], registry: Registry) -> None:
        self.session_factory = session_factory
        self.registry = registry

    @staticmethod
    def _admin(actor: Actor) -> None:
        if not actor.is_admin:
            raise NotPermitted("only administrators may read or set plan targets")

    def _check(
        self, unit: str, year: int, indicator: str, target: int | None = None
    ) -> tuple[str, str]:
        errors: dict[str, list[str]] = {}
        found = units.get(unit) if isinstance(unit, str) else None
        if found is None:
            errors["unit"] = ["unknown commune/ward or province code"]
        if not isinstance(year, int) or isinstance(year, bool) or not MIN_YEAR <= year <= MAX_YEAR:
            errors["year"] = [f"a year from {MIN_YEAR} to {MAX_YEAR}"]
        key = ALIASES.get(indicator, indicator)
        ind = catalogue(self.registry).get(key)
        if ind is None:
            known = [*catalogue(self.registry), *ALIASES]
            errors["indicator"] = [f"one of {', '.join(known)}"]
        if target is not None and (not isinstance(target, int) or isinstance(target, bool)):
            errors["target"] = ["a whole number"]
        elif target is not None and target < 0:
            errors["target"] = ["0 or more"]
        elif target is not None and ind is not None and ind.kind == "percent" and target > 100:
            errors["target"] = ["a percentage: 0 to 100"]
        if errors:
            raise ValidationFailed("invalid target", errors=errors)
        return found.code, key  # type: ignore[union-attr]

    def set(
        self, actor: Actor, unit: str, year: int, indicator: str, target: int, now: datetime
    ) -> dict[str, Any]:
        """Set (or replace) a target; returns it as a dict."""
        self._admin(actor)
        if target is None:
            raise ValidationFailed("invalid target", errors={"target": ["required"]})
        code, key = self._check(unit, year, indicator, target)
        with UnitOfWork(self.session_factory) as uow:
            row = uow.session.get(ReportTarget, (code, year, key))
            previous = row.target if row is not None else None
            if row is None:
                row = ReportTarget(unit_code=code, year=year, indicator=key)
                uow.session.add(row)
            row.target, row.set_by, row.set_at = target, actor.user_id, now
            body = {
                "unit": code,
                "year": year,
                "indicator": key,
                "target": target,
                "previous": previous,
            }
            audit.append_admin(uow.session, actor, now, SET_ACTION, body)
            uow.commit()
            return _as_dict(row)

    def delete(self, actor: Actor, unit: str, year: int, indicator: str, now: datetime) -> bool:
        """Remove a target; False when there was none."""
        self._admin(actor)
        code, key = self._check(unit, year, indicator)
        with UnitOfWork(self.session_factory) as uow:
            row = uow.session.get(ReportTarget, (code, year, key))
            if row is None:
                return False
            body = {"unit": code, "year": year, "indicator": key, "previous": row.target}
            uow.session.delete(row)
            audit.append_admin(uow.session, actor, now, DELETE_ACTION, body)
            uow.commit()
            return True

    def show(self, actor: Actor, unit: str, year: int, *, lang: str = "vi") -> dict[str, Any]:
        """The unit's own targets for ``year`` and its plan per indicator (with the source)."""
        self._admin(actor)
        known = catalogue(self.registry)
        errors: dict[str, list[str]] = {}
        if units.get(unit) is None:
            errors["unit"] = ["unknown commune/ward or province code"]
        if not MIN_YEAR <= year <= MAX_YEAR:
            errors["year"] = [f"a year from {MIN_YEAR} to {MAX_YEAR}"]
        if errors:
            raise ValidationFailed("invalid query", errors=errors)
        with UnitOfWork(self.session_factory, read_only=True) as uow:
            own = sorted(_rows(uow.session, year, [unit]), key=lambda r: _order(known, r.indicator))
            plan = plans(uow.session, self.registry, unit, year)
        return {
            "unit": unit,
            "unit_label": units.label(unit),
            "year": year,
            "targets": [_as_dict(r) | {"label": _label(known, r.indicator, lang)} for r in own],
            "plan": [
                {
                    "indicator": k,
                    "label": known[k].label(lang),
                    "kind": known[k].kind,
                    "plan": p.target,
                    "source": p.source,
                    "units": p.units,
                }
                for k, p in sorted(plan.items(), key=lambda kv: _order(known, kv[0]))
            ],
        }


def _is_province(code: str) -> bool:
    found = units.get(code)
    return found is not None and found.level == "province"


def _order(known: dict[str, Indicator], key: str) -> int:
    keys = list(known)
    return keys.index(key) if key in keys else len(keys)


def _label(known: dict[str, Indicator], key: str, lang: str) -> str:
    return known[key].label(lang) if key in known else key


def _as_dict(row: ReportTarget) -> dict[str, Any]:
    return {
        "unit": row.unit_code,
        "year": row.year,
        "indicator": row.indicator,
        "target": row.target,
        "set_by": row.set_by,
        "set_at": row.set_at,
    }
