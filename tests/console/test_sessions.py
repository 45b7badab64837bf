"""Signing in to the console: server-side sessions, CSRF, revoked keys, acting as a user."""

from __future__ import annotations

import hashlib

import redis
from flask import Flask
from sqlalchemy import select, update
from werkzeug.test import TestResponse

from bridge.db import transaction, utcnow
from bridge.models import ApiKey, Message
from bridge.runtime import Runtime
from tests import factories
from tests.console.conftest import Dispatcher, conversation, csrf_token, dispatcher
from webhooks import create_app
from webhooks.console.sessions import COOKIE_NAME, IDLE, KEY_PREFIX


def _cookie(response: TestResponse) -> str:
    headers = [h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE_NAME)]
    assert headers, "no session cookie was set"
    return headers[-1]


def _stored(redis_client: redis.Redis, sid: str) -> bytes | None:
    stored = redis_client.get(KEY_PREFIX + hashlib.sha256(sid.encode()).hexdigest())
    assert stored is None or isinstance(stored, bytes)
    return stored


def test_signing_in_exchanges_the_key_for_a_server_side_session(
    app: Flask, runtime: Runtime, redis_client: redis.Redis
) -> None:
    d = dispatcher(app, runtime)
    response = d.sign_in()
    assert response.status_code == 303
    assert response.headers["Location"].endswith("/console/act-as")
    cookie = _cookie(response)
    sid = cookie.split(";")[0].split("=", 1)[1]
    assert d.key not in cookie and len(sid) == 43
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" in cookie  # PUBLIC_BASE_URL is https in the tests' settings
    stored = _stored(redis_client, sid)
    assert stored is not None and d.key.encode() not in stored
    ttl = redis_client.ttl(KEY_PREFIX + hashlib.sha256(sid.encode()).hexdigest())
    assert IDLE.total_seconds() - 60 < ttl <= IDLE.total_seconds()
    # Only the cookie's hash names the session in Redis.
    assert not redis_client.exists(KEY_PREFIX + sid)
    assert d.get("/console/").status_code == 200


def test_the_cookie_is_not_secure_on_plain_http_to_localhost(
    runtime: Runtime, redis_client: redis.Redis
) -> None:
    settings = runtime.settings.model_copy(update={"public_base_url": "http://localhost:5000"})
    local = Runtime(settings)
    try:
        app = create_app(runtime=local)
        cookie = _cookie(dispatcher(app, local).sign_in())
        assert "Secure" not in cookie and "HttpOnly" in cookie
    finally:
        local.close()


def test_the_session_id_changes_at_sign_in(app: Flask, runtime: Runtime) -> None:
    d = dispatcher(app, runtime)
    before = _cookie(d.get("/console/sign-in")).split(";")[0]
    after = _cookie(d.sign_in()).split(";")[0]
    assert before != after


def test_a_wrong_key_is_refused(app: Flask, runtime: Runtime, redis_client: redis.Redis) -> None:
    d = dispatcher(app, runtime)
    response = d.sign_in("brk_not-a-key")
    assert response.status_code == 401
    assert "unknown or has been revoked" in response.get_data(as_text=True)
    assert d.get("/console/").status_code == 302
    empty = d.sign_in("")
    assert empty.status_code == 422


def test_sign_in_without_a_csrf_token_is_refused(app: Flask, runtime: Runtime) -> None:
    d = dispatcher(app, runtime)
    d.get("/console/sign-in")
    response = d.client.post("/console/sign-in", data={"api_key": d.key})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert d.get("/console/").status_code == 302


def test_a_form_without_its_csrf_token_is_refused_and_does_nothing(
    desk: Dispatcher, runtime: Runtime
) -> None:
    with transaction(runtime.sessions) as session:
        c = conversation(session, runtime.settings, desk.organization, "order-1")
    path = f"/console/channels/{c.channel_id}/reply"
    assert desk.client.post(path, data={"text": "hello"}).status_code == 400
    assert desk.client.post(path, data={"text": "hello", "csrf_token": "forged"}).status_code == 400
    # A token of another session is no better.
    other = dispatcher(desk.client.application, runtime, "Other")
    other.sign_in()
    stolen = csrf_token(other.get("/console/"))
    assert desk.client.post(path, data={"text": "hello", "csrf_token": stolen}).status_code == 400
    with runtime.sessions() as session:
        texts = session.execute(select(Message.text)).scalars().all()
    assert "hello" not in texts
    assert desk.post(path, {"text": "hello"}).status_code == 303


def test_signing_out_ends_the_session(desk: Dispatcher, redis_client: redis.Redis) -> None:
    keys_before = redis_client.keys(KEY_PREFIX + "*")
    assert len(keys_before) == 1
    response = desk.post("/console/sign-out")
    assert response.status_code == 303
    assert desk.get("/console/").status_code == 302
    assert all(b'"key_id"' not in (redis_client.get(k) or b"") for k in redis_client.keys("*"))


def test_a_revoked_key_ends_its_sessions_at_the_next_request(
    desk: Dispatcher, runtime: Runtime, redis_client: redis.Redis
) -> None:
    assert desk.get("/console/").status_code == 200
    with transaction(runtime.sessions) as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.organization_id == desk.organization.id)
            .values(revoked_at=utcnow())
        )
    response = desk.get("/console/")
    assert response.status_code == 302 and response.headers["Location"].endswith("/sign-in")
    page = desk.get("/console/sign-in").get_data(as_text=True)
    assert "was revoked" in page
    assert all(b'"key_id"' not in (redis_client.get(k) or b"") for k in redis_client.keys("*"))
    assert desk.sign_in().status_code == 401


def test_acting_as_a_user_posts_replies_in_their_name(desk: Dispatcher, runtime: Runtime) -> None:
    with transaction(runtime.sessions) as session:
        uma = factories.user(session, runtime.settings, desk.organization, "Uma Dispatch")
        c = conversation(session, runtime.settings, desk.organization, "order-2")
    page = desk.get("/console/act-as").get_data(as_text=True)
    assert "Uma Dispatch" in page
    assert desk.post("/console/act-as", {"actor": uma.id}, "/console/act-as").status_code == 303
    assert "Acting as <strong>Uma Dispatch</strong>" in desk.get("/console/").get_data(as_text=True)
    desk.post(f"/console/channels/{c.channel_id}/reply", {"text": "On my way"})
    with runtime.sessions() as session:
        author = session.execute(
            select(Message.subscriber_id).where(Message.text == "On my way")
        ).scalar_one()
    assert author == uma.id


def test_acting_as_another_organizations_user_is_refused(
    desk: Dispatcher, runtime: Runtime
) -> None:
    with transaction(runtime.sessions) as session:
        other, _ = factories.organization(session, runtime.settings, "Other")
        stranger = factories.user(session, runtime.settings, other, "Sam Stranger")
    response = desk.post("/console/act-as", {"actor": stranger.id}, "/console/act-as")
    assert response.status_code == 422
    assert "Acting as <strong>Acme Logistics</strong>" in response.get_data(as_text=True)


def test_polling_does_not_keep_an_idle_session_alive(
    desk: Dispatcher, runtime: Runtime, redis_client: redis.Redis
) -> None:
    with transaction(runtime.sessions) as session:
        c = conversation(session, runtime.settings, desk.organization, "order-3")
    (key,) = redis_client.keys(KEY_PREFIX + "*")
    redis_client.expire(key, 100)
    assert desk.get(f"/console/channels/{c.channel_id}/live").status_code == 200
    assert redis_client.ttl(key) <= 100
    desk.get("/console/")
    assert redis_client.ttl(key) > 100


def test_the_api_and_twilio_webhooks_need_no_csrf_token(desk: Dispatcher, runtime: Runtime) -> None:
    # The console's cookie is scoped to /console; a bearer request carries none and needs none.
    response = desk.client.post(
        "/v1/threads",
        json={"resource_id": "order-api", "name": "API"},
        headers={"Authorization": f"Bearer {desk.key}"},
    )
    assert response.status_code == 201
    unsigned = desk.client.post("/twilio/sms", data={"From": "+14155550100", "Body": "hi"})
    assert unsigned.status_code == 403  # refused for its signature, not for a CSRF token
