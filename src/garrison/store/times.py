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
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90s`, `10m`, `12h`, `30d`, `2w`."""
    match = _DURATION.match(text)
    if not match:
        raise InvalidRequest(f"'{text}' is not a duration; use a number and a unit: 90s, 10m, 12h, 30d, 2w")
    return float(match[1]) * _UNIT_SECONDS[match[2]]


def parse_when(text: str) -> float:
    """Epoch seconds of a date (`2025-01-31`, at 00:00 UTC) or an ISO-8601 date-time (UTC when zoneless)."""
    try:
        if len(text.strip()) == 10:
            day = date.fromisoformat(text.strip())
            return datetime.combine(day, datetime.min.time(), UTC).timestamp()
        return from_iso(text.strip())
    except ValueError:
        raise InvalidRequest(f"'{text}' is not a date; use YYYY-MM-DD or an ISO-8601 date-time") from None


def parse_expiry(text: str, now: float) -> float:
    """When a key given `--expires 30d` or `--expires 2025-12-31` expires; it must lie in the future."""
    value = now + parse_duration(text) if _DURATION.match(text) else parse_when(text)
    if value <= now:
        raise InvalidRequest(f"the expiry '{text}' is not in the future")
    return value
