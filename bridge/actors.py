"""Who is acting: the organization itself (an API key) or one of its users."""

from __future__ import annotations

from dataclasses import dataclass

from bridge.models import SubscriberType


@dataclass(frozen=True)
class Actor:
    """The subscriber a request acts as, inside one organization."""

    organization_id: str
    subscriber_id: str
    type: SubscriberType

    @classmethod
    def organization(cls, organization_id: str) -> Actor:
        """The organization acting through its API key."""
        return cls(organization_id, organization_id, SubscriberType.API_KEY)

    @classmethod
    def user(cls, organization_id: str, user_id: str) -> Actor:
        """One of the organization's users."""
        return cls(organization_id, user_id, SubscriberType.USER)

    @classmethod
    def contact(cls, organization_id: str, contact_id: str) -> Actor:
        """An external contact (the author of an inbound SMS)."""
        return cls(organization_id, contact_id, SubscriberType.CONTACT)
