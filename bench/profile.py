"""Profile the engine's hot path: ``CaseService.advance`` on fresh cases.

    python -m bench.profile [--database-url URL] [--cases 300] [--top 30] [--pyinstrument]

Fills a private PostgreSQL schema (or, with ``sqlite``, a temporary SQLite file) with
``--cases`` pool cases through ``bench.generate``, fires ``request_determination`` on each
under cProfile (or pyinstrument), and prints the mean time of one advance and the functions
that cost the most. ``--no-profile`` only times (what before/after comparisons use).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import generate as gen
from bench.run import ACTOR, TRANSITION, pg_database, transition_form
from workflow.actors import actor_for
from workflow.db import make_engine, make_session_factory
from workflow.registry import Registry
from workflow.service import CaseService
from workflow.storage import MemoryBlobStore


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile")
    p.add_argument("--database-url", default=None, help="'sqlite' or a PostgreSQL URL")
    p.add_argument("--cases", type=int, default=300)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--pyinstrument", action="store_true")
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args(argv)
    registry = Registry.from_directory(gen.DEFINITIONS)
    now = datetime.now(UTC)
    if args.database_url == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'p.db'}")
            _profile(engine, registry, now, args)
            engine.dispose()
    else:
        with pg_database(args.database_url, f"rfbench_profile_{os.getpid()}") as db:
            _profile(db.engine, registry, now, args)
    return 0


def _profile(engine, registry: Registry, now: datetime, args: argparse.Namespace) -> None:  # noqa: ANN001
    ids = gen.make_pool(engine, registry, args.cases + 20, now)
    service = CaseService(make_session_factory(engine), registry, blobs=MemoryBlobStore())
    with make_session_factory(engine)() as s:
        actor = actor_for(s, ACTOR)
    form = transition_form(registry, now)
    for cid in ids[:20]:  # warm-up: connections, caches
        service.advance(cid, TRANSITION, form, actor, datetime.now(UTC))
    times: list[float] = []
    prof = None
    if args.pyinstrument and not args.no_profile:
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0002)
        prof.start()
    elif not args.no_profile:
        prof = cProfile.Profile()
        prof.enable()
    for cid in ids[20:]:
        t0 = time.perf_counter()
        service.advance(cid, TRANSITION, form, actor, datetime.now(UTC))
        times.append(time.perf_counter() - t0)
    if prof is not None:
        if args.pyinstrument:
            prof.stop()
            print(prof.output_text(unicode=True, color=False, show_all=False))
        else:
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(args.top)
            print(out.getvalue())
    print(
        f"{engine.dialect.name}: {len(times)} advances, "
        f"mean {statistics.mean(times) * 1000:.2f} ms,"
        f" median {statistics.median(times) * 1000:.2f} ms"
        + (" (profiled)" if prof is not None else ""),
        file=sys.stderr,
    )


if __name__ == "__main__":
    sys.exit(main())
