"""Events out with real `python -m workers` processes: SIGKILL mid-send loses no event, an SMS
never waits behind a POST that hangs, and the events worker's process ends with the worker's.

PostgreSQL only (slow), like `tests/workers/test_processes.py`, whose fixtures it shares.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from rq import Worker
from sqlalchemy import select

from bridge.models import EventDelivery
from bridge.runtime import Runtime
from tests import factories
from tests.e2e.processes import children, kill_tree
from tests.standin.receiver import Receiver
from tests.standin.twilio import TwilioStandIn
from tests.workers.test_events import attempts, endpoint_for, move_time, record
from tests.workers.test_processes import (  # noqa: F401  (fixtures)
    pg_runtime,
    pg_settings,
    start_worker,
    wait_until,
)
from workers.enqueue import install_enqueue_on_commit
from workers.sweeper import sweep

pytestmark = pytest.mark.slow


def test_sigkill_of_the_worker_mid_send_loses_no_event(
    pg_runtime: Runtime,  # noqa: F811
    receiver: Receiver,
    start_worker: Callable[..., subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    rt = pg_runtime
    install_enqueue_on_commit(rt)
    org = factories.committed_organization(rt)
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


def test_a_fan_out_goes_out_while_a_post_to_the_organizations_endpoint_hangs(
    pg_runtime: Runtime,  # noqa: F811
    receiver: Receiver,
    twilio: TwilioStandIn,
    start_worker: Callable[..., subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    rt = pg_runtime
    install_enqueue_on_commit(rt)
    org = factories.committed_organization(rt)
    endpoint = endpoint_for(rt, org, receiver.url)
    with rt.sessions() as session, session.begin():
        channel_id, contacts = factories.channel_of(session, rt.settings, org, factories.phones(5))
    receiver.hang(3600)  # never answers: the POST lasts WEBHOOK_TIMEOUT
    start_worker("--no-sweeper", WEBHOOK_TIMEOUT=60)
    record(rt, org)
    receiver.wait_for(1, 30)  # a drain is inside its POST
    factories.post_to_channel(rt, org, channel_id, "Out for delivery")

    wait_until(lambda: len(twilio.requests) >= len(contacts), 20, "the fan-out")
    assert attempts(rt, endpoint.id) == []  # the POST has not ended: the SMS did not wait for it
    assert len(receiver.received) == 1


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie (an orphan's exit is reaped by init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_every_process_the_worker_started_ends_with_it(
    pg_runtime: Runtime,  # noqa: F811
    start_worker: Callable[..., subprocess.Popen[bytes]],  # noqa: F811
    sig: signal.Signals,
) -> None:
    rt = pg_runtime
    worker = start_worker()

    def scheduler_pids() -> set[int]:  # each RQ scheduler registers itself once running
        keys = rt.redis.keys("rq:scheduler:*")
        return {int(rt.redis.hget(key, "pid") or 0) for key in keys}

    wait_until(lambda: len(scheduler_pids()) == 2, 30, "both RQ workers' schedulers")
    [events_pid] = [w.pid for w in Worker.all(connection=rt.redis) if w.pid != worker.pid]
    started = descendants(worker.pid)
    # The sweeper (and multiprocessing's resource tracker) besides these.
    assert {events_pid, *scheduler_pids()} < set(started)
    os.kill(worker.pid, sig)  # SIGKILL: an out-of-memory killer, that no handler sees
    assert worker.wait(30) == (0 if sig == signal.SIGTERM else -signal.SIGKILL)

    wait_until(lambda: not any(running(pid) for pid in started), 20, "no process left running")
