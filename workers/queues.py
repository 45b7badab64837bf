"""Queue names. Conversational `text` is listened to ahead of bulk notifications."""

from __future__ import annotations

from bridge.models import Lane

# Inbound SMS the webhook stored, to match, store and relay (DESIGN 5.5): first, since each
# should be in its channel within a second.
INBOUND = "inbound"
# Conversation (fan-out of `text` messages, relayed replies) and scheduled publishing, which must
# not wait behind bulk notifications.
TEXT = Lane.TEXT.value
NOTIFICATIONS = Lane.NOTIFICATIONS.value  # bulk: tracking updates and pickup reminders
MAINTENANCE = "maintenance"  # inbound drains after a database outage
# Events out (DESIGN 5.8): last, so a slow endpoint never holds back an SMS.
EVENTS = "events"

# In priority order: a worker takes from the first queue that has work.
ALL = (INBOUND, TEXT, NOTIFICATIONS, MAINTENANCE, EVENTS)
