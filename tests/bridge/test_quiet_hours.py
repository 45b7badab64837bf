from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bridge.phones import phone_time_zones
from bridge.quiet_hours import quiet_until

NIGHT = (time(21, 0), time(8, 0))
LUNCH = (time(13, 0), time(14, 0))
EARLY = (time(0, 0), time(6, 0))
LATE = (time(22, 0), time(0, 0))

LA = "America/Los_Angeles"
NY = "America/New_York"


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(zone: str, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """The UTC instant of a wall-clock time in `zone`."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(zone)).astimezone(UTC)


@pytest.mark.parametrize(
    ("now", "window", "expected"),
    [
        # 21:00-08:00 crosses midnight; the start is quiet, the end is not.
        (local(LA, 2024, 6, 14, 20, 59), NIGHT, None),
        (local(LA, 2024, 6, 14, 21, 0), NIGHT, local(LA, 2024, 6, 15, 8, 0)),
        (local(LA, 2024, 6, 14, 23, 30), NIGHT, local(LA, 2024, 6, 15, 8, 0)),
        (local(LA, 2024, 6, 15, 0, 0), NIGHT, local(LA, 2024, 6, 15, 8, 0)),
        (local(LA, 2024, 6, 15, 7, 59), NIGHT, local(LA, 2024, 6, 15, 8, 0)),
        (local(LA, 2024, 6, 15, 8, 0), NIGHT, None),
        (local(LA, 2024, 6, 15, 12, 0), NIGHT, None),
        # Across the end of a month and a year.
        (local(LA, 2024, 6, 30, 22, 0), NIGHT, local(LA, 2024, 7, 1, 8, 0)),
        (local(LA, 2024, 12, 31, 23, 0), NIGHT, local(LA, 2025, 1, 1, 8, 0)),
        # A window within one day.
        (local(LA, 2024, 6, 14, 12, 59), LUNCH, None),
        (local(LA, 2024, 6, 14, 13, 0), LUNCH, local(LA, 2024, 6, 14, 14, 0)),
        (local(LA, 2024, 6, 14, 13, 59), LUNCH, local(LA, 2024, 6, 14, 14, 0)),
        (local(LA, 2024, 6, 14, 14, 0), LUNCH, None),
        (local(LA, 2024, 6, 14, 0, 0), EARLY, local(LA, 2024, 6, 14, 6, 0)),
        (local(LA, 2024, 6, 14, 23, 59), EARLY, None),
        # A window that ends at midnight.
        (local(LA, 2024, 6, 14, 22, 30), LATE, local(LA, 2024, 6, 15, 0, 0)),
        (local(LA, 2024, 6, 15, 0, 0), LATE, None),
        # Off: no window, or an empty one.
        (local(LA, 2024, 6, 14, 23, 0), None, None),
        (local(LA, 2024, 6, 14, 9, 0), (time(9, 0), time(9, 0)), None),
    ],
)
def test_quiet_until_in_one_time_zone(
    now: datetime, window: tuple[time, time] | None, expected: datetime | None
) -> None:
    assert quiet_until(now, [LA], window) == expected


@pytest.mark.parametrize(
    ("now", "window", "expected"),
    [
        # Spring forward (02:00 EST -> 03:00 EDT): 08:00 is at 12:00 UTC, not 13:00.
        (utc(2024, 3, 10, 6, 0), NIGHT, utc(2024, 3, 10, 12, 0)),
        (utc(2024, 3, 10, 2, 0), NIGHT, utc(2024, 3, 10, 12, 0)),  # 21:00 EST the night before
        (utc(2024, 3, 10, 1, 59), NIGHT, None),
        # Fall back (02:00 EDT -> 01:00 EST): 08:00 is at 13:00 UTC, not 12:00.
        (utc(2024, 11, 3, 4, 0), NIGHT, utc(2024, 11, 3, 13, 0)),
        (utc(2024, 11, 3, 0, 59), NIGHT, None),  # 20:59 EDT
        # An end that does not exist that day ends when the clocks jump past it.
        (utc(2024, 3, 10, 6, 0), (time(21, 0), time(2, 30)), utc(2024, 3, 10, 7, 0)),
        # An end that comes twice: the first time, unless it has passed already.
        (utc(2024, 11, 3, 5, 15), (time(21, 0), time(1, 30)), utc(2024, 11, 3, 5, 30)),
        (utc(2024, 11, 3, 6, 15), (time(21, 0), time(1, 30)), utc(2024, 11, 3, 6, 30)),
    ],
)
def test_quiet_until_on_dst_change_days(
    now: datetime, window: tuple[time, time], expected: datetime | None
) -> None:
    assert quiet_until(now, [NY], window) == expected


def test_quiet_until_on_dst_change_day_in_europe() -> None:
    # London goes to BST at 01:00 UTC on 31 March 2024: 08:00 BST is 07:00 UTC.
    assert quiet_until(utc(2024, 3, 30, 22, 0), ["Europe/London"], NIGHT) == utc(2024, 3, 31, 7)


ALASKA = phone_time_zones("+19072345678")  # area code 907 spans two zones an hour apart


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        # 07:30 in Anchorage, 06:30 on Adak: Adak's 08:00 is an hour later.
        (utc(2024, 6, 1, 15, 30), utc(2024, 6, 1, 17, 0)),
        # 08:00 in Anchorage (awake), 07:00 on Adak (quiet).
        (utc(2024, 6, 1, 16, 0), utc(2024, 6, 1, 17, 0)),
        # 21:30 in Anchorage (quiet), 20:30 on Adak (awake): Anchorage's end.
        (utc(2024, 6, 1, 5, 30), utc(2024, 6, 1, 16, 0)),
        # Awake in both.
        (utc(2024, 6, 1, 17, 0), None),
    ],
)
def test_several_time_zones_keep_the_quiet_hours_longest(
    now: datetime, expected: datetime | None
) -> None:
    assert ALASKA == ["America/Adak", "America/Anchorage"]
    assert quiet_until(now, ALASKA, NIGHT) == expected
    assert quiet_until(now, list(reversed(ALASKA)), NIGHT) == expected


def test_toll_free_number_waits_for_the_last_zone_to_wake() -> None:
    zones = phone_time_zones("+18005551234")
    assert len(zones) > 10
    # 08:00 in New York, but 22:00 in Guam: Guam's 08:00 is 22:00 UTC.
    assert quiet_until(utc(2024, 6, 1, 12, 0), zones, NIGHT) == utc(2024, 6, 1, 22, 0)


@pytest.mark.parametrize(
    "zones",
    [[], ["Etc/Unknown"], ["Not/A_Zone"], ["../../etc/passwd"], [""]],
)
def test_no_usable_time_zone_never_delays(zones: list[str]) -> None:
    assert quiet_until(utc(2024, 6, 1, 3, 0), zones, NIGHT) is None


def test_unusable_zones_are_skipped_beside_usable_ones() -> None:
    now = local(NY, 2024, 6, 14, 23, 0)
    assert quiet_until(now, ["Etc/Unknown", NY], NIGHT) == local(NY, 2024, 6, 15, 8, 0)


def test_quiet_until_takes_any_aware_now_and_answers_in_utc() -> None:
    now = datetime(2024, 6, 14, 23, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 07:00 in Los Angeles
    until = quiet_until(now, [LA], NIGHT)
    assert until == local(LA, 2024, 6, 14, 8, 0)
    assert until is not None and until.tzinfo is UTC


def test_quiet_until_refuses_a_naive_now() -> None:
    with pytest.raises(ValueError, match="aware"):
        quiet_until(datetime(2024, 6, 14, 23, 0), [LA], NIGHT)


PROPERTY_ZONES = [NY, "Europe/London", "America/St_Johns", "Asia/Kolkata", "Pacific/Chatham"]
MINUTES = st.integers(0, 23 * 60 + 59)


@given(
    now=st.datetimes(datetime(2023, 1, 1), datetime(2026, 12, 31), timezones=st.just(UTC)),
    start=MINUTES,
    end=MINUTES,
    zone=st.sampled_from(PROPERTY_ZONES),
)
@example(now=utc(2024, 3, 10, 6, 59, 59), start=21 * 60, end=2 * 60 + 30, zone=NY)
@example(now=utc(2024, 11, 3, 5, 59, 59), start=21 * 60, end=60 + 30, zone=NY)
def test_quiet_hours_end_when_the_contact_is_awake(
    now: datetime, start: int, end: int, zone: str
) -> None:
    # An awake span no longer than a DST gap can vanish on the day clocks jump: not a real setting.
    if (start - end) % (24 * 60) <= 60:
        return
    window = (time(*divmod(start, 60)), time(*divmod(end, 60)))
    until = quiet_until(now, [zone], window)
    if until is None:
        return
    assert now < until <= now + timedelta(hours=25)
    assert quiet_until(until, [zone], window) is None  # awake once it ends
    assert quiet_until(until - timedelta(seconds=1), [zone], window) == until  # quiet until then
