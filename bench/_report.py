"""The benchmark report: figures measured in one run, each a ratio to a reference and a target.

`make bench` collects every benchmark's figures, prints them as a table and writes them with the
commit and the machine to `bench/results/latest.json`.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass(frozen=True)
class Figure:
    """One measured figure: `value` in `unit`, and `ratio` of it to what `reference` names."""

    name: str
    reference: str
    value: float
    unit: str
    ratio: float | None
    target: str  # "<= 1.15", ">= 0.5", "0.95..1.0" (on the ratio, or on the value without one)
    met: bool
    note: str = ""
    bench: str = ""  # the benchmark module that measured it


def met(measured: float, target: str) -> bool:
    """Whether `measured` meets a target written as `<= x`, `>= x` or `lo..hi`."""
    target = target.strip()
    if target.startswith("<="):
        return measured <= float(target[2:])
    if target.startswith(">="):
        return measured >= float(target[2:])
    low, _, high = target.partition("..")
    return float(low) <= measured <= float(high)


def figure(
    name: str,
    reference: str,
    value: float,
    unit: str,
    ratio: float | None,
    target: str,
    note: str = "",
) -> Figure:
    """A figure whose `met` is judged on the ratio (or on the value when there is no ratio)."""
    judged = value if ratio is None else ratio
    return Figure(name, reference, value, unit, ratio, target, met(judged, target), note)


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except OSError:
        return ""
    return done.stdout.strip()


def machine(database: str) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "database": database,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def report(figures: Sequence[Figure], database: str, seconds: float) -> dict[str, Any]:
    """The whole report as JSON-ready data."""
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "machine": machine(database),
        "figures": [asdict(f) for f in figures],
    }


def write(data: dict[str, Any], path: Path = RESULTS / "latest.json") -> Path:
    """Write the report (and return where)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"


def table(figures: Sequence[Figure], markdown: bool = False) -> str:
    """The figures as a text table (or a Markdown one, for the README)."""
    header = ["figure", "value", "reference", "ratio", "target", "met"]
    rows = [
        [
            f.name,
            f"{_number(f.value)} {f.unit}",
            f.reference,
            _number(f.ratio),
            f.target,
            "yes" if f.met else "NO",
        ]
        for f in figures
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [min(60, max(len(r[i]) for r in [header, *rows])) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def markdown(path: Path) -> str:
    """A written report as the README shows it: the table, then where it was measured."""
    data = json.loads(path.read_text())
    figures = [Figure(**f) for f in data["figures"]]
    m = data["machine"]
    return (
        table(figures, markdown=True)
        + f"\n\nMeasured {data['measured_at']} at commit `{data['commit'][:12]}` on "
        + f"{m['cores']} cores ({m['cpu']}), Python {m['python']}, {m['database']}; "
        + f"the run took {data['seconds']:.0f} s."
    )
