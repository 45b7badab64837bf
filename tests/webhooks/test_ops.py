"""Ops endpoints: /healthz, /readyz as stores go away and come back, /metrics and its token."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from bridge.messages import Draft, post_message
from bridge.metrics import INBOUND_SMS
from bridge.runtime import Runtime
from bridge.settings import Settings, load_settings
from bridge.threads import create_thread
from tests import factories
from tests.conftest import TEST_HASH_KEY
from tests.services import RedisServer, free_port
from webhooks import create_app

ROOT = Path(__file__).resolve().parents[2]


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if wanted else "") + r" (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_healthz_answers(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_is_ready_when_both_stores_answer(client: FlaskClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok", "redis": "ok"}
    assert response.get_json()["down"] == []


def test_readyz_turns_503_while_redis_is_stopped_and_200_when_it_is_back(
    sqlite_url: str, tmp_path: Path
) -> None:
    server = RedisServer().start()
    try:
        settings = load_settings({}, database_url=sqlite_url, redis_url=server.url)
        with Runtime(settings) as rt:
            client = create_app(runtime=rt).test_client()
            assert client.get("/readyz").status_code == 200

            server.stop()
            down = client.get("/readyz")
            assert down.status_code == 503
            assert down.get_json()["down"] == ["redis"]
            assert down.get_json()["checks"]["database"] == "ok"
            assert down.get_json()["checks"]["redis"].startswith("error")

            server.start()  # same port
            assert client.get("/readyz").status_code == 200
    finally:
        server.stop()


def test_readyz_names_the_database_when_it_does_not_answer(redis_url: str) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    with Runtime(load_settings({}, database_url=nowhere, redis_url=redis_url)) as rt:
        response = create_app(runtime=rt).test_client().get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["down"] == ["database"]
    assert response.get_json()["checks"]["redis"] == "ok"


def test_metrics_show_counters_deliveries_by_state_and_queue_depths(
    client: FlaskClient, session: Session, settings: Settings, redis_client: object
) -> None:
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    contacts = [factories.contact(session, settings, org, name=n) for n in ("Ann Ames", "Bob Burr")]
    thread, _ = create_thread(
        session, settings, actor, "order-1", subscribers=[c.id for c in contacts]
    )
    post_message(session, settings, actor, thread.id, Draft.of("Your order is on its way"))
    session.commit()
    before = (
        _sample(client.get("/metrics").text, "bridge_inbound_sms_total", outcome="matched") or 0.0
    )
    INBOUND_SMS.labels("matched").inc()

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    text = response.text
    assert _sample(text, "bridge_inbound_sms_total", outcome="matched") == before + 1
    assert _sample(text, "bridge_deliveries", state="pending") == 2
    assert _sample(text, "bridge_deliveries", state="delivered") == 0
    assert _sample(text, "bridge_queue_jobs", queue="text", state="queued") == 0
    assert _sample(text, "bridge_store_up", store="database") == 1
    assert _sample(text, "bridge_store_up", store="redis") == 1
    assert "bridge_send_latency_seconds_bucket" in text


def test_metrics_count_queued_jobs(
    client: FlaskClient, runtime: Runtime, redis_client: object
) -> None:
    from rq import Queue

    Queue("notifications", connection=runtime.redis).enqueue("workers.jobs.nothing_to_see", 1)
    text = client.get("/metrics").text
    assert _sample(text, "bridge_queue_jobs", queue="notifications", state="queued") == 1
    assert _sample(text, "bridge_queue_jobs", queue="text", state="queued") == 0


def test_metrics_say_which_store_is_down(sqlite_url: str) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    with Runtime(load_settings({}, database_url=sqlite_url, redis_url=nowhere)) as rt:
        response = create_app(runtime=rt).test_client().get("/metrics")
    assert response.status_code == 200
    assert _sample(response.text, "bridge_store_up", store="redis") == 0
    assert _sample(response.text, "bridge_store_up", store="database") == 1


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (None, 401),
        ("Bearer wrong-token", 401),
        ("Basic bWV0cmljczpzM2NyZXQtbWV0cmljcy10b2tlbg==", 401),
        ("s3cret-metrics-token", 401),
        ("Bearer s3cret-metrics-token", 200),
        ("bearer s3cret-metrics-token", 200),
    ],
)
def test_metrics_token_guards_the_endpoint(
    settings: Settings, header: str | None, status: int
) -> None:
    guarded = settings.model_copy(update={"metrics_token": "s3cret-metrics-token"})
    with Runtime(guarded) as rt:
        client = create_app(runtime=rt).test_client()
        response = client.get("/metrics", headers={"Authorization": header} if header else {})
    assert response.status_code == status
    if status == 401:
        assert response.get_json()["error"]["type"] == "authentication_error"
        assert "bridge_" not in response.text
    else:
        assert "bridge_deliveries" in response.text


def test_healthz_and_readyz_are_not_guarded_by_the_metrics_token(settings: Settings) -> None:
    guarded = settings.model_copy(update={"metrics_token": "s3cret-metrics-token"})
    with Runtime(guarded) as rt:
        client = create_app(runtime=rt).test_client()
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _post(url: str) -> int:
    request = urllib.request.Request(url, data=b"From=%2B14155550123&Body=x", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_metrics_add_up_the_counters_of_every_gunicorn_worker(
    sqlite_url: str, redis_url: str, tmp_path: Path
) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    env = {
        **os.environ,
        "DATABASE_URL": sqlite_url,
        "REDIS_URL": redis_url,
        "PHONE_HASH_KEY": TEST_HASH_KEY,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "BRIDGE_INSTANCE_DIR": str(tmp_path),
    }
    web = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "webhooks.wsgi:app",
            "--config",
            "webhooks/gunicorn_conf.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.1)

        # Unsigned webhooks are counted as rejected; send them concurrently until both workers
        # have counted some (each process writes its own counter file). On a loaded machine the
        # second worker may still be booting when the first answers: keep going for a while.
        sent = 0
        deadline = time.monotonic() + 30
        with ThreadPoolExecutor(8) as pool:
            while time.monotonic() < deadline:
                statuses = list(pool.map(lambda _: _post(base + "/twilio/sms"), range(16)))
                assert set(statuses) == {403}
                sent += len(statuses)
                if len(list(metrics_dir.glob("counter_*.db"))) >= 2:
                    break
        assert len(list(metrics_dir.glob("counter_*.db"))) >= 2, "one worker took every request"

        # Whichever worker answers the scrape, it reports the sum over both.
        for _ in range(6):
            status, text = _get(base + "/metrics")
            assert status == 200
            assert _sample(text, "bridge_inbound_sms_total", outcome="rejected") == sent
    finally:
        os.killpg(web.pid, signal.SIGTERM)
        assert web.wait(20) == 0


def test_the_database_counts_are_cached_for_a_while_per_app(
    runtime: Runtime, session: Session, settings: Settings, redis_client: object
) -> None:
    from rq import Queue

    app = create_app(runtime=runtime)
    client = app.test_client()
    org, _ = factories.organization(session, settings)
    actor = factories.org_actor(org)
    ann = factories.contact(session, settings, org, name="Ann Ames")
    thread, _ = create_thread(session, settings, actor, "order-2", subscribers=[ann.id])
    post_message(session, settings, actor, thread.id, Draft.of("First"))
    session.commit()
    assert _sample(client.get("/metrics").text, "bridge_deliveries", state="pending") == 1

    post_message(session, settings, actor, thread.id, Draft.of("Second"))
    session.commit()
    cached = client.get("/metrics").text
    # Redis is still read at every scrape; only the GROUP BYs over the database wait.
    Queue("notifications", connection=runtime.redis).enqueue("workers.jobs.nothing_to_see", 1)
    fresh_queues = client.get("/metrics").text
    app.extensions["bridge.store_counts"].ttl = 0.0
    expired = client.get("/metrics").text

    assert _sample(cached, "bridge_deliveries", state="pending") == 1
    assert _sample(fresh_queues, "bridge_queue_jobs", queue="notifications", state="queued") == 1
    assert _sample(expired, "bridge_deliveries", state="pending") == 2
    assert _sample(expired, "bridge_store_up", store="database") == 1
