"""A second organization probing every endpoint that takes an id of the first: always 404,
nothing leaked, nothing changed."""

from __future__ import annotations

import re
import time
from typing import Any

from sqlalchemy import Engine, select

from bridge.db import Base, transaction
from bridge.events import record_event
from bridge.runtime import Runtime
from tests import factories
from tests.webhooks.conftest import ApiOrg
from webhooks.http import OPERATIONS

# A valid body for each operation that takes one, so only ownership can refuse it.
BODIES: dict[str, Any] = {
    "update_thread": {"name": "stolen"},
    "add_subscriber": {"subscriber": {"type": "contact", "phone": "+14155550142"}},
    "mark_viewed": {},
    "post_message": {"text": "hello"},
    "post_channel_message": {"text": "hello"},
    "edit_message": {"text": "edited"},
    "update_webhook_endpoint": {"enabled": False},
}


def _snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            table.name: sorted(conn.execute(select(table)).all(), key=repr)
            for table in Base.metadata.sorted_tables
        }


def test_another_organizations_ids_are_404_everywhere(
    api: ApiOrg, other_api: ApiOrg, runtime: Runtime
) -> None:
    with transaction(runtime.sessions) as session:
        org = session.get_one(factories.Organization, api.organization_id)
        user = factories.user(session, runtime.settings, org, "Uma Secret")
        contact = factories.contact(session, runtime.settings, org, "Cora Secret")
        ids = {"user_id": user.id, "contact_id": contact.id, "subscriber_id": contact.id}
    thread = api.post(
        "/v1/threads",
        {"resource_id": "secret-order", "name": "Secret", "subscribers": [contact.id]},
    ).json
    scheduled = api.post(
        f"/v1/threads/{thread['id']}/messages",
        {"text": "later", "publish_to_channel_at": int(time.time()) + 3600},
        as_user=user.id,
    ).json
    ids |= {
        "thread_id": thread["id"],
        "channel_id": scheduled["channel_id"],
        "message_id": scheduled["id"],
        # A second key, so that only ownership (not "the last key") can refuse its revocation.
        "key_id": api.post("/v1/api_keys", {"label": "Secret"}).json["id"],
    }
    endpoint = api.post(
        "/v1/webhook_endpoints", {"url": "http://127.0.0.1:9/secret-hooks", "events": ["*"]}
    ).json
    with transaction(runtime.sessions) as session:
        event = record_event(
            session, api.organization_id, "contact.opted_out", {"object": "contact"}
        )
    ids |= {"endpoint_id": endpoint["id"], "event_id": event.id}
    secrets = [*ids.values(), "Uma Secret", "Cora Secret", contact.phone, contact.phone_hash]
    secrets += [endpoint["secret"], endpoint["url"]]
    # Its first request writes the prober's own last_used_at: done before the snapshot.
    assert other_api.get("/v1/organization").status_code == 200

    before = _snapshot(runtime.engine)
    probed = []
    for op in OPERATIONS:
        names = re.findall(r"<\w+:(\w+)>", op.rule)
        if not names:
            continue
        path = "/v1" + re.sub(r"<\w+:(\w+)>", lambda m: ids[m.group(1)], op.rule)
        response = other_api.client.open(
            path, method=op.method.upper(), json=BODIES.get(op.view), headers=other_api.headers()
        )
        assert response.status_code == 404, (op.method, path, response.json)
        assert response.json["error"]["type"] == "not_found"
        text = response.get_data(as_text=True)
        assert not [s for s in secrets if s in text], (op.method, path, text)
        probed.append(op.view)
    assert _snapshot(runtime.engine) == before
    assert len(probed) == 23  # 15, the 7 of events out, and revoking a key

    # ids inside bodies and query strings are no way in either
    created = other_api.post("/v1/threads", {"resource_id": "theirs", "subscribers": [contact.id]})
    assert created.status_code == 404
    cursor = other_api.get("/v1/inbound", query_string={"before": scheduled["id"]})
    assert cursor.status_code == 422  # a message id cannot be an inbound SMS cursor
    by_phone = other_api.get("/v1/channels", query_string={"phone": contact.phone})
    assert by_phone.json["data"] == []
    assert other_api.get("/v1/contacts", query_string={"phone": contact.phone}).json["data"] == []
    assert _snapshot(runtime.engine) == before

    # nor is a cursor: another organization's message is no message of a list of one's own
    theirs = other_api.post("/v1/threads", {"resource_id": "theirs-own"}).json
    cursor = other_api.get(
        f"/v1/threads/{theirs['id']}/messages", query_string={"before": scheduled["id"]}
    )
    assert cursor.status_code == 404 and cursor.json["error"]["param"] == "before"


def test_two_organizations_with_the_same_resource_ids_and_numbers_see_only_their_own(
    api: ApiOrg, other_api: ApiOrg
) -> None:
    # DESIGN 5.1, 5.2: each has its own thrd_order-1001 (no 409, no hint of the other's), its
    # own contact for the one number, and phone hashes that cannot be matched across them.
    ann = "+14155550123"
    made = {}
    for org, name in ((api, "Ours"), (other_api, "Theirs")):
        response = org.post(
            "/v1/threads",
            {
                "resource_id": "order-1001",
                "name": name,
                "subscribers": [{"type": "contact", "phone": ann, "name": f"Ann of {name}"}],
            },
        )
        assert response.status_code == 201, response.json
        assert response.json["id"] == "thrd_order-1001"
        org.post("/v1/threads/thrd_order-1001/messages", {"text": f"from {name}"})
        made[name] = org
    assert api.post("/v1/threads", {"resource_id": "order-1001"}).status_code == 200

    hashes = {}
    for name, org in made.items():
        thread = org.get("/v1/threads/thrd_order-1001").json
        assert (thread["name"], thread["organization_id"]) == (name, org.organization_id)
        texts = [m["text"] for m in org.get("/v1/threads/thrd_order-1001/messages").json["data"]]
        assert texts == [f"from {name}"]
        [contact] = org.get(f"/v1/contacts?phone={ann}").json["data"]
        assert contact["name"] == f"Ann of {name}"
        [channel] = org.get(f"/v1/channels?phone={ann}").json["data"]
        assert channel["organization_id"] == org.organization_id
        assert channel["publisher_ids"] == ["order-1001"]
        assert [m["text"] for m in channel["recent_messages"]] == [f"from {name}"]
        hashes[name] = channel["phone_hashes"]
    assert len(hashes["Ours"]) == len(hashes["Theirs"]) == 1
    assert hashes["Ours"] != hashes["Theirs"]
