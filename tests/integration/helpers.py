"""Test helpers: drive a case through the v1 definition as the right agency would."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time
from typing import Any

from workflow.calendar import BUSINESS_TZ
from workflow.service import CaseService, CommandResult, SubjectData
from workflow.simulate import fake_pdf, fill_form

from ..conftest import COMMUNE, Actors


def at(day: date, hour: int = 9) -> datetime:
    """9 o'clock in Vietnam on ``day``, as an aware datetime."""
    return datetime.combine(day, time(hour), tzinfo=BUSINESS_TZ).astimezone(UTC)


class Driver:
    def __init__(self, service: CaseService, actors: Actors) -> None:
        self.service = service
        self.actors = actors
        self.rng = random.Random(7)

    def definition(self, case_id: int):  # noqa: ANN201
        with self.service.uow(read_only=True) as uow:
            return self.service.definition_of(uow.get_case(case_id))

    def actor_for(self, action: Any):  # noqa: ANN201
        p = action.allowed[0]
        return self.actors.get(p.agency, p.roles[0])

    def open(
        self,
        day: date,
        *,
        born: date = date(1990, 5, 14),
        unit: str = COMMUNE,
        name: str = "Trần Văn Bình",
        version: int | None = 1,
    ) -> CommandResult:
        """Open a case; on drug_rehab@1 unless another version (None: the one in force)."""
        actor = self.actors.get("commune_police", "officer", unit)
        return self.service.open_case(
            SubjectData(
                full_name=name,
                unit_code=unit,
                date_of_birth=born,
                sex="male",
                national_id="040094001234",
            ),
            actor,
            at(day),
            version=version,
        )

    def attach(self, case_id: int, codes: list[str], day: date, actor: Any = None) -> None:
        actor = actor or self.actors.get("commune_police", "officer")
        for code in codes:
            self.service.attach_document(
                case_id,
                code,
                fake_pdf(f"{case_id}-{code}-{day}"),
                actor,
                at(day, 8),
                filename=f"{code}.pdf",
                media_type="application/pdf",
            )

    def form(self, case_id: int, key: str, day: date, **overrides: Any) -> dict:
        d = self.definition(case_id)
        action = d.transitions.get(key) or d.activities[key]
        data = fill_form(d, action, day, self.rng, COMMUNE)
        for f in action.fields:
            if f.type == "date":
                data[f.name] = day.isoformat()
        data.update(overrides)
        return {k: v for k, v in data.items() if v is not None}

    def fire(
        self,
        case_id: int,
        key: str,
        day: date,
        *,
        attach: bool = True,
        actor: Any = None,
        **overrides: Any,
    ) -> CommandResult:
        d = self.definition(case_id)
        t = d.transitions[key]
        actor = actor or self.actor_for(t)
        if attach:
            self.attach(case_id, [req.any_of[0] for req in t.documents], day)
        return self.service.advance(
            case_id, key, self.form(case_id, key, day, **overrides), actor, at(day)
        )

    def activity(self, case_id: int, key: str, day: date, **overrides: Any) -> CommandResult:
        d = self.definition(case_id)
        act = d.activities[key]
        self.attach(case_id, [req.any_of[0] for req in act.documents], day)
        return self.service.record_activity(
            case_id, key, self.form(case_id, key, day, **overrides), self.actor_for(act), at(day)
        )
