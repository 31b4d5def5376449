"""Find the source scenes of a tile/date range and pair L2A with L1C.

A source is one of:

* a **static STAC catalog** (a local ``catalog.json`` or its folder, ``file://``, ``s3://`` or ``https://``
  URL), walked through its child catalogs/collections; items of any convention that
  :func:`steps.sentinel2.items.parse_item` understands (Earth Search v0/v1/c1, Planetary Computer, CDSE,
  stactools, EOPF), L2A and L1C told apart by the item, not by the collection's name;
* a **STAC API** (an ``https://`` landing page that conforms to *item-search*), searched with pystac-client;
* an **ESA SAFE** product: a ``.SAFE`` directory, a ``.zip`` of one as downloaded from the Copernicus Data
  Space, or a folder holding several (identified from their product and granule XML).

An item that cannot be understood is logged with its id and the reason (and counted), never silently
dropped.

Rules (documented in the README):

* a scene is one tile + sensing datetime (to the second) + platform;
* duplicates of a scene (reprocessings: Earth Search's ``_0_``/``_1_`` ids) are resolved by the newest
  processing baseline, then the highest sequence number, then the id;
* each L2A item is paired with the L1C item of the same scene (or none: the mask falls back to SCL);
* the derived scene id is ``<S2A|S2B|S2C>_<tile>_<YYYYMMDDTHHMMSS>``, a pure function of the source
  scene's identity, so reprocessing the same scene never creates a second product.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import AwareDatetime, BaseModel, ConfigDict, field_serializer, field_validator

from steps.errors import InvalidInputError, TransientError, UsageError
from steps.sentinel2.grid import parse_tile
from steps.sentinel2.items import S2Item, best_per_scene, canonical_tile, pair_items, parse_item, resolve_href
from steps.sentinel2.product import is_safe_href
from steps.storage import read_uri
from steps.times import format_datetime, parse_datetime

log = logging.getLogger(__name__)

L2A_COLLECTIONS = ("sentinel-2-c1-l2a", "sentinel-2-l2a")
L1C_COLLECTIONS = ("sentinel-2-l1c", "sentinel-2-c1-l1c")
_PLATFORMS = {"sentinel-2a": "S2A", "sentinel-2b": "S2B", "sentinel-2c": "S2C", "sentinel-2d": "S2D"}


class SceneRef(BaseModel):
    """One scene to process: what the fan-out hands to each per-scene workflow."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scene_id: str
    tile: str
    datetime: AwareDatetime
    platform: str
    processing_baseline: str
    l2a_id: str
    l2a_href: str
    l1c_id: str = ""
    l1c_href: str = ""
    resolution: int = 0

    @field_validator("datetime", mode="before")
    @classmethod
    def _utc(cls, value: Any) -> Any:
        """Text from an edge (JSON, an Argo parameter) becomes an aware UTC datetime, whatever its offset."""
        return parse_datetime(value) if isinstance(value, str) else value

    @field_serializer("datetime")
    def _rfc3339(self, value: _dt.datetime) -> str:
        """Written back out in the one text form (``YYYY-MM-DDTHH:MM:SSZ``): manifests and outputs keep their bytes."""
        return format_datetime(value)


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


def _read_json(href: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(read_uri(href))
        return data
    except FileNotFoundError as exc:
        raise InvalidInputError(f"source not found: {href}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"{href} is not JSON: {exc}") from exc


def _is_stac_api(landing: dict[str, Any]) -> bool:
    conforms = landing.get("conformsTo", [])
    return any("item-search" in c for c in conforms)


@dataclass
class Scan:
    """What a source scan found: the items in the window, and the items it could not understand."""

    items: list[S2Item] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (item id or href, reason)

    def add(self, obj: dict[str, Any], href: str, window: _Window) -> None:
        """Parse one item dict; keep it when it falls in the window, record it when it cannot be understood.

        An item that fails the full reader but still names its tile and time in the window is kept as a
        bare identity: its scene goes to ``ingest``, which fails it with the reader's reason (exit 3, a
        failure record, dead-lettered through the queue), so it is audited like any other failed scene.
        """
        try:
            it = parse_item(obj, href)
        except InvalidInputError as exc:
            self.rejected.append((str(obj.get("id") or href), str(exc)))
            log.warning("source item %s not understood: %s", obj.get("id") or href, exc)
            loose = _loose_identity(obj, href)
            if loose is not None and window.accepts(loose.tile, loose.datetime):
                self.items.append(loose)
            return
        if window.accepts(it.tile, it.datetime):
            self.items.append(it)


_LOOSE_ID = re.compile(r"^(S2[A-D])_(?:MSI(L1C|L2A)_\d{8}T\d{6}_(?:N\d{4}_)?R\d{3}_)?T?(\d{1,2}[C-X][A-Z]{2})_"
                       r"(?:.*_(L1C|L2A))?")


def _loose_identity(obj: dict[str, Any], href: str) -> S2Item | None:
    """Tile, time, platform and level of an item the full reader refused, from its id and ``datetime`` only."""
    m = _LOOSE_ID.match(str(obj.get("id") or ""))
    raw = obj.get("properties")
    props: dict[str, Any] = raw if isinstance(raw, dict) else {}
    tile = canonical_tile(m.group(3)) if m else None
    try:
        when = parse_datetime(str(props.get("datetime")))
    except (TypeError, ValueError):
        return None
    if m is None or tile is None:
        return None
    level = m.group(2) or m.group(4) or ("L1C" if "l1c" in str(obj.get("collection", "")).lower() else "L2A")
    platform = {code: name for name, code in _PLATFORMS.items()}[m.group(1)]
    return S2Item(
        id=str(obj["id"]), href=href, convention="unknown", collection=None, level=level, tile=tile, datetime=when,
        platform=platform, processing_baseline=None, product_id=None, datatake_id=None, sequence=None, epsg=0,
        bands={}, scl=None, granule_metadata_href=None, product_metadata_href=None, tileinfo_href=None,
        boa_offset_applied=None, derived_from=(), cloud_cover=None, raw=obj,
    )


class _Window:
    def __init__(self, tiles: list[str], lo: datetime, hi: datetime) -> None:
        self.tiles = set(tiles)
        self.lo, self.hi = lo, hi

    def accepts(self, tile: str, when: datetime) -> bool:
        return tile in self.tiles and self.lo <= when <= self.hi


_STEM_TILE = re.compile(r"^S2[A-D]_(?:MSIL(?:2A|1C)_\d{8}T\d{6}_N\d{4}_R\d{3}_)?T?(\d{1,2}[C-X][A-Z]{2})_")


def _static_items(root_href: str, window: _Window, scan: Scan, depth: int = 0) -> None:
    """Walk a static catalog (child catalogs/collections, item links) into ``scan``."""
    root = _read_json(root_href)
    if root.get("type") == "Feature":
        scan.add(root, root_href, window)
        return
    for link in root.get("links", []):
        rel = link.get("rel")
        if rel == "child" and depth < 6:
            _static_items(resolve_href(root_href, link["href"]), window, scan, depth + 1)
        elif rel == "item":
            item_href = resolve_href(root_href, link["href"])
            # cheap pre-filter on conventional item ids/product names before reading the item
            m = _STEM_TILE.match(Path(urlparse(item_href).path).stem)
            if m and canonical_tile(m.group(1)) not in window.tiles:
                continue
            scan.add(_read_json(item_href), item_href, window)


def _api_items(url: str, window: _Window, scan: Scan) -> None:
    from pystac_client import Client
    from pystac_client.exceptions import APIError

    try:
        client = Client.open(url)
        available = {c.id: c for c in client.get_collections()}
        for names in (L2A_COLLECTIONS, L1C_COLLECTIONS):
            colls = [c for c in names if c in available]
            if not colls:
                continue
            search = client.search(
                collections=colls[:1],
                datetime=[format_datetime(window.lo), format_datetime(window.hi)],
                query=tile_query(available[colls[0]].to_dict(), window.tiles),
            )
            for item in search.items():
                obj = item.to_dict(transform_hrefs=False)
                self_href = item.get_self_href() or f"{url.rstrip('/')}/collections/{colls[0]}/items/{item.id}"
                scan.add(obj, self_href, window)
    except APIError as exc:
        raise InvalidInputError(f"STAC API {url} refused the search: {exc}") from exc
    except OSError as exc:
        raise TransientError(f"STAC API {url} unreachable: {exc}") from exc


def tile_query(collection: dict[str, Any], tiles: set[str]) -> dict[str, Any]:
    """The STAC API ``query`` that selects ``tiles`` in a collection, in that catalogue's own property.

    Earth Search and the Copernicus Data Space index the tile as ``grid:code`` (``MGRS-47PPR``); Planetary
    Computer as ``s2:mgrs_tile`` (``47PPR``) and has no ``grid:code`` — its collections carry ``msft:*`` fields,
    which is how it is recognised.
    """
    if any(k.startswith("msft:") for k in collection):
        return {"s2:mgrs_tile": {"in": sorted(tiles)}}
    return {"grid:code": {"in": [f"MGRS-{t}" for t in sorted(tiles)]}}


def _safe_items(paths: list[Path], window: _Window, scan: Scan) -> None:
    """Identify each SAFE (product + granule XML only) as an :class:`S2Item`-shaped record in ``scan``."""
    from steps.sentinel2.product import from_safe

    for path in paths:
        try:
            sp = from_safe(str(path))
        except InvalidInputError as exc:
            scan.rejected.append((path.name, str(exc)))
            log.warning("SAFE product %s not understood: %s", path.name, exc)
            continue
        if window.accepts(canonical_tile(sp.tile) or sp.tile, sp.datetime):
            scan.items.append(safe_as_item(sp))


def scan_source(source: str, tiles: list[str], lo: datetime, hi: datetime) -> Scan:
    """Every item of ``tiles`` between ``lo`` and ``hi`` in ``source``, plus the ones it could not understand.

    ``source``: a static STAC catalog (``catalog.json``, its folder, or a ``file``/``s3``/``https`` URL), a
    STAC API landing page, a ``.SAFE`` directory, a ``.zip`` of one, or a folder of those.
    """
    window = _Window([parse_tile(t).id for t in tiles], lo, hi)
    scan = Scan()
    parsed = urlparse(source)
    if parsed.scheme in ("", "file"):
        p = Path(parsed.path if parsed.scheme == "file" else source).expanduser()
        if is_safe_href(str(p)):
            _safe_items([p], window, scan)
        elif p.is_dir() and (p / "catalog.json").exists():
            _static_items(str((p / "catalog.json").resolve()), window, scan)
        elif p.is_dir():
            from steps.sentinel2.safe import find_safe_products

            found = find_safe_products(p)
            if not found:
                raise InvalidInputError(f"source {source}: no catalog.json and no .SAFE directory or .zip in it")
            _safe_items(sorted(found), window, scan)
        elif p.is_file():
            _static_items(str(p.resolve()), window, scan)
        else:
            raise InvalidInputError(f"source not found: {source} (expected a catalog.json, its folder, a .SAFE, a "
                                    ".zip, a folder of them, or a URL)")
    elif parsed.scheme in ("http", "https"):
        landing = _read_json(source)
        if _is_stac_api(landing):
            _api_items(source, window, scan)
        else:
            _static_items(source, window, scan)
    else:
        _static_items(source, window, scan)
    return scan


def safe_as_item(sp: Any) -> S2Item:
    """The identity of a SAFE product (:class:`steps.sentinel2.product.SourceProduct`) as an :class:`S2Item`,
    so that SAFE and STAC sources share de-duplication and L2A↔L1C pairing."""
    pm = sp.product
    return S2Item(
        id=sp.id, href=sp.href, convention="esa-safe", collection=None, level=sp.level, tile=sp.tile,
        datetime=sp.datetime, platform=sp.platform, processing_baseline=sp.baseline, product_id=sp.id,
        datatake_id=pm.datatake_id if pm else None, sequence=None, epsg=sp.tile_meta.epsg if sp.tile_meta else 0,
        bands={}, scl=None, granule_metadata_href=None, product_metadata_href=None, tileinfo_href=None,
        boa_offset_applied=None, derived_from=(), cloud_cover=sp.cloud_cover, raw={},
    )


def find_scenes(source: str, tiles: list[str], start: str, end: str, *, resolution: int = 0) -> list[SceneRef]:
    """All scenes of ``tiles`` between ``start`` and ``end`` (inclusive dates), deduplicated and paired.

    Sorted by (datetime, tile). Items that cannot be understood are logged (id and reason) and left out;
    raises ``UsageError`` for a bad date range, ``InvalidInputError`` for an unknown tile or a source that
    does not exist, ``TransientError`` for an unreachable remote source.
    """
    canon = [parse_tile(t).id for t in tiles]
    lo, hi = parse_date_range(start, end)
    scan = scan_source(source, canon, lo, hi)
    l2a = best_per_scene(it for it in scan.items if it.level == "L2A")
    l1c = best_per_scene(it for it in scan.items if it.level == "L1C")
    scenes = []
    for it, l1 in pair_items(l2a, l1c):
        if l1 is None:
            log.warning("scene %s (%s) has no L1C product: cloud mask will fall back to SCL", it.id,
                        "/".join(it.scene_key))
        scenes.append(SceneRef(
            scene_id=scene_id_for(it.platform, it.tile, it.datetime), tile=it.tile,
            datetime=it.datetime, platform=it.platform,
            processing_baseline=it.processing_baseline or "", l2a_id=it.id, l2a_href=it.href,
            l1c_id=l1.id if l1 else "", l1c_href=l1.href if l1 else "", resolution=resolution,
        ))
    scenes.sort(key=lambda s: (s.datetime, s.tile, s.scene_id))
    log.info("found %d scenes (%d L2A items, %d L1C items, %d not understood) for %s %s..%s", len(scenes),
             len(l2a), len(l1c), len(scan.rejected), ",".join(canon), start, end)
    return scenes
