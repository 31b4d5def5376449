"""The EDR ``datetime`` query parameter: instants, closed intervals and open ends, parsed strictly.

Accepted forms (RFC 3339 date-times; a missing offset means UTC):

* ``2024-01-13`` — the whole UTC day;
* ``2024-01-13T03:47:20Z`` — that second (an acquisition at ``03:47:20.024Z`` matches);
* ``2024-01-13T03:47:20.024Z`` — that exact instant (microsecond precision);
* ``A/B``, ``../B``, ``A/..``, ``/B``, ``A/`` — intervals; each end is inclusive *at its own precision*
  (``2024-01-01/2024-01-31`` includes all of 31 January).

The result is a half-open UTC range ``[start, end)``; ``None`` is an open end.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_DATE = r"(\d{4})-(\d{2})-(\d{2})"
_TIME = r"(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?"
_OFFSET = r"(Z|z|[+-]\d{2}:\d{2})?"
_INSTANT_RE = re.compile(rf"^{_DATE}(?:[Tt ]{_TIME}{_OFFSET})?$")
MAX_LENGTH = 80


class DatetimeQueryError(ValueError):
    """A ``datetime`` parameter that is not a valid instant or interval (HTTP 400)."""


@dataclass(frozen=True)
class TimeRange:
    """A half-open UTC range ``[start, end)``; ``None`` means unbounded on that side."""

    start: datetime | None
    end: datetime | None

    def contains(self, t: datetime) -> bool:
        """Whether the aware datetime ``t`` lies in the range."""
        return (self.start is None or t >= self.start) and (self.end is None or t < self.end)


def _instant(text: str) -> tuple[datetime, timedelta]:
    """Parse one instant; return (start, precision) with start an aware UTC datetime."""
    m = _INSTANT_RE.match(text)
    if not m:
        raise DatetimeQueryError(
            f"datetime {text!r} is not an RFC 3339 date (YYYY-MM-DD) or date-time (YYYY-MM-DDThh:mm:ss[.f]Z)")
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    try:
        if m.group(4) is None:
            return datetime(y, mo, d, tzinfo=UTC), timedelta(days=1)
        frac = m.group(7)
        micro = int((frac[1:] + "000000")[:6]) if frac else 0
        tz = UTC
        off = m.group(8)
        if off and off not in ("Z", "z"):
            sign = 1 if off[0] == "+" else -1
            hh, mm = int(off[1:3]), int(off[4:6])
            if hh > 23 or mm > 59:
                raise ValueError("offset out of range")
            from datetime import timezone

            tz = timezone(sign * timedelta(hours=hh, minutes=mm))
        t = datetime(y, mo, d, int(m.group(4)), int(m.group(5)), int(m.group(6)), micro, tzinfo=tz)
        t = t.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise DatetimeQueryError(f"datetime {text!r} is not a valid date-time: {exc}") from exc
    return t, (timedelta(microseconds=1) if frac else timedelta(seconds=1))


def _plus(t: datetime, dt: timedelta) -> datetime | None:
    try:
        return t + dt
    except OverflowError:
        return None  # beyond year 9999: unbounded


def parse_datetime_query(text: str | None) -> TimeRange:
    """Parse an EDR ``datetime`` value into a :class:`TimeRange`; ``None``/empty means unbounded.

    Raises :class:`DatetimeQueryError` for anything malformed or an interval that ends before it starts.
    """
    if text is None or text.strip() == "":
        return TimeRange(None, None)
    text = text.strip()
    if len(text) > MAX_LENGTH:
        raise DatetimeQueryError("datetime parameter is too long")
    if "/" not in text:
        if text == "..":
            return TimeRange(None, None)
        t, prec = _instant(text)
        return TimeRange(t, _plus(t, prec))
    parts = text.split("/")
    if len(parts) != 2:
        raise DatetimeQueryError(f"datetime interval {text!r} must have exactly one '/'")
    a, b = (p.strip() for p in parts)
    start: datetime | None = None
    end: datetime | None = None
    if a not in ("", ".."):
        start, _ = _instant(a)
    if b not in ("", ".."):
        tb, prec = _instant(b)
        end = _plus(tb, prec)
    if start is not None and end is not None and end <= start:
        raise DatetimeQueryError(f"datetime interval {text!r} ends before it starts")
    return TimeRange(start, end)
