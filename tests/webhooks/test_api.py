"""The REST API's success paths, one endpoint at a time, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import redis
from rq import Queue
from sqlalchemy import func, select

from bridge.db import transaction, utcnow
from bridge.ids import new_id
from bridge.models import Contact, InboundSms, Thread
from bridge.runtime import Runtime
from tests import factories
from tests.webhooks.conftest import ApiOrg

# DESIGN section 4, exactly: the seed's fields plus the documented additions.
THREAD_FIELDS = {
    "object", "id", "resource_id", "organization_id", "location_id", "name", "recent_messages",
    "has_more", "subscriber_ids", "subscribers", "unread_by", "updated_at",
}  # fmt: skip
MESSAGE_FIELDS = {
    "object", "id", "thread_id", "resource_id", "subscriber_id", "text", "type", "event",
    "media_urls", "reactions", "name", "created_at", "edited_at", "publish_to_channel_at",
    "channel_id", "published_at",
}  # fmt: skip
SUBSCRIBER_FIELDS = {"id", "type", "name", "email", "phone", "is_archived", "viewed_at"}
CHANNEL_FIELDS = {
    "object", "id", "name", "organization_id", "recent_messages", "has_more", "pending_messages",
    "phone_hashes", "publisher_ids", "scheduled_publish_at", "subscriber_hash", "subscriber_ids",
    "subscribers", "updated_at",
}  # fmt: skip


def _thread_with_contact(api: ApiOrg, resource_id: str = "order-1") -> tuple[dict, str]:
    phone = factories.phone()
    response = api.post(
        "/v1/threads",
        {
            "resource_id": resource_id,
            "name": "Order 1",
            "location_id": "loc_1",
            "subscribers": [{"type": "contact", "phone": phone, "name": "Cora"}],
        },
    )
    assert response.status_code == 201, response.json
    return response.json, phone


def test_organization_read_and_update(api: ApiOrg) -> None:
    response = api.get("/v1/organization")
    assert response.status_code == 200
    body = response.json
    assert body["id"] == api.organization_id
    assert body["name"] == "Acme Logistics"
    assert len(body["senders"]) == 1
    assert body["subscriber"]["type"] == "api_key"
    assert "STOP" in body["help_text"]

    response = api.patch("/v1/organization", {"name": "Acme Freight", "help_text": "Call us."})
    assert response.status_code == 200
    assert response.json["name"] == "Acme Freight"
    assert response.json["help_text"] == "Call us."
    assert api.get("/v1/organization").json["name"] == "Acme Freight"


def test_users_create_and_read(api: ApiOrg) -> None:
    response = api.post("/v1/users", {"name": "Dana Driver", "email": "dana@example.com"})
    assert response.status_code == 201
    user = response.json
    assert user["id"].startswith("usr_")
    assert user["organization_id"] == api.organization_id
    got = api.get(f"/v1/users/{user['id']}")
    assert got.status_code == 200
    assert got.json == user


def test_contacts_find_or_create_and_lookup(api: ApiOrg, runtime: Runtime) -> None:
    first = api.post("/v1/contacts", {"phone": "(415) 555-0101", "name": "Cora"})
    assert first.status_code == 201
    assert first.json["phone"] == "+14155550101"
    assert first.json["opted_out"] is False
    again = api.post("/v1/contacts", {"phone": "+14155550101"})
    assert again.status_code == 200
    assert again.json["id"] == first.json["id"]

    assert api.get(f"/v1/contacts/{first.json['id']}").json == first.json
    found = api.get("/v1/contacts", query_string={"phone": "415-555-0101"})
    assert found.status_code == 200
    assert found.json == {"object": "list", "data": [first.json], "has_more": False}
    none = api.get("/v1/contacts", query_string={"phone": "+14155550199"})
    assert none.json["data"] == []
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Contact)) == 1


def test_creating_a_thread_twice_gives_201_then_200_and_one_thread(
    api: ApiOrg, runtime: Runtime
) -> None:
    body = {"resource_id": "order-42", "name": "Order 42"}
    first = api.post("/v1/threads", body)
    second = api.post("/v1/threads", body)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json["id"] == second.json["id"] == "thrd_order-42"
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Thread)) == 1


def test_thread_read_has_exactly_the_design_fields(api: ApiOrg, runtime: Runtime) -> None:
    user_id = factories.committed_user(runtime, api.organization_id)
    thread, _ = _thread_with_contact(api)
    api.post(f"/v1/threads/{thread['id']}/messages", {"text": "On its way"}, as_user=user_id)

    body = api.get(f"/v1/threads/{thread['id']}").json
    assert set(body) == THREAD_FIELDS
    assert body["object"] == "thread"
    assert body["resource_id"] == "order-1"
    assert body["location_id"] == "loc_1"
    assert isinstance(body["updated_at"], int)
    assert body["has_more"] is False
    assert [set(m) for m in body["recent_messages"]] == [MESSAGE_FIELDS]
    message = body["recent_messages"][0]
    assert message["name"] == "Order 1"
    assert message["resource_id"] == "order-1"
    assert message["subscriber_id"] == user_id
    assert all(set(s) == SUBSCRIBER_FIELDS for s in body["subscribers"])
    kinds = {s["type"] for s in body["subscribers"]}
    assert kinds == {"api_key", "contact", "user"}
    contact = next(s for s in body["subscribers"] if s["type"] == "contact")
    assert contact["viewed_at"] is None
    assert contact["phone"].startswith("+1")
    # the contact wrote nothing, so the organization (which never viewed) has unread messages
    assert api.organization_id in body["unread_by"]
    assert user_id not in body["unread_by"]


def test_thread_update_subscribers_and_viewed(api: ApiOrg, runtime: Runtime) -> None:
    user_id = factories.committed_user(runtime, api.organization_id)
    thread, _ = _thread_with_contact(api)
    tid = thread["id"]

    patched = api.patch(f"/v1/threads/{tid}", {"location_id": "loc_2", "name": "Renamed"})
    assert patched.status_code == 200
    assert (patched.json["location_id"], patched.json["name"]) == ("loc_2", "Renamed")

    added = api.post(f"/v1/threads/{tid}/subscribers", {"subscriber": user_id})
    assert added.status_code == 200
    assert user_id in added.json["subscriber_ids"]
    assert added.json["recent_messages"][-1]["event"] == "subscriber.added"
    api.post(f"/v1/threads/{tid}/messages", {"text": "Loaded"}, as_user=user_id)

    removed = api.delete(f"/v1/threads/{tid}/subscribers/{user_id}")
    assert removed.status_code == 200
    assert user_id not in removed.json["subscriber_ids"]
    archived = next(s for s in removed.json["subscribers"] if s["id"] == user_id)
    assert archived["is_archived"] is True
    assert removed.json["recent_messages"][-1]["event"] == "subscriber.removed"

    assert api.organization_id in api.get(f"/v1/threads/{tid}").json["unread_by"]
    viewed = api.post(f"/v1/threads/{tid}/viewed")
    assert viewed.status_code == 200
    assert api.organization_id not in viewed.json["unread_by"]
    me = next(s for s in viewed.json["subscribers"] if s["id"] == api.organization_id)
    assert isinstance(me["viewed_at"], int)
    assert api.post(f"/v1/threads/{tid}/viewed", json={}).status_code == 200


def test_posting_a_message_enqueues_its_fan_out_on_the_right_queue(
    api: ApiOrg, redis_client: redis.Redis
) -> None:
    thread, _ = _thread_with_contact(api)
    text = api.post(f"/v1/threads/{thread['id']}/messages", {"text": "Your order left"})
    assert text.status_code == 201
    assert set(text.json) == MESSAGE_FIELDS
    assert text.json["channel_id"].startswith("chnl_")
    assert isinstance(text.json["published_at"], int)
    tracking = api.post(
        f"/v1/threads/{thread['id']}/messages",
        {"text": "Out for delivery", "type": "tracking_update"},
    )
    assert tracking.status_code == 201

    text_jobs = Queue("text", connection=redis_client).jobs
    notification_jobs = Queue("notifications", connection=redis_client).jobs
    assert [(j.func_name, j.args) for j in text_jobs] == [
        ("workers.jobs.fan_out", (text.json["id"],))
    ]
    assert [(j.func_name, j.args) for j in notification_jobs] == [
        ("workers.jobs.fan_out", (tracking.json["id"],))
    ]

    deliveries = api.get(f"/v1/messages/{text.json['id']}/deliveries")
    assert deliveries.status_code == 200
    [delivery] = deliveries.json["data"]
    assert delivery["status"] == "pending"
    assert delivery["message_id"] == text.json["id"]
    assert delivery["to"].startswith("+1")
    assert delivery["from"].startswith("+1")


def test_a_scheduled_message_waits_in_the_channel_and_can_be_canceled(
    api: ApiOrg, redis_client: redis.Redis
) -> None:
    thread, _ = _thread_with_contact(api)
    when = int(time.time()) + 3600
    posted = api.post(
        f"/v1/threads/{thread['id']}/messages",
        {"text": "Pickup tomorrow", "type": "pickup_reminder", "publish_to_channel_at": when},
    )
    assert posted.status_code == 201
    assert posted.json["publish_to_channel_at"] == when
    assert posted.json["published_at"] is None
    scheduled = Queue("text", connection=redis_client).scheduled_job_registry
    assert len(scheduled.get_job_ids()) == 1

    channel = api.get(f"/v1/channels/{posted.json['channel_id']}").json
    assert [m["id"] for m in channel["pending_messages"]] == [posted.json["id"]]
    assert channel["scheduled_publish_at"] == when

    canceled = api.delete(f"/v1/messages/{posted.json['id']}")
    assert canceled.status_code == 200
    assert canceled.json["id"] == posted.json["id"]
    channel = api.get(f"/v1/channels/{posted.json['channel_id']}").json
    assert channel["pending_messages"] == []
    assert channel["scheduled_publish_at"] is None


def test_editing_a_message_as_its_author(api: ApiOrg, runtime: Runtime) -> None:
    user_id = factories.committed_user(runtime, api.organization_id)
    thread, _ = _thread_with_contact(api)
    posted = api.post(f"/v1/threads/{thread['id']}/messages", {"text": "Hi"}, as_user=user_id)
    edited = api.patch(f"/v1/messages/{posted.json['id']}", {"text": "Hello"}, as_user=user_id)
    assert edited.status_code == 200
    assert edited.json["text"] == "Hello"
    assert isinstance(edited.json["edited_at"], int)


def test_paging_through_thread_messages(api: ApiOrg) -> None:
    response = api.post("/v1/threads", {"resource_id": "order-7"})
    ids = [
        api.post("/v1/threads/thrd_order-7/messages", {"text": f"m{i}"}).json["id"]
        for i in range(5)
    ]
    first = api.get("/v1/threads/thrd_order-7/messages", query_string={"limit": 2})
    assert response.status_code == 201
    assert first.json["object"] == "list"
    assert [m["id"] for m in first.json["data"]] == [ids[4], ids[3]]
    assert first.json["has_more"] is True
    rest = api.get(
        "/v1/threads/thrd_order-7/messages", query_string={"limit": 150, "before": ids[3]}
    )
    assert [m["id"] for m in rest.json["data"]] == [ids[2], ids[1], ids[0]]
    assert rest.json["has_more"] is False
    default = api.get("/v1/threads/thrd_order-7/messages")
    assert len(default.json["data"]) == 5


def test_channels_by_id_by_phone_and_their_messages(api: ApiOrg, redis_client: redis.Redis) -> None:
    thread, phone = _thread_with_contact(api)
    posted = api.post(f"/v1/threads/{thread['id']}/messages", {"text": "Hello"}).json
    channel_id = posted["channel_id"]

    channel = api.get(f"/v1/channels/{channel_id}")
    assert channel.status_code == 200
    assert set(channel.json) == CHANNEL_FIELDS
    assert channel.json["object"] == "channel"
    assert channel.json["publisher_ids"] == ["order-1"]
    assert len(channel.json["phone_hashes"]) == 1
    assert [m["id"] for m in channel.json["recent_messages"]] == [posted["id"]]
    assert channel.json["recent_messages"][0]["name"] == "Order 1"
    assert all(set(s) == SUBSCRIBER_FIELDS for s in channel.json["subscribers"])

    by_phone = api.get("/v1/channels", query_string={"phone": phone})
    assert by_phone.status_code == 200
    assert [c["id"] for c in by_phone.json["data"]] == [channel_id]
    assert by_phone.json["has_more"] is False
    assert api.get("/v1/channels", query_string={"phone": "+14155550177"}).json["data"] == []

    direct = api.post(f"/v1/channels/{channel_id}/messages", {"text": "Straight to SMS"})
    assert direct.status_code == 201
    assert direct.json["thread_id"] is None
    assert direct.json["name"] == channel.json["name"]
    assert len(Queue("text", connection=redis_client).jobs) == 2

    listed = api.get(f"/v1/channels/{channel_id}/messages", query_string={"limit": 1})
    assert [m["id"] for m in listed.json["data"]] == [direct.json["id"]]
    assert listed.json["has_more"] is True


def test_paging_through_a_phones_channels(api: ApiOrg, redis_client: redis.Redis) -> None:
    phone = factories.phone()
    made = []
    for i in range(3):
        others = [
            {"type": "contact", "phone": phone},
            {"type": "contact", "phone": factories.phone()},
        ]
        thread = api.post("/v1/threads", {"resource_id": f"order-{i}", "subscribers": others}).json
        made.append(api.post(f"/v1/threads/{thread['id']}/messages", {"text": "Hi"}).json)
    everything = api.get("/v1/channels", query_string={"phone": phone}).json
    ids = [c["id"] for c in everything["data"]]
    assert set(ids) == {m["channel_id"] for m in made} and everything["has_more"] is False

    first = api.get("/v1/channels", query_string={"phone": phone, "limit": 2}).json
    assert [c["id"] for c in first["data"]] == ids[:2] and first["has_more"] is True
    rest = api.get("/v1/channels", query_string={"phone": phone, "before": ids[1]}).json
    assert [c["id"] for c in rest["data"]] == ids[2:] and rest["has_more"] is False


def test_inbound_records_by_status(api: ApiOrg, runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        for i, status in enumerate(["unmatched", "matched", "unmatched", "keyword"]):
            session.add(
                InboundSms(
                    id=new_id("in"),
                    message_sid=f"SM{i:032d}",
                    organization_id=api.organization_id,
                    from_phone="+14155550123",
                    to_phone="+16285550100",
                    body="hi",
                    status=status,
                    received_at=utcnow(),
                )
            )
    everything = api.get("/v1/inbound")
    assert everything.status_code == 200
    assert [r["status"] for r in everything.json["data"]] == [
        "keyword", "unmatched", "matched", "unmatched",
    ]  # fmt: skip
    unmatched = api.get("/v1/inbound", query_string={"status": "unmatched", "limit": 1})
    assert [r["status"] for r in unmatched.json["data"]] == ["unmatched"]
    assert unmatched.json["has_more"] is True
    assert unmatched.json["data"][0]["object"] == "inbound_sms"
    assert unmatched.json["data"][0]["from"] == "+14155550123"
    older = api.get(
        "/v1/inbound",
        query_string={"status": "unmatched", "before": unmatched.json["data"][0]["id"]},
    )
    assert len(older.json["data"]) == 1
    assert older.json["has_more"] is False


def test_a_channel_shows_the_150_scheduled_messages_due_first_and_pages_the_rest(
    api: ApiOrg,
) -> None:
    # 160 scheduled posts, made in the reverse of their due order: the channel shows the 150
    # due first, soonest first; the messages endpoint pages through all of them.
    thread = api.post(
        "/v1/threads",
        {"resource_id": "many", "subscribers": [{"type": "contact", "phone": factories.phone()}]},
    ).json
    soon = int(time.time()) + 3600
    ids = []
    for i in reversed(range(160)):
        posted = api.post(
            f"/v1/threads/{thread['id']}/messages",
            {"text": f"due {i}", "publish_to_channel_at": soon + i * 60},
        ).json
        ids.append(posted["id"])
    channel = api.get(f"/v1/channels/{posted['channel_id']}").json
    assert len(channel["pending_messages"]) == 150
    assert [m["text"] for m in channel["pending_messages"]] == [f"due {i}" for i in range(150)]
    assert channel["scheduled_publish_at"] == soon

    seen: list[str] = []
    before = None
    while True:
        query = "pending=true&limit=100" + (f"&before={before}" if before else "")
        page = api.get(f"/v1/channels/{posted['channel_id']}/messages?{query}").json
        seen += [m["id"] for m in page["data"]]
        if not page["has_more"]:
            break
        before = page["data"][-1]["id"]
    assert seen == list(reversed(ids))
    published = api.get(f"/v1/channels/{posted['channel_id']}/messages").json
    assert published["data"] == []
