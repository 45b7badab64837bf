"""The REST API under /v1 (DESIGN section 6)."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/v1")
