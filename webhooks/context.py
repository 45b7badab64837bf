"""Reaching the process's runtime from a request."""

from __future__ import annotations

from flask import current_app

from bridge.runtime import Runtime


def runtime() -> Runtime:
    """The runtime the app was built with."""
    rt: Runtime = current_app.extensions["bridge"]
    return rt
