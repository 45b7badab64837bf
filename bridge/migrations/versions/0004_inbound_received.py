"""inbound received: an index of the inbound SMS stored and not processed yet

The webhook now stores an SMS `received` and answers; a worker matches, stores and relays it
(DESIGN 5.5). The sweeper looks for those whose job was lost: a partial index keeps that look to
the few rows still waiting, however many inbound SMS the table holds.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WAITING = "status = 'received'"


def upgrade() -> None:
    op.create_index(
        "ix_inbound_sms_received",
        "inbound_sms",
        ["received_at"],
        postgresql_where=sa.text(WAITING),
        sqlite_where=sa.text(WAITING),
    )


def downgrade() -> None:
    op.drop_index("ix_inbound_sms_received", table_name="inbound_sms")
