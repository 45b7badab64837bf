"""Who a REST request is (`Authorization: Bearer <key>`, `X-Subscriber-Id`), and a per-key limit.

The key is looked up by its hash and compared in constant time (`keys.sign_in`), on every request:
no process keeps a key, so a revoked one is refused at once everywhere.
`X-Subscriber-Id: usr_...` acts as one of the organization's users; any other id is a 403, also a
real user of another organization (it is not ours to act as).
"""

from __future__ import annotations

import hashlib
import logging
import re
import time

import redis
from flask import g, request

from bridge.actors import Actor
from bridge.db import transaction
from bridge.errors import NotFound
from bridge.keys import sign_in
from bridge.organizations import get_user
from webhooks.context import runtime
from webhooks.errors import ApiError

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60
_USER_ID = re.compile(r"^usr_[A-Za-z0-9]{1,60}$")


def authenticate() -> Actor:
    """The actor a request names: 401 without a valid key, 403 for a foreign subscriber, 429."""
    key = _bearer_key()
    rt = runtime()
    with transaction(rt.sessions) as session:  # commits last_used_at, when it is due
        holder = sign_in(session, key)
        if holder is None:
            raise ApiError(401, "the API key is missing, unknown or revoked")
        org_id = holder.organization_id
        actor = Actor.organization(org_id)
        subscriber_id = request.headers.get("X-Subscriber-Id")
        if subscriber_id is not None:  # present but empty is a bad id, not "no id"
            if not _USER_ID.match(subscriber_id):
                raise ApiError(403, "X-Subscriber-Id must name a user of this organization")
            try:
                get_user(session, org_id, subscriber_id)
            except NotFound:
                raise ApiError(
                    403, "X-Subscriber-Id must name a user of this organization"
                ) from None
            actor = Actor.user(org_id, subscriber_id)
    _check_rate(key)
    return actor


def acting_org() -> str:
    """The organization the authenticated request acts for (`g.actor`, set by the blueprint)."""
    actor: Actor = g.actor
    return actor.organization_id


def _bearer_key() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise ApiError(401, "send the API key as Authorization: Bearer <key>")
    return key.strip()


def _check_rate(key: str) -> None:
    """A fixed window per key in Redis; with Redis down the API stays open rather than failing."""
    rt = runtime()
    limit = rt.settings.api_rate_limit
    if limit <= 0:
        return
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    # The key's own hash would name it in Redis; a second hash keeps the stored one unguessable too.
    name = f"ratelimit:api:{hashlib.sha256(b'rate:' + key.encode()).hexdigest()[:32]}:{window}"
    try:
        pipe = rt.redis.pipeline()
        pipe.incr(name)
        pipe.expire(name, WINDOW_SECONDS * 2)
        count = int(pipe.execute()[0])
    except redis.RedisError:
        log.warning("rate limit not checked: Redis did not answer")
        return
    if count > limit:
        retry_after = max(1, int((window + 1) * WINDOW_SECONDS - now))
        raise ApiError(
            429,
            f"more than {limit} requests a minute with this API key",
            headers={"Retry-After": str(retry_after)},
        )
