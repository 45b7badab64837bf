"""API keys through the API: several per organization, created, listed, revoked (DESIGN 5.1, 6)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from bridge.db import transaction, utcnow
from bridge.models import ApiKey
from bridge.runtime import Runtime
from tests import factories
from tests.webhooks.conftest import ApiOrg


def _create(api: ApiOrg, label: str | None = None) -> dict:
    response = api.post("/v1/api_keys", {"label": label} if label else None)
    assert response.status_code == 201, response.json
    return dict(response.json)


def test_a_key_is_rotated_create_use_revoke(api: ApiOrg) -> None:
    new = _create(api, "deploy 2")
    assert set(new) == {"object", "id", "label", "prefix", "created_at", "last_used_at", "api_key"}
    assert (new["object"], new["label"], new["last_used_at"]) == ("api_key", "deploy 2", None)
    assert new["api_key"].startswith(new["prefix"])
    old_key, api.key = api.key, new["api_key"]
    assert api.get("/v1/organization").status_code == 200

    listed = api.get("/v1/api_keys").json
    assert listed["object"] == "list" and listed["has_more"] is False
    assert [k["label"] for k in listed["data"]] == ["default", "deploy 2"]
    assert all("api_key" not in k for k in listed["data"])
    assert old_key not in str(listed) and new["api_key"] not in str(listed)
    assert listed["data"][1]["last_used_at"] is not None  # the requests just made

    old_id = listed["data"][0]["id"]
    revoked = api.delete(f"/v1/api_keys/{old_id}")
    assert revoked.status_code == 200 and revoked.json["id"] == old_id
    api.key, new_key = old_key, api.key
    assert api.get("/v1/organization").status_code == 401
    api.key = new_key
    assert [k["id"] for k in api.get("/v1/api_keys").json["data"]] == [new["id"]]


def test_the_last_active_key_cannot_be_revoked_through_the_api(api: ApiOrg) -> None:
    [only] = api.get("/v1/api_keys").json["data"]
    response = api.delete(f"/v1/api_keys/{only['id']}")
    assert response.status_code == 409
    assert response.json["error"]["param"] == "id"
    assert api.get("/v1/organization").status_code == 200


def test_another_organizations_key_is_404(api: ApiOrg, other_api: ApiOrg) -> None:
    _create(other_api)
    theirs = other_api.get("/v1/api_keys").json["data"][0]["id"]
    assert api.delete(f"/v1/api_keys/{theirs}").status_code == 404
    assert len(other_api.get("/v1/api_keys").json["data"]) == 2


def test_last_used_at_is_written_at_most_once_a_minute(api: ApiOrg, runtime: Runtime) -> None:
    def writes(statements: list[str]) -> int:
        return sum(s.lstrip().upper().startswith("UPDATE API_KEYS") for s in statements)

    with factories.statements(runtime.engine) as statements:
        for _ in range(5):
            assert api.get("/v1/organization").status_code == 200
    assert writes(statements) == 1
    with transaction(runtime.sessions) as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.organization_id == api.organization_id)
            .values(last_used_at=utcnow() - timedelta(minutes=2))
        )
    with factories.statements(runtime.engine) as statements:
        assert api.get("/v1/organization").status_code == 200
    assert writes(statements) == 1
    [key] = api.get("/v1/api_keys").json["data"]
    assert key["last_used_at"] >= int((utcnow() - timedelta(seconds=5)).timestamp())
