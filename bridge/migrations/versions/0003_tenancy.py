"""tenancy: threads per organization, phone hashes per organization, API key labels, opt-in times

Threads were one namespace: `threads.id` (`thrd_<resource_id>`) was the primary key and
`resource_id` unique across every organization. A thread is now named by (organization_id, id):
the primary key, the unique (organization_id, resource_id), and every reference to a thread
(messages, thread subscribers) carries the organization in a composite foreign key.

Phone hashes were HMAC(PHONE_HASH_KEY, E.164), the same in every organization; they become
HMAC(PHONE_HASH_KEY, organization_id + ":" + E.164) (DESIGN 5.1). The stored numbers say what each
hash was of: contacts' phones, and for opt-outs of numbers that are no contact, the numbers of the
organization's inbound SMS and deliveries. PHONE_HASH_KEY is read from the environment, as the
processes read it: run this with the key the processes use. Events (revision 0002) keep the JSON
of the contact they report, its phone hash included: those are recomputed too, so the event log
and a resend show the organization's hash, never one that matches across organizations. No event
table references a thread: an event's message names its thread by `thrd_<resource_id>`, which
does not change.

API keys get a `label` and `last_used_at`; contacts get `opted_in_at` (their last START).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import defaultdict
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

import bridge.db

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_THREAD_REFERENCES = {
    "messages": "fk_messages_thread_id_threads",
    "thread_subscribers": "fk_thread_subscribers_thread_id_threads",
}


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("label", sa.String(length=200), nullable=True))
        batch.add_column(
            sa.Column("last_used_at", bridge.db.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(
            sa.Column("opted_in_at", bridge.db.UTCDateTime(timezone=True), nullable=True)
        )
    _threads_per_organization()
    _rehash(lambda org, e164, key: _digest(key, e164), _organization_hash)


def downgrade() -> None:
    # Fails, as it should, when two organizations hold a thread about the same resource id.
    _rehash(_organization_hash, lambda org, e164, key: _digest(key, e164))
    _threads_in_one_namespace()
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("opted_in_at")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("last_used_at")
        batch.drop_column("label")


def _threads_per_organization() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint(_THREAD_REFERENCES["messages"], type_="foreignkey")
        batch.drop_index("ix_messages_thread_seq")
    with op.batch_alter_table("thread_subscribers") as batch:
        batch.drop_constraint(_THREAD_REFERENCES["thread_subscribers"], type_="foreignkey")
        batch.add_column(sa.Column("organization_id", sa.String(length=40), nullable=True))
    op.execute(
        "UPDATE thread_subscribers SET organization_id = (SELECT threads.organization_id "
        "FROM threads WHERE threads.id = thread_subscribers.thread_id)"
    )
    with op.batch_alter_table("threads") as batch:
        batch.drop_constraint("uq_threads_resource_id", type_="unique")
        batch.drop_index("ix_threads_organization_id")
        batch.drop_constraint("pk_threads", type_="primary")
        batch.create_primary_key("pk_threads", ["organization_id", "id"])
        batch.create_unique_constraint(
            "uq_threads_organization_id", ["organization_id", "resource_id"]
        )
    with op.batch_alter_table("thread_subscribers") as batch:
        batch.alter_column("organization_id", existing_type=sa.String(length=40), nullable=False)
        batch.drop_constraint("pk_thread_subscribers", type_="primary")
        batch.create_primary_key(
            "pk_thread_subscribers", ["organization_id", "thread_id", "subscriber_id"]
        )
        batch.create_foreign_key(
            "fk_thread_subscribers_organization_id_threads",
            "threads",
            ["organization_id", "thread_id"],
            ["organization_id", "id"],
        )
    with op.batch_alter_table("messages") as batch:
        batch.create_index("ix_messages_thread_seq", ["organization_id", "thread_id", "seq"])
        batch.create_foreign_key(
            "fk_messages_organization_id_threads",
            "threads",
            ["organization_id", "thread_id"],
            ["organization_id", "id"],
        )


def _threads_in_one_namespace() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("fk_messages_organization_id_threads", type_="foreignkey")
        batch.drop_index("ix_messages_thread_seq")
    with op.batch_alter_table("thread_subscribers") as batch:
        batch.drop_constraint("fk_thread_subscribers_organization_id_threads", type_="foreignkey")
        batch.drop_constraint("pk_thread_subscribers", type_="primary")
        batch.create_primary_key("pk_thread_subscribers", ["thread_id", "subscriber_id"])
        batch.drop_column("organization_id")
    with op.batch_alter_table("threads") as batch:
        batch.drop_constraint("uq_threads_organization_id", type_="unique")
        batch.drop_constraint("pk_threads", type_="primary")
        batch.create_primary_key("pk_threads", ["id"])
        batch.create_unique_constraint("uq_threads_resource_id", ["resource_id"])
        batch.create_index("ix_threads_organization_id", ["organization_id"])
    with op.batch_alter_table("thread_subscribers") as batch:
        batch.create_foreign_key(
            _THREAD_REFERENCES["thread_subscribers"], "threads", ["thread_id"], ["id"]
        )
    with op.batch_alter_table("messages") as batch:
        batch.create_index("ix_messages_thread_seq", ["thread_id", "seq"])
        batch.create_foreign_key(_THREAD_REFERENCES["messages"], "threads", ["thread_id"], ["id"])


# Phone hashes ------------------------------------------------------------------------------------

Hasher = Callable[[str, str, str], str]


def _digest(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def _organization_hash(organization_id: str, e164: str, key: str) -> str:
    # bridge.phones.phone_hash as of this revision, written out: a migration never changes.
    return _digest(key, f"{organization_id}:{e164}")


def _rehash(old: Hasher, new: Hasher) -> None:
    """Replace every stored phone hash made by `old` with the one `new` makes of the same number."""
    bind = op.get_bind()
    numbers = _numbers_by_organization(bind)
    if not numbers:
        return  # an empty database: nothing to rehash, and no key needed
    key = _phone_hash_key()
    translate: dict[str, dict[str, str]] = {
        org: {old(org, e164, key): new(org, e164, key) for e164 in phones}
        for org, phones in numbers.items()
    }
    contacts = sa.table(
        "contacts", sa.column("id"), sa.column("organization_id"), sa.column("phone_hash")
    )
    opt_outs = sa.table("opt_outs", sa.column("organization_id"), sa.column("phone_hash"))
    indexed = sa.table(
        "channel_phone_hashes",
        sa.column("channel_id"),
        sa.column("organization_id"),
        sa.column("phone_hash"),
    )
    for row in bind.execute(sa.select(contacts)).all():
        digest = translate.get(row.organization_id, {}).get(row.phone_hash)
        if digest is not None:
            bind.execute(contacts.update().where(contacts.c.id == row.id).values(phone_hash=digest))
    for row in bind.execute(sa.select(opt_outs)).all():
        digest = translate.get(row.organization_id, {}).get(row.phone_hash)
        if digest is not None:
            bind.execute(
                opt_outs.update()
                .where(
                    opt_outs.c.organization_id == row.organization_id,
                    opt_outs.c.phone_hash == row.phone_hash,
                )
                .values(phone_hash=digest)
            )
    for row in bind.execute(sa.select(indexed)).all():
        digest = translate.get(row.organization_id, {}).get(row.phone_hash)
        if digest is not None:
            bind.execute(
                indexed.update()
                .where(
                    indexed.c.channel_id == row.channel_id,
                    indexed.c.phone_hash == row.phone_hash,
                )
                .values(phone_hash=digest)
            )
    # An event reports its contact as the API showed it: every contact is still a row (contacts
    # are never deleted), so its number is among those above.
    events = sa.table(
        "events",
        sa.column("seq"),
        sa.column("organization_id"),
        sa.column("type"),
        sa.column("data", sa.JSON),
    )
    contact_events = sa.select(events).where(
        events.c.type.in_(["contact.opted_out", "contact.opted_in"])
    )
    for row in bind.execute(contact_events).all():
        contact = dict(row.data.get("object") or {})
        digest = translate.get(row.organization_id, {}).get(str(contact.get("phone_hash")))
        if digest is not None:
            data = {**row.data, "object": {**contact, "phone_hash": digest}}
            bind.execute(events.update().where(events.c.seq == row.seq).values(data=data))


def _numbers_by_organization(bind: sa.Connection) -> dict[str, set[str]]:
    """Every number the database holds for each organization: its contacts', SMS from and to."""
    found: defaultdict[str, set[str]] = defaultdict(set)
    queries = [
        "SELECT organization_id, phone FROM contacts",
        "SELECT organization_id, from_phone FROM inbound_sms WHERE organization_id IS NOT NULL",
        "SELECT DISTINCT organization_id, to_phone FROM deliveries",
    ]
    for query in queries:
        for org, phone in bind.execute(sa.text(query)):
            if phone and _E164.fullmatch(phone):
                found[org].add(phone)
    return dict(found)


def _phone_hash_key() -> str:
    from bridge.settings import load_settings

    return load_settings().phone_hash_key
