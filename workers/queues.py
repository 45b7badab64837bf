"""Queue names. Conversational `text` is listened to ahead of bulk notifications.

Each worker process (`python -m workers`) runs two RQ workers: its main one on `MAIN` in order,
and one on `EVENTS` alone in a process of its own, so a POST to a slow endpoint never holds back
an SMS (DESIGN 5.8).
"""

from __future__ import annotations

from bridge.models import Lane


def for_lane(lane: Lane) -> str:
    """The queue of the fan-outs of a delivery lane: each lane has one, named after it."""
    return str(lane.value)


# Conversation (fan-out of `text` messages, relayed replies) and scheduled publishing, which must
# not wait behind bulk notifications.
TEXT = for_lane(Lane.TEXT)
# Inbound SMS the webhook stored, to match, store and relay (DESIGN 5.5). Behind `text`: first, a
# steady stream of SMS kept the relays of those the webhook matched itself waiting for good (its
# fan-out jobs absorb one another, so `text` empties fast); the webhook matches its SMS itself
# once one has waited half a second, so the wait for a channel stays bounded either way.
INBOUND = "inbound"
NOTIFICATIONS = for_lane(Lane.NOTIFICATIONS)  # bulk: tracking updates and pickup reminders
MAINTENANCE = "maintenance"  # inbound drains after a database outage
# Events out (DESIGN 5.8), to the organizations' webhook endpoints: a worker of their own.
EVENTS = "events"

# The main worker's queues, in priority order: it takes from the first queue that has work.
MAIN = (TEXT, INBOUND, NOTIFICATIONS, MAINTENANCE)
# Every queue (a worker run in one process, `--burst` and the tests, takes events last).
ALL = (*MAIN, EVENTS)
