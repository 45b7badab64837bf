"""The worker process's runtime: built once from the environment, or installed by the caller.

Jobs are module-level functions that take ids; they reach the database, Redis and Twilio through
`runtime()`. Jobs run in the worker process itself, so its connections serve job after job; a
process forked from it (RQ's scheduler) must not reuse them, so the pools are dropped in the child
right after a fork. `stopping()` tells a long job that the process was asked to shut down.
"""

from __future__ import annotations

import os
import threading

from bridge.runtime import Runtime

_lock = threading.Lock()
_stop = threading.Event()
_current: Runtime | None = None
_fork_hook_installed = False


def install(runtime: Runtime) -> Runtime:
    """Make `runtime` the one jobs in this process use."""
    global _current, _fork_hook_installed
    with _lock:
        _current = runtime
        if not _fork_hook_installed:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_installed = True
    return runtime


def runtime() -> Runtime:
    """The process's runtime, built from the environment on first use."""
    global _current
    if _current is None:
        install(Runtime())
    assert _current is not None
    return _current


def installed() -> Runtime | None:
    """The runtime installed in this process, if any (built by `runtime()` or `install`)."""
    return _current


def uninstall() -> None:
    """Forget the installed runtime and any request to stop (tests)."""
    global _current
    with _lock:
        _current = None
        _stop.clear()


def request_stop() -> None:
    """Ask running jobs to wind down (the process got SIGTERM or SIGINT)."""
    _stop.set()


def stopping() -> bool:
    """Whether the process was asked to shut down; a fan-out then stops claiming."""
    return _stop.is_set()


def _after_fork_in_child() -> None:
    if _current is not None:
        _current.after_fork()
