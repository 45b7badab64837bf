"""Gunicorn settings for the `web` process: JSON logs, Prometheus counters shared by its workers.

Gunicorn's command line (the Procfile) still decides the bind address and the number of workers.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

# Counters live in per-process files under PROMETHEUS_MULTIPROC_DIR so that `/metrics`, served by
# any one worker, adds up all of them. It must be in the environment before a worker imports
# prometheus_client, hence here, in the master, before it forks. A folder given by whoever starts us
# (make run shares one with the RQ worker) is used as it is; otherwise a fresh one per master.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bridge-metrics-")
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

# Gunicorn's own lines (booting, worker exits) as JSON like the app's; the access log is the app's
# (one line per request, without the query string, which can carry phone numbers).
accesslog = None
# Gunicorn 25+ opens a control socket at one path per user ($HOME/.gunicorn/gunicorn.ctl): two
# servers on one machine (make run beside the tests) would take it from each other. Nothing uses it.
control_socket_disable = True
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "bridge.logs.JsonFormatter"}},
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    # Replaces gunicorn's default root handler: the app installs its own JSON one (bridge.logs).
    "root": {"level": "INFO", "handlers": []},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
    },
}


def child_exit(server: Any, worker: Any) -> None:
    """Forget a dead worker's live gauges (its counters stay counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_starting(server: Any) -> None:
    """Refuse to start, one line per setting at fault, before any worker boots (no traceback)."""
    from bridge.errors import ConfigurationError
    from bridge.settings import load_settings, require_web_settings

    try:
        require_web_settings(load_settings())
    except ConfigurationError as exc:
        print(f"web: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
