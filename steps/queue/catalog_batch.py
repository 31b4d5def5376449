"""The queue worker's catalog: rebuilt once per batch of orders, not once per order.

An order's commit point is its scenes' item sidecars (and skip records), written by the steps before the done
record and the acknowledgement; the catalog tree is derived from the sidecars and can always be rebuilt from
them (``raw2ready catalog rebuild``). So the worker acknowledges an order without touching the catalog and
notes its output root (:meth:`CatalogBatch.note`); the roots noted are rebuilt together when the first of these
holds (:meth:`CatalogBatch.due`):

* the queue is momentarily empty: no order running and no delivery for ``idle_s`` (default 0.5 s);
* ``max_orders`` orders noted since the last rebuild (default 100);
* ``max_seconds`` since the oldest order not yet in the catalog (default 30 s);
* and always before the worker stops gracefully (``--max-orders``, ``--idle-exit``, SIGTERM, giving up on the
  broker: :meth:`CatalogBatch.flush`).

A rebuild reads *every* sidecar below the root, so it also lists the scenes of orders that another worker
acknowledged and then died before its own rebuild: the next batch rebuild of that root by any worker (or
``raw2ready catalog rebuild``) includes them. Rebuilds run in one background thread at a time, so the
connection thread keeps servicing heartbeats; a root noted while a rebuild runs goes into the next batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

BATCH_ORDERS = 100  # orders noted since the last rebuild
BATCH_SECONDS = 30.0  # age of the oldest order not yet in the catalog
BATCH_IDLE_S = 0.5  # no order running and no delivery for this long: the queue is momentarily empty


class CatalogBatch:
    """Output roots whose catalog is behind their sidecars, and when to rebuild them (see the module docstring).

    ``rebuild(root)`` rebuilds one root's catalog (it may raise: the root stays pending for the next batch).
    Thread-safe: orders note from their threads, the connection thread asks :meth:`due` and :meth:`start`.
    """

    def __init__(self, rebuild: Callable[[str], object], *, max_orders: int = BATCH_ORDERS,
                 max_seconds: float = BATCH_SECONDS, idle_s: float = BATCH_IDLE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rebuild = rebuild
        self.max_orders = max(1, max_orders)
        self.max_seconds = max_seconds
        self.idle_s = idle_s
        self.clock = clock
        self.rebuilds = 0  # roots rebuilt (counted per root)
        self._lock = threading.Lock()
        self._pending: dict[str, None] = {}  # roots, in the order noted
        self._orders = 0
        self._oldest: float | None = None
        self._thread: threading.Thread | None = None

    def note(self, root: str) -> None:
        """An order's work in ``root`` is committed (sidecars written): its catalog is now behind."""
        with self._lock:
            self._pending[root] = None
            self._orders += 1
            if self._oldest is None:
                self._oldest = self.clock()

    @property
    def pending(self) -> list[str]:
        """Roots waiting for a rebuild."""
        with self._lock:
            return list(self._pending)

    def due(self, idle_for: float) -> str:
        """Why a rebuild is due now ('' if it is not); ``idle_for``: seconds with no order running and no
        delivery (0 while an order runs)."""
        with self._lock:
            if not self._pending:
                return ""
            if self._orders >= self.max_orders:
                return f"{self._orders} orders"
            if self._oldest is not None and self.clock() - self._oldest >= self.max_seconds:
                return f"{self.max_seconds:g}s since the oldest order"
            if idle_for >= self.idle_s:
                return "queue idle"
        return ""

    def start(self, reason: str) -> bool:
        """Rebuild the pending roots in a background thread, unless a rebuild is already running."""
        if self._thread is not None and self._thread.is_alive():
            return False
        roots = self._take()
        if not roots:
            return False
        self._thread = threading.Thread(target=self._run, args=(roots, reason), name="catalog-batch", daemon=True)
        self._thread.start()
        return True

    def flush(self, reason: str = "stopping") -> None:
        """Rebuild every pending root now, in this thread (after a background rebuild has finished)."""
        if self._thread is not None:
            self._thread.join()
        roots = self._take()
        if roots:
            self._run(roots, reason)

    def _take(self) -> list[str]:
        with self._lock:
            roots = list(self._pending)
            self._pending.clear()
            self._orders = 0
            self._oldest = None
        return roots

    def _run(self, roots: list[str], reason: str) -> None:
        for root in roots:
            t0 = time.monotonic()
            try:
                self.rebuild(root)
            except Exception as exc:  # the sidecars are there: the next batch (or `catalog rebuild`) catches up
                log.error("catalog rebuild of %s failed (%s: %s): kept for the next batch", root,
                          type(exc).__name__, exc)
                self.note(root)
                continue
            self.rebuilds += 1
            log.info("catalog of %s rebuilt (%s) in %.2fs", root, reason, time.monotonic() - t0)
