"""Enqueue on commit: what a transaction made is enqueued when it commits, and only then."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from bridge.db import transaction
from workers import enqueue


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    monkeypatch.setattr(enqueue, "enqueue_posted", lambda connection, posted: calls.append(posted))
    return calls


def test_work_is_enqueued_when_the_transaction_commits_not_when_a_savepoint_does(
    sessions: sessionmaker[Session], enqueued: list[Any]
) -> None:
    with transaction(sessions) as session:
        enqueue.enqueue_on_commit(session, None, "first")  # type: ignore[arg-type]
        with session.begin_nested():
            session.execute(text("select 1"))
        try:
            with session.begin_nested():
                raise ValueError("a savepoint rolled back, as insert_or_get does on a race")
        except ValueError:
            pass
        enqueue.enqueue_on_commit(session, None, "second")  # type: ignore[arg-type]
        assert enqueued == []
    assert enqueued == ["first", "second"]


def test_nothing_is_enqueued_for_a_transaction_that_rolls_back(
    sessions: sessionmaker[Session], enqueued: list[Any]
) -> None:
    with sessions() as session:
        with pytest.raises(ValueError), session.begin():
            enqueue.enqueue_on_commit(session, None, "lost")  # type: ignore[arg-type]
            raise ValueError("the domain call failed")
        with session.begin():
            enqueue.enqueue_on_commit(session, None, "next")  # type: ignore[arg-type]
    assert enqueued == ["next"]
