"""``rehabflow cases ...``: moving running cases to a newer version of their definition."""

from __future__ import annotations

import getpass
import json
import sys
from datetime import UTC, datetime
from typing import Any

import click

from workflow.cli import _fail, _registry, _require_schema, main
from workflow.errors import RehabflowError


@main.group()
def cases() -> None:
    """Running cases: migration to a newer definition version."""


def _label(reason: dict[str, str] | None, lang: str) -> str:
    return (reason or {}).get(lang) or (reason or {}).get("vi") or ""


def print_dry_run(report: dict[str, Any], lang: str = "vi") -> None:
    """The dry-run report as plain tables."""
    echo = click.echo
    echo(
        f"{report['from']} -> {report['to']}  where {report['where'] or '(all)'}: "
        f"{report['cases']} case(s), {report['movable']} can move, "
        f"{report['unmovable_count']} cannot"
    )
    echo("")
    echo(f"{'state':<28} {'->':<2} {'new state':<28} {'cases':>7}")
    for row in report["states"]:
        target = row["to_state"] or "(stays)"
        echo(f"{row['from_state']:<28} -> {target:<28} {row['cases']:>7}")
        if row["to_state"] is None:
            echo(f"{'':<32}{_label(row['reason'], lang)}")
    echo("")
    echo(f"{'open deadline':<32} {'policy':<10} {'cases':>7} {'due date moves':>15}")
    for row in report["deadlines"]:
        echo(f"{row['key']:<32} {row['policy']:<10} {row['cases']:>7} {row['changed']:>15}")
    if not report["deadlines"]:
        echo("(no open deadline is affected)")
    echo("")
    echo(f"{'state':<28} {'newly required document':<40} {'cases missing it':>16}")
    for row in report["new_documents"]:
        echo(f"{row['state']:<28} {row['document']:<40} {row['cases_missing']:>16}")
    if not report["new_documents"]:
        echo("(no document becomes newly required)")
    if report["unmovable"]:
        echo("")
        echo("cases that cannot move:")
        for row in report["unmovable"]:
            echo(
                f"  case {row['case_id']} ({row['number'] or '-'}), {row['state']}: "
                f"{_label(row['reason'], lang)}"
            )


@cases.command("migrate")
@click.option("--from", "source", required=True, help="e.g. drug_rehab@1")
@click.option("--to", "target", required=True, help="e.g. drug_rehab@3")
@click.option(
    "--where",
    "where",
    multiple=True,
    help="state=a,b or unit=CODE (a commune or province); repeatable",
)
@click.option("--dry-run", is_flag=True, help="Report what would happen; change nothing.")
@click.option("--as", "username", default=None, help="Administrator doing it (for the audit).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--lang", type=click.Choice(["vi", "en"]), default="vi")
def migrate(
    source: str,
    target: str,
    where: tuple[str, ...],
    dry_run: bool,
    username: str | None,
    as_json: bool,
    lang: str,
) -> None:
    """Move running cases to a newer version, following the plan the newer version declares.

    Each case moves in its own transaction, audited as a migration event. Interrupted, the
    same command resumes where it stopped; a case moves exactly once.
    """
    from tqdm import tqdm

    from workflow.actors import SYSTEM, actor_for
    from workflow.bootstrap import bootstrap
    from workflow.migration import Migrator, parse_where

    services = bootstrap(registry=_registry())
    _require_schema(services)
    migrator = Migrator(services.cases)
    try:
        conditions = parse_where(where)
        now = datetime.now(UTC)
        total = migrator.count(source, conditions)
        bar = tqdm(total=total, unit="case", file=sys.stderr, disable=as_json or total == 0)
        if dry_run:
            report = migrator.dry_run(source, target, conditions, now, progress=bar.update)
            bar.close()
            if as_json:
                click.echo(json.dumps(report, ensure_ascii=False, indent=2, default=str))
            else:
                print_dry_run(report, lang)
            return
        if username:
            with services.session_factory() as s:
                actor = actor_for(s, username)
        else:
            actor = SYSTEM
        if not actor.is_admin:
            raise click.ClickException(f"{username} is not an administrator")
        run_id = migrator.start(source, target, conditions, actor, now)
        if actor is SYSTEM:
            click.echo(f"run {run_id} by {getpass.getuser()} (as system)", err=True)
        result = migrator.run(run_id, actor, lambda: datetime.now(UTC), progress=bar.update)
        bar.close()
    except RehabflowError as exc:
        _fail(exc)
        return
    summary = {
        "run": result.run_id,
        "moved": result.moved,
        "cannot_move": migrator.count(source, conditions),
        "status": result.status,
    }
    if as_json:
        click.echo(json.dumps(summary | {"skipped_cases": result.skipped_cases}, default=str))
    else:
        click.echo(
            f"run {summary['run']}: {summary['moved']} case(s) moved to {target}; "
            f"{summary['cannot_move']} stay on {source} (see --dry-run for why)"
        )


@cases.command("migrations")
def migrations() -> None:
    """The migration runs, newest first."""
    from workflow.bootstrap import bootstrap
    from workflow.calendar import BUSINESS_TZ
    from workflow.migration import runs

    services = bootstrap(registry=_registry())
    _require_schema(services)
    for r in runs(services.cases):
        click.echo(
            f"run {r.id}: {r.definition_key}@{r.from_version} -> @{r.to_version} "
            f"{r.criteria or ''} by {r.actor}, {r.status}, moved {r.moved}, "
            f"started {r.started_at.astimezone(BUSINESS_TZ):%d/%m/%Y %H:%M}"
        )
