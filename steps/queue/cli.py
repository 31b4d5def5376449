"""``raw2ready tiles | enqueue | worker | dead-letters``: the queue-driven commands (thin click wrappers).

The logic lives in :mod:`steps.sentinel2.tiles` and :mod:`steps.queue` (``worker``, ``transport``);
``steps.cli`` adds :data:`COMMANDS` to the ``raw2ready`` group. Exit codes as everywhere: 2 bad arguments, 3 invalid
input, 75 broker unreachable.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from typing import Any

import click

from steps.errors import UsageError

log = logging.getLogger(__name__)


def _quiet_pika() -> None:
    """pika logs every connection step at INFO; keep the worker's own progress readable."""
    logging.getLogger("pika").setLevel(logging.WARNING)


def _select_tiles(tiles: str | None, aoi: str | None, bbox: str | None = None, cover: str = "all") -> list[str]:
    """Exactly one of --tiles/--aoi/--bbox → canonical tile ids (``cover`` applies to --aoi)."""
    from steps.sentinel2.grid import tiles_argument
    from steps.sentinel2.tiles import aoi_tiles, parse_bbox, tiles_for_bbox

    given = [n for n, v in (("--tiles", tiles), ("--aoi", aoi), ("--bbox", bbox)) if v]
    if len(given) != 1:
        raise UsageError("give exactly one of --tiles" + (", --aoi or --bbox" if bbox is not None else " or --aoi"))
    if tiles:
        return tiles_argument(tiles)
    if aoi:
        return aoi_tiles(aoi, cover=cover)
    assert bbox is not None
    return tiles_for_bbox(parse_bbox(bbox))


def reconnect_options[F: Callable[..., Any]](cmd: F) -> F:
    """``--reconnect-attempts`` and ``--reconnect-max-delay`` (the publisher's and the worker's broker back-off)."""
    cmd = click.option("--reconnect-max-delay", type=click.FloatRange(0.1), default=30.0, show_default=True,
                       help="Cap of the reconnect back-off in seconds (1 s doubling, with jitter).")(cmd)
    return click.option("--reconnect-attempts", type=click.IntRange(0), default=10, show_default=True,
                        help="After a lost broker connection: consecutive reconnect attempts before exiting 75.")(cmd)


def _date(text: str, name: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"{name} {text!r}: expected YYYY-MM-DD") from exc


@click.command("tiles")
@click.option("--aoi", default=None, help="Named area: thailand (committed tile sets, see --cover).")
@click.option("--bbox", default=None, help="minlon,minlat,maxlon,maxlat in degrees (WGS84).")
@click.option("--cover", type=click.Choice(["all", "minimal"]), default="all", show_default=True,
              help="With --aoi: 'all' = every tile holding land of the area (thailand: 98); 'minimal' = only "
                   "tiles holding land no other tile holds, still covering the whole area (thailand: 90).")
@click.option("--land-only", is_flag=True, default=False,
              help="With --bbox: keep only tiles that ESA's grid flags as land.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "geojson"]), default="text",
              show_default=True, help="One id per line, a JSON list, or footprints as GeoJSON.")
def tiles_cmd(aoi: str | None, bbox: str | None, cover: str, land_only: bool, fmt: str) -> None:
    """List the tiles of ESA's Sentinel-2 grid that cover an area.

    --aoi: the committed tile set of a named area (--cover all: every tile with land in the area;
    --cover minimal: the smallest set that still covers all of its land). --bbox: every tile whose
    polygon in ESA's grid intersects the box (touching counts); --land-only drops tiles of open sea.
    Only ids that exist in the Sentinel-2 archive's grid are listed. The count goes to stderr.

    \b
    raw2ready tiles --aoi thailand
    raw2ready tiles --aoi thailand --cover minimal --format json
    raw2ready tiles --bbox 100.3,13.5,100.9,14.0 --format geojson
    """
    from steps.sentinel2.grid import footprint_polygon_lonlat, parse_tile
    from steps.sentinel2.tiles import aoi_tiles, parse_bbox, tiles_for_bbox

    if bool(aoi) == bool(bbox):
        raise UsageError("give exactly one of --aoi or --bbox")
    if aoi:
        if land_only:
            raise UsageError("--land-only applies to --bbox (an --aoi set holds land already)")
        ids = aoi_tiles(aoi, cover)
    else:
        if cover != "all":
            raise UsageError("--cover minimal applies to --aoi only")
        assert bbox is not None
        ids = tiles_for_bbox(parse_bbox(bbox), land_only=land_only)
    if fmt == "text":
        click.echo("\n".join(ids))
    elif fmt == "json":
        click.echo(json.dumps(ids))
    else:
        feats = []
        for tid in ids:
            t = parse_tile(tid)
            feats.append({"type": "Feature", "id": tid,
                          "properties": {"tile": tid, "epsg": t.epsg, "bounds": list(t.bounds), "land": t.land},
                          "geometry": {"type": "Polygon", "coordinates": [footprint_polygon_lonlat(t.epsg, t.bounds)]}})
        click.echo(json.dumps({"type": "FeatureCollection", "features": feats}))
    click.echo(f"{len(ids)} tile(s)", err=True)


@click.command("enqueue")
@click.option("--tiles", default=None, help="MGRS tiles, comma-separated (e.g. 47PPR,47PQR).")
@click.option("--aoi", default=None, help="Named area instead of --tiles: thailand.")
@click.option("--cover", type=click.Choice(["all", "minimal"]), default="all", show_default=True,
              help="With --aoi: every tile with land in the area, or the minimal covering set.")
@click.option("--start", required=True, help="First date, YYYY-MM-DD (inclusive).")
@click.option("--end", required=True, help="Last date, YYYY-MM-DD (inclusive).")
@click.option("--resolution", type=click.Choice(["0", "10", "20", "60"]), default="0", show_default=True,
              help="Order option: product resolution in metres (0 = the finest the source has).")
@click.option("--source", default=None, help="STAC source of the orders (default RAW2READY_SOURCE).")
@click.option("--out", default=None, help="Output root of the orders (default RAW2READY_OUT).")
@click.option("--queue", default=None, help="Work-order queue (default RAW2READY_QUEUE_NAME).")
@click.option("--recheck", is_flag=True,
              help="Let the worker list the source again even for orders already done (new scenes).")
@click.option("--force", is_flag=True,
              help="Order option: reprocess scenes that are already complete (e.g. after a science change).")
@click.option("--dry-run", is_flag=True, help="Print the message bodies instead of publishing.")
@reconnect_options
def enqueue_cmd(tiles: str | None, aoi: str | None, cover: str, start: str, end: str, resolution: str,
                source: str | None, out: str | None, queue: str | None, recheck: bool, force: bool,
                dry_run: bool, reconnect_attempts: int, reconnect_max_delay: float) -> None:
    """Publish one work order per tile × calendar month (persistent, publisher confirms).

    Re-enqueuing the same orders creates no duplicate work: each message's id is the order's hash and the
    worker skips orders it has already done.
    """
    from steps.queue.orders import monthly_orders
    from steps.settings import get_settings

    s = get_settings()
    ids = _select_tiles(tiles, aoi, cover=cover)
    a, b = _date(start, "--start"), _date(end, "--end")
    if b < a:
        raise UsageError(f"--end {end} is before --start {start}")
    source = source or s.source
    out = out or s.out
    if not source:
        raise UsageError("--source is required (or set RAW2READY_SOURCE)")
    if not out:
        raise UsageError("--out is required (or set RAW2READY_OUT)")
    orders = monthly_orders(ids, a, b, source, out, force=force, resolution=int(resolution))
    if dry_run:
        for o in orders:
            click.echo(f"{o.message_id} {o.canonical().decode()}")
        return
    from steps.queue.transport import publish_report

    _quiet_pika()

    t0 = time.monotonic()
    rep = publish_report(orders, queue=queue, settings=s, recheck=recheck, reconnect_attempts=reconnect_attempts,
                         reconnect_max_s=reconnect_max_delay)
    n = rep.confirmed
    dt = time.monotonic() - t0
    months = len({(o.start, o.end) for o in orders})
    click.echo(f"enqueued {n} order(s) ({len(ids)} tile(s) × {months} month(s)) to "
               f"{queue or s.queue_name} in {dt:.2f}s ({n / max(dt, 1e-9):.0f} orders/s)")
    if rep.reconnects:
        click.echo(f"publish: {rep.sent} sent, {rep.confirmed} confirmed, {rep.republished} republished after "
                   f"{rep.reconnects} reconnect(s) (a republished order may be in the queue twice: harmless, "
                   "the worker deduplicates)")


@click.command("worker")
@click.option("--concurrency", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Orders processed at once (also the prefetch limit).")
@click.option("--max-orders", type=click.IntRange(1), default=None, help="Stop after this many orders.")
@click.option("--idle-exit", type=click.FloatRange(0), default=None,
              help="Stop after this many seconds without work.")
@click.option("--grace", type=click.FloatRange(0), default=25.0, show_default=True,
              help="On SIGTERM, seconds to let running orders finish before requeueing them.")
@click.option("--max-retries", type=click.IntRange(0), default=None,
              help="Retries of a transient failure before dead-lettering (default RAW2READY_RETRIES).")
@click.option("--max-redeliveries", type=click.IntRange(0), default=5, show_default=True,
              help="Dead-letter an order whose worker died this many times running it (OOM, crash).")
@click.option("--scene-workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Scenes of one order processed in parallel (process pool).")
@click.option("--queue", default=None, help="Work-order queue (default RAW2READY_QUEUE_NAME).")
@reconnect_options
def worker_cmd(concurrency: int, max_orders: int | None, idle_exit: float | None, grace: float,
               max_retries: int | None, max_redeliveries: int, scene_workers: int, queue: str | None,
               reconnect_attempts: int, reconnect_max_delay: float) -> None:
    """Consume work orders and process them with the local runner (manual acks, prefetch = concurrency).

    An order is acknowledged only after its products are published; transient failures are retried with
    backoff then dead-lettered; invalid orders go straight to the dead-letter queue with the reason.
    SIGTERM finishes running orders (up to --grace seconds) or requeues them. A lost broker connection is
    reopened with back-off (logged "connection lost … reconnecting in X s (attempt n/N)" and "reconnected");
    orders running meanwhile are neither lost nor run twice.
    """
    from steps.queue.worker import ORDER_THREAD_PREFIX, Worker

    _quiet_pika()

    stats = Worker(queue=queue, concurrency=concurrency, max_orders=max_orders, idle_exit=idle_exit, grace=grace,
                   max_retries=max_retries, max_redeliveries=max_redeliveries, scene_workers=scene_workers,
                   reconnect_attempts=reconnect_attempts, reconnect_max_s=reconnect_max_delay).run()
    click.echo(f"orders: {stats.done} done, {stats.already_done} already done, {stats.retried} retried, "
               f"{stats.dead} dead-lettered, {stats.requeued} requeued, {stats.redelivered} redelivered, "
               f"{stats.reconnects} reconnect(s)")
    if any(t.is_alive() for t in threading.enumerate() if t.name.startswith(ORDER_THREAD_PREFIX)):
        # An order outlived --grace and was requeued, but its thread is still inside GDAL/numpy: interpreter
        # shutdown would tear it down mid-call and abort the process (SIGABRT). Its writes are atomic and
        # the order is back in the queue, so leaving at once loses nothing.
        log.warning("leaving with an abandoned order still running (requeued for another worker)")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@click.command("dead-letters")
@click.option("--queue", default=None, help="Work-order queue (default RAW2READY_QUEUE_NAME).")
@click.option("--limit", type=click.IntRange(1), default=100, show_default=True)
@click.option("--redrive", is_flag=True, help="Move them back to the work queue (after fixing the cause).")
def dead_letters_cmd(queue: str | None, limit: int, redrive: bool) -> None:
    """List the dead-letter queue (id, exit code, reason) or re-drive it into the work queue."""
    from steps.queue.transport import peek_dead, redrive_dead

    _quiet_pika()

    if redrive:
        n = redrive_dead(queue=queue, limit=limit)
        click.echo(f"re-drove {n} message(s)")
        return
    dead = peek_dead(queue=queue, limit=limit)
    for d in dead:
        click.echo(f"{d.message_id}\texit {d.exit_code}\tretries {d.retries}\t{d.reason}")
    click.echo(f"{len(dead)} dead letter(s)", err=True)
    sys.stdout.flush()


COMMANDS: list[click.Command] = [tiles_cmd, enqueue_cmd, worker_cmd, dead_letters_cmd]
