"""The worker process (`worker: python -m workers` in the Procfile).

An RQ worker on every queue in priority order (`workers.queues.ALL`) that runs jobs in its own
process, not in a forked work horse (`Worker`), with RQ's scheduler (scheduled publishing, retries
and deferred fan-outs), plus the sweeper in a process of its own.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any

import rq.scheduler
from rq import Queue, SimpleWorker
from sqlalchemy.exc import SQLAlchemyError

from bridge.db import connection_limit
from bridge.errors import ConfigurationError
from bridge.logs import configure_logging
from bridge.runtime import Runtime, connect_redis
from bridge.settings import SettingsRefused, load_settings
from workers import context, queues
from workers.context import install
from workers.enqueue import install_enqueue_on_commit
from workers.sweeper import start_sweeper_process

log = logging.getLogger("workers")


class Worker(SimpleWorker):
    """RQ's worker without a fork per job: jobs run one after another in this process.

    A work horse forked for each job started from nothing: new database, Redis and Twilio
    connections, lazily imported modules, 0.4-0.8 s before a relayed SMS left on this machine. Here
    the runtime's pools serve job after job. Exactly once does not rest on the process: claims are
    in the database, and a worker killed mid-job leaves `sending` rows for the sweeper.

    On SIGTERM (a platform stopping the dyno) a running fan-out stops claiming, records what it
    sent and queues the rest; RQ then stops after the job. A second signal stops at once.
    """

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        context.request_stop()
        super().request_stop(signum, frame)


def build_worker(runtime: Runtime, names: Sequence[str] = queues.ALL) -> Worker:
    """A worker listening on `names` in order, on a Redis connection of its own."""
    # RQ raises the socket timeout of the connection it is given (blocking pops); keep the
    # runtime's short-timeout connection for everything else.
    connection = connect_redis(runtime.settings.redis_url)
    return Worker(
        [Queue(name, connection=connection) for name in names],
        connection=connection,
    )


def _run_scheduler(scheduler: Any, run: Any = rq.scheduler.run) -> None:
    """RQ's scheduler process, ending without a raw traceback when it fails (Redis went away).

    RQ logs the failure itself (one JSON line through our handler), then re-raises, and
    multiprocessing prints the traceback again, raw, to stderr: lines that are not JSON. The
    worker starts a new scheduler once the old one is dead, so ending quietly loses nothing.
    """
    try:
        run(scheduler)
    except Exception:
        os._exit(1)


def check_capacity(runtime: Runtime) -> None:
    """Refuse SEND_CONCURRENCY when the database cannot hold the connection pool it asks for.

    A database that does not answer yet is not a reason to refuse: the worker starts, and its jobs
    retry until it is back.
    """
    settings = runtime.settings
    try:
        limit = connection_limit(runtime.engine)
    except SQLAlchemyError:
        log.warning("could not read the database's connection limit; starting anyway")
        return
    if limit is not None and settings.database_pool_size > limit:
        raise SettingsRefused(
            [
                f"SEND_CONCURRENCY: {settings.send_concurrency} needs up to "
                f"{settings.database_pool_size} database connections per worker process, but the "
                f"database accepts {limit} (max_connections less the reserved ones); lower it"
            ]
        )


def preload(runtime: Runtime) -> None:
    """Import what jobs need and build the Twilio client now, not during the first send.

    The first SMS of a fresh worker otherwise waited on twilio-python's lazily imported modules,
    well behind the rate-limit slot it was given.
    """
    import twilio.rest.api.v2010.account.message  # noqa: F401

    import workers.jobs  # noqa: F401

    runtime.sender  # noqa: B018 (built here, used by every job)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the worker until SIGTERM (warm shutdown) or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m workers", description=__doc__)
    parser.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    parser.add_argument("--no-sweeper", action="store_true", help="do not run the sweeper")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings)
        runtime = install(Runtime(settings))
        check_capacity(runtime)
    except ConfigurationError as exc:
        # For the operator reading the deploy log: the lines, not a traceback.
        print(f"worker: {exc}", file=sys.stderr)
        return 1
    install_enqueue_on_commit(runtime)  # events recorded by jobs go out after their commit
    # RQScheduler.start() forks a process running rq.scheduler.run, which it looks up each time.
    rq.scheduler.run = _run_scheduler
    preload(runtime)
    sweeper = None if args.no_sweeper else start_sweeper_process()
    worker = build_worker(runtime)
    log.info("worker starting", extra={"queues": list(queues.ALL)})
    try:
        worker.work(burst=args.burst, with_scheduler=True, logging_level="INFO")
    finally:
        if sweeper is not None:
            sweeper.terminate()
            sweeper.join(10)
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
