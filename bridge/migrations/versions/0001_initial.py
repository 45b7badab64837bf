"""create the bridge's tables

Revision ID: 0001
Revises:
Create Date: 2026-11-25 12:54:47.687934
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import bridge.db

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "inbound_sms",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("message_sid", sa.String(length=64), nullable=False),
        sa.Column("idempotency_token", sa.String(length=200), nullable=True),
        sa.Column("organization_id", sa.String(length=40), nullable=True),
        sa.Column("from_phone", sa.String(length=64), nullable=False),
        sa.Column("to_phone", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("keyword", sa.String(length=32), nullable=True),
        sa.Column("message_id", sa.String(length=40), nullable=True),
        sa.Column("channel_id", sa.String(length=40), nullable=True),
        sa.Column("response_twiml", sa.Text(), nullable=True),
        sa.Column("received_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_inbound_sms")),
        sa.UniqueConstraint("id", name=op.f("uq_inbound_sms_id")),
        sa.UniqueConstraint("idempotency_token", name=op.f("uq_inbound_sms_idempotency_token")),
        sa.UniqueConstraint("message_sid", name=op.f("uq_inbound_sms_message_sid")),
    )
    with op.batch_alter_table("inbound_sms", schema=None) as batch_op:
        batch_op.create_index(
            "ix_inbound_sms_org_status", ["organization_id", "status", "seq"], unique=False
        )

    op.create_table(
        "organizations",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("help_text", sa.Text(), nullable=True),
        sa.Column("messaging_service_sid", sa.String(length=64), nullable=True),
        sa.Column("created_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", bridge.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_api_keys_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_api_keys_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "channels",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("subscriber_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_channels_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        sa.UniqueConstraint("subscriber_hash", name=op.f("uq_channels_subscriber_hash")),
    )
    with op.batch_alter_table("channels", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_channels_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "contacts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_contacts_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint(
            "organization_id", "phone_hash", name=op.f("uq_contacts_organization_id")
        ),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contacts_phone_hash"), ["phone_hash"], unique=False)

    op.create_table(
        "opt_outs",
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("opted_out_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_opt_outs_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("organization_id", "phone_hash", name=op.f("pk_opt_outs")),
    )
    op.create_table(
        "sender_numbers",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=False),
        sa.Column("created_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_sender_numbers_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sender_numbers")),
        sa.UniqueConstraint("phone", name=op.f("uq_sender_numbers_phone")),
    )
    with op.batch_alter_table("sender_numbers", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_sender_numbers_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "threads",
        sa.Column("id", sa.String(length=140), nullable=False),
        sa.Column("resource_id", sa.String(length=128), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("location_id", sa.String(length=128), nullable=True),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("created_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_threads_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_threads")),
        sa.UniqueConstraint("resource_id", name=op.f("uq_threads_resource_id")),
    )
    with op.batch_alter_table("threads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_threads_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "users",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("created_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_users_organization_id_organizations"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
    )
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_users_organization_id"), ["organization_id"], unique=False
        )

    op.create_table(
        "channel_phone_hashes",
        sa.Column("channel_id", sa.String(length=40), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_channel_phone_hashes_channel_id_channels"),
        ),
        sa.PrimaryKeyConstraint("channel_id", "phone_hash", name=op.f("pk_channel_phone_hashes")),
    )
    with op.batch_alter_table("channel_phone_hashes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_channel_phone_hashes_lookup", ["organization_id", "phone_hash"], unique=False
        )

    op.create_table(
        "channel_publishers",
        sa.Column("channel_id", sa.String(length=40), nullable=False),
        sa.Column("resource_id", sa.String(length=128), nullable=False),
        sa.Column("thread_id", sa.String(length=140), nullable=False),
        sa.Column("first_published_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_published_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "first_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("last_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"], name=op.f("fk_channel_publishers_channel_id_channels")
        ),
        sa.PrimaryKeyConstraint("channel_id", "resource_id", name=op.f("pk_channel_publishers")),
    )
    op.create_table(
        "channel_subscribers",
        sa.Column("channel_id", sa.String(length=40), nullable=False),
        sa.Column("subscriber_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sender_phone", sa.String(length=20), nullable=True),
        sa.Column("added_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"], name=op.f("fk_channel_subscribers_channel_id_channels")
        ),
        sa.PrimaryKeyConstraint("channel_id", "subscriber_id", name=op.f("pk_channel_subscribers")),
    )
    with op.batch_alter_table("channel_subscribers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_channel_subscribers_sender", ["subscriber_id", "sender_phone"], unique=False
        )

    op.create_table(
        "messages",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("thread_id", sa.String(length=140), nullable=True),
        sa.Column("channel_id", sa.String(length=40), nullable=True),
        sa.Column("subscriber_id", sa.String(length=40), nullable=False),
        sa.Column("author_type", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=True),
        sa.Column("media_urls", sa.JSON(), nullable=False),
        sa.Column("reactions", sa.JSON(), nullable=False),
        sa.Column("created_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("edited_at", bridge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("publish_to_channel_at", bridge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("published_at", bridge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("canceled_at", bridge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "publish_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"], name=op.f("fk_messages_channel_id_channels")
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_messages_organization_id_organizations"),
        ),
        sa.ForeignKeyConstraint(
            ["thread_id"], ["threads.id"], name=op.f("fk_messages_thread_id_threads")
        ),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_messages")),
        sa.UniqueConstraint("id", name=op.f("uq_messages_id")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_channel_seq", ["channel_id", "seq"], unique=False)
        batch_op.create_index(
            "ix_messages_due",
            ["published_at", "canceled_at", "publish_to_channel_at"],
            unique=False,
        )
        batch_op.create_index("ix_messages_thread_seq", ["thread_id", "seq"], unique=False)

    op.create_table(
        "thread_subscribers",
        sa.Column("thread_id", sa.String(length=140), nullable=False),
        sa.Column("subscriber_id", sa.String(length=40), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("is_archived", sa.Boolean(), nullable=False),
        sa.Column("viewed_at", bridge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("added_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_id"], ["threads.id"], name=op.f("fk_thread_subscribers_thread_id_threads")
        ),
        sa.PrimaryKeyConstraint("thread_id", "subscriber_id", name=op.f("pk_thread_subscribers")),
    )
    op.create_table(
        "deliveries",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("organization_id", sa.String(length=40), nullable=False),
        sa.Column("channel_id", sa.String(length=40), nullable=False),
        sa.Column("subscriber_id", sa.String(length=40), nullable=False),
        sa.Column("to_phone", sa.String(length=20), nullable=False),
        sa.Column("from_phone", sa.String(length=20), nullable=True),
        sa.Column("messaging_service_sid", sa.String(length=64), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("media_urls", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("twilio_sid", sa.String(length=64), nullable=True),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("segments", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("queue", sa.String(length=32), nullable=False),
        sa.Column(
            "publish_seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("not_before", bridge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("claimed_at", bridge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("sent_at", bridge.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", bridge.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_deliveries_message_id_messages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint(
            "message_id", "subscriber_id", "part", name=op.f("uq_deliveries_message_id")
        ),
        sa.UniqueConstraint("twilio_sid", name=op.f("uq_deliveries_twilio_sid")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deliveries_message_id"), ["message_id"], unique=False)
        batch_op.create_index(
            "ix_deliveries_status_updated", ["status", "updated_at"], unique=False
        )
        batch_op.create_index(
            "ix_deliveries_to_order", ["to_phone", "publish_seq", "part"], unique=False
        )
        batch_op.create_index(
            "ix_deliveries_open_to_order",
            ["to_phone", "publish_seq", "part"],
            unique=False,
            postgresql_where=sa.text("status IN ('pending', 'sending', 'unknown')"),
            sqlite_where=sa.text("status IN ('pending', 'sending', 'unknown')"),
        )
        batch_op.create_index(
            "ix_deliveries_pending",
            ["message_id", "subscriber_id", "part"],
            unique=False,
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )


def downgrade() -> None:

    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_deliveries_pending",
            postgresql_where=sa.text("status = 'pending'"),
            sqlite_where=sa.text("status = 'pending'"),
        )
        batch_op.drop_index(
            "ix_deliveries_open_to_order",
            postgresql_where=sa.text("status IN ('pending', 'sending', 'unknown')"),
            sqlite_where=sa.text("status IN ('pending', 'sending', 'unknown')"),
        )
        batch_op.drop_index("ix_deliveries_to_order")
        batch_op.drop_index("ix_deliveries_status_updated")
        batch_op.drop_index(batch_op.f("ix_deliveries_message_id"))

    op.drop_table("deliveries")
    op.drop_table("thread_subscribers")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_thread_seq")
        batch_op.drop_index("ix_messages_due")
        batch_op.drop_index("ix_messages_channel_seq")

    op.drop_table("messages")
    with op.batch_alter_table("channel_subscribers", schema=None) as batch_op:
        batch_op.drop_index("ix_channel_subscribers_sender")

    op.drop_table("channel_subscribers")
    op.drop_table("channel_publishers")
    with op.batch_alter_table("channel_phone_hashes", schema=None) as batch_op:
        batch_op.drop_index("ix_channel_phone_hashes_lookup")

    op.drop_table("channel_phone_hashes")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_users_organization_id"))

    op.drop_table("users")
    with op.batch_alter_table("threads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_threads_organization_id"))

    op.drop_table("threads")
    with op.batch_alter_table("sender_numbers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sender_numbers_organization_id"))

    op.drop_table("sender_numbers")
    op.drop_table("opt_outs")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_phone_hash"))

    op.drop_table("contacts")
    with op.batch_alter_table("channels", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_channels_organization_id"))

    op.drop_table("channels")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_organization_id"))

    op.drop_table("api_keys")
    op.drop_table("organizations")
    with op.batch_alter_table("inbound_sms", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_sms_org_status")

    op.drop_table("inbound_sms")
