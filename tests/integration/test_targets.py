"""Plan targets (workflow.targets): set, list, delete, validation, audit, plans of a province."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from sqlalchemy import select

from workflow.actors import SYSTEM
from workflow.errors import NotPermitted, ValidationFailed
from workflow.model import AuditEvent, ReportTarget
from workflow.targets import Targets, catalogue, plans

from ..conftest import COMMUNE, PROVINCE
from .helpers import at

OTHER = "17677"
NOW = at(date(2026, 1, 5))


@pytest.fixture
def targets(service, registry) -> Targets:  # noqa: ANN001
    return Targets(service.session_factory, registry)


def test_catalogue(registry) -> None:  # noqa: ANN001
    known = catalogue(registry)
    assert list(known)[:6] == [
        "voluntary_home",
        "voluntary_facility",
        "substitution",
        "compulsory",
        "post_rehab",
        "illegal_use",
    ]
    assert {"dossiers_made", "compulsory_decided", "support_share"} <= set(known)
    assert known["voluntary_home"].label_vi.startswith("Cai nghiện tự nguyện")
    assert known["support_share"].kind == "percent" and known["support_share"].default == 80


def test_set_replace_list_delete(targets, service, registry) -> None:  # noqa: ANN001
    row = targets.set(SYSTEM, COMMUNE, 2026, "home_community", 60, NOW)  # the plans' name
    assert (row["unit"], row["year"], row["indicator"], row["target"]) == (
        COMMUNE,
        2026,
        "voluntary_home",
        60,
    )
    targets.set(SYSTEM, COMMUNE, 2026, "voluntary_home", 65, NOW)
    targets.set(SYSTEM, OTHER, 2026, "voluntary_home", 40, NOW)
    targets.set(SYSTEM, COMMUNE, 2027, "voluntary_home", 99, NOW)
    listed = targets.show(SYSTEM, COMMUNE, 2026)
    assert [(t["indicator"], t["target"]) for t in listed["targets"]] == [("voluntary_home", 65)]
    assert listed["unit_label"].startswith("Xã Đô Lương")
    plan = {p["indicator"]: (p["plan"], p["source"]) for p in listed["plan"]}
    assert plan["voluntary_home"] == (65, "unit")
    assert plan["support_share"] == (80, "default")
    province = {p["indicator"]: p for p in targets.show(SYSTEM, PROVINCE, 2026)["plan"]}
    assert (province["voluntary_home"]["plan"], province["voluntary_home"]["source"]) == (
        105,
        "communes",
    )
    assert province["voluntary_home"]["units"] == 2
    assert targets.delete(SYSTEM, OTHER, 2026, "voluntary_home", NOW) is True
    assert targets.delete(SYSTEM, OTHER, 2026, "voluntary_home", NOW) is False
    with service.uow(read_only=True) as uow:
        assert plans(uow.session, registry, PROVINCE, 2026)["voluntary_home"].target == 65
        rows = uow.session.execute(select(ReportTarget)).scalars().all()
        assert len(rows) == 2


def test_every_change_is_audited(targets, service, actors) -> None:  # noqa: ANN001
    admin = actors.get("commune_pc", "head")
    admin = replace(admin, is_admin=True)
    targets.set(admin, COMMUNE, 2026, "substitution", 250, NOW)
    targets.set(admin, COMMUNE, 2026, "substitution", 240, NOW)
    targets.delete(admin, COMMUNE, 2026, "substitution", NOW)
    with service.uow(read_only=True) as uow:
        events = (
            uow.session.execute(
                select(AuditEvent).where(AuditEvent.case_id.is_(None)).order_by(AuditEvent.seq)
            )
            .scalars()
            .all()
        )
        row = uow.session.get(ReportTarget, (COMMUNE, 2026, "substitution"))
    assert row is None
    assert [(e.action, e.extra.get("target"), e.extra["previous"]) for e in events] == [
        ("target.set", 250, None),
        ("target.set", 240, 250),
        ("target.deleted", None, 240),
    ]
    assert all(e.actor == admin.username and e.actor_id == admin.user_id for e in events)
    assert events[0].extra["unit"] == COMMUNE and events[0].extra["year"] == 2026
    assert service.verify_audit().ok


def test_set_by_and_set_at(targets, service, actors) -> None:  # noqa: ANN001
    admin = actors.get("commune_pc", "head")
    admin = replace(admin, is_admin=True)
    row = targets.set(admin, COMMUNE, 2026, "dossiers_made", 5, NOW)
    assert row["set_by"] == admin.user_id and row["set_at"] == NOW


@pytest.mark.parametrize(
    ("unit", "year", "indicator", "target", "field"),
    [
        ("99999", 2026, "voluntary_home", 1, "unit"),
        (COMMUNE, 1999, "voluntary_home", 1, "year"),
        (COMMUNE, 2026, "everything", 1, "indicator"),
        (COMMUNE, 2026, "other", 1, "indicator"),  # not a reporting group
        (COMMUNE, 2026, "voluntary_home", -1, "target"),
        (COMMUNE, 2026, "support_share", 101, "target"),
        (COMMUNE, 2026, "voluntary_home", 1.5, "target"),
        (COMMUNE, 2026, "voluntary_home", True, "target"),
    ],
)
def test_invalid_targets_name_the_field(targets, unit, year, indicator, target, field) -> None:  # noqa: ANN001
    with pytest.raises(ValidationFailed) as err:
        targets.set(SYSTEM, unit, year, indicator, target, NOW)
    assert set(err.value.details["errors"]) == {field}


def test_only_administrators(targets, actors) -> None:  # noqa: ANN001
    officer = actors.get("commune_police", "officer")
    with pytest.raises(NotPermitted):
        targets.set(officer, COMMUNE, 2026, "voluntary_home", 60, NOW)
    with pytest.raises(NotPermitted):
        targets.show(officer, COMMUNE, 2026)
    with pytest.raises(NotPermitted):
        targets.delete(officer, COMMUNE, 2026, "voluntary_home", NOW)


def test_country_plans_sum_the_provinces(targets, service, registry) -> None:  # noqa: ANN001
    targets.set(SYSTEM, COMMUNE, 2026, "compulsory", 10, NOW)
    targets.set(SYSTEM, OTHER, 2026, "compulsory", 5, NOW)
    targets.set(SYSTEM, "01", 2026, "compulsory", 7, NOW)  # Hà Nội, a province target
    targets.set(SYSTEM, PROVINCE, 2026, "illegal_use", 3, NOW)
    targets.set(SYSTEM, COMMUNE, 2026, "illegal_use", 100, NOW)  # the province has its own
    with service.uow(read_only=True) as uow:
        country = plans(uow.session, registry, None, 2026)
        hanoi = plans(uow.session, registry, "01", 2026)
    assert (country["compulsory"].target, country["compulsory"].source) == (22, "provinces")
    assert country["illegal_use"].target == 3
    assert (hanoi["compulsory"].target, hanoi["compulsory"].source) == (7, "unit")


# ---------------------------------------------------------------------------- the CLI
def test_cli(tmp_path) -> None:  # noqa: ANN001
    from click.testing import CliRunner

    from workflow.cli import main

    from ..conftest import DEFINITIONS

    env = {
        "REHABFLOW_DATA_DIR": str(tmp_path),
        "REHABFLOW_DEFINITIONS_DIR": str(DEFINITIONS),
        "DATABASE_URL": None,
    }

    def run(*args: str):  # noqa: ANN202
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    assert run("init-db").exit_code == 0
    common = ("--year", "2026")
    out = run("targets", "set", "--unit", COMMUNE, *common, "--indicator", "home_community",
              "--target", "60")  # fmt: skip
    assert out.exit_code == 0, out.output
    assert out.output.strip() == f"{COMMUNE} 2026 voluntary_home = 60"
    out = run("targets", "list", "--unit", PROVINCE, *common)
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if "voluntary_home" in x)
    assert "60" in line and "communes (1)" in line
    assert "support_share" in out.output and "default" in out.output
    bad = run("targets", "set", "--unit", COMMUNE, *common, "--indicator", "nope",
              "--target", "1")  # fmt: skip
    assert bad.exit_code == 1 and "indicator:" in bad.output
    bad = run("targets", "set", "--unit", COMMUNE, *common, "--indicator", "illegal_use",
              "--target", "-3")  # fmt: skip
    assert bad.exit_code == 1 and "target:" in bad.output
    assert run("targets", "delete", "--unit", COMMUNE, *common, "--indicator",
               "voluntary_home").exit_code == 0  # fmt: skip
    assert run("targets", "delete", "--unit", COMMUNE, *common, "--indicator",
               "voluntary_home").exit_code == 1  # fmt: skip
    assert run("audit", "verify").exit_code == 0
