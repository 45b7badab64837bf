"""Ops endpoints (liveness, readiness, metrics), and the request id and access line of each request.

`/metrics` adds up the counters of every process that writes to `PROMETHEUS_MULTIPROC_DIR`
(gunicorn's workers, and the RQ worker when it shares the folder), and computes what describes the
stores: deliveries by state and inbound SMS by status from the database (counted at most every
STORE_COUNTS_TTL seconds per process), queue depths from Redis (at each scrape).
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text

from bridge import logs
from bridge.models import Delivery, DeliveryStatus, InboundSms, InboundStatus
from bridge.runtime import Runtime
from webhooks.context import runtime
from webhooks.errors import error_response
from workers.enqueue import queue_depths

bp = Blueprint("ops", __name__)
log = logging.getLogger(__name__)
access_log = logging.getLogger("webhooks.access")

# The database counts are GROUP BYs over every delivery and inbound SMS: a scrape every few seconds
# from each Prometheus (and from each gunicorn worker it lands on) must not run them each time.
STORE_COUNTS_TTL = 20.0
_STORE_COUNTS = "bridge.store_counts"

# Heroku's router sends X-Request-ID; accept it (or a client's) when it looks like an id.
_REQUEST_ID = re.compile(r"\A[A-Za-z0-9_.:\-]{8,200}\Z")


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    """The process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    """200 when the database and Redis both answer; 503 naming the ones that do not."""
    checks = {"database": _check_database(runtime()), "redis": _check_redis(runtime())}
    down = [name for name, result in checks.items() if result != "ok"]
    body = {"status": "unavailable" if down else "ok", "down": down, "checks": checks}
    return jsonify(body), 503 if down else 200


def _check_database(rt: Runtime) -> str:
    try:
        with rt.engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as exc:  # any failure means "not ready"; the type is enough to say why
        log.warning("readiness: database does not answer", extra={"error": type(exc).__name__})
        return f"error: {type(exc).__name__}"
    return "ok"


def _check_redis(rt: Runtime) -> str:
    try:
        rt.redis.ping()
    except Exception as exc:
        log.warning("readiness: redis does not answer", extra={"error": type(exc).__name__})
        return f"error: {type(exc).__name__}"
    return "ok"


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    """Prometheus text: the processes' counters and the stores' state (METRICS_TOKEN guards it)."""
    token = runtime().settings.metrics_token
    if token and not _bearer_matches(request.headers.get("Authorization", ""), token):
        response = error_response(401, "a valid metrics token is required")
        response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    stores = CollectorRegistry(auto_describe=False)
    stores.register(StoreCollector(runtime(), current_app.extensions[_STORE_COUNTS]))
    body = generate_latest(process_registry()) + generate_latest(stores)
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def _bearer_matches(header: str, token: str) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )


def process_registry() -> CollectorRegistry:
    """The counters of this process, or of every process sharing PROMETHEUS_MULTIPROC_DIR."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


Counts = tuple[dict[str, int], dict[str, int]]


class StoreCounts:
    """The database's counts (deliveries by state, inbound SMS by status), kept `ttl` seconds."""

    def __init__(self, ttl: float = STORE_COUNTS_TTL) -> None:
        self.ttl = ttl
        self._read_at = -float("inf")
        self._counts: Counts | None = None  # None: the database did not answer the last read

    def get(self, rt: Runtime) -> Counts | None:
        """The counts, read again when older than `ttl`; None when the database is down."""
        now = time.monotonic()
        if now - self._read_at >= self.ttl:
            # A failed read is kept too: a database that is down is not asked at every scrape.
            self._counts = self._read(rt)
            self._read_at = now
        return self._counts

    @staticmethod
    def _read(rt: Runtime) -> Counts | None:
        try:
            with rt.sessions() as session:
                deliveries = session.execute(
                    select(Delivery.status, func.count()).group_by(Delivery.status)
                ).all()
                inbound = session.execute(
                    select(InboundSms.status, func.count()).group_by(InboundSms.status)
                ).all()
        except Exception as exc:
            log.warning("metrics: database does not answer", extra={"error": type(exc).__name__})
            return None
        return dict(deliveries), dict(inbound)


class StoreCollector(Collector):
    """Gauges of the database (cached counts) and Redis; a store that is down reads `up 0`."""

    def __init__(self, rt: Runtime, counts: StoreCounts) -> None:
        self.rt = rt
        self.counts = counts

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "bridge_store_up", "Whether the store answered this scrape.", labels=["store"]
        )
        counts = self.counts.get(self.rt)
        if counts is not None:
            yield from self._database(*counts)
        up.add_metric(["database"], 0 if counts is None else 1)
        try:
            yield from self._queues()
            up.add_metric(["redis"], 1)
        except Exception as exc:
            log.warning("metrics: redis does not answer", extra={"error": type(exc).__name__})
            up.add_metric(["redis"], 0)
        yield up

    def _database(
        self, deliveries: dict[str, int], inbound: dict[str, int]
    ) -> list[GaugeMetricFamily]:
        by_state = GaugeMetricFamily(
            "bridge_deliveries", "Deliveries by state, counted in the database.", labels=["state"]
        )
        for state in DeliveryStatus:
            by_state.add_metric([state.value], deliveries.get(state.value, 0))
        by_status = GaugeMetricFamily(
            "bridge_inbound_sms",
            "Inbound SMS records by status, counted in the database.",
            labels=["status"],
        )
        for status in InboundStatus:
            by_status.add_metric([status.value], inbound.get(status.value, 0))
        return [by_state, by_status]

    def _queues(self) -> list[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "bridge_queue_jobs",
            "RQ jobs per queue and state, read from Redis.",
            labels=["queue", "state"],
        )
        for name, states in queue_depths(self.rt.redis).items():
            for state, count in states.items():
                depth.add_metric([name, state], count)
        return [depth]


def init_app(app: Flask) -> None:
    """Give each request an id (in its log lines and X-Request-ID header) and an access line.

    Also gives the app its cache of the database counts `/metrics` shows.
    """
    app.extensions[_STORE_COUNTS] = StoreCounts()

    @app.before_request
    def _start() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        g.request_started = time.perf_counter()
        g.log_token = logs.bind(request_id=g.request_id)

    @app.after_request
    def _finish(response: Response) -> Response:
        request_id = g.get("request_id")
        if request_id:
            response.headers["X-Request-ID"] = request_id
            # The path only: query strings carry phone numbers (`?phone=`).
            access_log.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - g.request_started) * 1000, 1),
                },
            )
        return response

    @app.teardown_request
    def _forget(_exc: BaseException | None) -> None:
        token = g.pop("log_token", None)
        if token is not None:
            logs.unbind(token)
