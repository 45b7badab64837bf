"""Queue names. Conversational `text` is listened to ahead of bulk notifications."""

from __future__ import annotations

from bridge.channels import QUEUE_NOTIFICATIONS, QUEUE_TEXT

TEXT = QUEUE_TEXT  # conversation: fan-out and sends of `text` messages, relayed replies
NOTIFICATIONS = QUEUE_NOTIFICATIONS  # bulk: tracking updates and pickup reminders
MAINTENANCE = "maintenance"  # scheduled publishing, sweeps

# In priority order: a worker takes from the first queue that has work.
ALL = (TEXT, NOTIFICATIONS, MAINTENANCE)
