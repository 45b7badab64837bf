"""What the tables have in common: the integer id type, partial indexes, enum columns stored as
text, and mixins for the columns several tables share.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Enum, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from bridge.db import UTCDateTime, utcnow

BigId = BigInteger().with_variant(Integer, "sqlite")


def partial_index(name: str, *columns: str, where: str) -> Index:
    """An index of only the rows `where` holds, on PostgreSQL and SQLite alike."""
    return Index(name, *columns, postgresql_where=text(where), sqlite_where=text(where))


def stored_as_text(kind: type[enum.StrEnum], length: int) -> Enum:
    """A column of `kind` stored as the enum's values in a VARCHAR(`length`), as it always was.

    No native enum type and no CHECK constraint: the schema stays what the migrations made, and a
    value is read back as its enum member.
    """
    return Enum(
        kind,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [m.value for m in members],
    )


class Sequenced:
    """A row with a database-wide order (`seq`, the primary key) and a public id."""

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True)


class Timestamped:
    """A row that keeps when it was created and last changed: the same moment for a new row."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def __init__(self, **values: Any) -> None:
        values.setdefault("created_at", utcnow())
        values.setdefault("updated_at", values["created_at"])
        super().__init__(**values)
