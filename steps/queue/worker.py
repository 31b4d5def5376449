"""The queue worker: consumes work orders and runs them with the local runner, tying the transport
(:mod:`steps.queue.transport`: pika) to the order bookkeeping (:mod:`steps.queue.bookkeeping`: done records,
retries, dead-letter reasons) and the catalog batch (:mod:`steps.queue.catalog_batch`). See ``docs/QUEUE.md``.

Plain RabbitMQ cannot deduplicate, so the worker does: an order is done when its record
``<out>/orders/<message_id>.json`` exists in the order's output storage (written after every scene of the
order is published) and every scene it lists is still complete (a scene quarantined by ``audit --requeue``
makes the same order run again); a delivery whose twin is running in this worker is acknowledged at once.
Re-publishing an order is therefore harmless.

The worker (:class:`Worker`) consumes with manual acknowledgement and ``prefetch = concurrency``. Each order
runs in a thread (``find_scenes`` + ``run_scenes``); the connection stays in the main thread, which keeps
heartbeats flowing and receives the thread's outcome through ``add_callback_threadsafe``. Outcomes:

* all scenes done/skipped/complete → write the done record, then ack;
* transient (``TransientError``, or a scene failed with exit 75) → republish to ``Q.retry`` with backoff
  and ack; after ``max_retries`` retries → dead letter (exit 75);
* invalid (malformed JSON, unknown tile, end before start, bad input: exit 3), bad usage (2) or unexpected
  (1) → publish to ``Q.dlx`` with headers ``x-raw2ready-reason`` and ``x-raw2ready-exit-code``, then ack.

Publish-then-ack means a crash in between leaves a duplicate, never a loss; duplicates are deduplicated. The
catalog is not rebuilt per order: the item sidecars are the commit point, and the worker rebuilds the catalog of
the roots its orders wrote to once per batch (:class:`steps.queue.catalog_batch.CatalogBatch`).

Broker loss: the connection is reopened with back-off (:class:`steps.queue.transport.Reconnect`). Deliveries die
with their channel: an order still running when the connection dropped keeps running, its outcome is never
acted on with its old delivery tag; the broker redelivers the message, and the redelivery is attached to the
running order (or settled with its outcome if it already finished) instead of running it a second time. A
redelivery that lands in another worker finds the done record (the order's effect happens once).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from steps.queue.bookkeeping import (
    HDR_RECHECK,
    HDR_RETRIES,
    Outcome,
    body_id,
    check_done,
    clear_redeliveries,
    count_redelivery,
    done_key,
    header_int,
    settle,
    write_done_record,
)
from steps.queue.catalog_batch import BATCH_ORDERS, BATCH_SECONDS, CatalogBatch
from steps.queue.orders import WorkOrder
from steps.queue.transport import (
    CONNECTION_ERRORS,
    LOST_OR_UNREACHABLE,
    RECONNECT_ATTEMPTS,
    RECONNECT_FIRST_S,
    RECONNECT_MAX_S,
    REFUSED,
    Consumer,
    Reconnect,
    Topology,
    close_quietly,
    connect,
    copy_properties,
    is_connection_loss,
    safe_url,
    start_consuming,
)
from steps.settings import Settings, get_settings

log = logging.getLogger(__name__)

ORDER_THREAD_PREFIX = "order-"  # name prefix of the threads running orders


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

    The catalog of the output roots the orders wrote to is rebuilt once per batch: when the queue is momentarily
    empty, after ``catalog_batch_orders`` orders or ``catalog_batch_seconds`` seconds, whichever comes first, and
    always before the worker stops (:class:`steps.queue.catalog_batch.CatalogBatch`).

    A lost connection is reopened with back-off (``reconnect_attempts`` consecutive failures, delays from
    ``reconnect_first_s`` doubling to ``reconnect_max_s``, see :class:`steps.queue.transport.Reconnect`), the
    topology is declared again and consuming resumes; orders running at that moment are handled as the module
    docstring says.
    """

    def __init__(self, *, url: str | None = None, queue: str | None = None, concurrency: int = 1,
                 max_orders: int | None = None, idle_exit: float | None = None, grace: float = 25.0,
                 max_retries: int | None = None, retry_backoff_s: float | None = None, scene_workers: int = 1,
                 settings: Settings | None = None, runner: OrderRunner | None = None, heartbeat: int = 30,
                 max_redeliveries: int = 5, reconnect_attempts: int = RECONNECT_ATTEMPTS,
                 reconnect_first_s: float = RECONNECT_FIRST_S, reconnect_max_s: float = RECONNECT_MAX_S,
                 catalog_batch_orders: int = BATCH_ORDERS, catalog_batch_seconds: float = BATCH_SECONDS) -> None:
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
        self.catalog = CatalogBatch(self._rebuild_catalog, max_orders=catalog_batch_orders,
                                    max_seconds=catalog_batch_seconds)
        self.reconnect = Reconnect(self.url, reconnect_attempts, reconnect_first_s, reconnect_max_s)
        self._stop = threading.Event()
        self._inflight: dict[int, _Delivery] = {}
        self._conn: pika.BlockingConnection | None = None
        self._consumer: Consumer | None = None
        self._last_activity = time.monotonic()
        # Connection epochs: a delivery tag is valid only on the channel it came from. Orders whose delivery
        # died with a connection wait here for their redelivery (by order key): still running, or finished.
        self._lock = threading.Lock()
        self._epoch = 0
        self._orphans: dict[str, _Delivery] = {}
        self._orphan_outcomes: dict[str, tuple[_Delivery, Outcome]] = {}

    # ------------------------------------------------------------------ the work itself (worker thread)
    def run_order(self, order: WorkOrder, recheck: bool = False) -> Outcome:
        """Run one order: skip if it is done, else list and process its scenes, then record it.

        Done = its record exists and every scene listed there is still complete. ``recheck`` ignores the
        record (the source is listed again; complete scenes are still skipped by the runner). The catalog is
        left to the batch rebuild (the outcome names the root).
        """
        from steps.pipeline.runner import SceneResult, run_scenes
        from steps.sentinel2.source import find_scenes
        from steps.storage import open_storage

        s = self.settings
        mid = order.message_id
        storage = open_storage(order.out, s)
        gone = None if recheck else check_done(storage, mid)
        if gone == []:
            log.info("order %s already done (%s): acknowledged without work", mid, done_key(mid))
            clear_redeliveries(storage, mid)
            return Outcome("ack", "already done", detail={"already_done": True}, catalog=order.out)
        if gone:
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
                             progress=progress, catalog=False)
        counts = {k: summary.count(k) for k in ("done", "skipped", "complete", "failed")}
        code = summary.exit_code
        if code == EXIT_OK:
            write_done_record(storage, order, scenes, {r.scene_id: r.status for r in summary.results}, counts,
                              time.monotonic() - t0)
            log.info("order %s done in %.1fs: %s", mid, time.monotonic() - t0, counts)
            return Outcome("ack", "done", detail=counts, catalog=order.out)
        failed = [r for r in summary.results if r.status == "failed"]
        first = failed[0]
        reason = (f"{len(failed)} of {len(scenes)} scene(s) failed; first {first.scene_id} at "
                  f"{first.step or '?'}: {first.error}")
        action = "retry" if code == EXIT_TRANSIENT else "dead"
        return Outcome(action, reason, code, detail=counts, catalog=order.out)

    def _rebuild_catalog(self, root: str) -> None:
        """Rebuild the catalog of ``root`` from its sidecars, as ``run_scenes`` does (retried when transient)."""
        from functools import partial

        from steps.pipeline.runner import call_with_retries
        from steps.pipeline.stac import CATALOG, CatalogInputs

        call_with_retries(partial(CATALOG.run, CatalogInputs(out=root), self.settings), "catalog", self.settings)

    def _count_redelivery(self, order: WorkOrder) -> int:
        from steps.storage import open_storage

        return count_redelivery(open_storage(order.out, self.settings), order.message_id)

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
        if self.max_orders is not None and self.stats.received >= self.max_orders and self._consumer:
            self._consumer.cancel()  # take no more deliveries; prefetched extras are nacked above
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
        retries = header_int(props.headers, HDR_RETRIES)
        d = _Delivery(tag, key, body, props, time.monotonic(), epoch=self._epoch)
        self._inflight[tag] = d
        log.info("received order %s%s%s", key, f" (retry {retries})" if retries else "",
                 " (redelivered)" if method.redelivered else "")
        recheck = bool((props.headers or {}).get(HDR_RECHECK))
        redelivered = bool(method.redelivered)

        def work() -> None:
            outcome = self._process(body, recheck, redelivered)
            if outcome.catalog:  # its sidecars are written: the catalog of its root is now behind
                self.catalog.note(outcome.catalog)
            self._finish(d, outcome)

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
        assert self._consumer is not None
        try:
            self._consumer.publisher.basic_publish(exchange, routing_key, d.body, props, mandatory=True)
        except REFUSED as exc:
            log.error("order %s: broker refused the copy for %s (%s): requeued", d.key, routing_key, exc)
            self._consumer.channel.basic_nack(d.tag, requeue=True)
            self.stats.requeued += 1
            return False
        return True

    def _settle(self, d: _Delivery, outcome: Outcome) -> None:
        """On the connection thread: act on an order's outcome, then ack its delivery."""
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
        assert self._consumer is not None
        self._last_activity = time.monotonic()
        plan = settle(outcome, d.props.headers, max_retries=self.max_retries, backoff_s=self.retry_backoff_s,
                      queue=self.topo.queue)
        outcome = plan.outcome
        if plan.action == "retry":
            props = copy_properties(d.props, plan.headers, expiration_ms=plan.expiration_ms,
                                    content_type=d.props.content_type or "application/json")
            if not self._publish(d, "", self.topo.retry, props):
                return
            self.stats.retried += 1
            log.warning("order %s: transient failure, retry %d/%d in %.1fs: %s", d.key, plan.retries + 1,
                        self.max_retries, plan.expiration_ms / 1000, outcome.reason)
        elif plan.action == "dead":
            if not self._publish(d, self.topo.dlx, self.topo.dead, copy_properties(d.props, plan.headers)):
                return
            self.stats.dead += 1
            log.error("order %s dead-lettered to %s (exit %d): %s", d.key, self.topo.dead, outcome.exit_code,
                      outcome.reason)
        elif outcome.detail.get("already_done"):
            self.stats.already_done += 1
        else:
            self.stats.done += 1
        self._consumer.channel.basic_ack(d.tag)
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

    def _catalog_due(self) -> None:
        """Between events: start the batch rebuild of the catalog when one is due (see :class:`CatalogBatch`)."""
        idle_for = 0.0 if self._inflight else time.monotonic() - self._last_activity
        reason = self.catalog.due(idle_for)
        if reason:
            self.catalog.start(reason)

    def run(self, install_signals: bool = True) -> WorkerStats:
        """Consume until a stop condition; returns the counters.

        The first connection failing is a ``TransientError`` at once; a connection lost later is reopened
        with back-off, and only ``reconnect_attempts`` consecutive failures end the run with ``TransientError``.
        The catalog of every root an order wrote to is rebuilt before this returns (or raises).
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
                except LOST_OR_UNREACHABLE as exc:
                    if not is_connection_loss(exc):
                        raise
                    self._connection_lost()
                    if self._stop.is_set():
                        log.warning("connection to RabbitMQ at %s lost while stopping (%s): unacknowledged "
                                    "orders go back to the queue", safe_url(self.url), type(exc).__name__)
                        break
                    delay = self.reconnect.lost(exc)
                    self.stats.reconnects = self.reconnect.reconnects
                    self._stop.wait(delay)
                    if self._stop.is_set():
                        break
        finally:
            close_quietly(self._conn)  # unacked deliveries (if any) go back to the queue
            self.catalog.flush()
        log.info("worker stopped: %s", self.stats)
        return self.stats

    def _session(self) -> None:
        """One connection's life: (re)connect, declare, consume until a stop condition."""
        if self._conn is None or not self._conn.is_open:
            conn = connect(self.url, heartbeat=self.heartbeat)
            with self._lock:
                self._conn = conn
        assert self._conn is not None
        self._consumer = start_consuming(self._conn, self.topo, self.concurrency, self._on_message)
        running = sum(d.thread is not None and d.thread.is_alive() for d in self._orphans.values())
        self.reconnect.reconnected(f"; {running} order(s) from before still running")
        log.info("worker consuming %s (concurrency %d, prefetch %d)", self.topo.queue, self.concurrency,
                 self.concurrency)
        self._last_activity = time.monotonic()
        while not self._stop.is_set() and not self._should_exit():
            self._conn.process_data_events(time_limit=0.2)
            self._catalog_due()
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
        self._consumer = None
        if lost:
            log.warning("%d order(s) in flight when the connection dropped: their delivery tags are void; "
                        "the broker redelivers them", len(lost))
        close_quietly(old)

    def _drain(self) -> None:
        """After a stop request: no new deliveries; wait up to ``grace`` for running orders, requeue the rest."""
        assert self._conn is not None and self._consumer is not None
        self._consumer.cancel()
        deadline = time.monotonic() + self.grace
        while self._inflight and time.monotonic() < deadline:
            self._conn.process_data_events(time_limit=0.2)
        for tag, d in list(self._inflight.items()):
            log.warning("order %s did not finish within %.0fs: requeued", d.key, self.grace)
            self._consumer.channel.basic_nack(tag, requeue=True)
            self.stats.requeued += 1
            self._inflight.pop(tag, None)


def run_worker(**kwargs: Any) -> WorkerStats:
    """Build a :class:`Worker` from keyword arguments and run it (see its docstring)."""
    return Worker(**kwargs).run()
