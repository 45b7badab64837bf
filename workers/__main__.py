"""The worker process (`worker: python -m workers` in the Procfile).

An RQ worker on every queue but `events`, in priority order (`workers.queues.MAIN`), that runs jobs
in its own process, not in a forked work horse (`workers.worker.Worker`), with RQ's scheduler
(scheduled publishing, retries and deferred fan-outs); beside it, each in a process of its own, the
events worker (`events` alone, with its own scheduler: a POST to an endpoint that hangs never holds
back an SMS) and the sweeper. Both end with it, even when it is SIGKILLed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from bridge.db import connection_limit
from bridge.errors import ConfigurationError
from bridge.logs import configure_logging
from bridge.runtime import Runtime
from bridge.settings import SettingsRefused, load_settings
from workers import queues
from workers.context import install
from workers.enqueue import install_enqueue_on_commit
from workers.sweeper import start_sweeper_process
from workers.worker import (
    build_worker,
    start_events_process,
    stop_processes,
    use_own_scheduler_process,
)

log = logging.getLogger("workers")


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
    use_own_scheduler_process()
    preload(runtime)
    started = [] if args.no_sweeper else [start_sweeper_process()]
    # In burst mode one worker takes every queue, events last, and quits when all are empty.
    if not args.burst:
        started.append(start_events_process())
    names = queues.ALL if args.burst else queues.MAIN
    worker = build_worker(runtime, names)
    log.info("worker starting", extra={"queues": list(names)})
    try:
        worker.work(burst=args.burst, with_scheduler=True, logging_level="INFO")
    finally:
        # An events drain ends after the POST in progress, at most WEBHOOK_TIMEOUT.
        stop_processes(started, settings.webhook_timeout + 10)
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
