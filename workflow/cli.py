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


@main.group("audit")
def audit_group() -> None:
    """The audit log."""


@audit_group.command("verify")
def audit_verify() -> None:
    """Recompute the hash chain; exit 1 naming the first bad event."""
    from workflow.bootstrap import bootstrap

    result = bootstrap(registry=_registry()).cases.verify_audit()
    if result.ok:
        click.echo(f"audit chain intact: {result.checked} events")
        return
    click.echo(
        f"audit chain BROKEN at event {result.first_bad_seq}: {result.reason} "
        f"({result.checked} events verified before it)",
        err=True,
    )
    sys.exit(1)


if __name__ == "__main__":
    main()
