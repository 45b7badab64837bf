"""The RQ workers of a worker process, and what makes each process it starts end with it.

`python -m workers` runs its main worker (`queues.MAIN`) in its own process and starts the events
worker (`queues.EVENTS` alone) in a process of its own (`start_events_process`): a POST to an
endpoint that hangs for WEBHOOK_TIMEOUT then holds back only the events behind it, never an SMS
(DESIGN 5.8). Each worker runs RQ's scheduler, which moves only the scheduled jobs of its own
worker's queues (retries, deferred fan-outs, an endpoint's next drain).

Every process started here ends when the process that started it ends, even by SIGKILL (an
out-of-memory killer): a thread polls the parent's pid and sends its own process SIGTERM, the
usual warm shutdown. So a worker restarted after a kill leaves nothing of the old one running.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
import time
from collections.abc import Sequence
from types import FrameType
from typing import Any

import rq.scheduler
from rq import Queue, SimpleWorker

from bridge.runtime import Runtime, connect_redis
from workers import context, queues
from workers.enqueue import install_enqueue_on_commit

log = logging.getLogger(__name__)

PARENT_CHECK_SECONDS = 0.5  # how soon a process notices that its parent is gone


class Worker(SimpleWorker):
    """RQ's worker without a fork per job: jobs run one after another in this process.

    A work horse forked for each job started from nothing: new database, Redis and Twilio
    connections, lazily imported modules, 0.4-0.8 s before a relayed SMS left on this machine. Here
    the runtime's pools serve job after job. Exactly once does not rest on the process: claims are
    in the database, and a worker killed mid-job leaves `sending` rows for the sweeper.

    On SIGTERM (a platform stopping the dyno) a running fan-out stops claiming, and a running
    events drain stops after the POST in progress; each records what it sent and queues the rest.
    RQ then stops after the job. A second signal stops at once.
    """

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        context.request_stop()
        super().request_stop(signum, frame)

    def unsubscribe(self) -> None:
        """Stop listening for RQ's commands without waiting out a second at each stop.

        RQ's `unsubscribe` sends UNSUBSCRIBE, then tells its pubsub thread to stop, then joins it
        for up to 1 s. A thread that reads the reply before it is told to stop goes back to waiting
        for a subscription, and the join waits out its second (one stop in four here). Told to
        stop first, the thread ends on the reply.
        """
        if self.pubsub_thread:
            self.pubsub_thread.stop()
        super().unsubscribe()


def build_worker(runtime: Runtime, names: Sequence[str]) -> Worker:
    """A worker listening on `names` in order, on a Redis connection of its own."""
    # RQ raises the socket timeout of the connection it is given (blocking pops); keep the
    # runtime's short-timeout connection for everything else.
    connection = connect_redis(runtime.settings.redis_url)
    return Worker(
        [Queue(name, connection=connection) for name in names],
        connection=connection,
    )


def end_with_parent(parent_pid: int, every: float = PARENT_CHECK_SECONDS) -> threading.Thread:
    """Send this process's main thread SIGTERM once `parent_pid` is no longer its parent.

    Only the main thread runs Python's signal handlers, and a signal the kernel hands to another
    thread would not wake it from a blocking read of Redis: hence `pthread_kill`.
    """

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every)
        log.warning("the process that started this one is gone; stopping")
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    thread = threading.Thread(target=watch, name="end-with-parent", daemon=True)
    thread.start()
    return thread


def _run_scheduler(scheduler: Any, worker_pid: int, run: Any = rq.scheduler.run) -> None:
    """RQ's scheduler process: ends with its worker, and without a raw traceback when it fails.

    RQ forks it and stops it when the worker stops, but a worker killed outright left it running
    for good. When Redis goes away RQ logs the failure itself (one JSON line through our handler),
    then re-raises, and multiprocessing prints the traceback again, raw, to stderr: lines that are
    not JSON. The worker starts a new scheduler once the old one is dead, so ending quietly loses
    nothing.
    """
    end_with_parent(worker_pid)
    try:
        run(scheduler)
    except Exception:
        os._exit(1)


def use_own_scheduler_process() -> None:
    """Make the scheduler processes this process's worker forks run `_run_scheduler`.

    RQScheduler.start() forks a process running `rq.scheduler.run`, which it looks up each time.
    """
    rq.scheduler.run = functools.partial(_run_scheduler, worker_pid=os.getpid())


def run_events_process(parent_pid: int) -> None:
    """The events worker's own process: an RQ worker on `events` alone until its parent ends.

    Started with `spawn` (as the sweeper is), so it shares no connection or lock with the worker
    process that started it; it builds its own runtime from the same environment.
    """
    from bridge.logs import configure_logging
    from bridge.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    runtime = context.install(Runtime(settings))
    install_enqueue_on_commit(runtime)  # events its drains record go out after their commit
    use_own_scheduler_process()
    end_with_parent(parent_pid)
    import workers.events  # noqa: F401  (the jobs it runs, imported before the first)

    worker = build_worker(runtime, [queues.EVENTS])
    log.info("events worker starting", extra={"queues": [queues.EVENTS]})
    try:
        worker.work(with_scheduler=True, logging_level="INFO")
    finally:
        runtime.close()


def start_events_process() -> multiprocessing.process.BaseProcess:
    """Start the events worker in a process of its own (see `run_events_process`).

    Not a daemon process: multiprocessing forbids those children, and RQ forks its scheduler.
    """
    process = multiprocessing.get_context("spawn").Process(
        target=run_events_process, args=(os.getpid(),), name="events-worker"
    )
    process.start()
    return process


def stop_processes(processes: Sequence[multiprocessing.process.BaseProcess], grace: float) -> None:
    """SIGTERM processes started here, wait up to `grace` seconds, then SIGKILL those left."""
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(5)
