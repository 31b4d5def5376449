"""Find the source scenes of a tile/date range in a STAC source and pair L2A with L1C.

A source is either a **static catalog** (a local ``catalog.json`` or its folder, ``file://``, ``s3://`` or
``https://`` URL) holding Earth Search–style ``sentinel-2-c1-l2a`` and ``sentinel-2-l1c`` collections, or
a **STAC API** (an ``https://`` landing page that conforms to *item-search*), searched with pystac-client.

Rules (documented in the README):

* a scene is one tile + sensing datetime (to the second) + platform;
* duplicates of a scene (reprocessings: Earth Search's ``_0_``/``_1_`` ids) are resolved by the newest
  processing baseline, then the highest sequence number, then the id;
* each L2A item is paired with the L1C item of the same scene (or none: the mask falls back to SCL);
* the derived scene id is ``<S2A|S2B|S2C>_<tile>_<YYYYMMDDTHHMMSS>``, a pure function of the source
  scene's identity, so reprocessing the same scene never creates a second product.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

from pydantic import BaseModel, ConfigDict

from steps.catalog import format_datetime, parse_datetime
from steps.errors import InvalidInputError, TransientError, UsageError
from steps.grid import parse_tile
from steps.storage import read_uri

log = logging.getLogger(__name__)

L2A_COLLECTIONS = ("sentinel-2-c1-l2a", "sentinel-2-l2a")
L1C_COLLECTIONS = ("sentinel-2-l1c", "sentinel-2-c1-l1c")
_PLATFORMS = {"sentinel-2a": "S2A", "sentinel-2b": "S2B", "sentinel-2c": "S2C", "sentinel-2d": "S2D"}
_SEQ_RE = re.compile(r"_(\d+)_L(?:2A|1C)$")


class SceneRef(BaseModel):
    """One scene to process: what the fan-out hands to each per-scene workflow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scene_id: str
    tile: str
    datetime: str
    platform: str
    processing_baseline: str
    l2a_id: str
    l2a_href: str
    l1c_id: str = ""
    l1c_href: str = ""


@dataclass(frozen=True)
class SourceItem:
    """The few fields of a source STAC item that scene resolution needs."""

    id: str
    href: str
    tile: str
    datetime: datetime
    platform: str
    baseline: str
    sequence: int

    @property
    def scene_key(self) -> tuple[str, str, str]:
        """(tile, datetime to the second, platform)."""
        return (self.tile, self.datetime.strftime("%Y%m%dT%H%M%S"), self.platform)


def parse_date_range(start: str, end: str) -> tuple[datetime, datetime]:
    """Parse ``YYYY-MM-DD`` (or full RFC 3339) bounds into an inclusive UTC range; end before start → error."""
    def one(text: str, is_end: bool) -> datetime:
        try:
            if len(text) == 10:
                d = date.fromisoformat(text)
                return datetime.combine(d, time.max if is_end else time.min, tzinfo=UTC)
            return parse_datetime(text)
        except ValueError as exc:
            raise UsageError(f"bad date {text!r}: use YYYY-MM-DD") from exc

    lo, hi = one(start, False), one(end, True)
    if hi < lo:
        raise UsageError(f"end {end} is before start {start}")
    return lo, hi


def scene_id_for(platform: str, tile: str, dt: datetime) -> str:
    """Derived scene id, e.g. ``S2B_47PPR_20240115T035029``."""
    code = _PLATFORMS.get(platform.lower(), platform.upper()[:3])
    return f"{code}_{tile}_{dt.astimezone(UTC).strftime('%Y%m%dT%H%M%S')}"


_SCENE_ID_RE = re.compile(r"^[A-Z0-9]{3}_(\d{2}[A-Z]{3})_(\d{8}T\d{6})$")


def parse_scene_id(scene_id: str) -> tuple[str, datetime] | None:
    """The inverse of :func:`scene_id_for`: (tile, sensing time UTC), or None if ``scene_id`` is not one."""
    m = _SCENE_ID_RE.match(scene_id)
    if m is None:
        return None
    return m.group(1), datetime.strptime(m.group(2), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


def _baseline_key(baseline: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in baseline.split("."))
    except ValueError:
        return (0,)


def _tile_of(props: dict[str, Any], item_id: str) -> str | None:
    code = props.get("grid:code")
    if isinstance(code, str) and code.startswith("MGRS-"):
        return code[5:]
    if "mgrs:utm_zone" in props:
        return f"{int(props['mgrs:utm_zone']):02d}{props['mgrs:latitude_band']}{props['mgrs:grid_square']}"
    m = re.match(r"^S2[A-D]_(?:T)?(\d{2}[A-Z]{3})_", item_id)
    return m.group(1) if m else None


def _source_item(obj: dict[str, Any], href: str) -> SourceItem | None:
    props = obj.get("properties", {})
    tile = _tile_of(props, obj.get("id", ""))
    if tile is None or "datetime" not in props or props["datetime"] is None:
        log.warning("ignoring item %s: no tile or datetime", obj.get("id"))
        return None
    m = _SEQ_RE.search(obj["id"])
    return SourceItem(
        id=obj["id"], href=href, tile=tile, datetime=parse_datetime(props["datetime"]),
        platform=str(props.get("platform", "")).lower(), baseline=str(props.get("s2:processing_baseline", "")),
        sequence=int(m.group(1)) if m else 0,
    )


def _read_json(href: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(read_uri(href))
        return data
    except FileNotFoundError as exc:
        raise InvalidInputError(f"source not found: {href}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{href} is not JSON: {exc}") from exc


def _resolve(base: str, href: str) -> str:
    """Resolve ``href`` relative to the document at ``base`` (local path, file/s3/http(s) URL)."""
    if urlparse(href).scheme or href.startswith("/"):
        return href
    parsed = urlparse(base)
    if parsed.scheme == "s3":  # urljoin does not treat s3 as hierarchical
        path = posixpath.normpath(posixpath.join(posixpath.dirname(parsed.path), href))
        return f"s3://{parsed.netloc}{path}"
    if parsed.scheme in ("http", "https", "file"):
        return urljoin(base, href)
    return str((Path(base).parent / href).resolve())


def _normalise_source(source: str) -> str:
    parsed = urlparse(source)
    if parsed.scheme in ("", "file"):
        p = Path(parsed.path if parsed.scheme == "file" else source).expanduser()
        if p.is_dir():
            p = p / "catalog.json"
        if not p.exists():
            raise InvalidInputError(f"source not found: {source} (expected a catalog.json, its folder, or a URL)")
        return str(p.resolve())
    return source


def _is_stac_api(landing: dict[str, Any]) -> bool:
    conforms = landing.get("conformsTo", [])
    return any("item-search" in c for c in conforms)


class _Window:
    def __init__(self, tiles: list[str], lo: datetime, hi: datetime) -> None:
        self.tiles = set(tiles)
        self.lo, self.hi = lo, hi

    def accepts(self, it: SourceItem) -> bool:
        return it.tile in self.tiles and self.lo <= it.datetime <= self.hi


def _static_items(root_href: str, window: _Window) -> tuple[list[SourceItem], list[SourceItem]]:
    root = _read_json(root_href)
    l2a: list[SourceItem] = []
    l1c: list[SourceItem] = []
    for link in root.get("links", []):
        if link.get("rel") != "child":
            continue
        child_href = _resolve(root_href, link["href"])
        child = _read_json(child_href)
        cid = child.get("id", "")
        if cid in L2A_COLLECTIONS:
            bucket = l2a
        elif cid in L1C_COLLECTIONS:
            bucket = l1c
        else:
            continue
        for ilink in child.get("links", []):
            if ilink.get("rel") != "item":
                continue
            # cheap pre-filter on the conventional item id before reading the item
            item_href = _resolve(child_href, ilink["href"])
            stem = Path(urlparse(item_href).path).stem
            m = re.match(r"^S2[A-D]_(\d{2}[A-Z]{3})_", stem)
            if m and m.group(1) not in window.tiles:
                continue
            it = _source_item(_read_json(item_href), item_href)
            if it and window.accepts(it):
                bucket.append(it)
    if not l2a and not any(link.get("rel") == "child" for link in root.get("links", [])):
        raise InvalidInputError(f"{root_href} has no child collections: not a Sentinel-2 STAC catalog")
    return l2a, l1c


def _api_items(url: str, window: _Window) -> tuple[list[SourceItem], list[SourceItem]]:
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    try:
        client = Client.open(url)
        out: list[list[SourceItem]] = [[], []]
        for k, names in enumerate((L2A_COLLECTIONS, L1C_COLLECTIONS)):
            available = {c.id for c in client.get_collections()}
            colls = [c for c in names if c in available]
            if not colls:
                continue
            search = client.search(
                collections=colls[:1],
                datetime=[format_datetime(window.lo), format_datetime(window.hi)],
                query={"grid:code": {"in": [f"MGRS-{t}" for t in sorted(window.tiles)]}},
            )
            for item in search.items():
                obj = item.to_dict(transform_hrefs=False)
                self_href = item.get_self_href() or f"{url.rstrip('/')}/collections/{colls[0]}/items/{item.id}"
                it = _source_item(obj, self_href)
                if it and window.accepts(it):
                    out[k].append(it)
        return out[0], out[1]
    except APIError as exc:
        raise InvalidInputError(f"STAC API {url} refused the search: {exc}") from exc
    except OSError as exc:
        raise TransientError(f"STAC API {url} unreachable: {exc}") from exc


def _best(items: list[SourceItem]) -> dict[tuple[str, str, str], SourceItem]:
    best: dict[tuple[str, str, str], SourceItem] = {}
    for it in items:
        cur = best.get(it.scene_key)
        rank = (_baseline_key(it.baseline), it.sequence, it.id)
        if cur is None or rank > (_baseline_key(cur.baseline), cur.sequence, cur.id):
            if cur is not None:
                log.info("duplicate scene %s: %s supersedes %s", it.scene_key, it.id, cur.id)
            best[it.scene_key] = it
        else:
            log.info("duplicate scene %s: keeping %s over %s", it.scene_key, cur.id, it.id)
    return best


def find_scenes(source: str, tiles: list[str], start: str, end: str) -> list[SceneRef]:
    """All scenes of ``tiles`` between ``start`` and ``end`` (inclusive dates), deduplicated and paired.

    Sorted by (datetime, tile). Raises ``UsageError`` for a bad date range, ``InvalidInputError`` for an
    unknown tile or a source that does not exist, ``TransientError`` for an unreachable remote source.
    """
    canon = [parse_tile(t).id for t in tiles]
    lo, hi = parse_date_range(start, end)
    window = _Window(canon, lo, hi)
    src = _normalise_source(source)
    if urlparse(src).scheme in ("http", "https"):
        landing = _read_json(src)
        l2a, l1c = _api_items(src, window) if _is_stac_api(landing) else _static_items(src, window)
    else:
        l2a, l1c = _static_items(src, window)
    best_l2a, best_l1c = _best(l2a), _best(l1c)
    scenes = []
    for key, it in best_l2a.items():
        l1 = best_l1c.get(key)
        if l1 is None:
            log.warning("scene %s (%s) has no L1C item: cloud mask will fall back to SCL", it.id, key)
        scenes.append(SceneRef(
            scene_id=scene_id_for(it.platform, it.tile, it.datetime), tile=it.tile,
            datetime=format_datetime(it.datetime), platform=it.platform, processing_baseline=it.baseline,
            l2a_id=it.id, l2a_href=it.href, l1c_id=l1.id if l1 else "", l1c_href=l1.href if l1 else "",
        ))
    scenes.sort(key=lambda s: (s.datetime, s.tile, s.scene_id))
    log.info("found %d scenes (%d L2A items, %d L1C items) for %s %s..%s", len(scenes), len(l2a), len(l1c),
             ",".join(canon), start, end)
    return scenes
