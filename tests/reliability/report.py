"""Print the reliability table from the records the last runs of tests/reliability left.

    python -m tests.reliability.report            # the table (Markdown) on stdout
    python -m tests.reliability.report --readme   # and write it into README.md's section

One row per fault or attack and size (`test` for `make test`, `soak` for `make soak`): what was
injected, what was counted (sent, stored, duplicated, lost, and whatever else the test counted),
measurements, pass or fail.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tests.reliability.conftest import RESULTS, ROOT

START = "<!-- reliability-table:start -->"
END = "<!-- reliability-table:end -->"
MAIN = ("sent", "stored", "duplicated", "lost")


def title(name: str) -> str:
    base, _, param = name.partition("[")
    words = base.removeprefix("test_").replace("_", " ")
    return f"{words} [{param}" if param else words


def cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return "/".join(cell(v) for v in value)
    return str(value).replace("|", "\\|")


def table(records: dict[str, dict[str, Any]]) -> str:
    rows = sorted(records.values(), key=lambda r: (r["size"] != "test", r["at"]))
    lines = [
        "| fault or attack | size | injected | sent | stored | dup. | lost | also counted | "
        "measured | result |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        counted = r["counted"]
        main = [cell(counted.get(k, "")) for k in MAIN]
        other = {k: v for k, v in counted.items() if k not in MAIN}
        lines.append(
            f"| {title(r['name'])} | {r['size']} | {cell(r['injected'])} | "
            + " | ".join(main)
            + f" | {cell(other)} | {cell(r['notes'])} | {r['outcome']} ({r['seconds']} s) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.report")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true", help="write the table into README.md")
    args = parser.parse_args(argv)
    try:
        records = json.loads(args.results.read_text())
    except OSError:
        print(f"no results at {args.results}: run `make test` or `make soak` first")
        return 1
    made = table(records)
    print(made)
    if args.readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        if START not in text or END not in text:
            print(f"README.md has no {START} ... {END} section", file=sys.stderr)
            return 1
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        readme.write_text(f"{head}{START}\n{made}\n{END}{tail}")
    failed = [r for r in records.values() if r["outcome"] == "FAIL"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
