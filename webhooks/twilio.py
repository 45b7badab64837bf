"""Twilio's webhooks: inbound SMS and delivery status callbacks (DESIGN 5.5).

Each view keeps one order: verify the signature, parse, call one domain function, commit, enqueue,
answer. An inbound reply is only stored before the answer; a worker matches, stores and relays it
(`workers.inbound.process`); keywords and SMS that match nothing are done at once. When the
database is down the verified payload is kept in Redis and answered 200; only with Redis down too
does Twilio get a 503.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import redis
from flask import Blueprint, Response, abort, request
from prometheus_client import Counter
from sqlalchemy.orm import Session

from bridge.db import DATABASE_DOWN, transaction
from bridge.deliveries import record_status_callback
from bridge.inbound import record_inbound_sms
from bridge.inbound_processing import process_received
from bridge.messages import Posted
from bridge.metrics import INBOUND_SMS, STATUS_CALLBACKS
from bridge.models import InboundStatus
from bridge.twilio_webhooks import (
    form_params,
    is_valid_signature,
    twiml,
)
from webhooks.context import runtime
from webhooks.errors import ApiError
from workers.enqueue import (
    SMS,
    STATUS,
    enqueue_inbound,
    enqueue_posted,
    enqueue_relays,
    keep_payload,
)

log = logging.getLogger(__name__)

bp = Blueprint("twilio", __name__, url_prefix="/twilio")

_Outcome = TypeVar("_Outcome")

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


def _recorded(
    kind: str, counter: Counter, record: Callable[[Session, dict[str, str | list[str]]], _Outcome]
) -> _Outcome:
    """Verify the request, then `record` its parameters in one transaction.

    With the database down the verified request is kept in Redis and answered at once (the
    `abort` carries that answer), so the caller only goes on with what was recorded.
    """
    pairs = _verified(counter)
    try:
        with transaction(runtime().sessions) as session:
            return record(session, form_params(pairs))
    except DATABASE_DOWN:
        abort(_keep(kind, pairs, counter))


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
    rt = runtime()
    token = request.headers.get(IDEMPOTENCY_TOKEN)
    outcome = _recorded(
        SMS,
        INBOUND_SMS,
        lambda session, params: record_inbound_sms(session, rt.settings, params, token, defer=True),
    )
    if outcome.pending and not enqueue_inbound(rt.redis):
        # No worker will hear of it while Redis is down: match it here rather than leave it to
        # the sweeper's next look. Stored already, so a failure here still answers 200.
        for each in _process_here(outcome.inbound.id):
            enqueue_posted(rt.redis, each)
    elif outcome.status == InboundStatus.MATCHED:
        # Matched here because the workers are behind: the inbound job sends its relays.
        enqueue_relays(rt.redis, outcome.posted)
    else:
        for each in outcome.posted:
            enqueue_posted(rt.redis, each)
    if not outcome.pending:  # a deferred SMS is counted by whoever decides what it is
        INBOUND_SMS.labels(outcome.outcome).inc()
    return _xml(outcome.twiml)


def _process_here(inbound_id: str) -> list[Posted]:
    rt = runtime()
    try:
        with transaction(rt.sessions) as session:
            outcomes = process_received(session, rt.settings, inbound_id)
    except DATABASE_DOWN:
        log.warning("inbound sms left for the sweeper", extra={"inbound_id": inbound_id})
        return []
    for outcome in outcomes:
        INBOUND_SMS.labels(outcome.outcome).inc()
    return [posted for outcome in outcomes for posted in outcome.posted]


@bp.post("/status")
def status_callback() -> Response:
    """Twilio's report of what became of an SMS we sent (found by `?d=` or MessageSid)."""
    delivery_id = request.args.get("d")
    outcome = _recorded(
        STATUS,
        STATUS_CALLBACKS,
        lambda session, params: record_status_callback(session, delivery_id, params),
    )
    STATUS_CALLBACKS.labels(outcome).inc()
    # 200 even for an unknown delivery: Twilio would only retry what we cannot find.
    return _xml(twiml())
