"""The API's responses, each defined once: the JSON of DESIGN section 4 as pydantic models.

Each model is at once the wire format, the schema the OpenAPI description is generated from, and
(through its `of` builder, or `load` where it needs a lookup) the serializer: a view builds the
model and the web layer dumps it. The models forbid extra fields and are validated as they are
built, so a response that drifts from its description fails loudly in the tests instead of quietly
in a client.

The models live in three private modules, re-exported here: `_conversations` (messages,
subscribers, threads, channels), `_records` (deliveries, inbound SMS, the organization, its
users, contacts and API keys, and the list pages) and `_events` (webhook endpoints, attempts,
events).
"""

from bridge.serialize._conversations import (
    Channel,
    Epoch,
    Message,
    Reaction,
    Response,
    Subscriber,
    Thread,
    Timestamp,
    load_message,
    load_messages,
)
from bridge.serialize._events import (
    Event,
    EventList,
    EventType,
    Subscription,
    WebhookAttempt,
    WebhookAttemptList,
    WebhookEndpoint,
    WebhookEndpointDeleted,
    WebhookEndpointList,
    WebhookEndpointWithSecret,
)
from bridge.serialize._records import (
    ApiKey,
    ApiKeyList,
    ChannelList,
    Contact,
    ContactList,
    Delivery,
    DeliveryList,
    InboundSms,
    InboundSmsList,
    MessageList,
    NewApiKey,
    Organization,
    Page,
    User,
)

__all__ = [
    "ApiKey",
    "ApiKeyList",
    "Channel",
    "ChannelList",
    "Contact",
    "ContactList",
    "Delivery",
    "DeliveryList",
    "Epoch",
    "Event",
    "EventList",
    "EventType",
    "InboundSms",
    "InboundSmsList",
    "Message",
    "MessageList",
    "NewApiKey",
    "Organization",
    "Page",
    "Reaction",
    "Response",
    "Subscriber",
    "Subscription",
    "Thread",
    "Timestamp",
    "User",
    "WebhookAttempt",
    "WebhookAttemptList",
    "WebhookEndpoint",
    "WebhookEndpointDeleted",
    "WebhookEndpointList",
    "WebhookEndpointWithSecret",
    "load_message",
    "load_messages",
]
