"""Quiet hours: when a notification to a contact has to wait until the contact's morning.

Only bulk notifications (`tracking_update`, `pickup_reminder`) wait; the caller decides that. The
contact's local time comes from the time zones `phonenumbers` gives the number
(`bridge.phones.phone_time_zones`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

QuietWindow = tuple[time, time]


def quiet_until(
    now: datetime, time_zones: Iterable[str], window: QuietWindow | None
) -> datetime | None:
    """Return the aware UTC time the quiet hours around `now` end for this contact, or None."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("quiet_until needs an aware datetime")
    if window is None or window[0] == window[1]:  # no window, or an empty one: quiet hours are off
        return None
    # Where a number spans several zones, the contact may live in any of them: wait until the
    # quiet hours are over in every zone where they are on now, i.e. take the latest end.
    # With no usable zone we do not delay: any guess (UTC, the sender's zone) is wrong for most
    # contacts, and holding a message for hours on a guess is worse than sending it on time.
    ends = [end for zone in _zones(time_zones) if (end := _zone_quiet_until(now, zone, window))]
    return max(ends, default=None)


def _zones(names: Iterable[str]) -> list[ZoneInfo]:
    zones = []
    for name in names:
        try:
            zones.append(ZoneInfo(name))
        # "Etc/Unknown" (phonenumbers' answer for numbers it cannot place) and any name the tz
        # database lacks are skipped rather than failing the delivery.
        except (ZoneInfoNotFoundError, ValueError):
            continue
    return zones


def _zone_quiet_until(now: datetime, zone: ZoneInfo, window: QuietWindow) -> datetime | None:
    start, end = window
    local = now.astimezone(zone)
    wall = local.time()
    if start < end:  # e.g. 13:00-14:00, within one day
        if not start <= wall < end:
            return None
        end_day = local.date()
    else:  # e.g. 21:00-08:00, across midnight
        if end <= wall < start:
            return None
        end_day = local.date() + timedelta(days=1) if wall >= start else local.date()
    return _first_instant_at(end_day, end, zone, after=now)


def _first_instant_at(day: date, wall: time, zone: ZoneInfo, after: datetime) -> datetime:
    """The first instant after `after` when the clock in `zone` shows `wall` on `day`, or later."""
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) != naive:
        # `wall` falls in a gap (clocks jump forward past it): quiet hours end at the jump itself.
        return _transition_between(min(first, second), max(first, second), zone)
    # On the night clocks go back, `wall` may come twice: the first time unless it has passed.
    return first if first > after else second


def _transition_between(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The second at which the UTC offset of `zone` changes, somewhere between two instants."""
    # zoneinfo does not expose its transitions; a binary search over whole seconds takes a dozen
    # steps for a gap of an hour.
    offset_after = after.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)
