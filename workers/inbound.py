"""Inbound SMS after the webhook's answer: deferred matching, and webhooks kept during an outage.

`process()` matches, stores and relays the SMS the webhook stored `received`, oldest first, a batch
per transaction processed together (`bridge.inbound_processing.process_batch`: a few statements for
the batch, not a few per SMS); at most one such job waits in the queue.
`redrive_received` (every sweep) does the same for those whose job Redis lost.

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
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

from bridge.db import DATABASE_DOWN, transaction, utcnow
from bridge.deliveries import record_status_callback
from bridge.errors import ValidationError
from bridge.inbound import record_inbound_sms, waiting_sms
from bridge.inbound_processing import process_batch
from bridge.metrics import INBOUND_SMS, STATUS_CALLBACKS
from bridge.models import Lane
from bridge.runtime import Runtime
from bridge.twilio_webhooks import form_params, is_valid_signature
from workers import context, queues
from workers.enqueue import (
    KEPT,
    SMS,
    STATUS,
    enqueue_fan_out,
    enqueue_on_commit,
    enqueue_published,
    start_inbound,
    take_waiting_relays,
)
from workers.fanout import fan_out_together

log = logging.getLogger(__name__)

DEAD = "bridge:inbound:dead"  # payloads that can never be processed, kept for a person to look at


# A deferred SMS still waiting after this long is taken as lost: its job (which usually runs within
# milliseconds, and retries a failure within 36 s) went with Redis.
RECEIVED_GRACE = timedelta(seconds=60)
BATCH = 100  # SMS processed in one transaction
# How long the job sends relays before it leaves what remains to fan-out jobs.
RELAY_SECONDS = 2.0
# Another job holds the lock of a sender whose SMS this one reached: it commits within moments.
_LOCKED_PAUSE = 0.01


def process() -> int:
    """The job: process every SMS the webhook stored and left waiting, and send the relays of
    those it matched itself; how many SMS it processed."""
    runtime = context.runtime()
    start_inbound(runtime.redis)
    done = process_waiting(runtime)
    _relay(runtime, take_waiting_relays(runtime.redis))
    return done


def process_waiting(runtime: Runtime, before: datetime | None = None) -> int:
    """Match, store and relay the waiting SMS (stored before `before`), oldest first; how many.

    A batch of them in one transaction; should the batch fail, each SMS in one of its own, so one
    that cannot be processed (logged, left for the sweeper) does not hold back the others.
    """
    done = 0
    failed: list[str] = []
    while True:
        with runtime.sessions() as session:
            batch = waiting_sms(session, BATCH, failed, before)
        if not batch:
            return done
        try:
            processed, held = _process_batch(runtime, batch)
        except DATABASE_DOWN:
            raise  # the job's retry (or the sweeper) comes back to all of them
        except Exception:
            log.warning("inbound batch failed; processing its SMS one by one")
            processed, held = 0, 0
            for inbound_id in batch:
                try:
                    processed += _process_batch(runtime, [inbound_id])[0]
                except DATABASE_DOWN:
                    raise
                except Exception:
                    log.exception(
                        "inbound sms could not be processed", extra={"inbound_id": inbound_id}
                    )
                    failed.append(inbound_id)
        done += processed
        if held and not processed:
            time.sleep(_LOCKED_PAUSE)
        elif not processed:
            failed += batch  # none could be processed nor is held: never loop on them


def _process_batch(runtime: Runtime, batch: list[str]) -> tuple[int, int]:
    # (SMS processed, SMS held by another job's sender lock)
    with transaction(runtime.sessions) as session:
        outcomes, held = process_batch(session, runtime.settings, batch)
    for outcome in outcomes:
        INBOUND_SMS.labels(outcome.outcome).inc()
    relays = []
    for result in (p.published for o in outcomes for p in o.posted if p.published is not None):
        if result.lane != Lane.TEXT:
            enqueue_published(runtime.redis, result)
        elif result.pending:
            relays.append(result.message_id)
    _relay(runtime, relays)
    return len(outcomes), held


def _relay(runtime: Runtime, text: list[str]) -> None:
    """Send these text messages' relays together, in this job; queue what must wait."""
    if not text:
        return
    if len(text) > runtime.settings.send_rate_per_sender:
        # More than a second of a sender's sends: paced by fan-out jobs, not by this one, which
        # must be free for the next SMS that arrive.
        for message_id in text:
            enqueue_fan_out(runtime.redis, message_id, queues.TEXT)
        text = []
    try:
        left = fan_out_together(runtime, text, RELAY_SECONDS)
    except Exception:
        # Their deliveries are in the database: the fan-out jobs (or the sweeper) send them.
        log.exception("relaying in the inbound job failed; queueing the fan-outs")
        left = {message_id: utcnow() for message_id in text}
    now = utcnow()
    for message_id, when in left.items():
        enqueue_fan_out(runtime.redis, message_id, queues.TEXT, at=None if when <= now else when)


def redrive_received(runtime: Runtime, now: datetime) -> int:
    """Process, here, the deferred SMS whose job was lost (waiting past the grace); how many."""
    return process_waiting(runtime, before=now - RECEIVED_GRACE)


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
