"""SEND_CONCURRENCY, WEB_CONCURRENCY and the database's connection limit varied: either the fan-out
completes (each recipient once) or the process refuses to start with a message naming the setting;
never a stall.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.e2e.processes import Process, answers, wait_for
from tests.reliability.conftest import Record, size
from tests.reliability.system import System

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

# No delivery settled for this long: stalled (a healthy fan-out settles dozens a second).
STALL_AFTER = float(size(8, 30))


@pytest.fixture
def connection_limit(request: pytest.FixtureRequest, system: System) -> Iterator[int | None]:
    """Restart the run's PostgreSQL with `max_connections` set (None: its default, 100)."""
    limit = request.param
    if limit is not None:
        system.postgres.stop()
        system.postgres.options["max_connections"] = limit
        system.postgres.start()
        system.runtime.engine.dispose()
    yield limit
    if limit is not None:
        system.stop_processes()
        system.postgres.stop()
        del system.postgres.options["max_connections"]
        system.postgres.start()
        system.runtime.engine.dispose()


def refused_or_running(process: Process, seconds: float = 15) -> bool:
    """Wait a moment: True if the process exited (refused to start), False if it is running."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.popen.poll() is not None:
            return True
        time.sleep(0.2)
    return False


SOAK = pytest.mark.soak
CASES = [
    # (SEND_CONCURRENCY, WEB_CONCURRENCY, max_connections)
    pytest.param(16, 2, None, id="send16", marks=SOAK),
    pytest.param(64, 2, None, id="send64", marks=SOAK),
    pytest.param(128, 2, None, id="send128", marks=SOAK),
    pytest.param(128, 2, 20, id="send128-pg20"),
    pytest.param(16, 2, 20, id="send16-pg20", marks=SOAK),
    pytest.param(8, 16, 20, id="web16-pg20", marks=SOAK),
    pytest.param(8, 64, None, id="web64", marks=SOAK),
    pytest.param(64, 64, 20, id="send64-web64-pg20", marks=SOAK),
]


def settled_or_stalled(system: System, message_id: str, quiet: float) -> bool:
    """Wait until the fan-out settles (True) or makes no progress for `quiet` seconds (False)."""
    last, since = -1, time.monotonic()
    while True:
        left = system.open_deliveries([message_id])
        if left == 0:
            return True
        if left != last:
            last, since = left, time.monotonic()
        elif time.monotonic() - since > quiet:
            return False
        time.sleep(0.25)


@pytest.mark.parametrize(("send", "web", "connection_limit"), CASES, indirect=["connection_limit"])
def test_concurrency_settings_complete_or_refuse_never_stall(
    system: System, record: Record, send: int, web: int, connection_limit: int | None
) -> None:
    recipients = size(60, 1000)
    org = system.organization()
    channel_id, phones = system.channel(org, recipients)
    web_process = system.start("web", wait=False, WEB_CONCURRENCY=web)
    worker = system.start("worker", wait=False, SEND_CONCURRENCY=send)
    record.injected = (
        f"SEND_CONCURRENCY={send}, WEB_CONCURRENCY={web}, max_connections={connection_limit or 100}"
    )
    if refused_or_running(worker, 10):
        output = worker.output()
        record.counted = {"worker": f"refused (exit {worker.popen.returncode})"}
        assert worker.popen.returncode != 0
        assert "SEND_CONCURRENCY" in output, output[-2000:]
        return
    wait_for(
        "the web process to answer or exit",
        lambda: web_process.popen.poll() is not None or answers(system.base + "/readyz") == 200,
        timeout=120,
    )
    if web_process.popen.poll() is not None:
        record.counted = {"web": f"refused (exit {web_process.popen.returncode})"}
        assert "WEB_CONCURRENCY" in web_process.output(), web_process.output()[-2000:]
        return
    body = f"Parcel {send}-{web} is on its way"
    started = time.monotonic()
    message_id = system.publish(org, channel_id, body)
    settled = settled_or_stalled(system, message_id, quiet=STALL_AFTER)
    tally = system.tally(message_id, phones, body)
    record.counted = tally.as_dict()
    record.notes["seconds"] = round(time.monotonic() - started, 1)
    assert settled, f"stalled: no delivery settled for {STALL_AFTER:g} s ({tally})"
    assert (tally.sent, tally.duplicated, tally.lost) == (recipients, 0, 0), tally
    assert tally.stored == recipients, tally.db_statuses
