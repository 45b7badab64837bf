"""The JSON of each model has exactly the fields of DESIGN section 4, typed as the seed says.

The field names are read from the seed (`docs/seed/threads-and-channels.txt`) and from
docs/DESIGN.md themselves, so renaming a field in the code, or dropping one, fails here.
"""

from __future__ import annotations

import re
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bridge import models
from bridge.actors import Actor
from bridge.channel_views import load_channel_view
from bridge.db import utcnow
from bridge.ids import new_id
from bridge.messages import Draft, edit_message, post_message
from bridge.serialize import Channel, Delivery, InboundSms, Thread
from bridge.settings import Settings
from bridge.threads import (
    add_subscriber,
    archive_subscriber,
    create_thread,
    load_thread_view,
    mark_viewed,
)
from tests import factories

MODELS = ("Thread", "Message", "Subscriber", "Channel")
# The seed's own slips, settled by DESIGN section 4's table.
OBJECT_OVERRIDES = {("Channel", "object"): "channel"}
TYPE_OVERRIDES = {("Subscriber", "id"): "string"}


def shared_dir() -> Path:
    """The project's own `docs/` folder: the behaviour contract and the seed it is built from."""
    return Path(__file__).resolve().parents[2] / "docs"


_FIELD = re.compile(r'^([a-z_]+) (string|String|boolean|Integer|Array\S*|"[a-z_]+")$')


@cache
def seed_fields() -> dict[str, dict[str, str]]:
    """{model: {field: seed type}}, read from the seed's "X Model" sections."""
    models: dict[str, dict[str, str]] = {}
    current = None
    for line in (shared_dir() / "seed" / "threads-and-channels.txt").read_text().splitlines():
        line = line.strip()
        heading = re.fullmatch(r"(\w+) Model", line)
        if heading:
            current = heading.group(1)
            models[current] = {}
            continue
        match = _FIELD.match(line)
        if current and match:
            models[current][match.group(1)] = match.group(2)
    return models


@cache
def design_fields() -> dict[str, set[str]]:
    """{record: field names}, read from DESIGN.md's section 4 bullets (`- **Thread:** ...`)."""
    text = (shared_dir() / "DESIGN.md").read_text()
    section = text.split("## 4.", 1)[1].split("\n## ", 1)[0]
    records: dict[str, set[str]] = {}
    for bullet in re.split(r"\n(?=- \*\*)", section):
        head = re.match(r"- \*\*([A-Za-z ]+):\*\*", bullet)
        if not head:
            continue
        body = re.sub(r"\([^)]*\)", "", bullet[head.end() :])  # drop the (`value`, ...) notes
        names = [name.split(":")[0] for name in re.findall(r"`([^`]+)`", body)]
        records[head.group(1)] = set(names)
    return records


def test_the_seed_and_design_are_read() -> None:
    seed = seed_fields()
    assert set(MODELS) <= set(seed)
    assert {"recent_messages", "unread_by", "subscriber_ids"} <= set(seed["Thread"])
    assert seed["Message"]["publish_to_channel_at"] == "Integer"
    assert len(seed["Channel"]) == 14 and len(seed["Subscriber"]) == 7
    design = design_fields()
    for model in MODELS:
        assert set(seed[model]) <= design[model], model
    assert {"Delivery", "Inbound SMS"} <= set(design)
    assert "segments" in design["Delivery"] and "message_sid" in design["Inbound SMS"]


def _check(model: str, value: dict[str, Any]) -> None:
    """Exactly DESIGN's fields, with the seed's types wherever a value is present."""
    assert set(value) == design_fields()[model], model
    for field, kind in seed_fields()[model].items():
        kind = TYPE_OVERRIDES.get((model, field), kind)
        got = value[field]
        if kind.startswith('"'):
            assert got == OBJECT_OVERRIDES.get((model, field), kind.strip('"')), (model, field)
        elif got is None:
            assert field not in {"id", "object", "subscriber_ids", "subscribers"}, (model, field)
        elif kind.lower() == "string":
            assert isinstance(got, str), (model, field, got)
        elif kind == "boolean":
            assert isinstance(got, bool), (model, field, got)
        elif kind == "Integer":
            assert isinstance(got, int) and not isinstance(got, bool), (model, field, got)
        else:
            assert isinstance(got, list), (model, field, got)
            if kind == "Array<String>" or kind == "Array.<String>":
                assert all(isinstance(v, str) for v in got), (model, field)


def _world(session: Session, settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """A thread and its channel with every field filled in: edits, views, archives, schedules."""
    org, _ = factories.organization(session, settings, "Acme")
    as_org = factories.org_actor(org)
    uma = factories.user(session, settings, org, "Uma")
    cora = factories.contact(session, settings, org, "Cora")
    gone = factories.contact(session, settings, org, "Gone")
    thread, _ = create_thread(
        session,
        settings,
        as_org,
        "order-1",
        name="Order 1",
        location_id="loc_1",
        subscribers=[uma.id, cora.id, gone.id],
    )
    archive_subscriber(session, as_org, thread.id, gone.id)
    as_uma = Actor.user(org.id, uma.id)
    sent = post_message(
        session,
        settings,
        as_uma,
        thread.id,
        Draft.of("hi", media_urls=["https://example.com/a.png"]),
    ).message
    edit_message(session, as_uma, sent.id, {"text": "hello"})
    later = int((utcnow() + timedelta(hours=1)).timestamp())
    post_message(
        session, settings, as_org, thread.id, Draft.of("later", publish_to_channel_at=later)
    )
    add_subscriber(session, settings, as_org, thread.id, gone.id)
    mark_viewed(session, as_org, thread.id)
    session.commit()
    assert sent.channel_id is not None
    thread_body = factories.as_json(Thread.of(load_thread_view(session, org.id, thread.id)))
    channel_body = factories.as_json(
        Channel.of(load_channel_view(session, org.id, sent.channel_id))
    )
    return thread_body, channel_body


def test_thread_message_and_subscriber_json(session: Session, settings: Settings) -> None:
    body, _ = _world(session, settings)
    _check("Thread", body)
    assert body["recent_messages"] and body["subscribers"]
    for message in body["recent_messages"]:
        _check("Message", message)
        assert message["name"] == "Order 1" and message["resource_id"] == "order-1"
    for subscriber in body["subscribers"]:
        _check("Subscriber", subscriber)
    # The fixture fills the fields that may be null, so their types were checked above.
    edited = next(m for m in body["recent_messages"] if m["edited_at"] is not None)
    assert isinstance(edited["published_at"], int) and edited["media_urls"]
    assert any(m["publish_to_channel_at"] for m in body["recent_messages"])
    assert any(m["event"] for m in body["recent_messages"])
    assert any(isinstance(s["viewed_at"], int) for s in body["subscribers"])
    assert any(s["phone"] for s in body["subscribers"]) and body["location_id"] == "loc_1"
    assert all(isinstance(m["reactions"], list) for m in body["recent_messages"])


def test_channel_json(session: Session, settings: Settings) -> None:
    _, body = _world(session, settings)
    _check("Channel", body)
    assert body["object"] == "channel"
    assert body["recent_messages"] and body["pending_messages"] and body["phone_hashes"]
    assert isinstance(body["scheduled_publish_at"], int)
    for message in body["recent_messages"] + body["pending_messages"]:
        _check("Message", message)
    for subscriber in body["subscribers"]:
        _check("Subscriber", subscriber)
        assert subscriber["is_archived"] is False


def test_delivery_json(session: Session, settings: Settings) -> None:
    _world(session, settings)
    delivery = session.execute(select(models.Delivery)).scalars().first()
    assert delivery is not None
    body = factories.as_json(Delivery.of(delivery))
    assert set(body) == design_fields()["Delivery"]
    assert body["object"] == "delivery" and body["id"].startswith("dlv_")
    assert body["to"].startswith("+") and body["from"].startswith("+")
    for field in ["part", "parts", "segments", "attempts", "created_at", "updated_at"]:
        assert isinstance(body[field], int), field


def test_inbound_json(session: Session, settings: Settings) -> None:
    row = models.InboundSms(
        id=new_id("in"),
        message_sid="SM" + "0" * 32,
        from_phone="+14155550123",
        to_phone="+16285550100",
        body="hello",
        params={},
        status="unmatched",
        received_at=utcnow(),
    )
    session.add(row)
    session.commit()
    body = factories.as_json(InboundSms.of(row))
    assert set(body) == design_fields()["Inbound SMS"]
    assert body["object"] == "inbound_sms" and body["id"].startswith("in_")
    assert (body["from"], body["to"], body["status"]) == (
        "+14155550123",
        "+16285550100",
        "unmatched",
    )
    assert isinstance(body["received_at"], int)
