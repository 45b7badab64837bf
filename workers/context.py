"""The worker process's runtime: built once from the environment, or installed by the caller.

Jobs are module-level functions that take ids; they reach the database, Redis and Twilio through
`runtime()`. A forked work horse must not reuse its parent's pooled connections, so the pools are
dropped in the child right after each fork.
"""

from __future__ import annotations

import os
import threading

from bridge.runtime import Runtime

_lock = threading.Lock()
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


def uninstall() -> None:
    """Forget the installed runtime (tests)."""
    global _current
    with _lock:
        _current = None


def _after_fork_in_child() -> None:
    rt = _current
    if rt is None:
        return
    if "engine" in rt.__dict__:
        # close=False: the sockets belong to the parent; the child opens its own.
        rt.engine.dispose(close=False)
    # The Twilio client's HTTP pool holds sockets the parent also uses: the child builds its own.
    rt.__dict__.pop("sender", None)
