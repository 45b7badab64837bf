"""Twilio's webhooks: inbound SMS and delivery status callbacks (DESIGN 5.5).

Each view keeps one order: verify the signature, parse, call one domain function, commit, enqueue,
answer. When the database is down the verified payload is kept in Redis and answered 200; only with
Redis down too does Twilio get a 503.
"""

from __future__ import annotations

import logging

import redis
from flask import Blueprint, Response, request
from prometheus_client import Counter

from bridge.db import DATABASE_DOWN, transaction
from bridge.deliveries import record_status_callback
from bridge.inbound import record_inbound_sms
from bridge.metrics import INBOUND_SMS, STATUS_CALLBACKS
from bridge.twilio_webhooks import (
    form_params,
    is_valid_signature,
    twiml,
)
from webhooks.context import runtime
from webhooks.errors import ApiError
from workers.enqueue import SMS, STATUS, enqueue_posted, keep_payload

log = logging.getLogger(__name__)

bp = Blueprint("twilio", __name__, url_prefix="/twilio")

SIGNATURE = "X-Twilio-Signature"
SIGNATURE_SETTINGS = "X-Twilio-Webhooks-Signature-Settings"
IDEMPOTENCY_TOKEN = "I-Twilio-Idempotency-Token"


def signed_url() -> str:
    """The URL Twilio signed: PUBLIC_BASE_URL + path + raw query, never the Host a proxy rewrote."""
    query = request.query_string.decode("utf-8", "replace")
    url = runtime().settings.public_base_url + request.path
    return f"{url}?{query}" if query else url


def _verified(counter: Counter) -> list[tuple[str, str]]:
    # Every parameter received, repeated names included: Twilio adds fields without notice, and
    # an allow-list would make every new one a signature failure.
    pairs = list(request.form.items(multi=True))
    valid = is_valid_signature(
        runtime().settings,
        signed_url(),
        pairs,
        request.headers.get(SIGNATURE),
        request.headers.get(SIGNATURE_SETTINGS),
    )
    if not valid:
        counter.labels("rejected").inc()
        log.warning(
            "twilio webhook rejected: signature missing or wrong", extra={"path": request.path}
        )
        raise ApiError(403, f"the {SIGNATURE} header is missing or does not match", SIGNATURE)
    return pairs


def _xml(body: str) -> Response:
    return Response(body, status=200, mimetype="text/xml")


def _keep(kind: str, pairs: list[tuple[str, str]], counter: Counter) -> Response:
    try:
        keep_payload(
            runtime().redis,
            kind,
            signed_url(),
            pairs,
            request.headers.get(SIGNATURE, ""),
            request.headers.get(SIGNATURE_SETTINGS),
            request.headers.get(IDEMPOTENCY_TOKEN),
        )
    except redis.RedisError as exc:
        counter.labels("lost").inc()
        log.error("twilio webhook not kept: database and Redis are both down")
        raise ApiError(503, "the database and Redis are both unavailable; retry later") from exc
    counter.labels("kept").inc()
    log.warning("database unavailable: twilio webhook kept in Redis", extra={"kind": kind})
    return _xml(twiml())


@bp.post("/sms")
def inbound_sms() -> Response:
    """An SMS (or MMS) a contact sent to one of the organizations' numbers."""
    pairs = _verified(INBOUND_SMS)
    params = form_params(pairs)
    rt = runtime()
    try:
        with transaction(rt.sessions) as session:
            outcome = record_inbound_sms(
                session, rt.settings, params, request.headers.get(IDEMPOTENCY_TOKEN)
            )
    except DATABASE_DOWN:
        return _keep(SMS, pairs, INBOUND_SMS)
    for posted in outcome.posted:
        enqueue_posted(rt.redis, posted)
    INBOUND_SMS.labels(outcome.outcome).inc()
    return _xml(outcome.twiml)


@bp.post("/status")
def status_callback() -> Response:
    """Twilio's report of what became of an SMS we sent (found by `?d=` or MessageSid)."""
    pairs = _verified(STATUS_CALLBACKS)
    params = form_params(pairs)
    rt = runtime()
    try:
        with transaction(rt.sessions) as session:
            outcome = record_status_callback(session, request.args.get("d"), params)
    except DATABASE_DOWN:
        return _keep(STATUS, pairs, STATUS_CALLBACKS)
    STATUS_CALLBACKS.labels(outcome).inc()
    # 200 even for an unknown delivery: Twilio would only retry what we cannot find.
    return _xml(twiml())
