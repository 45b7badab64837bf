"""Keywords in an inbound SMS (DESIGN 5.5 step 4): STOP, START and HELP, and what they do.

Opt-out state changes at once, and each keyword leaves a `meta` message in the contact's channels
(published, so it is seen there, but never sent by SMS).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy.orm import Session

from bridge.actors import Actor
from bridge.channels import last_publisher_thread
from bridge.db import utcnow
from bridge.events import record_message
from bridge.models import Channel, Contact, Message, MessageType, Organization
from bridge.organizations import help_text_for, opt_in, opt_out
from bridge.phones import mask_phone
from bridge.publishing import publish_message
from bridge.settings import Settings
from bridge.twilio_webhooks import twiml

# DESIGN 5.5 step 4: the whole body, trimmed, in any case. These are also the words Twilio's own
# opt-out handling reacts to on long codes, so our state follows what the carrier side does.
STOP_WORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"}
)
START_WORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS = frozenset({"HELP", "INFO"})


def detect_keyword(body: str | None) -> tuple[str, str] | None:
    """The keyword a body is, as (kind, word) with kind `stop`, `start` or `help`; else None."""
    word = (body or "").strip().upper()
    if word in STOP_WORDS:
        return "stop", word
    if word in START_WORDS:
        return "start", word
    if word in HELP_WORDS:
        return "help", word
    return None


_KEYWORD_EVENTS = {
    "stop": ("contact.opted_out", "{name} replied {word}: no more SMS from {org}"),
    "start": ("contact.opted_in", "{name} replied {word}: SMS from {org} resumed"),
    "help": ("contact.help_requested", "{name} asked for help ({word})"),
}


def act_on_keyword(
    session: Session,
    settings: Settings,
    org: Organization,
    digest: str,
    contact: Contact | None,
    channels: Sequence[Channel],
    keyword: tuple[str, str],
) -> str:
    """Act on a keyword from this phone (by hash) to the organization, and leave a meta message in
    each of the contact's channels (if it is a contact); the TwiML to answer with."""
    kind, word = keyword
    # Opt-out state belongs to the phone (by hash) and the organization, so a STOP from a number
    # that is not a contact yet still holds when it becomes one.
    if kind == "stop":
        opt_out(session, org.id, digest)
    elif kind == "start":
        opt_in(session, org.id, digest)
    if contact is not None:
        event, template = _KEYWORD_EVENTS[kind]
        name = contact.name or mask_phone(contact.phone)
        text = template.format(name=name, word=word, org=org.name)
        now = utcnow()
        for channel in channels:
            _meta_in_channel(session, settings, contact, channel, event, text, now)
    # STOP/START: Twilio itself confirms on long codes; a second reply would only be noise.
    return twiml(help_text_for(org)) if kind == "help" else twiml()


def _meta_in_channel(
    session: Session,
    settings: Settings,
    contact: Contact,
    channel: Channel,
    event: str,
    text: str,
    now: datetime,
) -> Message:
    # Published at once (visible in the channel), but a meta message never goes by SMS.
    thread = last_publisher_thread(session, channel.organization_id, channel.id)
    message = Message.new(
        Actor.contact(channel.organization_id, contact.id),
        text,
        now,
        thread_id=thread.id if thread else None,
        channel_id=channel.id,
        type=MessageType.META,
        event=event,
    )
    session.add(message)
    if thread is not None:
        thread.updated_at = now
    publish_message(session, settings, message, now)
    record_message(session, "message.created", message)
    return message
