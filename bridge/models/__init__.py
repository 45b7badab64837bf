"""The bridge's tables: the seed's models made real, plus deliveries, inbound SMS, opt-outs
and events.

Ids are opaque prefixed strings (DESIGN section 3). Messages, inbound SMS and the events' rows also
carry an integer `seq`, their primary key, which orders them and backs cursor pagination.

One module a concept: `organizations` (who sends and who is reached), `conversations` (threads,
channels, messages), `sms` (deliveries out, SMS in), `events` (events out to the organization's
application), and `base` for what they share. Everything is importable from `bridge.models`.
"""

from bridge.models.base import BigId, Sequenced, Timestamped, partial_index, stored_as_text
from bridge.models.conversations import (
    Channel,
    ChannelPhoneHash,
    ChannelPublisher,
    ChannelSubscriber,
    Message,
    MessageType,
    SubscriberType,
    Thread,
    ThreadSubscriber,
)
from bridge.models.events import (
    Event,
    EventDelivery,
    EventDeliveryStatus,
    WebhookAttempt,
    WebhookEndpoint,
)
from bridge.models.organizations import ApiKey, Contact, OptOut, Organization, SenderNumber, User
from bridge.models.sms import (
    OPEN_STATUSES_SQL,
    Delivery,
    DeliveryStatus,
    InboundSms,
    InboundStatus,
    Lane,
)

__all__ = [
    "OPEN_STATUSES_SQL",
    "ApiKey",
    "BigId",
    "Channel",
    "ChannelPhoneHash",
    "ChannelPublisher",
    "ChannelSubscriber",
    "Contact",
    "Delivery",
    "DeliveryStatus",
    "Event",
    "EventDelivery",
    "EventDeliveryStatus",
    "InboundSms",
    "InboundStatus",
    "Lane",
    "Message",
    "MessageType",
    "OptOut",
    "Organization",
    "SenderNumber",
    "Sequenced",
    "SubscriberType",
    "Thread",
    "ThreadSubscriber",
    "Timestamped",
    "User",
    "WebhookAttempt",
    "WebhookEndpoint",
    "partial_index",
    "stored_as_text",
]
