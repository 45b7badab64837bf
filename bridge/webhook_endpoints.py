"""Webhook endpoints: where an organization's events go, their secrets and their health (5.8).

A secret is `whsec_` + base64 of 24 random bytes; it is shown when the endpoint is created and
when it is rotated, and after a rotation the old one keeps signing for 24 hours. An endpoint whose
attempts have all failed for 5 days is disabled with a reason until it is enabled again.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from bridge.db import get_owned, utcnow
from bridge.errors import Conflict, ValidationError
from bridge.events import EVENT_TYPES
from bridge.events_sender import check_registration
from bridge.ids import new_id
from bridge.models import EventDelivery, EventDeliveryStatus, WebhookAttempt, WebhookEndpoint
from bridge.pages import page
from bridge.settings import Settings

MAX_ENDPOINTS = 10
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
ROTATION_OVERLAP = timedelta(hours=24)
DISABLE_AFTER = timedelta(days=5)
DISABLED_REASON = "every attempt failed for 5 days"
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
ALL_EVENTS = "*"
OPEN = (EventDeliveryStatus.PENDING, EventDeliveryStatus.SENDING)


def new_secret() -> str:
    """A fresh signing secret: `whsec_` + base64 of 24 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The secrets that sign an event now: the current one, and the previous one for 24 hours."""
    found = [endpoint.secret]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret and expires is not None and now < expires:
        found.append(endpoint.previous_secret)
    return found


def subscribes_to(endpoint: WebhookEndpoint, event_type: str) -> bool:
    """Whether the endpoint asked for events of this type."""
    return ALL_EVENTS in endpoint.events or event_type in endpoint.events


def check_url(url: str, settings: Settings) -> str:
    """The URL if events may go to it: https (http to loopback outside production), safe address."""
    url = url.strip()
    if not url or len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"url must be 1 to {MAX_URL_LENGTH} characters", "url")
    if any(c.isspace() for c in url):
        raise ValidationError("url must not contain spaces", "url")
    check_registration(url, settings.is_production)
    return url


def check_events(events: Sequence[str]) -> list[str]:
    """The event types, each known (or `*` alone), without repeats."""
    if not events:
        raise ValidationError("events must name at least one event type, or '*'", "events")
    chosen = list(dict.fromkeys(events))
    for i, name in enumerate(chosen):
        if name != ALL_EVENTS and name not in EVENT_TYPES:
            known = ", ".join(EVENT_TYPES)
            raise ValidationError(f"events[{i}] must be '*' or one of {known}", f"events[{i}]")
    if ALL_EVENTS in chosen and len(chosen) > 1:
        raise ValidationError("events: '*' already names every type; give it alone", "events")
    return chosen


def create_endpoint(
    session: Session,
    settings: Settings,
    organization_id: str,
    url: str,
    events: Sequence[str],
    description: str | None = None,
    enabled: bool = True,
) -> WebhookEndpoint:
    """Register an endpoint (at most 10 per organization) with a fresh secret."""
    url = check_url(url, settings)
    chosen = check_events(events)
    count = session.execute(
        select(func.count())
        .select_from(WebhookEndpoint)
        .where(WebhookEndpoint.organization_id == organization_id)
    ).scalar_one()
    if count >= MAX_ENDPOINTS:
        raise Conflict(f"an organization has at most {MAX_ENDPOINTS} webhook endpoints")
    endpoint = WebhookEndpoint(
        id=new_id("we"),
        organization_id=organization_id,
        url=url,
        events=chosen,
        description=description,
        enabled=enabled,
        secret=new_secret(),
    )
    session.add(endpoint)
    session.flush()
    return endpoint


def get_endpoint(
    session: Session, organization_id: str, endpoint_id: str, for_update: bool = False
) -> WebhookEndpoint:
    """The organization's endpoint, or NotFound (also for another organization's)."""
    return get_owned(session, WebhookEndpoint, organization_id, endpoint_id, for_update=for_update)


def list_endpoints(
    session: Session, organization_id: str, limit: int, before: str | None
) -> tuple[list[WebhookEndpoint], bool]:
    """The organization's endpoints, newest first."""
    scope = [WebhookEndpoint.organization_id == organization_id]
    return page(session, WebhookEndpoint, scope, limit, before, "a webhook endpoint")


def update_endpoint(
    session: Session,
    settings: Settings,
    organization_id: str,
    endpoint_id: str,
    changes: dict[str, Any],
) -> WebhookEndpoint:
    """Change url, events, description or enabled; enabling clears the reason and the failures."""
    endpoint = get_endpoint(session, organization_id, endpoint_id, for_update=True)
    for name in ("url", "events", "enabled"):
        if name in changes and changes[name] is None:
            raise ValidationError(f"{name} may not be null", name)
    if "url" in changes:
        endpoint.url = check_url(changes["url"], settings)
    if "events" in changes:
        endpoint.events = check_events(changes["events"])
    if "description" in changes:
        endpoint.description = changes["description"]
    if "enabled" in changes:
        if changes["enabled"] and not endpoint.enabled:
            endpoint.enabled = True
            endpoint.disabled_reason = None
            endpoint.failing_since = None
        elif not changes["enabled"] and endpoint.enabled:
            disable(session, endpoint, None)
    endpoint.updated_at = utcnow()
    session.flush()
    return endpoint


def delete_endpoint(session: Session, organization_id: str, endpoint_id: str) -> WebhookEndpoint:
    """Remove the endpoint with its deliveries and attempts."""
    endpoint = get_endpoint(session, organization_id, endpoint_id, for_update=True)
    session.query(WebhookAttempt).filter(WebhookAttempt.endpoint_id == endpoint.id).delete()
    session.query(EventDelivery).filter(EventDelivery.endpoint_id == endpoint.id).delete()
    session.delete(endpoint)
    session.flush()
    return endpoint


def rotate_secret(
    session: Session, organization_id: str, endpoint_id: str, now: datetime | None = None
) -> tuple[WebhookEndpoint, str]:
    """Give the endpoint a new secret; the old one keeps signing for 24 hours."""
    now = now or utcnow()
    endpoint = get_endpoint(session, organization_id, endpoint_id, for_update=True)
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
    endpoint.secret = new_secret()
    endpoint.updated_at = now
    session.flush()
    return endpoint, endpoint.secret


def disable(session: Session, endpoint: WebhookEndpoint, reason: str | None) -> None:
    """Disable the endpoint and cancel what it still had to receive."""
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.updated_at = utcnow()
    session.execute(
        update(EventDelivery)
        .where(EventDelivery.endpoint_id == endpoint.id, EventDelivery.status.in_(OPEN))
        .values(status=EventDeliveryStatus.CANCELED, updated_at=utcnow())
    )


def note_outcome(
    session: Session, endpoint: WebhookEndpoint, succeeded: bool, now: datetime
) -> bool:
    """Track the endpoint's failures; disable it after 5 days of nothing but. True if disabled."""
    if succeeded:
        endpoint.failing_since = None
        return False
    if endpoint.failing_since is None:
        endpoint.failing_since = now
        return False
    if endpoint.enabled and now - endpoint.failing_since >= DISABLE_AFTER:
        disable(session, endpoint, DISABLED_REASON)
        return True
    return False


def list_attempts(
    session: Session, organization_id: str, endpoint_id: str, limit: int, before: str | None
) -> tuple[list[WebhookAttempt], bool]:
    """The endpoint's attempts, newest first."""
    get_endpoint(session, organization_id, endpoint_id)
    scope = [WebhookAttempt.endpoint_id == endpoint_id]
    return page(session, WebhookAttempt, scope, limit, before, "an attempt")
