"""Inbound SMS after the webhook's answer: deferred matching, and webhooks kept during an outage.

`process(inbound_id)` matches, stores and relays an SMS the webhook stored `received`
(`bridge.inbound.process_received`); `redrive_received` (every sweep) does the same for those whose
job Redis lost.

Twilio webhooks kept in Redis while the database was down, and the drain that processes them:

The web process verifies a webhook's signature, then, finding the database down, keeps the signed
payload in Redis (`workers.enqueue.keep_payload`) and answers 200 so nothing is lost. Once the
database is back, `drain_kept` (run by the sweeper, and by a job queued when something is kept)
feeds each payload to the same domain functions the webhook calls; deduplication on MessageSid
makes a repeat harmless.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis

from bridge.db import DATABASE_DOWN, transaction
from bridge.deliveries import record_status_callback
from bridge.errors import ValidationError
from bridge.inbound import process_received, received_before, record_inbound_sms
from bridge.metrics import INBOUND_SMS, STATUS_CALLBACKS
from bridge.runtime import Runtime
from bridge.twilio_webhooks import form_params, is_valid_signature
from workers import context
from workers.enqueue import KEPT, SMS, STATUS, enqueue_on_commit

log = logging.getLogger(__name__)

DEAD = "bridge:inbound:dead"  # payloads that can never be processed, kept for a person to look at


# A deferred SMS whose job has not run after this long is taken as lost (its job usually runs in
# milliseconds; a retry after a failure within 36 s).
RECEIVED_GRACE = timedelta(seconds=60)


def process(inbound_id: str) -> int:
    """The job: match, store and relay a deferred SMS (and any earlier one of its sender)."""
    return process_inbound(context.runtime(), inbound_id)


def process_inbound(runtime: Runtime, inbound_id: str) -> int:
    """Process one deferred SMS with `runtime`; how many SMS it processed."""
    with transaction(runtime.sessions) as session:
        outcomes = process_received(session, runtime.settings, inbound_id)
        for outcome in outcomes:
            for posted in outcome.posted:
                enqueue_on_commit(session, runtime.redis, posted)
    for outcome in outcomes:
        INBOUND_SMS.labels(outcome.outcome).inc()
    return len(outcomes)


def redrive_received(runtime: Runtime, now: datetime) -> int:
    """Process, here, the deferred SMS whose job was lost; how many."""
    with runtime.sessions() as session:
        lost = received_before(session, now - RECEIVED_GRACE)
    done = 0
    for inbound_id in lost:
        try:
            done += process_inbound(runtime, inbound_id)
        except DATABASE_DOWN:
            raise  # the next sweep tries them all again
        except Exception:
            # One SMS that cannot be processed must not keep the sweep from the rest.
            log.exception("inbound sms could not be processed", extra={"inbound_id": inbound_id})
    return done


def kept_count(connection: redis.Redis) -> int:
    """How many webhooks wait in Redis for the database."""
    return int(connection.llen(KEPT))


def drain_kept(runtime: Runtime) -> int:
    """Process every kept webhook, oldest first; returns how many were processed.

    A database error stops the drain with the payload still kept (and propagates, so a job retries).
    A payload that can never succeed (bad signature, not an SMS) moves to the dead list.
    """
    connection = runtime.redis
    done = 0
    while True:
        raw: Any = connection.lindex(KEPT, -1)  # bytes: the client does not decode
        if raw is None:
            return done
        try:
            payload = json.loads(raw)
            _process(runtime, payload)
        except _Unprocessable as exc:
            log.error("kept inbound webhook cannot be processed: %s", exc)
            connection.lpush(DEAD, raw)
        except (ValueError, TypeError, KeyError) as exc:
            log.error("kept inbound webhook is malformed: %s", type(exc).__name__)
            connection.lpush(DEAD, raw)
        except DATABASE_DOWN:
            raise  # still kept; the next drain takes it
        except Exception:
            # A bug, not an outage: set the payload aside so it cannot block the others, and fail.
            connection.lpush(DEAD, raw)
            connection.lrem(KEPT, -1, raw)
            raise
        # Removed only now: a drain killed above leaves it kept, and processing it again is a no-op.
        connection.lrem(KEPT, -1, raw)
        done += 1


def drain() -> int:
    """The job: drain kept webhooks with the worker process's runtime."""
    return drain_kept(context.runtime())


class _Unprocessable(Exception):
    pass


def _process(runtime: Runtime, payload: dict[str, Any]) -> None:
    settings = runtime.settings
    pairs = [(str(name), str(value)) for name, value in payload["params"]]
    url = payload["url"]
    # Checked again: Redis is not where a forged payload should get in.
    if not is_valid_signature(
        settings, url, pairs, payload["signature"], payload.get("signature_settings")
    ):
        raise _Unprocessable("signature does not verify")
    params = form_params(pairs)
    if payload["kind"] == STATUS:
        delivery_id = (parse_qs(urlsplit(url).query).get("d") or [None])[0]
        with transaction(runtime.sessions) as session:
            outcome = record_status_callback(session, delivery_id, params)
        STATUS_CALLBACKS.labels(outcome).inc()
        return
    if payload["kind"] != SMS:
        raise _Unprocessable(f"unknown kind {payload['kind']!r}")
    try:
        with transaction(runtime.sessions) as session:
            inbound = record_inbound_sms(
                session, settings, params, payload.get("idempotency_token")
            )
            for posted in inbound.posted:
                enqueue_on_commit(session, runtime.redis, posted)
    except ValidationError as exc:
        raise _Unprocessable(exc.message) from exc
    INBOUND_SMS.labels(inbound.outcome).inc()
