"""Profile the engine's hot path: ``CaseService.advance`` on fresh cases.

    python -m bench.profile [--database-url URL] [--cases 300] [--top 30] [--pyinstrument|--cpu]
    python -m bench.profile --compare OLD_TREE [--rounds 3] [--database-url URL]

Fills a private PostgreSQL schema (or, with ``sqlite``, a temporary SQLite file) with
``--cases`` pool cases through ``bench.generate``, fires ``request_determination`` on each
under cProfile (or pyinstrument), and prints the mean time of one advance and the functions
that cost the most (with ``--cpu``, their CPU time: the waits on the server drop out).
``--no-profile`` only times (what before/after comparisons use).

``--compare OLD_TREE`` measures before/after in one run: ``OLD_TREE`` holds the ``workflow``
package of an earlier commit (``git archive <commit> workflow | tar -x -C DIR``), and
``--against NEW_TREE`` another one (default: this checkout); rounds alternate old and new
code, each a fresh process timing ``--cases`` advances (wall and CPU time), and the medians
and their ratio are printed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
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
    p.add_argument(
        "--cpu", action="store_true", help="cProfile on CPU time: waits on the server drop out"
    )
    p.add_argument("--json", action="store_true", help="print the timing as JSON")
    p.add_argument("--compare", type=Path, default=None, help="tree of the old workflow package")
    p.add_argument("--against", type=Path, default=None, help="new tree (default: this one)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    if args.compare:
        return compare(args)
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
    cpu0 = time.process_time()
    prof = None
    if args.pyinstrument and not args.no_profile:
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0002)
        prof.start()
    elif not args.no_profile:
        prof = cProfile.Profile(time.process_time) if args.cpu else cProfile.Profile()
        prof.enable()
    for cid in ids[20:]:
        t0 = time.perf_counter()
        service.advance(cid, TRANSITION, form, actor, datetime.now(UTC))
        times.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / len(times)
    if args.json:
        print(json.dumps({"wall_ms": statistics.mean(times) * 1000, "cpu_ms": cpu * 1000}))
        return
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


def compare(args: argparse.Namespace) -> int:
    """Alternate old and current code, each round in fresh processes; print the medians."""
    root = Path(__file__).resolve().parent.parent
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    new = args.against or root
    for _ in range(args.rounds):
        for label, tree in (("before", args.compare), ("after", new)):
            cmd = [sys.executable, "-m", "bench.profile", "--no-profile", "--json"]
            cmd += ["--cases", str(args.cases)]
            if args.database_url:
                cmd += ["--database-url", args.database_url]
            # run from the tree itself: the working directory comes first on sys.path, so
            # its ``workflow`` is the one imported; ``bench`` comes from this checkout
            env = {**os.environ, "PYTHONPATH": str(root)}
            out = subprocess.run(  # noqa: S603 - our own module
                cmd, cwd=tree, env=env, capture_output=True, text=True, check=True
            ).stdout
            runs[label].append(json.loads(out.strip().splitlines()[-1]))
    summary = {
        label: {k: round(statistics.median(r[k] for r in rs), 3) for k in ("wall_ms", "cpu_ms")}
        for label, rs in runs.items()
    }
    for k in ("wall_ms", "cpu_ms"):
        summary[f"{k}_after_to_before"] = round(summary["after"][k] / summary["before"][k], 3)
    summary["rounds"] = runs
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
