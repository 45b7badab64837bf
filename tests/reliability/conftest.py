"""The reliability suite's fixtures: one `System` per run, sizes, and the results the report prints.

`RELIABILITY_SIZE=soak` (what `make soak` sets) runs the full sizes of issue 14 and the tests marked
`soak`; otherwise each test runs scaled down so that `make test` stays short. Every test that takes
the `record` fixture leaves one JSON record (what was injected, what was counted, pass or fail) in
the results file that `make reliability-report` prints.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.system import System
from tests.services import OwnPostgres

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(os.environ.get("RELIABILITY_RESULTS", ROOT / ".reliability" / "results.json"))
SOAK = os.environ.get("RELIABILITY_SIZE", "") == "soak"


def size(test: int, soak: int) -> int:
    """The test-run size, or the full one under `make soak`."""
    return soak if SOAK else test


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SOAK:
        return
    skip = pytest.mark.skip(reason="full size only: run `make soak`")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


class Record:
    """One row of the reliability table, filled by a test."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.injected = ""
        self.counted: dict[str, Any] = {}
        self.notes: dict[str, Any] = {}
        self.started = time.monotonic()

    def to_json(self, outcome: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "injected": self.injected,
            "counted": self.counted,
            "notes": self.notes,
            "outcome": outcome,
            "size": "soak" if SOAK else "test",
            "seconds": round(time.monotonic() - self.started, 1),
            "at": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        }


def save_record(entry: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    try:
        records = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        records = {}
    records[f"{entry['name']}|{entry['size']}"] = entry
    RESULTS.write_text(json.dumps(records, indent=1, sort_keys=True))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    record = getattr(item, "reliability_record", None)
    skipped = report.skipped and not hasattr(report, "wasxfail")
    if record is not None and report.when == "call" and not skipped:
        outcome = "pass" if report.passed else "FAIL"
        if hasattr(report, "wasxfail"):
            outcome = "xfail"
        save_record(record.to_json(outcome))
    return report


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Record:
    """The test's row in the reliability table."""
    made = Record(request.node.name)
    request.node.reliability_record = made
    return made


@pytest.fixture(scope="session")
def postgres_own() -> Iterator[OwnPostgres]:
    """A PostgreSQL cluster of the run's own, which the fault tests may stop and start."""
    server = OwnPostgres().init()
    yield server
    server.remove()


@pytest.fixture(scope="session")
def stack(postgres_own: OwnPostgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The run's `System`: stores, stand-in and log folder shared by the reliability tests."""
    made = System(tmp_path_factory.mktemp("reliability"), postgres_own)
    yield made
    made.close()


@pytest.fixture
def system(stack: System) -> Iterator[System]:
    """The `System`, emptied for this test; every process it started is stopped after."""
    stack.reset()
    yield stack
    stack.stop_processes()
