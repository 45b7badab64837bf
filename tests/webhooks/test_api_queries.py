"""`GET /v1/threads/{id}` runs as many SQL statements for a busy thread as for a quiet one."""

from __future__ import annotations

from sqlalchemy import insert

from bridge.db import transaction
from bridge.models import Message, Organization
from bridge.runtime import Runtime
from tests import factories
from tests.webhooks.conftest import ApiOrg


def _busy_thread(runtime: Runtime, organization_id: str, messages: int, subscribers: int) -> str:
    """A thread with users and contacts among its `subscribers` and `messages` messages."""
    with transaction(runtime.sessions) as session:
        org = session.get_one(Organization, organization_id)
        thread, ids = factories.crowded_thread(
            session, runtime.settings, org, 10, subscribers - 10 - 1, "order-busy"
        )
        rows = factories.message_rows(org.id, thread.id, [org.id, *ids], messages)
        session.execute(insert(Message), rows)
        return thread.id


def test_a_thread_read_runs_as_many_statements_for_1_message_as_for_150(
    api: ApiOrg, runtime: Runtime
) -> None:
    # The quiet thread's one subscriber is the organization; the busy one's are of all three
    # kinds (organization, users, contacts), and its messages fill the 150 shown.
    # The statements are not the same: the profiles read is a UNION of the kinds present.
    quiet = api.post("/v1/threads", {"resource_id": "order-quiet"}).json["id"]
    api.post(f"/v1/threads/{quiet}/messages", {"text": "hi"})
    busy = _busy_thread(runtime, api.organization_id, messages=200, subscribers=50)
    counts = []
    for thread_id in (quiet, busy):
        # The first request of a minute may record the key's use: that write is not the read's.
        assert api.get(f"/v1/threads/{thread_id}").status_code == 200
        with factories.statements(runtime.engine) as statements:
            response = api.get(f"/v1/threads/{thread_id}")
        assert response.status_code == 200
        counts.append(len(statements))
    body = response.json
    assert len(body["subscribers"]) == 50
    assert {s["type"] for s in body["subscribers"]} == {"api_key", "user", "contact"}
    assert len(body["recent_messages"]) == 150 and body["has_more"] is True
    assert counts[0] == counts[1], counts
    assert 4 <= counts[0] <= 10  # a count of 0 would mean the listener saw nothing
