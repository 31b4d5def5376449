"""Order bookkeeping of the queue worker, without any AMQP: done records, redelivery counters, duplicates,
retry counting and dead-letter reasons (see ``docs/QUEUE.md``).

* An order is **done** when ``<out>/orders/<message_id>.json`` (:func:`done_key`) exists in the order's output
  storage and every scene listed there is still complete (:func:`check_done`); the record is written after
  every scene of the order is published (:func:`write_done_record`), before the message is acknowledged.
* Redeliveries of an order are counted next to it (:func:`count_redelivery`), so that an order whose worker
  dies every time is dead-lettered instead of looping forever.
* What to do with a delivery once its order ran (:class:`Outcome`) becomes a :class:`Settlement`
  (:func:`settle`): acknowledge, republish to the retry queue with a delay and a retry counter, or dead-letter
  with a reason. The counters and reasons travel in the ``x-raw2ready-*`` message headers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from steps.errors import EXIT_OK, EXIT_TRANSIENT, backoff_delay
from steps.queue.orders import WorkOrder
from steps.times import format_datetime

HDR_REASON = "x-raw2ready-reason"
HDR_EXIT = "x-raw2ready-exit-code"
HDR_RETRIES = "x-raw2ready-retries"
HDR_QUEUE = "x-raw2ready-queue"
HDR_REDRIVEN = "x-raw2ready-redriven"
HDR_RECHECK = "x-raw2ready-recheck"
ORDERS_PREFIX = "orders"
REASON_MAX = 1000  # characters kept in the reason header


def done_key(message_id: str) -> str:
    """Key of an order's done record below its output root: ``orders/<message_id>.json``."""
    return f"{ORDERS_PREFIX}/{message_id}.json"


def redeliveries_key(message_id: str) -> str:
    """Key of an order's redelivery counter below its output root."""
    return f"{ORDERS_PREFIX}/{message_id}.redeliveries.json"


def body_id(body: bytes) -> str:
    """A dedupe key for a body without ``message_id`` (``raw-`` + sha256 prefix)."""
    return "raw-" + hashlib.sha256(body).hexdigest()[:32]


def incomplete_scenes(storage: Any, record: dict[str, Any]) -> list[str]:
    """Scene ids of a done record whose item sidecar and skip record are both gone (e.g. quarantined)."""
    from steps.products.catalog import item_key, skip_key
    from steps.times import parse_datetime

    gone = []
    for sc in record.get("scenes", []):
        dt = parse_datetime(sc["datetime"])
        if not (storage.exists(item_key(dt, sc["scene_id"])) or storage.exists(skip_key(dt, sc["scene_id"]))):
            gone.append(sc["scene_id"])
    return gone


def check_done(storage: Any, message_id: str) -> list[str] | None:
    """``None`` when the order has no done record; else the scenes of its record that are no longer complete
    (``[]``: the order is done)."""
    if not storage.exists(done_key(message_id)):
        return None
    return incomplete_scenes(storage, json.loads(storage.read_bytes(done_key(message_id))))


def write_done_record(storage: Any, order: WorkOrder, scenes: Sequence[Any], statuses: dict[str, str],
                      counts: dict[str, int], seconds: float) -> None:
    """Write the order's done record (the order, its scenes with their status, the time taken) and drop its
    redelivery counter. ``scenes`` are the order's ``SceneRef``s (``scene_id``, ``datetime``)."""
    mid = order.message_id
    record = {
        "message_id": mid,
        "order": order.model_dump(mode="json"),
        "scenes": [{"scene_id": sc.scene_id, "datetime": format_datetime(sc.datetime),
                    "status": statuses.get(sc.scene_id, "")} for sc in scenes],
        "counts": counts,
        "finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "seconds": round(seconds, 3),
    }
    storage.write_bytes(done_key(mid), json.dumps(record, indent=1, sort_keys=True).encode() + b"\n")
    clear_redeliveries(storage, mid)


def count_redelivery(storage: Any, message_id: str) -> int:
    """Increment and return the order's redelivery counter (kept next to its done record)."""
    key = redeliveries_key(message_id)
    n = json.loads(storage.read_bytes(key))["count"] + 1 if storage.exists(key) else 1
    storage.write_bytes(key, json.dumps({"count": n, "message_id": message_id}).encode() + b"\n")
    return int(n)


def clear_redeliveries(storage: Any, message_id: str) -> None:
    """Remove the order's redelivery counter (the order completed)."""
    if storage.exists(redeliveries_key(message_id)):
        storage.delete(redeliveries_key(message_id))


@dataclass
class Outcome:
    """What to do with a delivery once its order ran: ``ack``, ``retry`` or ``dead`` (with reason, exit code).

    ``catalog``: the output root whose catalog the order's work (or a check of its done record) concerns; the
    worker rebuilds it in its next batch (empty: nothing to rebuild, e.g. a custom runner or a malformed order).
    """

    action: str
    reason: str = ""
    exit_code: int = EXIT_OK
    detail: dict[str, Any] = field(default_factory=dict)
    catalog: str = ""


def retry_expiration_ms(retries: int, backoff_s: float) -> int:
    """Delay (ms, the ``expiration`` in the retry queue) of the retry that follows ``retries`` earlier ones:
    ``backoff_s·2^retries`` s, as the runner's step retries (:func:`steps.errors.backoff_delay`); at least 1 ms."""
    return max(int(1000 * backoff_delay(retries + 1, backoff_s)), 1)


def header_int(headers: dict[str, Any] | None, name: str) -> int:
    """An integer header (0 when absent or empty)."""
    return int((headers or {}).get(name, 0) or 0)


def header_text(value: Any) -> str:
    """A header value as text (AMQP tables may hold bytes)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class Settlement:
    """How a delivery is settled: ``ack`` alone, or a copy published first (``retry``: to the retry queue with
    ``expiration_ms``; ``dead``: to the dead-letter exchange) with ``headers``, then the ack."""

    action: str
    outcome: Outcome
    headers: dict[str, Any]
    retries: int = 0  # retries before this one
    expiration_ms: int = 0


def settle(outcome: Outcome, headers: dict[str, Any] | None, *, max_retries: int, backoff_s: float,
           queue: str) -> Settlement:
    """Turn an order's outcome into a settlement: a retry beyond ``max_retries`` becomes a dead letter (exit 75,
    "gave up after N retries"); a retry carries the incremented counter, the reason and the exit code; a dead
    letter the reason, the exit code and the queue it came from."""
    h = dict(headers or {})
    retries = header_int(h, HDR_RETRIES)
    action = outcome.action
    if action == "retry" and retries >= max_retries:
        action = "dead"
        outcome = Outcome("dead", f"gave up after {retries} retries: {outcome.reason}", EXIT_TRANSIENT)
    if action == "ack":
        return Settlement(action, outcome, h, retries)
    h[HDR_REASON] = outcome.reason[:REASON_MAX]
    h[HDR_EXIT] = outcome.exit_code
    if action == "retry":
        h[HDR_RETRIES] = retries + 1
        return Settlement(action, outcome, h, retries, retry_expiration_ms(retries, backoff_s))
    h[HDR_QUEUE] = queue
    return Settlement(action, outcome, h, retries)


@dataclass
class DeadLetter:
    """One message in the dead-letter queue."""

    message_id: str
    reason: str
    exit_code: int
    retries: int
    body: bytes

    @classmethod
    def from_message(cls, message_id: str | None, headers: dict[str, Any] | None, body: bytes) -> DeadLetter:
        """Read a dead letter's bookkeeping from its headers."""
        h = headers or {}
        return cls(message_id or body_id(body), header_text(h.get(HDR_REASON, "")), header_int(h, HDR_EXIT),
                   header_int(h, HDR_RETRIES), body)


def redrive_headers(headers: dict[str, Any] | None) -> dict[str, Any]:
    """Headers of a dead letter sent back to the work queue: retry counter, reason, exit code, queue and the
    broker's ``x-death`` removed; ``x-raw2ready-redriven`` incremented."""
    h = {k: v for k, v in (headers or {}).items()
         if k not in (HDR_REASON, HDR_EXIT, HDR_RETRIES, HDR_QUEUE) and k != "x-death"}
    h[HDR_REDRIVEN] = header_int(headers, HDR_REDRIVEN) + 1
    return h
