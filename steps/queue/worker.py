"""RabbitMQ work orders: topology, publishing with confirms, and the worker that runs them locally.

Topology for a work-order queue ``Q`` (all durable; see ``docs/QUEUE.md``):

* ``Q`` — the work queue. Arguments ``x-dead-letter-exchange = Q.dlx`` and
  ``x-dead-letter-routing-key = Q.dead``, so anything the broker itself dead-letters (a reject without
  requeue, an operator's purge policy) ends in the dead-letter queue too.
* ``Q.dlx`` — a direct exchange; ``Q.dead`` — the dead-letter queue, bound to it with key ``Q.dead``.
* ``Q.retry`` — the delay queue for transient failures: a message is republished there with a per-message
  ``expiration`` (the backoff, ms) and an incremented ``x-raw2ready-retries`` header; when it expires the
  broker dead-letters it back to ``Q`` (``x-dead-letter-exchange = ""``, routing key ``Q``).

Messages are :class:`steps.queue.orders.WorkOrder` canonical JSON bodies, persistent (delivery mode 2), with
``message_id = WorkOrder.message_id``. Plain RabbitMQ cannot deduplicate, so the worker does: an order is
done when its record ``<out>/orders/<message_id>.json`` exists in the order's output storage (written
after every scene of the order is published) and every scene it lists is still complete (a scene
quarantined by ``audit --requeue`` makes the same order run again); a delivery whose twin is running in
this worker is acknowledged at once. Re-publishing an order is therefore harmless.

The worker (:class:`Worker`) consumes with manual acknowledgement and ``prefetch = concurrency``. Each order
runs in a thread (``find_scenes`` + ``run_scenes``); the connection stays in the main thread, which keeps
heartbeats flowing and receives the thread's outcome through ``add_callback_threadsafe``. Outcomes:

* all scenes done/skipped/complete → write the done record, then ack;
* transient (``TransientError``, or a scene failed with exit 75) → republish to ``Q.retry`` with backoff
  and ack; after ``max_retries`` retries → dead letter (exit 75);
* invalid (malformed JSON, unknown tile, end before start, bad input: exit 3), bad usage (2) or unexpected
  (1) → publish to ``Q.dlx`` with headers ``x-raw2ready-reason`` and ``x-raw2ready-exit-code``, then ack.

Publish-then-ack means a crash in between leaves a duplicate, never a loss; duplicates are deduplicated.

Broker loss (the broker stopped or killed, a connection reset): the worker and the publisher reconnect with
exponential back-off (:func:`backoff_delay`: 1 s doubling to a 30 s cap, with jitter; after
``reconnect_attempts`` consecutive failures they give up with ``TransientError``, exit 75). Only a lost
connection is retried this way: a broker that does not answer the *first* connection still fails at once
(exit 75), as before. Deliveries die with their channel: an order still running when the connection
dropped keeps running, its outcome is never acted on with its old delivery tag; the broker redelivers the
message, and the redelivery is attached to the running order (or settled with its outcome if it already
finished) instead of running it a second time. A redelivery that lands in another worker finds the done
record (the order's effect happens once).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlparse

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from steps.errors import (
    EXIT_FAILURE,
    EXIT_INVALID_INPUT,
    EXIT_OK,
    EXIT_TRANSIENT,
    InvalidInputError,
    Raw2ReadyError,
    TransientError,
    exit_code_for,
)
from steps.queue.orders import SCHEMA_VERSION, WorkOrder
from steps.settings import Settings, get_settings

log = logging.getLogger(__name__)

HDR_REASON = "x-raw2ready-reason"
HDR_EXIT = "x-raw2ready-exit-code"
HDR_RETRIES = "x-raw2ready-retries"
HDR_QUEUE = "x-raw2ready-queue"
HDR_REDRIVEN = "x-raw2ready-redriven"
HDR_RECHECK = "x-raw2ready-recheck"
ORDERS_PREFIX = "orders"
MESSAGE_TYPE = f"raw2ready.work-order.v{SCHEMA_VERSION}"
ORDER_THREAD_PREFIX = "order-"  # name prefix of the threads running orders
_REASON_MAX = 1000  # characters kept in the reason header


@dataclass(frozen=True)
class Topology:
    """Names of the queues and exchanges derived from the work-order queue name."""

    queue: str

    @property
    def dlx(self) -> str:
        """Dead-letter exchange (direct)."""
        return f"{self.queue}.dlx"

    @property
    def dead(self) -> str:
        """Dead-letter queue (also its routing key on the dead-letter exchange)."""
        return f"{self.queue}.dead"

    @property
    def retry(self) -> str:
        """Delay queue for transient retries; expired messages go back to :attr:`queue`."""
        return f"{self.queue}.retry"

    def queue_arguments(self) -> dict[str, Any]:
        """Arguments of the work queue (every declarer — worker, enqueue, Argo EventSource — must agree)."""
        return {"x-dead-letter-exchange": self.dlx, "x-dead-letter-routing-key": self.dead}


def _safe_url(url: str) -> str:
    p = urlparse(url)
    return f"{p.hostname or '?'}:{p.port or 5672}"


# Exceptions that mean "the connection (or its channel) is gone": reconnect, never a verdict on an order.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,  # incl. ConnectionClosedByBroker (broker stopping), StreamLostError
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.ChannelClosed,
)
# ... plus a failed (re)connect, which connect() reports as TransientError caused by AMQPConnectionError.
_LOST_OR_UNREACHABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, TransientError)
RECONNECT_ATTEMPTS = 10  # consecutive failed reconnects before giving up (exit 75)
RECONNECT_FIRST_S = 1.0  # first back-off delay, seconds
RECONNECT_MAX_S = 30.0  # back-off cap, seconds


def backoff_delay(attempt: int, first: float = RECONNECT_FIRST_S, cap: float = RECONNECT_MAX_S,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before reconnect ``attempt`` (1-based): ``min(cap, first·2^(attempt-1))`` with "equal
    jitter" (a uniform draw in the upper half), so that many workers that lost one broker do not reconnect
    in lock-step."""
    d = min(cap, first * 2 ** max(0, attempt - 1))
    return d / 2 + (rng or random).uniform(0, d / 2)


def connect(url: str, *, heartbeat: int = 30) -> pika.BlockingConnection:
    """Open a blocking connection; an unreachable broker is a ``TransientError`` (exit 75)."""
    params = pika.URLParameters(url)
    params.heartbeat = heartbeat
    params.blocked_connection_timeout = 60
    params.connection_attempts = 1
    params.socket_timeout = 5
    try:
        return pika.BlockingConnection(params)
    except pika.exceptions.AMQPError as exc:
        raise TransientError(f"RabbitMQ at {_safe_url(url)} is unreachable: {type(exc).__name__} {exc}") from exc


def declare_topology(channel: BlockingChannel, topo: Topology) -> None:
    """Declare the work, dead-letter and retry queues and the dead-letter exchange (idempotent).

    A queue that already exists with other arguments closes the channel (PRECONDITION_FAILED); that is
    reported as a one-line ``Raw2ReadyError`` naming the queue.
    """
    try:
        channel.exchange_declare(topo.dlx, exchange_type="direct", durable=True)
        channel.queue_declare(topo.dead, durable=True)
        channel.queue_bind(topo.dead, topo.dlx, routing_key=topo.dead)
        channel.queue_declare(topo.queue, durable=True, arguments=topo.queue_arguments())
        channel.queue_declare(topo.retry, durable=True,
                              arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": topo.queue})
    except pika.exceptions.ChannelClosedByBroker as exc:
        raise Raw2ReadyError(f"cannot declare the queues of {topo.queue!r}: {exc.reply_text}") from exc


def delete_topology(url: str, queue: str) -> None:
    """Delete the queues and the exchange of ``queue`` (tests and operators cleaning up)."""
    topo = Topology(queue)
    conn = connect(url)
    try:
        ch = conn.channel()
        for q in (topo.queue, topo.retry, topo.dead):
            ch.queue_delete(q)
        ch.exchange_delete(topo.dlx)
    finally:
        conn.close()


def order_properties(order: WorkOrder, headers: dict[str, Any] | None = None) -> BasicProperties:
    """AMQP properties of a work order: persistent, JSON, ``message_id`` = the order's dedupe key."""
    return BasicProperties(delivery_mode=2, content_type="application/json", message_id=order.message_id,
                           type=MESSAGE_TYPE, app_id="raw2ready", headers=dict(headers or {}))


@dataclass
class PublishReport:
    """What :func:`publish_report` did: ``confirmed`` orders (= the orders given, on success), ``sent``
    publishes (confirmed + republished), ``republished`` messages sent again after a lost connection (their
    first copy may or may not be in the queue: a duplicate the worker deduplicates), ``reconnects``."""

    confirmed: int = 0
    sent: int = 0
    republished: int = 0
    reconnects: int = 0
    seconds: float = 0.0


def publish_orders(orders: Iterable[WorkOrder], *, url: str | None = None, queue: str | None = None,
                   settings: Settings | None = None, recheck: bool = False) -> int:
    """Declare the topology and publish each order (persistent, publisher confirms, mandatory routing).

    ``recheck=True`` marks the messages (header ``x-raw2ready-recheck``) so that the worker lists the source
    again even for an order it has already done, and processes scenes that appeared since (re-drives after
    an audit found scenes missing); scenes already complete are still skipped.

    Returns the number of orders published, once the broker has confirmed every message. A nack or an
    unroutable message is a ``TransientError`` (nothing is lost: publishing the same orders again is
    deduplicated by the worker). A connection lost midway is reconnected (see :func:`publish_report`).
    """
    return publish_report(orders, url=url, queue=queue, settings=settings, recheck=recheck).confirmed


def publish_report(orders: Iterable[WorkOrder], *, url: str | None = None, queue: str | None = None,
                   settings: Settings | None = None, recheck: bool = False,
                   reconnect_attempts: int = RECONNECT_ATTEMPTS, reconnect_first_s: float = RECONNECT_FIRST_S,
                   reconnect_max_s: float = RECONNECT_MAX_S) -> PublishReport:
    """:func:`publish_orders` with its counts. Each publish waits for its confirm (one at a time), so when
    the connection drops, every order before the current one is confirmed and the current one is in doubt:
    after reconnecting (back-off as the worker's) publishing resumes *at* the order in doubt, which is then
    counted as republished. ``reconnect_attempts`` consecutive failed reconnects raise ``TransientError``;
    the first connection is not retried (an unreachable broker fails at once, exit 75).
    """
    s = settings or get_settings()
    url, queue = url or s.broker_url, queue or s.queue_name
    topo = Topology(queue)
    todo = list(orders)
    rep = PublishReport()
    t0 = time.monotonic()
    conn = connect(url)
    failures = 0
    in_doubt = False  # the order at rep.confirmed was sent on a connection that died before its confirm
    try:
        while True:
            try:
                if not conn.is_open:
                    conn = connect(url)
                ch = conn.channel()
                declare_topology(ch, topo)
                ch.confirm_delivery()
                if failures:
                    log.info("reconnected to RabbitMQ at %s after %d attempt(s): resuming at order %d of %d",
                             _safe_url(url), failures, rep.confirmed + 1, len(todo))
                    failures = 0
                while rep.confirmed < len(todo):
                    order = todo[rep.confirmed]
                    props = order_properties(order, {HDR_RECHECK: 1} if recheck else None)
                    rep.republished += in_doubt
                    in_doubt = True
                    rep.sent += 1
                    try:
                        ch.basic_publish("", topo.queue, order.canonical(), props, mandatory=True)
                    except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
                        raise TransientError(f"broker did not accept order {order.message_id}: {exc}") from exc
                    in_doubt = False
                    rep.confirmed += 1
                    if rep.confirmed % 500 == 0:
                        log.info("published %d orders", rep.confirmed)
                break
            except _LOST_OR_UNREACHABLE as exc:
                if isinstance(exc, TransientError) and not isinstance(exc.__cause__,
                                                              pika.exceptions.AMQPConnectionError):
                    raise  # a nack or an unroutable order: the broker answered, no reconnect helps
                failures += 1
                if failures > reconnect_attempts:
                    raise TransientError(f"lost the connection to RabbitMQ at {_safe_url(url)} after "
                                         f"{rep.confirmed} of {len(todo)} orders and {reconnect_attempts} "
                                         f"reconnect attempts failed: {exc}") from exc
                if failures == 1:
                    rep.reconnects += 1
                delay = backoff_delay(failures, reconnect_first_s, reconnect_max_s)
                log.warning("connection lost to RabbitMQ at %s after %d of %d confirmed orders (%s): "
                            "reconnecting in %.1f s (attempt %d/%d)", _safe_url(url), rep.confirmed, len(todo),
                            type(exc).__name__, delay, failures, reconnect_attempts)
                _close_quietly(conn)
                time.sleep(delay)
    finally:
        _close_quietly(conn)
    rep.seconds = time.monotonic() - t0
    log.info("published %d orders to %s in %.2fs (%.0f orders/s; %d sent, %d republished, %d reconnects)",
             rep.confirmed, queue, rep.seconds, rep.confirmed / rep.seconds if rep.seconds > 0 else 0.0,
             rep.sent, rep.republished, rep.reconnects)
    return rep


def _close_quietly(conn: pika.BlockingConnection | None) -> None:
    """Close a connection that may already be dead (its errors mean nothing any more)."""
    if conn is None:
        return
    try:
        if conn.is_open:
            conn.close()
    except Exception as exc:  # a dead socket: nothing left to close
        log.debug("closing a dead connection: %s", exc)


def done_key(message_id: str) -> str:
    """Key of an order's done record below its output root: ``orders/<message_id>.json``."""
    return f"{ORDERS_PREFIX}/{message_id}.json"


def redeliveries_key(message_id: str) -> str:
    """Key of an order's redelivery counter below its output root."""
    return f"{ORDERS_PREFIX}/{message_id}.redeliveries.json"


def _incomplete_scenes(storage: Any, record: dict[str, Any]) -> list[str]:
    """Scene ids of a done record whose item sidecar and skip record are both gone (e.g. quarantined)."""
    from steps.products.catalog import item_key, parse_datetime, skip_key

    gone = []
    for sc in record.get("scenes", []):
        dt = parse_datetime(sc["datetime"])
        if not (storage.exists(item_key(dt, sc["scene_id"])) or storage.exists(skip_key(dt, sc["scene_id"]))):
            gone.append(sc["scene_id"])
    return gone


def body_id(body: bytes) -> str:
    """A dedupe key for a body without ``message_id`` (``raw-`` + sha256 prefix)."""
    return "raw-" + hashlib.sha256(body).hexdigest()[:32]


# ------------------------------------------------------------------------------------------------ worker
@dataclass
class Outcome:
    """What to do with a delivery once its order ran: ``ack``, ``retry`` or ``dead`` (with reason, exit code)."""

    action: str
    reason: str = ""
    exit_code: int = EXIT_OK
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkerStats:
    """Counters of one worker run."""

    received: int = 0
    redelivered: int = 0
    done: int = 0
    already_done: int = 0
    retried: int = 0
    dead: int = 0
    requeued: int = 0
    reconnects: int = 0

    @property
    def finished(self) -> int:
        """Deliveries settled (acked after work, dedupe, retry or dead letter)."""
        return self.done + self.already_done + self.retried + self.dead


@dataclass
class _Delivery:
    tag: int
    key: str
    body: bytes
    props: BasicProperties
    started: float
    thread: threading.Thread | None = None
    epoch: int = 0  # the connection the delivery tag belongs to (Worker._epoch when it arrived)
    finished: bool = False  # the order's thread has produced its outcome


OrderRunner = Callable[[WorkOrder], Outcome]


class Worker:
    """Consume work orders from ``queue`` and run them with the local runner (see the module docstring).

    ``concurrency`` orders run at once (prefetch = concurrency; each order's scenes run one after the
    other in its thread, ``scene_workers`` > 1 gives each order a process pool; ``heartbeat`` is the AMQP
    heartbeat in seconds, serviced by the connection thread while orders run). An order the broker has
    redelivered more than ``max_redeliveries`` times (its worker died each time: OOM, crash — counted in
    ``<out>/orders/<message_id>.redeliveries.json``) is dead-lettered with exit 1 instead of looping
    forever; a graceful requeue on SIGTERM also counts as one redelivery. The worker stops after
    ``max_orders`` settled deliveries, after ``idle_exit`` seconds without work, or on SIGTERM/SIGINT
    (:meth:`request_stop`): then it takes no new order, waits up to ``grace`` seconds for running orders
    and requeues the ones that did not finish (another worker redoes them; completed scenes are skipped).

    A lost connection is reopened with back-off (``reconnect_attempts`` consecutive failures, delays from
    ``reconnect_first_s`` doubling to ``reconnect_max_s``, see :func:`backoff_delay`), the topology is declared
    again and consuming resumes; orders running at that moment are handled as the module docstring says.
    """

    def __init__(self, *, url: str | None = None, queue: str | None = None, concurrency: int = 1,
                 max_orders: int | None = None, idle_exit: float | None = None, grace: float = 25.0,
                 max_retries: int | None = None, retry_backoff_s: float | None = None, scene_workers: int = 1,
                 settings: Settings | None = None, runner: OrderRunner | None = None, heartbeat: int = 30,
                 max_redeliveries: int = 5, reconnect_attempts: int = RECONNECT_ATTEMPTS,
                 reconnect_first_s: float = RECONNECT_FIRST_S, reconnect_max_s: float = RECONNECT_MAX_S) -> None:
        s = settings or get_settings()
        self.settings = s
        self.url = url or s.broker_url
        self.topo = Topology(queue or s.queue_name)
        self.concurrency = max(1, concurrency)
        self.max_orders = max_orders
        self.idle_exit = idle_exit
        self.grace = grace
        self.max_retries = s.retries if max_retries is None else max_retries
        self.retry_backoff_s = s.retry_backoff_s if retry_backoff_s is None else retry_backoff_s
        self.scene_workers = scene_workers
        self.runner = runner or self.run_order
        self.heartbeat = heartbeat
        self.max_redeliveries = max_redeliveries
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._inflight: dict[int, _Delivery] = {}
        self._catalog_lock = threading.Lock()
        self._conn: pika.BlockingConnection | None = None
        self._ch: BlockingChannel | None = None
        self._pub: BlockingChannel | None = None
        self._ctag: str | None = None
        self._last_activity = time.monotonic()
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_first_s = reconnect_first_s
        self.reconnect_max_s = reconnect_max_s
        # Connection epochs: a delivery tag is valid only on the channel it came from. Orders whose delivery
        # died with a connection wait here for their redelivery (by order key): still running, or finished.
        self._lock = threading.Lock()
        self._epoch = 0
        self._orphans: dict[str, _Delivery] = {}
        self._orphan_outcomes: dict[str, tuple[_Delivery, Outcome]] = {}
        self._failures = 0

    # ------------------------------------------------------------------ the work itself (worker thread)
    def run_order(self, order: WorkOrder, recheck: bool = False) -> Outcome:
        """Run one order: skip if it is done, else list and process its scenes, then record it.

        Done = its record exists and every scene listed there is still complete. ``recheck`` ignores the
        record (the source is listed again; complete scenes are still skipped by the runner).
        """
        from steps.pipeline.runner import SceneResult, run_scenes
        from steps.products.catalog import rebuild_catalog
        from steps.sentinel2.source import find_scenes
        from steps.storage import open_storage

        s = self.settings
        mid = order.message_id
        storage = open_storage(order.out, s)
        if not recheck and storage.exists(done_key(mid)):
            gone = _incomplete_scenes(storage, json.loads(storage.read_bytes(done_key(mid))))
            if not gone:
                log.info("order %s already done (%s): acknowledged without work", mid, done_key(mid))
                if storage.exists(redeliveries_key(mid)):
                    storage.delete(redeliveries_key(mid))
                return Outcome("ack", "already done", detail={"already_done": True})
            log.warning("order %s was done but %d scene(s) are no longer complete (e.g. quarantined by "
                        "`audit --requeue`): running it again", mid, len(gone))
        tiles = order.tiles.split(",")
        scenes = find_scenes(order.source, tiles, order.start.isoformat(), order.end.isoformat(),
                             resolution=order.resolution)
        log.info("order %s %s %s..%s: %d scene(s)", mid, order.tiles, order.start, order.end, len(scenes))
        n = len(scenes)
        seen = [0]

        def progress(r: SceneResult) -> None:
            seen[0] += 1
            extra = f" ({r.error})" if r.error else ""
            log.info("order %s [%d/%d] %s %s%s", mid, seen[0], n, r.scene_id, r.status, extra)

        t0 = time.monotonic()
        summary = run_scenes(scenes, order.out, workers=self.scene_workers, force=order.force, settings=s,
                             progress=progress)
        if self.concurrency > 1:
            # Orders running side by side each rebuild the catalog inside run_scenes; one may have scanned
            # before another's item was published. A serialised rebuild after each order fixes the tree.
            with self._catalog_lock:
                rebuild_catalog(storage)
        counts = {k: summary.count(k) for k in ("done", "skipped", "complete", "failed")}
        code = summary.exit_code
        if code == EXIT_OK:
            st = {r.scene_id: r.status for r in summary.results}
            record = {
                "message_id": mid,
                "order": order.model_dump(mode="json"),
                "scenes": [{"scene_id": sc.scene_id, "datetime": sc.datetime, "status": st.get(sc.scene_id, "")}
                           for sc in scenes],
                "counts": counts,
                "finished": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "seconds": round(time.monotonic() - t0, 3),
            }
            storage.write_bytes(done_key(mid), json.dumps(record, indent=1, sort_keys=True).encode() + b"\n")
            if storage.exists(redeliveries_key(mid)):
                storage.delete(redeliveries_key(mid))
            log.info("order %s done in %.1fs: %s", mid, time.monotonic() - t0, counts)
            return Outcome("ack", "done", detail=counts)
        failed = [r for r in summary.results if r.status == "failed"]
        first = failed[0]
        reason = (f"{len(failed)} of {len(scenes)} scene(s) failed; first {first.scene_id} at "
                  f"{first.step or '?'}: {first.error}")
        action = "retry" if code == EXIT_TRANSIENT else "dead"
        return Outcome(action, reason, code, detail=counts)

    def _count_redelivery(self, order: WorkOrder) -> int:
        """Increment and return the order's redelivery counter (kept next to its done record)."""
        from steps.storage import open_storage

        storage = open_storage(order.out, self.settings)
        key = redeliveries_key(order.message_id)
        n = json.loads(storage.read_bytes(key))["count"] + 1 if storage.exists(key) else 1
        storage.write_bytes(key, json.dumps({"count": n, "message_id": order.message_id}).encode() + b"\n")
        return int(n)

    def _process(self, body: bytes, recheck: bool = False, redelivered: bool = False) -> Outcome:
        """Parse and run; map every exception to an outcome (never raises)."""
        try:
            order = WorkOrder.parse(body)
        except InvalidInputError as exc:
            return Outcome("dead", str(exc), EXIT_INVALID_INPUT)
        try:
            if redelivered:
                n = self._count_redelivery(order)
                if n > self.max_redeliveries:
                    return Outcome("dead", f"redelivered {n} times: the worker running it died each time "
                                   "(out of memory? crash?)", EXIT_FAILURE)
            if recheck and self.runner == self.run_order:
                return self.run_order(order, recheck=True)
            return self.runner(order)
        except TransientError as exc:
            return Outcome("retry", f"{type(exc).__name__}: {exc}", EXIT_TRANSIENT)
        except Raw2ReadyError as exc:
            return Outcome("dead", f"{type(exc).__name__}: {exc}", exit_code_for(exc))
        except Exception as exc:
            log.exception("order failed unexpectedly")
            return Outcome("dead", f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILURE)

    # ------------------------------------------------------------------ connection thread
    def request_stop(self, *_: Any) -> None:
        """Stop taking orders; running ones get ``grace`` seconds, then are requeued. Signal-handler safe."""
        if not self._stop.is_set():
            log.info("stop requested: finishing %d running order(s) (grace %.0fs)", len(self._inflight),
                     self.grace)
        self._stop.set()

    def _on_message(self, ch: BlockingChannel, method: Basic.Deliver, props: BasicProperties,
                    body: bytes) -> None:
        tag = method.delivery_tag
        if self._stop.is_set() or (self.max_orders is not None and self.stats.received >= self.max_orders):
            ch.basic_nack(tag, requeue=True)
            self.stats.requeued += 1
            return
        self.stats.received += 1
        self._last_activity = time.monotonic()
        if self.max_orders is not None and self.stats.received >= self.max_orders and self._ctag:
            ch.basic_cancel(self._ctag)  # take no more deliveries; prefetched extras are nacked above
            self._ctag = None
        key = props.message_id or body_id(body)
        if self._adopt(tag, key, props, bool(method.redelivered)):
            return
        if any(d.key == key for d in self._inflight.values()):
            # Its twin is running here: that one will be acked, retried or dead-lettered on its own.
            log.info("order %s is already running in this worker: duplicate acknowledged", key)
            ch.basic_ack(tag)
            self.stats.already_done += 1
            return
        self.stats.redelivered += bool(method.redelivered)
        retries = int((props.headers or {}).get(HDR_RETRIES, 0) or 0)
        d = _Delivery(tag, key, body, props, time.monotonic(), epoch=self._epoch)
        self._inflight[tag] = d
        log.info("received order %s%s%s", key, f" (retry {retries})" if retries else "",
                 " (redelivered)" if method.redelivered else "")
        recheck = bool((props.headers or {}).get(HDR_RECHECK))
        redelivered = bool(method.redelivered)

        def work() -> None:
            self._finish(d, self._process(body, recheck, redelivered))

        d.thread = threading.Thread(target=work, name=f"{ORDER_THREAD_PREFIX}{key[:11]}", daemon=True)
        d.thread.start()

    def _adopt(self, tag: int, key: str, props: BasicProperties, redelivered: bool) -> bool:
        """On the connection thread: if ``key`` is an order whose delivery died with an earlier connection,
        bind this (re)delivery to it instead of running the order again. Returns True if adopted."""
        with self._lock:
            done = self._orphan_outcomes.pop(key, None)
            orphan = None if done else self._orphans.pop(key, None)
            if orphan is not None and orphan.finished:
                # Its outcome was handed to the old connection, which died before acting on it: run again
                # (cheap: a done order is recognised by its record).
                orphan = None
            if done is None and orphan is None:
                return False
            d = done[0] if done else orphan
            assert d is not None
            d.tag, d.props, d.epoch = tag, props, self._epoch
            self._inflight[tag] = d
        self.stats.redelivered += redelivered
        if done:
            log.info("order %s finished (%s) while its delivery was lost with the connection: settling the "
                     "redelivery with that outcome", key, done[1].action)
            self._settle(d, done[1])
        else:
            log.info("order %s is still running from before the reconnect: its redelivery waits for it", key)
        return True

    def _finish(self, d: _Delivery, outcome: Outcome) -> None:
        """In the order's thread: hand the outcome to the connection thread of the delivery's connection, or
        keep it for the redelivery when that connection is gone (a dead tag is never acked)."""
        with self._lock:
            d.finished = True
            conn = self._conn
            if d.epoch == self._epoch and conn is not None:
                try:
                    conn.add_callback_threadsafe(lambda: self._settle(d, outcome))
                    return
                except pika.exceptions.AMQPError:
                    pass  # the connection is closing; its deliveries are void
            self._orphans.pop(d.key, None)
            self._orphan_outcomes[d.key] = (d, outcome)
        if self._stop.is_set():
            log.warning("order %s finished (%s) after the worker stopped; it was requeued and will be "
                        "deduplicated", d.key, outcome.action)
        else:
            log.info("order %s finished (%s) after its connection was lost: kept for its redelivery", d.key,
                     outcome.action)

    def _publish(self, d: _Delivery, exchange: str, routing_key: str, props: BasicProperties) -> bool:
        """Publish a copy of ``d`` (confirmed); on refusal requeue ``d`` instead and return False."""
        assert self._pub is not None and self._ch is not None
        try:
            self._pub.basic_publish(exchange, routing_key, d.body, props, mandatory=True)
        except (pika.exceptions.UnroutableError, pika.exceptions.NackError) as exc:
            log.error("order %s: broker refused the copy for %s (%s): requeued", d.key, routing_key, exc)
            self._ch.basic_nack(d.tag, requeue=True)
            self.stats.requeued += 1
            return False
        return True

    def _settle(self, d: _Delivery, outcome: Outcome) -> None:
        """On the connection thread: act on an order's outcome, then ack its delivery."""
        assert self._ch is not None
        if d.epoch != self._epoch:
            with self._lock:  # scheduled on a connection that has died since: keep for the redelivery
                self._orphan_outcomes[d.key] = (d, outcome)
            return
        if self._inflight.pop(d.tag, None) is None:
            return  # already requeued by a stop that ran out of grace
        try:
            self._act(d, outcome)
        except CONNECTION_ERRORS:
            with self._lock:  # the connection died mid-settle: the redelivery gets this outcome
                self._orphan_outcomes[d.key] = (d, outcome)
            raise

    def _act(self, d: _Delivery, outcome: Outcome) -> None:
        assert self._ch is not None
        self._last_activity = time.monotonic()
        headers = dict(d.props.headers or {})
        retries = int(headers.get(HDR_RETRIES, 0) or 0)
        action = outcome.action
        if action == "retry" and retries >= self.max_retries:
            action = "dead"
            outcome = Outcome("dead", f"gave up after {retries} retries: {outcome.reason}", EXIT_TRANSIENT)
        if action == "retry":
            delay_ms = int(1000 * self.retry_backoff_s * (2 ** retries))
            headers[HDR_RETRIES] = retries + 1
            headers[HDR_REASON] = outcome.reason[:_REASON_MAX]
            headers[HDR_EXIT] = outcome.exit_code
            props = BasicProperties(delivery_mode=2, content_type=d.props.content_type or "application/json",
                                    message_id=d.props.message_id, type=d.props.type, app_id=d.props.app_id,
                                    headers=headers, expiration=str(max(delay_ms, 1)))
            if not self._publish(d, "", self.topo.retry, props):
                return
            self.stats.retried += 1
            log.warning("order %s: transient failure, retry %d/%d in %.1fs: %s", d.key, retries + 1,
                        self.max_retries, delay_ms / 1000, outcome.reason)
        elif action == "dead":
            headers[HDR_REASON] = outcome.reason[:_REASON_MAX]
            headers[HDR_EXIT] = outcome.exit_code
            headers[HDR_QUEUE] = self.topo.queue
            props = BasicProperties(delivery_mode=2, content_type=d.props.content_type,
                                    message_id=d.props.message_id, type=d.props.type, app_id=d.props.app_id,
                                    headers=headers)
            if not self._publish(d, self.topo.dlx, self.topo.dead, props):
                return
            self.stats.dead += 1
            log.error("order %s dead-lettered to %s (exit %d): %s", d.key, self.topo.dead, outcome.exit_code,
                      outcome.reason)
        elif outcome.detail.get("already_done"):
            self.stats.already_done += 1
        else:
            self.stats.done += 1
        self._ch.basic_ack(d.tag)
        log.info("progress: %d received, %d done, %d already done, %d retried, %d dead-lettered, %d running",
                 self.stats.received, self.stats.done, self.stats.already_done, self.stats.retried,
                 self.stats.dead, len(self._inflight))

    def _should_exit(self) -> bool:
        if self._inflight or any(d.thread is not None and d.thread.is_alive() for d in self._orphans.values()):
            return False
        if self.max_orders is not None and self.stats.received >= self.max_orders:
            log.info("processed %d order(s): stopping (--max-orders)", self.stats.received)
            return True
        if self.idle_exit is not None and time.monotonic() - self._last_activity >= self.idle_exit:
            log.info("idle for %.0fs: stopping (--idle-exit)", self.idle_exit)
            return True
        return False

    def run(self, install_signals: bool = True) -> WorkerStats:
        """Consume until a stop condition; returns the counters.

        The first connection failing is a ``TransientError`` at once; a connection lost later is reopened
        with back-off, and only ``reconnect_attempts`` consecutive failures end the run with ``TransientError``.
        """
        if install_signals and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.request_stop)
            signal.signal(signal.SIGINT, self.request_stop)
        self._conn = connect(self.url, heartbeat=self.heartbeat)
        try:
            while True:
                try:
                    self._session()
                    break
                except _LOST_OR_UNREACHABLE as exc:
                    if isinstance(exc, TransientError) and not isinstance(
                            exc.__cause__, pika.exceptions.AMQPConnectionError):
                        raise
                    self._connection_lost()
                    if self._stop.is_set():
                        log.warning("connection to RabbitMQ at %s lost while stopping (%s): unacknowledged "
                                    "orders go back to the queue", _safe_url(self.url), type(exc).__name__)
                        break
                    self._failures += 1
                    if self._failures > self.reconnect_attempts:
                        raise TransientError(f"lost the connection to RabbitMQ at {_safe_url(self.url)} and "
                                             f"{self.reconnect_attempts} reconnect attempts failed: {exc}") from exc
                    if self._failures == 1:
                        self.stats.reconnects += 1
                    delay = backoff_delay(self._failures, self.reconnect_first_s, self.reconnect_max_s)
                    log.warning("connection lost to RabbitMQ at %s (%s: %s): reconnecting in %.1f s (attempt "
                                "%d/%d)", _safe_url(self.url), type(exc).__name__, str(exc)[:200] or "-", delay,
                                self._failures, self.reconnect_attempts)
                    self._stop.wait(delay)
                    if self._stop.is_set():
                        break
        finally:
            _close_quietly(self._conn)  # unacked deliveries (if any) go back to the queue
        log.info("worker stopped: %s", self.stats)
        return self.stats

    def _session(self) -> None:
        """One connection's life: (re)connect, declare, consume until a stop condition."""
        if self._conn is None or not self._conn.is_open:
            conn = connect(self.url, heartbeat=self.heartbeat)
            with self._lock:
                self._conn = conn
        assert self._conn is not None
        self._ch = self._conn.channel()
        declare_topology(self._ch, self.topo)
        self._pub = self._conn.channel()
        self._pub.confirm_delivery()
        self._ch.basic_qos(prefetch_count=self.concurrency)
        self._ctag = self._ch.basic_consume(self.topo.queue, self._on_message, auto_ack=False)
        if self._failures:
            log.info("reconnected to RabbitMQ at %s after %d attempt(s); %d order(s) from before still running",
                     _safe_url(self.url), self._failures,
                     sum(d.thread is not None and d.thread.is_alive() for d in self._orphans.values()))
            self._failures = 0
        log.info("worker consuming %s (concurrency %d, prefetch %d)", self.topo.queue, self.concurrency,
                 self.concurrency)
        self._last_activity = time.monotonic()
        while not self._stop.is_set() and not self._should_exit():
            self._conn.process_data_events(time_limit=0.2)
        if self._stop.is_set():
            self._drain()

    def _connection_lost(self) -> None:
        """Void every delivery of the dead connection: running orders become orphans awaiting redelivery."""
        with self._lock:
            self._epoch += 1
            lost = list(self._inflight.values())
            for d in lost:
                if d.key not in self._orphan_outcomes:
                    self._orphans[d.key] = d
            self._inflight.clear()
            old, self._conn = self._conn, None
        self._ch = self._pub = None
        self._ctag = None
        if lost:
            log.warning("%d order(s) in flight when the connection dropped: their delivery tags are void; "
                        "the broker redelivers them", len(lost))
        _close_quietly(old)

    def _drain(self) -> None:
        """After a stop request: no new deliveries; wait up to ``grace`` for running orders, requeue the rest."""
        assert self._conn is not None and self._ch is not None
        if self._ctag:
            self._ch.basic_cancel(self._ctag)
            self._ctag = None
        deadline = time.monotonic() + self.grace
        while self._inflight and time.monotonic() < deadline:
            self._conn.process_data_events(time_limit=0.2)
        for tag, d in list(self._inflight.items()):
            log.warning("order %s did not finish within %.0fs: requeued", d.key, self.grace)
            self._ch.basic_nack(tag, requeue=True)
            self.stats.requeued += 1
            self._inflight.pop(tag, None)


def run_worker(**kwargs: Any) -> WorkerStats:
    """Build a :class:`Worker` from keyword arguments and run it (see its docstring)."""
    return Worker(**kwargs).run()


# ------------------------------------------------------------------------------------------ dead letters
@dataclass
class DeadLetter:
    """One message in the dead-letter queue."""

    message_id: str
    reason: str
    exit_code: int
    retries: int
    body: bytes


def peek_dead(*, url: str | None = None, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
    """Read up to ``limit`` dead letters without removing them (they are requeued in order)."""
    s = get_settings()
    topo = Topology(queue or s.queue_name)
    conn = connect(url or s.broker_url)
    out: list[DeadLetter] = []
    try:
        ch = conn.channel()
        declare_topology(ch, topo)
        for _ in range(limit):
            method, props, body = ch.basic_get(topo.dead, auto_ack=False)
            if method is None:
                break
            h = props.headers or {}
            out.append(DeadLetter(props.message_id or body_id(body), _text(h.get(HDR_REASON, "")),
                                  int(h.get(HDR_EXIT, 0) or 0), int(h.get(HDR_RETRIES, 0) or 0), body))
    finally:
        conn.close()  # closing the channel returns every unacked message to the queue
    return out


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def redrive_dead(*, url: str | None = None, queue: str | None = None, limit: int | None = None) -> int:
    """Move dead letters back to the work queue (retry counter reset; reason headers dropped).

    Each message is republished with publisher confirms before its dead copy is acknowledged, so a crash
    leaves a duplicate (deduplicated by the worker), never a loss. Returns the number moved.
    """
    s = get_settings()
    topo = Topology(queue or s.queue_name)
    conn = connect(url or s.broker_url)
    moved = 0
    try:
        ch = conn.channel()
        declare_topology(ch, topo)
        ch.confirm_delivery()
        while limit is None or moved < limit:
            method, props, body = ch.basic_get(topo.dead, auto_ack=False)
            if method is None:
                break
            h = {k: v for k, v in (props.headers or {}).items()
                 if k not in (HDR_REASON, HDR_EXIT, HDR_RETRIES, HDR_QUEUE) and k != "x-death"}
            h[HDR_REDRIVEN] = int((props.headers or {}).get(HDR_REDRIVEN, 0) or 0) + 1
            new = BasicProperties(delivery_mode=2, content_type=props.content_type, message_id=props.message_id,
                                  type=props.type, app_id=props.app_id, headers=h)
            ch.basic_publish("", topo.queue, body, new, mandatory=True)
            ch.basic_ack(method.delivery_tag)
            moved += 1
    finally:
        if conn.is_open:
            conn.close()
    log.info("re-drove %d dead letter(s) from %s to %s", moved, topo.dead, topo.queue)
    return moved


def queue_depths(*, url: str | None = None, queue: str | None = None) -> dict[str, int]:
    """Ready-message counts of the work, retry and dead-letter queues (passive declares)."""
    s = get_settings()
    topo = Topology(queue or s.queue_name)
    conn = connect(url or s.broker_url)
    try:
        ch = conn.channel()
        declare_topology(ch, topo)
        return {q: ch.queue_declare(q, passive=True).method.message_count
                for q in (topo.queue, topo.retry, topo.dead)}
    finally:
        conn.close()
