"""How the store writes time (ISO-8601 UTC text) and how people name times (`30d`, `10m`, `2025-01-31`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from garrison.errors import InvalidRequest

Clock = Callable[[], float]
"""Seconds since the epoch, like `time.time`; injected so tests can move time."""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def to_iso(epoch: float) -> str:
    """Epoch seconds as sortable ISO-8601 UTC text with microseconds, e.g. 2025-01-31T12:00:00.000000Z."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def from_iso(text: str) -> float:
    """Epoch seconds of ISO-8601 text; a time without zone is taken as UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def utc_day(epoch: float) -> str:
    """The UTC calendar day of an instant, YYYY-MM-DD (the unit of daily budgets and usage)."""
    return datetime.fromtimestamp(epoch, UTC).date().isoformat()


def seconds_until_next_day(epoch: float) -> float:
    """Seconds from an instant to the next 00:00 UTC, when daily budgets reset."""
    moment = datetime.fromtimestamp(epoch, UTC)
    midnight = datetime.combine(moment.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (midnight - moment).total_seconds()


MAX_DURATION_YEARS = 1000
_MAX_DURATION = MAX_DURATION_YEARS * 365.25 * 86400
# The instants the store can write as ISO text (years 1 to 9999, UTC).
_EARLIEST = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def _named(param: str | None, message: str) -> InvalidRequest:
    """A bad time value, its message prefixed with the field (or flag) it came from."""
    return InvalidRequest(f"{param}: {message}" if param else message, param=param)


def parse_duration(text: str, param: str | None = None) -> float:
    """Seconds in a duration such as `90s`, `10m`, `12h`, `30d`, `2w` (at most 1000 years)."""
    match = _DURATION.match(text)
    if not match:
        raise _named(param, f"'{text}' is not a duration; use a number and a unit: 90s, 10m, 12h, 30d, 2w")
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if not seconds <= _MAX_DURATION:  # also refuses a number too large to be finite
        raise _named(param, f"'{text[:40]}' is longer than {MAX_DURATION_YEARS} years")
    return seconds


def parse_when(text: str, param: str | None = None) -> float:
    """Epoch seconds of a date (`2025-01-31`, at 00:00 UTC) or an ISO-8601 date-time (UTC when zoneless)."""
    try:
        if len(text.strip()) == 10:
            day = date.fromisoformat(text.strip())
            epoch = datetime.combine(day, datetime.min.time(), UTC).timestamp()
        else:
            epoch = from_iso(text.strip())
    except ValueError:
        raise _named(param, f"'{text}' is not a date; use YYYY-MM-DD or an ISO-8601 date-time") from None
    if not _EARLIEST <= epoch <= _LATEST:
        raise _named(param, f"'{text}' lies outside the years 1 to 9999 (UTC)")
    return epoch


def parse_expiry(text: str, now: float, param: str | None = None) -> float:
    """When a key given `--expires 30d` or `--expires 2025-12-31` expires; it must lie in the future."""
    value = now + parse_duration(text, param) if _DURATION.match(text) else parse_when(text, param)
    if value <= now:
        raise _named(param, f"the expiry '{text}' is not in the future")
    return value
