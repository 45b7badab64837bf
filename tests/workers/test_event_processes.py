"""Events out with real `python -m workers` processes: SIGKILL mid-send loses no event.

PostgreSQL only (slow), like `tests/workers/test_processes.py`, whose fixtures it shares.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from bridge.models import EventDelivery
from bridge.runtime import Runtime
from tests.standin.receiver import Receiver
from tests.workers.test_events import endpoint_for, make_org, move_time, record
from tests.workers.test_processes import (  # noqa: F401  (fixtures)
    kill_tree,
    pg_runtime,
    pg_settings,
    start_worker,
    wait_until,
)
from workers.enqueue import install_enqueue_on_commit
from workers.sweeper import sweep

pytestmark = pytest.mark.slow


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver().start() as r:
        yield r


def test_sigkill_of_the_worker_mid_send_loses_no_event(
    pg_runtime: Runtime,  # noqa: F811
    receiver: Receiver,
    start_worker: Callable[..., subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    rt = pg_runtime
    install_enqueue_on_commit(rt)
    org = make_org(rt)
    endpoint_for(rt, org, receiver.url)
    receiver.hang(0.2)  # slow enough for the kill to land in the middle of the sends
    ids = record(rt, org, 30)
    worker = start_worker("--no-sweeper")
    wait_until(lambda: len(receiver.received) >= 5, 30, "the sends to be under way")
    kill_tree(worker.pid, signal.SIGKILL)
    worker.wait(10)
    assert len(set(receiver.event_ids())) < len(ids)
    with rt.sessions() as session:
        statuses = list(session.execute(select(EventDelivery.status)).scalars())
    assert "sending" in statuses  # claimed by the killed worker, not recorded

    receiver.answer(200)
    move_time(rt, 3600)  # past the claim lease: the claims are a dead worker's
    assert sweep(rt)["event_drains"] == 1
    start_worker("--no-sweeper")

    def delivered() -> bool:
        with rt.sessions() as session:
            left = session.execute(
                select(EventDelivery.id).where(EventDelivery.status != "succeeded")
            ).all()
        return not left

    wait_until(delivered, 60, "every event to be delivered")
    assert set(receiver.event_ids()) == set(ids)  # at least once each: none lost
