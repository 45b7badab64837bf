"""Cursor pagination over tables ordered by an integer `seq`: newest first, older than `before`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from bridge.errors import NotFound, ValidationError

MAX_PAGE = 150
# A thread or channel shows at most this many recent messages (DESIGN 4).
RECENT_LIMIT = 150
# A channel shows at most this many of its scheduled messages, those due first (DESIGN 6).
PENDING_LIMIT = 150
# ... and the resource ids of at most this many threads that published to it, the latest ones.
PUBLISHERS_LIMIT = 150

Row = TypeVar("Row")


def check_limit(limit: object) -> int:
    """A page size: an integer from 1 to 150."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be an integer from 1 to {MAX_PAGE}", "limit")
    return limit


def page(
    session: Session,
    model: type[Row],
    scope: Sequence[ColumnElement[bool]],
    limit: int,
    before: str | None,
    what: str,
) -> tuple[list[Row], bool]:
    """The rows of `model` within `scope`, newest first, older than the row whose id is `before`.

    The cursor must itself be in `scope`: a row of another list would cut this one arbitrarily.
    """
    limit = check_limit(limit)
    table: Any = model
    query = select(model).where(*scope)
    if before is not None:
        cursor = session.execute(
            select(table.seq).where(table.id == before, *scope)
        ).scalar_one_or_none()
        if cursor is None:
            # A well-formed id that names nothing here: 404, as for an id in a path (and the same
            # answer for another organization's object).
            raise NotFound(f"before must be the id of {what} in this list", "before")
        query = query.where(table.seq < cursor)
    rows = list(session.execute(query.order_by(table.seq.desc()).limit(limit + 1)).scalars())
    return rows[:limit], len(rows) > limit
