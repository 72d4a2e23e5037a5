"""The ``rehabflow`` command: the engine's commands plus ``serve``."""

from __future__ import annotations

import click

from workflow.cli import main


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--threads", type=int, default=8, show_default=True)
def serve(host: str, port: int, threads: int) -> None:
    """Serve the API with waitress (creates the database if missing)."""
    from waitress import serve as waitress_serve

    from api.app import create_app

    app = create_app()
    click.echo(f"rehabflow listening on http://{host}:{port}/ (API docs: /api/docs)")
    waitress_serve(app, host=host, port=port, threads=threads, ident="rehabflow")


__all__ = ["main"]
