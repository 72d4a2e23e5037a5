"""The ``rehabflow`` command line."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from workflow.errors import DefinitionError, RehabflowError


@click.group()
def main() -> None:
    """rehabflow — drug-rehabilitation case workflow."""


# ---------------------------------------------------------------------------- definitions
@main.group()
def definitions() -> None:
    """Validate, show and draw case definitions."""


@definitions.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
def definitions_validate(files: tuple[str, ...]) -> None:
    """Check definition FILES; print every problem as file:line: key: message."""
    from workflow.loader import parse_text

    failed = False
    seen: dict[tuple[str, int], str] = {}
    loaded: list = []
    for name in files:
        path = Path(name)
        if not path.exists():
            click.echo(f"{name}:0: file: does not exist", err=True)
            failed = True
            continue
        definition, problems = parse_text(path.read_text(encoding="utf-8"), name)
        for p in problems:
            click.echo(str(p), err=True)
        if definition is not None:
            other = seen.get((definition.key, definition.version))
            if other:
                click.echo(
                    f"{name}:1: version: {definition.ref} is also defined in {other}", err=True
                )
                failed = True
            seen[(definition.key, definition.version)] = name
            click.echo(
                f"{name}: ok ({definition.ref}: {len(definition.states)} states, "
                f"{len(definition.transitions)} transitions, "
                f"{len(definition.activities)} activities, "
                f"{len(definition.deadlines)} deadlines)"
            )
        failed = failed or bool(problems)
        if definition is not None and not problems:
            loaded.append(definition)
    from workflow.loader import check_migrations

    for p in check_migrations(loaded):
        click.echo(str(p), err=True)
        failed = True
    sys.exit(1 if failed else 0)


def _registry():  # noqa: ANN202
    from workflow.config import load_settings
    from workflow.registry import Registry

    try:
        return Registry.from_directory(load_settings().definitions_dir)
    except DefinitionError as exc:
        for line in exc.details.get("errors", []):
            click.echo(line, err=True)
        sys.exit(1)


def _pick(key: str, version: int | None):  # noqa: ANN202
    reg = _registry()
    try:
        return reg.get(key, version) if version else reg.versions(key)[-1]
    except (IndexError, RehabflowError):
        raise click.ClickException(
            f"no definition {key}{'@' + str(version) if version else ''}"
        ) from None


def _require_schema(services) -> None:  # noqa: ANN001
    """Stop with a clear message when the database has no schema yet."""
    from workflow.schema import current_revision

    if current_revision(services.engine) is None:
        click.echo("error: the database has no schema yet: run `rehabflow init-db` first", err=True)
        sys.exit(1)


@definitions.command("show")
@click.argument("key")
@click.option("--version", type=int, default=None, help="Version (default: newest).")
@click.option("--lang", type=click.Choice(["vi", "en"]), default="vi")
def definitions_show(key: str, version: int | None, lang: str) -> None:
    """Print states, transitions, required documents and deadlines of KEY."""
    from workflow.describe import describe

    click.echo(describe(_pick(key, version), lang))


@definitions.command("diagram")
@click.argument("key")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "svg"]), default="mermaid")
@click.option("--version", type=int, default=None)
@click.option("--case", "case_id", type=int, default=None, help="Highlight this case's state.")
@click.option("--lang", type=click.Choice(["vi", "en"]), default="vi")
def definitions_diagram(
    key: str, fmt: str, version: int | None, case_id: int | None, lang: str
) -> None:
    """Draw KEY as mermaid, dot or svg; with --case, the case's state is highlighted."""
    from workflow.diagram import render

    highlight = None
    definition = _pick(key, version)
    if case_id is not None:
        from workflow.bootstrap import bootstrap
        from workflow.model import Case

        services = bootstrap(registry=_registry())
        _require_schema(services)
        with services.session_factory() as session:
            case = session.get(Case, case_id)
            if case is None:
                raise click.ClickException(f"case {case_id} not found")
            if case.definition_key != key:
                raise click.ClickException(f"case {case_id} follows {case.definition_key}")
            definition = services.registry.get(case.definition_key, case.definition_version)
            highlight = case.state
    click.echo(render(definition, fmt, highlight=highlight, lang=lang))


# ---------------------------------------------------------------------------- database
@main.command("init-db")
def init_db() -> None:
    """Create or upgrade the database schema (Alembic upgrade head)."""
    from workflow.bootstrap import bootstrap
    from workflow.schema import current_revision

    services = bootstrap(registry=_registry())
    services.init_db()
    click.echo(f"database at revision {current_revision(services.engine)}")


@main.command("demo")
@click.option("--cases", "n_cases", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=2026, show_default=True)
def demo(n_cases: int, seed: int) -> None:
    """Load demo agencies, users and cases (idempotent)."""
    from workflow.bootstrap import bootstrap
    from workflow.demo import load_demo

    services = bootstrap(registry=_registry())
    services.init_db()
    summary = load_demo(services, n_cases=n_cases, seed=seed, progress=True)
    click.echo(summary)


@main.command("report")
@click.option("--unit", default=None, help="Commune or province code (default: the country).")
@click.option("--period", "period_spec", default=None, help="2026H1, 2026H2 or 2026.")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), default=None)
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), default=None)
@click.option("--format", "fmt", type=click.Choice(["xlsx", "csv", "json"]), default="json")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None)
def report(unit, period_spec, start, end, fmt, output) -> None:  # noqa: ANN001
    """The plans' indicators for a unit and a period (JSON, CSV or XLSX)."""
    from datetime import UTC, datetime

    from workflow.bootstrap import bootstrap
    from workflow.calendar import business_date
    from workflow.report_export import export
    from workflow.reports import indicators, period

    try:
        if period_spec:
            first, last = period(period_spec)
        elif start and end:
            first, last = start.date(), end.date()
        else:
            raise click.UsageError("give --period, or --from and --to")
        first, last = (start.date() if start else first), (end.date() if end else last)
        services = bootstrap(registry=_registry())
        _require_schema(services)
        with services.session_factory() as session:
            data = indicators(
                session,
                services.registry,
                unit,
                first,
                last,
                today=business_date(datetime.now(UTC)),
                calendar=services.cases.calendar,
            )
    except RehabflowError as exc:
        _fail(exc)
        return
    content, _ = export(data, fmt)
    if output:
        Path(output).write_bytes(content)
        click.echo(f"wrote {output}")
    elif fmt == "xlsx":
        raise click.UsageError("--format xlsx needs -o FILE")
    else:
        click.echo(content.decode("utf-8"))


@main.group("targets")
def targets_group() -> None:
    """Plan targets per unit and reporting year (e.g. 60 people in home/community rehab)."""


def _targets_actor(session, username: str | None):  # noqa: ANN001, ANN202
    from workflow.actors import SYSTEM, actor_for
    from workflow.errors import NotPermitted

    if username is None:
        return SYSTEM
    who = actor_for(session, username)
    if not who.is_admin:
        raise NotPermitted(f"{username} is not an administrator")
    return who


def _targets_call(method: str, username: str | None, *args, **kw):  # noqa: ANN002, ANN003, ANN202
    from datetime import UTC, datetime

    from workflow.bootstrap import bootstrap
    from workflow.targets import Targets

    services = bootstrap(registry=_registry())
    _require_schema(services)
    try:
        with services.session_factory() as session:
            actor = _targets_actor(session, username)
        targets = Targets(services.session_factory, services.registry)
        if method == "show":
            return getattr(targets, method)(actor, *args, **kw)
        return getattr(targets, method)(actor, *args, datetime.now(UTC), **kw)
    except RehabflowError as exc:
        _fail(exc)


_BY = click.option("--by", "username", default=None, help="The administrator (default: system).")


@targets_group.command("set")
@click.option("--unit", required=True, help="Commune or province code.")
@click.option("--year", type=int, required=True, help="Reporting year (15/12 before to 14/12).")
@click.option("--indicator", required=True, help="A reporting group or a target-able indicator.")
@click.option("--target", type=int, required=True)
@_BY
def targets_set(unit: str, year: int, indicator: str, target: int, username: str | None) -> None:
    """Set (or replace) a target; the change is audited."""
    row = _targets_call("set", username, unit, year, indicator, target)
    click.echo(f"{row['unit']} {row['year']} {row['indicator']} = {row['target']}")


@targets_group.command("delete")
@click.option("--unit", required=True)
@click.option("--year", type=int, required=True)
@click.option("--indicator", required=True)
@_BY
def targets_delete(unit: str, year: int, indicator: str, username: str | None) -> None:
    """Remove a target (audited)."""
    if not _targets_call("delete", username, unit, year, indicator):
        click.echo("no such target", err=True)
        sys.exit(1)
    click.echo("deleted")


@targets_group.command("list")
@click.option("--unit", required=True)
@click.option("--year", type=int, required=True)
@click.option("--lang", type=click.Choice(["vi", "en"]), default="vi")
@_BY
def targets_list(unit: str, year: int, lang: str, username: str | None) -> None:
    """The unit's plan for the year: its own targets, else its communes' summed, else the
    plans' default (the SOURCE column says which)."""
    data = _targets_call("show", username, unit, year, lang=lang)
    click.echo(f"{data['unit_label']} ({data['unit']}), {data['year']}")
    for p in data["plan"]:
        source = p["source"] + (
            f" ({p['units']})" if p["source"] in ("communes", "provinces") else ""
        )
        click.echo(f"  {p['indicator']:<26} {p['plan']:>7}  {source:<14} {p['label']}")


@main.group("audit")
def audit_group() -> None:
    """The audit log."""


@audit_group.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 naming the first bad event."""
    from workflow.bootstrap import bootstrap

    services = bootstrap(registry=_registry())
    _require_schema(services)
    result = services.cases.verify_audit()
    if result.ok:
        click.echo(f"audit chain intact: {result.checked} events")
        return
    click.echo(
        f"audit chain BROKEN at event {result.first_bad_seq}: {result.reason} "
        f"({result.checked} events verified before it)",
        err=True,
    )
    sys.exit(1)


@audit_group.command("lanes")
@click.argument("lanes", type=int, required=False)
def audit_lanes(lanes: int | None) -> None:
    """Show the audit log's lanes; with LANES, split the chain at its end into that many
    (allowed from one lane, or from lanes that hold no event yet). Migration 0010 made
    them (REHABFLOW_AUDIT_LANES, 8 on PostgreSQL)."""
    from sqlalchemy import select

    from workflow import audit
    from workflow.bootstrap import bootstrap
    from workflow.model import AuditHead

    services = bootstrap(registry=_registry())
    _require_schema(services)
    with services.session_factory() as session:
        if lanes is not None:
            try:
                audit.set_lanes(session, lanes)
            except ValueError as exc:
                raise click.ClickException(str(exc)) from exc
            session.commit()
        heads = session.execute(select(AuditHead).order_by(AuditHead.id)).scalars().all()
        first = heads[0]
        click.echo(
            f"{len(heads)} lane(s) since event {first.base_seq} (hash {first.base_hash[:16]}…)"
        )
        for h in heads:
            click.echo(f"  lane {h.id - 1}: {audit.lane_events(h)} event(s), last seq {h.seq}")


@main.group("counters")
def counters_group() -> None:
    """The reports' counters of moves and deadlines (kept by every command)."""


@counters_group.command("check")
def counters_check() -> None:
    """Recount the counters from the audit log and the deadlines; exit 1 listing the first
    differences."""
    from workflow import rollup
    from workflow.bootstrap import bootstrap

    services = bootstrap(registry=_registry())
    _require_schema(services)
    with services.session_factory() as session:
        n, differences = rollup.check(session)
    if not n:
        click.echo("report counters match a recount")
        return
    click.echo(f"{n} report counter(s) differ from a recount:", err=True)
    for d in differences:
        key = " ".join(str(part) for part in d.key)
        click.echo(f"  {d.table} {key}: stored {d.stored}, recounted {d.expected}", err=True)
    click.echo("run `rehabflow counters rebuild` to rewrite them", err=True)
    sys.exit(1)


@counters_group.command("fold")
def counters_fold() -> None:
    """Fold the counters' deltas into them now (the sweep does it every minute)."""
    from workflow import rollup
    from workflow.bootstrap import bootstrap

    services = bootstrap(registry=_registry())
    _require_schema(services)
    with services.cases.uow() as uow:
        changed = rollup.fold(uow.session)
        uow.commit()
    click.echo(f"{changed} counter(s) changed")


@counters_group.command("rebuild")
def counters_rebuild() -> None:
    """Rewrite every counter from the audit log and the deadlines (one transaction; on
    PostgreSQL commands wait for it: about two minutes at a million cases)."""
    from workflow import rollup
    from workflow.bootstrap import bootstrap

    services = bootstrap(registry=_registry())
    _require_schema(services)
    with services.cases.uow() as uow:
        sizes = rollup.rebuild(uow.session)
        uow.commit()
    click.echo(", ".join(f"{table}: {n} rows" for table, n in sizes.items()))


# ---------------------------------------------------------------------------- accounts
def _accounts():  # noqa: ANN202
    from workflow.accounts import Accounts
    from workflow.bootstrap import bootstrap

    services = bootstrap(registry=_registry())
    services.init_db()
    return Accounts(services.session_factory, services.registry)


def _fail(exc: RehabflowError) -> None:
    click.echo(f"error: {exc.message}", err=True)
    for field, messages in (exc.details.get("errors") or {}).items():
        click.echo(f"  {field}: {'; '.join(messages)}", err=True)
    sys.exit(1)


@main.group()
def users() -> None:
    """User accounts."""


@users.command("create")
@click.argument("username")
@click.option("--agency-type", required=True, help="Agency type code of the definitions.")
@click.option("--role", required=True)
@click.option("--unit", "unit_code", required=True, help="Commune/ward or province code.")
@click.option("--full-name", default="")
@click.option("--admin", is_flag=True, help="May verify the audit log and read the access log.")
@click.option("--password-stdin", is_flag=True, help="Read a password from standard input.")
def users_create(
    username: str,
    agency_type: str,
    role: str,
    unit_code: str,
    full_name: str,
    admin: bool,
    password_stdin: bool,
) -> None:
    """Create USERNAME in the agency of that type covering that unit."""
    from datetime import UTC, datetime

    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    try:
        user = _accounts().create_user(
            username,
            agency_type,
            role,
            unit_code,
            datetime.now(UTC),
            password=password,
            full_name=full_name,
            is_admin=admin,
        )
    except RehabflowError as exc:
        _fail(exc)
    click.echo(f"user {user.username} created (agency {user.agency_id}, role {user.role})")


@main.group()
def tokens() -> None:
    """API tokens (Authorization: Bearer ...)."""


@tokens.command("create")
@click.argument("username")
@click.option("--expires-days", type=int, default=90, show_default=True)
def tokens_create(username: str, expires_days: int) -> None:
    """Create a token for USERNAME; the token alone is printed on the last line (shown once)."""
    from datetime import UTC, datetime

    try:
        new = _accounts().create_token(username, datetime.now(UTC), expires_days=expires_days)
    except RehabflowError as exc:
        _fail(exc)
    click.echo(f"token {new.id} for {username}, expires {new.expires_at:%d/%m/%Y}", err=True)
    click.echo(new.token)


@tokens.command("revoke")
@click.argument("token_or_id")
def tokens_revoke(token_or_id: str) -> None:
    """Revoke a token, given as the token itself or its id."""
    from datetime import UTC, datetime

    n = _accounts().revoke_token(token_or_id, datetime.now(UTC))
    if not n:
        click.echo("no active token matches", err=True)
        sys.exit(1)
    click.echo(f"{n} token(s) revoked")


if __name__ == "__main__":
    main()
