"""Queue names. Conversational `text` is listened to ahead of bulk notifications.

Each worker process (`python -m workers`) runs two RQ workers: its main one on `MAIN` in order,
and one on `EVENTS` alone in a process of its own, so a POST to a slow endpoint never holds back
an SMS (DESIGN 5.8).
"""

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
# Events out (DESIGN 5.8), to the organizations' webhook endpoints: a worker of their own.
EVENTS = "events"

# The main worker's queues, in priority order: it takes from the first queue that has work.
MAIN = (INBOUND, TEXT, NOTIFICATIONS, MAINTENANCE)
# Every queue (a worker run in one process, `--burst` and the tests, takes events last).
ALL = (*MAIN, EVENTS)
