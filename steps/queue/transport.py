"""RabbitMQ transport of the work orders (pika): connection, topology, publishing with confirms, the consumer's
channels, reconnecting with back-off, and the dead-letter queue.

Topology for a work-order queue ``Q`` (all durable; see ``docs/QUEUE.md``):

* ``Q`` — the work queue. Arguments ``x-dead-letter-exchange = Q.dlx`` and
  ``x-dead-letter-routing-key = Q.dead``, so anything the broker itself dead-letters (a reject without
  requeue, an operator's purge policy) ends in the dead-letter queue too.
* ``Q.dlx`` — a direct exchange; ``Q.dead`` — the dead-letter queue, bound to it with key ``Q.dead``.
* ``Q.retry`` — the delay queue for transient failures: a message is republished there with a per-message
  ``expiration`` (the backoff, ms) and an incremented ``x-raw2ready-retries`` header; when it expires the
  broker dead-letters it back to ``Q`` (``x-dead-letter-exchange = ""``, routing key ``Q``).

Messages are :class:`steps.queue.orders.WorkOrder` canonical JSON bodies, persistent (delivery mode 2), with
``message_id = WorkOrder.message_id``.

Broker loss (the broker stopped or killed, a connection reset): the worker and the publisher reconnect with
exponential back-off (:class:`Reconnect`: 1 s doubling to a 30 s cap, with jitter, :func:`steps.errors.backoff_delay`;
after ``attempts`` consecutive failures they give up with ``TransientError``, exit 75). Only a lost connection
is retried this way: a broker that does not answer the *first* connection fails at once (exit 75).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic, BasicProperties

from steps.errors import Raw2ReadyError, TransientError, backoff_delay
from steps.queue.bookkeeping import HDR_RECHECK, DeadLetter, redrive_headers
from steps.queue.orders import SCHEMA_VERSION, WorkOrder
from steps.settings import Settings, get_settings

log = logging.getLogger(__name__)

MESSAGE_TYPE = f"raw2ready.work-order.v{SCHEMA_VERSION}"

# Exceptions that mean "the connection (or its channel) is gone": reconnect, never a verdict on an order.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    pika.exceptions.AMQPConnectionError,  # incl. ConnectionClosedByBroker (broker stopping), StreamLostError
    pika.exceptions.ConnectionWrongStateError,
    pika.exceptions.ChannelWrongStateError,
    pika.exceptions.ChannelClosed,
)
# ... plus a failed (re)connect, which connect() reports as TransientError caused by AMQPConnectionError.
LOST_OR_UNREACHABLE: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, TransientError)
# The broker answered a confirmed publish with "no": a nack (e.g. a full queue) or an unroutable message.
REFUSED: tuple[type[BaseException], ...] = (pika.exceptions.UnroutableError, pika.exceptions.NackError)
RECONNECT_ATTEMPTS = 10  # consecutive failed reconnects before giving up (exit 75)
RECONNECT_FIRST_S = 1.0  # first back-off delay, seconds
RECONNECT_MAX_S = 30.0  # back-off cap, seconds


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


def safe_url(url: str) -> str:
    """``host:port`` of a broker URL (no credentials), for messages."""
    p = urlparse(url)
    return f"{p.hostname or '?'}:{p.port or 5672}"


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
        raise TransientError(f"RabbitMQ at {safe_url(url)} is unreachable: {type(exc).__name__} {exc}") from exc


def close_quietly(conn: pika.BlockingConnection | None) -> None:
    """Close a connection that may already be dead (its errors mean nothing any more)."""
    if conn is None:
        return
    try:
        if conn.is_open:
            conn.close()
    except Exception as exc:  # a dead socket: nothing left to close
        log.debug("closing a dead connection: %s", exc)


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


@contextmanager
def declared_channel(url: str | None = None, queue: str | None = None) -> Iterator[tuple[BlockingChannel, Topology]]:
    """A channel on a new connection with the topology of ``queue`` declared (defaults from the settings);
    the connection is closed afterwards (which returns every unacknowledged message to its queue)."""
    s = get_settings()
    topo = Topology(queue or s.queue_name)
    conn = connect(url or s.broker_url)
    try:
        ch = conn.channel()
        declare_topology(ch, topo)
        yield ch, topo
    finally:
        close_quietly(conn)


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


def queue_depths(*, url: str | None = None, queue: str | None = None) -> dict[str, int]:
    """Ready-message counts of the work, retry and dead-letter queues (passive declares)."""
    with declared_channel(url, queue) as (ch, topo):
        return {q: ch.queue_declare(q, passive=True).method.message_count
                for q in (topo.queue, topo.retry, topo.dead)}


def order_properties(order: WorkOrder, headers: dict[str, Any] | None = None) -> BasicProperties:
    """AMQP properties of a work order: persistent, JSON, ``message_id`` = the order's dedupe key."""
    return BasicProperties(delivery_mode=2, content_type="application/json", message_id=order.message_id,
                           type=MESSAGE_TYPE, app_id="raw2ready", headers=dict(headers or {}))


def copy_properties(props: BasicProperties, headers: dict[str, Any], *, expiration_ms: int | None = None,
                    content_type: str | None = None) -> BasicProperties:
    """Properties of a copy of a delivered message (retry, dead letter, re-drive): persistent, same id and type,
    new ``headers``; ``expiration_ms`` for a copy in the retry queue."""
    return BasicProperties(delivery_mode=2, content_type=content_type or props.content_type,
                           message_id=props.message_id, type=props.type, app_id=props.app_id, headers=headers,
                           expiration=None if expiration_ms is None else str(expiration_ms))


# ------------------------------------------------------------------------------------------------ reconnect
def is_connection_loss(exc: BaseException) -> bool:
    """True for a lost connection or a failed reconnect; False for a broker that answered (nack, refusal)."""
    if isinstance(exc, TransientError):
        return isinstance(exc.__cause__, pika.exceptions.AMQPConnectionError)
    return isinstance(exc, CONNECTION_ERRORS)


@dataclass
class Reconnect:
    """Back-off over consecutive failed (re)connections to the broker at ``url``.

    :meth:`lost` counts a loss and returns the delay before the next attempt (``first_s`` doubling to
    ``max_s``, equal jitter); more than ``attempts`` consecutive failures raise ``TransientError`` (exit 75).
    :meth:`reconnected` logs the recovery and resets the count. ``reconnects`` counts the losses.
    """

    url: str
    attempts: int = RECONNECT_ATTEMPTS
    first_s: float = RECONNECT_FIRST_S
    max_s: float = RECONNECT_MAX_S
    failures: int = 0
    reconnects: int = 0

    def lost(self, exc: BaseException, where: str = "", detail: str = "") -> float:
        """Count the loss ``exc``; log it and return the delay. ``where`` follows the address in both messages
        (e.g. `` after 3 of 10 confirmed orders``); ``detail`` names the error (default: its type and text)."""
        self.failures += 1
        if self.failures > self.attempts:
            raise TransientError(f"lost the connection to RabbitMQ at {safe_url(self.url)}{where} and "
                                 f"{self.attempts} reconnect attempts failed: {exc}") from exc
        if self.failures == 1:
            self.reconnects += 1
        delay = backoff_delay(self.failures, self.first_s, self.max_s, jitter=True)
        log.warning("connection lost to RabbitMQ at %s%s (%s): reconnecting in %.1f s (attempt %d/%d)",
                    safe_url(self.url), where, detail or f"{type(exc).__name__}: {str(exc)[:200] or '-'}", delay,
                    self.failures, self.attempts)
        return delay

    def reconnected(self, what: str) -> None:
        """After a successful reconnect: log it (with ``what`` follows) and reset the failure count."""
        if self.failures:
            log.info("reconnected to RabbitMQ at %s after %d attempt(s)%s", safe_url(self.url), self.failures, what)
            self.failures = 0


# ------------------------------------------------------------------------------------------------ publish
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
    rc = Reconnect(url, reconnect_attempts, reconnect_first_s, reconnect_max_s)
    t0 = time.monotonic()
    conn = connect(url)
    in_doubt = False  # the order at rep.confirmed was sent on a connection that died before its confirm
    try:
        while True:
            try:
                if not conn.is_open:
                    conn = connect(url)
                ch = conn.channel()
                declare_topology(ch, topo)
                ch.confirm_delivery()
                rc.reconnected(f": resuming at order {rep.confirmed + 1} of {len(todo)}")
                while rep.confirmed < len(todo):
                    order = todo[rep.confirmed]
                    props = order_properties(order, {HDR_RECHECK: 1} if recheck else None)
                    rep.republished += in_doubt
                    in_doubt = True
                    rep.sent += 1
                    try:
                        ch.basic_publish("", topo.queue, order.canonical(), props, mandatory=True)
                    except REFUSED as exc:
                        raise TransientError(f"broker did not accept order {order.message_id}: {exc}") from exc
                    in_doubt = False
                    rep.confirmed += 1
                    if rep.confirmed % 500 == 0:
                        log.info("published %d orders", rep.confirmed)
                break
            except LOST_OR_UNREACHABLE as exc:
                if not is_connection_loss(exc):
                    raise  # a nack or an unroutable order: the broker answered, no reconnect helps
                delay = rc.lost(exc, f" after {rep.confirmed} of {len(todo)} confirmed orders",
                                type(exc).__name__)
                rep.reconnects = rc.reconnects
                close_quietly(conn)
                time.sleep(delay)
    finally:
        close_quietly(conn)
    rep.seconds = time.monotonic() - t0
    log.info("published %d orders to %s in %.2fs (%.0f orders/s; %d sent, %d republished, %d reconnects)",
             rep.confirmed, queue, rep.seconds, rep.confirmed / rep.seconds if rep.seconds > 0 else 0.0,
             rep.sent, rep.republished, rep.reconnects)
    return rep


# ------------------------------------------------------------------------------------------------ consume
@dataclass
class Consumer:
    """The channels of one consuming connection: ``channel`` consumes (manual acks, prefetch) and ``publisher``
    publishes copies with confirms (retries, dead letters); ``tag`` is the consumer tag (None once cancelled)."""

    channel: BlockingChannel
    publisher: BlockingChannel
    tag: str | None

    def cancel(self) -> None:
        """Take no more deliveries (deliveries already prefetched still arrive)."""
        if self.tag:
            self.channel.basic_cancel(self.tag)
            self.tag = None


OnMessage = Callable[[BlockingChannel, Basic.Deliver, BasicProperties, bytes], None]


def start_consuming(conn: pika.BlockingConnection, topo: Topology, prefetch: int, on_message: OnMessage) -> Consumer:
    """Declare the topology and consume the work queue on ``conn`` (manual acks, ``prefetch`` unacked at most)."""
    ch = conn.channel()
    declare_topology(ch, topo)
    pub = conn.channel()
    pub.confirm_delivery()
    ch.basic_qos(prefetch_count=prefetch)
    return Consumer(ch, pub, ch.basic_consume(topo.queue, on_message, auto_ack=False))


# ------------------------------------------------------------------------------------------------ dead letters
def peek_dead(*, url: str | None = None, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
    """Read up to ``limit`` dead letters without removing them (they are requeued in order)."""
    out: list[DeadLetter] = []
    with declared_channel(url, queue) as (ch, topo):  # closing returns every unacked message to the queue
        for _ in range(limit):
            method, props, body = ch.basic_get(topo.dead, auto_ack=False)
            if method is None:
                break
            out.append(DeadLetter.from_message(props.message_id, props.headers, body))
    return out


def redrive_dead(*, url: str | None = None, queue: str | None = None, limit: int | None = None) -> int:
    """Move dead letters back to the work queue (retry counter reset; reason headers dropped).

    Each message is republished with publisher confirms before its dead copy is acknowledged, so a crash
    leaves a duplicate (deduplicated by the worker), never a loss. Returns the number moved.
    """
    moved = 0
    with declared_channel(url, queue) as (ch, topo):
        ch.confirm_delivery()
        while limit is None or moved < limit:
            method, props, body = ch.basic_get(topo.dead, auto_ack=False)
            if method is None:
                break
            ch.basic_publish("", topo.queue, body, copy_properties(props, redrive_headers(props.headers)),
                             mandatory=True)
            ch.basic_ack(method.delivery_tag)
            moved += 1
    log.info("re-drove %d dead letter(s) from %s to %s", moved, topo.dead, topo.queue)
    return moved
