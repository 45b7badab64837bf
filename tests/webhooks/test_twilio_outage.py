"""With the database down a signed webhook is kept in Redis (200); with Redis down too, 503.

Kept payloads are processed once by `workers.inbound.drain_kept` when the database is back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import redis
from flask.testing import FlaskClient
from rq import Queue
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from bridge.db import make_engine, transaction
from bridge.migrate import upgrade
from bridge.models import Contact, Delivery, DeliveryStatus, InboundSms, Message
from bridge.runtime import Runtime
from bridge.settings import Settings, load_settings
from tests import factories
from tests.conftest import TEST_HASH_KEY
from tests.fixtures.twilio import payloads
from tests.services import OwnPostgres, free_port
from webhooks import create_app
from workers import context
from workers.inbound import DEAD, KEPT, drain_kept
from workers.worker import Worker

AUTH_TOKEN = "test-auth-token-outage-31c4"
BASE = factories.BASE_URL
EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response />'
GONE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:{port}/gone"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with Twilio credentials."""
    return factories.with_twilio(settings, AUTH_TOKEN)


@dataclass(frozen=True)
class World:
    """Jane and Omar in one channel; Jane's delivery has a Twilio SID."""

    jane: Contact
    to: str
    delivery_id: str


def make_world(runtime: Runtime, settings: Settings) -> World:
    """Jane and Omar in one channel; Jane's delivery has a Twilio SID."""
    made = factories.conversation(runtime, settings, "order-7", ("Jane", "Omar"))
    with transaction(runtime.sessions) as session:
        first = session.execute(
            select(Delivery).where(Delivery.subscriber_id == made.jane.id)
        ).scalar_one()
        first.twilio_sid, first.status = "SM" + "4" * 32, DeliveryStatus.SENDING
    return World(made.jane, made.to, first.id)


@pytest.fixture
def app_on(settings: Settings) -> Iterator[Callable[..., FlaskClient]]:
    """Build a client of an app whose settings differ (a database or Redis that is gone)."""
    made: list[Runtime] = []

    def build(**changes: str) -> FlaskClient:
        made.append(Runtime(settings.model_copy(update=changes)))
        return create_app(runtime=made[-1]).test_client()

    yield build
    for runtime in made:
        runtime.close()


def post(client: FlaskClient, path: str, payload: dict[str, str]) -> TestResponse:
    return factories.post_signed(client, AUTH_TOKEN, path, payload)


def counts(runtime: Runtime) -> tuple[int, int]:
    with runtime.sessions() as session:
        inbound = session.scalar(select(func.count()).select_from(InboundSms))
        replies = session.scalar(
            select(func.count()).select_from(Message).where(Message.author_type == "contact")
        )
    return int(inbound or 0), int(replies or 0)


def test_database_down_keeps_webhooks_and_the_drain_processes_them_once(
    runtime: Runtime,
    settings: Settings,
    redis_client: redis.Redis,
    app_on: Callable[..., FlaskClient],
) -> None:
    world = make_world(runtime, settings)
    down = app_on(database_url=GONE_DATABASE.format(port=free_port()))
    sms = payloads.inbound(world.jane.phone, world.to, "Running late")
    status = payloads.load("status_delivered", MessageSid="SM" + "4" * 32, SmsSid="SM" + "4" * 32)

    answers = [post(down, "/twilio/sms", sms), post(down, "/twilio/sms", sms)]  # and Twilio's retry
    answers.append(post(down, f"/twilio/status?d={world.delivery_id}", status))

    assert [(a.status_code, a.get_data(as_text=True)) for a in answers] == [(200, EMPTY)] * 3
    assert redis_client.llen(KEPT) == 3
    drains = Queue("maintenance", connection=redis_client).jobs
    assert [j.func_name for j in drains] == ["workers.inbound.drain"]
    assert counts(runtime) == (0, 0)

    assert drain_kept(runtime) == 3

    assert counts(runtime) == (1, 1)
    with runtime.sessions() as session:
        inbound = session.execute(select(InboundSms)).scalar_one()
        delivery = session.get(Delivery, world.delivery_id)
    assert (inbound.status, inbound.message_sid) == ("matched", sms["MessageSid"])
    assert delivery is not None and delivery.status == "delivered"
    fan_out = Queue("text", connection=redis_client).jobs
    assert [(j.func_name, j.args) for j in fan_out] == [
        ("workers.jobs.fan_out", (inbound.message_id,))
    ]
    assert redis_client.llen(KEPT) == 0
    assert drain_kept(runtime) == 0
    assert counts(runtime) == (1, 1)


def test_the_drain_job_queued_when_keeping_runs_in_a_real_worker(
    runtime: Runtime,
    settings: Settings,
    redis_client: redis.Redis,
    app_on: Callable[..., FlaskClient],
) -> None:
    world = make_world(runtime, settings)
    down = app_on(database_url=GONE_DATABASE.format(port=free_port()))
    assert (
        post(down, "/twilio/sms", payloads.inbound(world.jane.phone, world.to, "hi")).status_code
        == 200
    )

    context.install(runtime)
    try:
        worker = Worker([Queue("maintenance", connection=redis_client)], connection=redis_client)
        worker.work(burst=True, logging_level="WARNING")
    finally:
        context.uninstall()

    assert counts(runtime) == (1, 1)
    assert redis_client.llen(KEPT) == 0


def test_a_forged_kept_payload_is_set_aside_not_processed(
    runtime: Runtime, settings: Settings, redis_client: redis.Redis
) -> None:
    world = make_world(runtime, settings)
    forged = payloads.inbound(world.jane.phone, world.to, "STOP")
    redis_client.lpush(
        KEPT,
        json.dumps(
            {
                "kind": "sms",
                "url": BASE + "/twilio/sms",
                "params": list(forged.items()),
                "signature": "AAAA",
            }
        ),
    )
    redis_client.lpush(KEPT, "not json")

    assert drain_kept(runtime) == 2

    assert counts(runtime) == (0, 0)
    assert redis_client.llen(DEAD) == 2 and redis_client.llen(KEPT) == 0


def test_database_and_redis_down_is_503(
    runtime: Runtime,
    settings: Settings,
    redis_client: redis.Redis,
    app_on: Callable[..., FlaskClient],
) -> None:
    world = make_world(runtime, settings)
    both_down = app_on(
        database_url=GONE_DATABASE.format(port=free_port()),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )

    answer = post(both_down, "/twilio/sms", payloads.inbound(world.jane.phone, world.to, "hi"))

    assert answer.status_code == 503
    assert answer.get_json()["error"]["type"] == "service_unavailable"
    assert counts(runtime) == (0, 0)


def test_redis_down_alone_still_stores_and_answers(
    runtime: Runtime,
    settings: Settings,
    redis_client: redis.Redis,
    app_on: Callable[..., FlaskClient],
) -> None:
    world = make_world(runtime, settings)
    no_redis = app_on(redis_url=f"redis://127.0.0.1:{free_port()}/0")

    answer = post(no_redis, "/twilio/sms", payloads.inbound(world.jane.phone, world.to, "hi"))

    # The relay is in the database as pending deliveries; the sweeper enqueues them later.
    assert (answer.status_code, answer.get_data(as_text=True)) == (200, EMPTY)
    assert counts(runtime) == (1, 1)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    server.init()
    yield server
    server.remove()


@pytest.mark.slow
def test_postgres_stopped_and_started_again(
    own_postgres: OwnPostgres, redis_url: str, redis_client: redis.Redis
) -> None:
    engine = make_engine(own_postgres.url)
    upgrade(engine)
    engine.dispose()
    settings = load_settings(
        {},
        database_url=own_postgres.url,
        redis_url=redis_url,
        twilio_auth_token=AUTH_TOKEN,
        public_base_url=BASE,
        phone_hash_key=TEST_HASH_KEY,
    )
    with Runtime(settings) as runtime:
        world = make_world(runtime, settings)
        client = create_app(runtime=runtime).test_client()
        assert (
            post(
                client, "/twilio/sms", payloads.inbound(world.jane.phone, world.to, "1")
            ).status_code
            == 200
        )

        own_postgres.stop()
        kept = post(client, "/twilio/sms", payloads.inbound(world.jane.phone, world.to, "2"))
        assert (kept.status_code, kept.get_data(as_text=True)) == (200, EMPTY)
        assert redis_client.llen(KEPT) == 1

        own_postgres.start()
        assert drain_kept(runtime) == 1
        assert drain_kept(runtime) == 0

        assert counts(runtime) == (2, 2)
        with runtime.sessions() as session:
            bodies = (
                session.execute(select(InboundSms.body).order_by(InboundSms.seq)).scalars().all()
            )
        assert bodies == ["1", "2"]
