"""Run every benchmark, print the figures as a table and write `bench/results/latest.json`.

    .venv/bin/python -m bench [--quick] [api fanout inbound events]

Each benchmark module has `run(quick) -> list[Figure]`; `--quick` uses small sizes to try the
harness (its figures are not the report's, and it writes `bench/results/quick.json` instead).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from dataclasses import replace

from sqlalchemy import create_engine, text

from bench import _report
from bridge.settings import normalize_database_url
from tests.services import postgres_admin_url

# The ones the machine's load moves least first.
BENCHMARKS = ("api", "fanout", "inbound", "events")


def database_version() -> str:
    """The database the benchmarks run on, as it names itself."""
    url = postgres_admin_url()
    if url is None:
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version} (no PostgreSQL at DATABASE_TEST_URL)"
    engine = create_engine(normalize_database_url(url))
    try:
        with engine.connect() as connection:
            version = str(connection.execute(text("SELECT version()")).scalar_one())
            limit = connection.execute(text("SHOW max_connections")).scalar_one()
    finally:
        engine.dispose()
    return f"{version.split(' on ')[0]}, max_connections {limit}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks named (all by default) and report their figures."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to try the harness")
    parser.add_argument(
        "--markdown", action="store_true", help="print latest.json as the README's table and stop"
    )
    parser.add_argument("names", nargs="*", help=f"some of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.markdown:
        print(_report.markdown(_report.RESULTS / "latest.json"))
        return 0
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"no such benchmark: {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    figures: list[_report.Figure] = []
    for name in args.names or BENCHMARKS:
        print(f"== bench.{name}", flush=True)
        # The app logs every request and send at INFO; the figures are what this prints.
        logging.getLogger().setLevel(logging.WARNING)
        module = importlib.import_module(f"bench.{name}")
        measured = [replace(f, bench=name) for f in module.run(args.quick)]
        print(_report.table(measured), flush=True)
        figures += measured
    path = _report.RESULTS / ("quick.json" if args.quick else "latest.json")
    if args.names and path.exists():
        # Some benchmarks ran again: the others' figures stay as they were measured.
        earlier = json.loads(path.read_text())["figures"]
        names = {f.name for f in figures}
        kept = [
            _report.Figure(**f)
            for f in earlier
            if f.get("bench") not in args.names and f["name"] not in names
        ]
        figures = kept + figures
    report = _report.report(figures, database_version(), time.perf_counter() - started)
    _report.write(report, path)
    print()
    print(_report.table(figures))
    machine = report["machine"]
    print(
        f"\n{machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, "
        f"{machine['database']}; commit {report['commit'][:12]}"
        f"{' (uncommitted changes)' if report['dirty'] else ''}; {report['seconds']:.0f} s"
    )
    print(f"written to {path.relative_to(_report.ROOT)}")
    # A missed target is a finding for the report, not a failure of the run.
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
