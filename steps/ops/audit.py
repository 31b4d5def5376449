"""Audit, re-drive and backfill status: make loss detectable and recoverable.

``audit`` compares three things for every scene of a tile/date range: what the source archive has (after
dedupe, :func:`steps.sentinel2.source.find_scenes`), what the catalog lists, and which assets are actually present in
storage with the checksum their item recorded. Each scene gets one state:

=========  ====================================================================================
ok         item sidecar present, listed by its month catalog, every asset present and matching
skipped    a skip record (nothing to do: fully clouded, outside the swath)
missing    neither an item nor a skip record (never processed, or lost)
corrupt    the item exists but an asset is missing, truncated or has another checksum, or the
           item JSON itself is unreadable
unlisted   item and assets are fine but the catalog does not link the item (run ``catalog rebuild``)
failed     the last run of the scene failed (a failure record exists) and it is not done
=========  ====================================================================================

``requeue`` quarantines corrupt scenes (moves their files under ``quarantine/<scene_id>/`` — nothing is
deleted) so that they become *missing*, and returns one work order per tile × month that has missing,
corrupt or failed scenes; the caller publishes them.
"""

from __future__ import annotations

import json
import logging
from calendar import monthrange
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from steps.products.catalog import (
    COLLECTION_ID,
    failure_key,
    item_key,
    quarantine_folder,
    quarter,
    scan,
    scene_folder,
    skip_key,
)
from steps.sentinel2.source import SceneRef, parse_scene_id
from steps.storage import LocalStorage, S3Storage, join, sha256_multihash
from steps.times import format_datetime, parse_datetime

log = logging.getLogger(__name__)

Store = LocalStorage | S3Storage
STATES = ("ok", "skipped", "missing", "corrupt", "unlisted", "failed")
INCOMPLETE = ("missing", "corrupt", "unlisted", "failed")


@dataclass
class SceneAudit:
    """The audit verdict for one scene."""

    scene_id: str
    tile: str
    datetime: str
    state: str
    problems: list[str] = field(default_factory=list)

    @property
    def period(self) -> tuple[int, int, int]:
        """(year, quarter, month) of the acquisition."""
        dt = parse_datetime(self.datetime)
        return dt.year, quarter(dt.month), dt.month


@dataclass
class AuditReport:
    """All verdicts plus items in storage that the source does not explain."""

    scenes: list[SceneAudit]
    orphans: list[str]

    @property
    def complete(self) -> bool:
        """True when every scene is ok or skipped."""
        return all(s.state in ("ok", "skipped") for s in self.scenes)

    def counts(self) -> dict[str, int]:
        """Number of scenes per state."""
        c = Counter(s.state for s in self.scenes)
        return {k: c.get(k, 0) for k in STATES}

    def to_json(self) -> dict[str, Any]:
        """JSON-serialisable report."""
        return {"complete": self.complete, "counts": self.counts(), "orphans": self.orphans,
                "scenes": [asdict(s) for s in self.scenes]}


def _listed_items(storage: Store) -> set[str]:
    """Item keys linked from the month catalogs."""
    listed: set[str] = set()
    for key in storage.list(COLLECTION_ID):
        parts = key.split("/")
        if len(parts) == 5 and parts[-1] == "catalog.json":  # <coll>/<yyyy>/Q<q>/<mm>/catalog.json
            try:
                node = json.loads(storage.read_bytes(key))
            except (ValueError, FileNotFoundError):
                continue
            folder = key.rsplit("/", 1)[0]
            for link in node.get("links", []):
                if link.get("rel") == "item":
                    listed.add(join(folder, link["href"].removeprefix("./")))
    return listed


def check_item(storage: Store, key: str, verify_checksums: bool = True) -> list[str]:
    """Problems of one published item: unreadable JSON, missing or mismatching assets."""
    try:
        item = json.loads(storage.read_bytes(key))
    except FileNotFoundError:
        return ["item sidecar missing"]
    except ValueError as exc:
        return [f"item sidecar unreadable: {exc}"]
    folder = key.rsplit("/", 1)[0]
    problems = []
    for name, asset in sorted(item.get("assets", {}).items()):
        akey = join(folder, str(asset.get("href", "")).removeprefix("./"))
        try:
            if verify_checksums:
                data = storage.read_bytes(akey)
                size = len(data)
                digest = sha256_multihash(data)
            else:
                size, digest = storage.size(akey), asset.get("file:checksum")
        except FileNotFoundError:
            problems.append(f"asset {name} missing ({akey})")
            continue
        if size != asset.get("file:size"):
            problems.append(f"asset {name} has {size} bytes, item records {asset.get('file:size')}")
        elif digest != asset.get("file:checksum"):
            problems.append(f"asset {name} checksum mismatch")
    return problems


def audit(storage: Store, scenes: list[SceneRef], *, verify_checksums: bool = True) -> AuditReport:
    """Verdict for every expected scene, and the orphans (items in storage not among ``scenes``)."""
    listed = _listed_items(storage)
    expected = {s.scene_id for s in scenes}
    out: list[SceneAudit] = []
    for sc in scenes:
        dt = sc.datetime
        ikey, skey = item_key(dt, sc.scene_id), skip_key(dt, sc.scene_id)
        verdict = SceneAudit(sc.scene_id, sc.tile, format_datetime(sc.datetime), "ok")
        if storage.exists(ikey):
            problems = check_item(storage, ikey, verify_checksums)
            if problems:
                verdict.state, verdict.problems = "corrupt", problems
            elif ikey not in listed:
                verdict.state, verdict.problems = "unlisted", ["not linked from its month catalog"]
        elif storage.exists(skey):
            verdict.state = "skipped"
        elif storage.exists(failure_key(sc.scene_id)):
            rec = json.loads(storage.read_bytes(failure_key(sc.scene_id)))
            verdict.state = "failed"
            verdict.problems = [f"step {rec.get('step')} exit {rec.get('exit_code')}: {rec.get('error')}"]
        else:
            verdict.state, verdict.problems = "missing", ["no item and no skip record"]
        out.append(verdict)
    orphans = sorted(r.key for r in scan(storage) if r.status == "done" and r.scene_id not in expected)
    return AuditReport(out, orphans)


def quarantine(storage: Store, scene: SceneAudit) -> int:
    """Move a corrupt scene's files under ``quarantine/<scene_id>/`` (copy, then delete); return the count."""
    folder = scene_folder(parse_datetime(scene.datetime), scene.scene_id)
    target = quarantine_folder(scene.scene_id)
    moved = 0
    # the item sidecar goes first, so that the scene stops being "complete" before its assets move
    keys = sorted(storage.list(folder), key=lambda k: (not k.endswith(f"{scene.scene_id}.json"), k))
    for key in keys:
        storage.write_bytes(join(target, key.rsplit("/", 1)[1]), storage.read_bytes(key))
        storage.delete(key)
        moved += 1
    log.warning("quarantined %s (%d files) to %s", scene.scene_id, moved, target)
    return moved


def requeue_plan(storage: Store, report: AuditReport, source: str, out: str) -> list[Any]:
    """Quarantine corrupt scenes and return work orders (tile × month) re-driving every incomplete scene.

    ``unlisted`` scenes need no reprocessing (a catalog rebuild lists them); they are not re-driven.
    """
    from steps.queue.orders import monthly_orders

    months: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for s in report.scenes:
        if s.state == "corrupt":
            quarantine(storage, s)
        if s.state in ("missing", "corrupt", "failed"):
            dt = parse_datetime(s.datetime)
            months[s.tile].add((dt.year, dt.month))
    orders = []
    for tile, ym in sorted(months.items()):
        for y, m in sorted(ym):
            orders.extend(monthly_orders([tile], date(y, m, 1), date(y, m, monthrange(y, m)[1]), source, out))
    return orders


def coverage(storage: Store) -> tuple[list[str], date, date] | None:
    """The tiles and the date span this output store has ever seen, or None for an empty store.

    Gathered from everything that survives a partial loss: item sidecars and skip records, failure records,
    quarantined scenes and the work orders' done records (``orders/<message_id>.json``). Scene dates are
    widened to whole calendar months (the unit of a work order), so a month with one scene left is audited
    in full. A store that lost all of these needs explicit ``--tiles/--start/--end``.
    """
    from steps.queue.bookkeeping import ORDERS_PREFIX

    tiles: set[str] = set()
    days: list[date] = []

    def from_scene_id(scene_id: str) -> None:
        parsed = parse_scene_id(scene_id)
        if parsed:
            tile, dt = parsed
            d = dt.date()
            tiles.add(tile)
            days.extend([d.replace(day=1), d.replace(day=monthrange(d.year, d.month)[1])])

    for rec in scan(storage):
        from_scene_id(rec.scene_id)
    for key in storage.list("failures"):
        from_scene_id(key.rsplit("/", 1)[-1].removesuffix(".json"))
    for key in storage.list("quarantine"):
        parts = key.split("/")
        if len(parts) >= 3:
            from_scene_id(parts[1])
    for key in storage.list(ORDERS_PREFIX):
        if not key.endswith(".json") or key.endswith(".redeliveries.json"):
            continue
        try:
            order = json.loads(storage.read_bytes(key))["order"]
            tiles.update(order["tiles"].split(","))
            days.extend([date.fromisoformat(order["start"]), date.fromisoformat(order["end"])])
        except (ValueError, KeyError, TypeError, FileNotFoundError):
            log.warning("ignoring unreadable order record %s", key)
    if not tiles or not days:
        return None
    return sorted(tiles), min(days), max(days)


def period_sort_key(label: str) -> tuple[str, int]:
    """Order period labels: ``2024`` < ``2024 Q1`` < ``2024-01`` < ``2024-02`` … < ``total``."""
    if label == "total":
        return ("9999", 0)
    y = label[:4]
    if len(label) == 4:
        return (y, 0)
    if "Q" in label:
        return (y, int(label[-1]) * 100)
    m = int(label[5:7])
    return (y, quarter(m) * 100 + m)


def table(report: AuditReport, by: str = "month") -> list[tuple[str, dict[str, int]]]:
    """Counts per state grouped by year → quarter → month (``by='month'``) or per tile (``by='tile'``)."""
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for s in report.scenes:
        y, q, m = s.period
        if by == "tile":
            groups[s.tile][s.state] += 1
        else:
            groups[f"{y}"][s.state] += 1
            groups[f"{y} Q{q}"][s.state] += 1
            groups[f"{y}-{m:02d}"][s.state] += 1
    total: Counter[str] = Counter(s.state for s in report.scenes)

    key = (lambda label: (label, 0)) if by == "tile" else period_sort_key
    rows = [(label, {k: groups[label].get(k, 0) for k in STATES}) for label in sorted(groups, key=key)]
    rows.append(("total", {k: total.get(k, 0) for k in STATES}))
    return rows


def status_rows(storage: Store, scenes: list[SceneRef] | None = None) -> list[tuple[str, dict[str, int]]]:
    """Backfill progress from storage alone (done / skipped / failed), plus missing when ``scenes`` is given."""
    cols = ("done", "skipped", "failed", "missing")
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    seen: set[str] = set()

    def add(dt_text: str, state: str) -> None:
        dt = parse_datetime(dt_text)
        q = quarter(dt.month)
        for label in (f"{dt.year}", f"{dt.year} Q{q}", f"{dt.year}-{dt.month:02d}", "total"):
            groups[label][state] += 1

    for rec in scan(storage):
        seen.add(rec.scene_id)
        dt = f"{rec.year:04d}-{rec.month:02d}-01T00:00:00Z"
        add(dt, rec.status)
    for key in storage.list("failures"):
        try:
            body = json.loads(storage.read_bytes(key))
        except (ValueError, FileNotFoundError):
            continue
        if body.get("scene_id") in seen or not body.get("scene"):
            continue
        seen.add(body["scene_id"])
        add(body["scene"]["datetime"], "failed")
    for sc in scenes or []:
        if sc.scene_id not in seen:
            add(format_datetime(sc.datetime), "missing")

    return [(label, {c: groups[label].get(c, 0) for c in cols}) for label in sorted(groups, key=period_sort_key)]
