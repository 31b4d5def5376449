"""Date-times at raw2ready's edges: one parser and one formatter for RFC 3339 UTC.

Inside the code a scene time is an aware :class:`datetime.datetime` in UTC. Text appears only where a time
crosses a boundary (STAC JSON, scene manifests, Argo parameters, work orders, failure records), always in
the one form :func:`format_datetime` writes: ``YYYY-MM-DDTHH:MM:SSZ`` (microseconds only when non-zero).
"""

from __future__ import annotations

from datetime import UTC, datetime


def parse_datetime(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (``Z`` or an offset; none means UTC) into an aware UTC datetime."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def format_datetime(dt: datetime) -> str:
    """RFC 3339 UTC with a ``Z`` suffix and whole seconds (microseconds kept only if non-zero)."""
    dt = dt.astimezone(UTC)
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if dt.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return dt.strftime(fmt)
