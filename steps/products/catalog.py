"""The product layout and the derived STAC catalog, built deterministically from item sidecars.

Layout below an output root (a directory or ``s3://bucket/prefix``)::

    catalog.json                                   root catalog
    raw2ready-s2-vegetation/collection.json        the one derived collection
    raw2ready-s2-vegetation/2024/catalog.json      year
    raw2ready-s2-vegetation/2024/Q1/catalog.json   quarter
    raw2ready-s2-vegetation/2024/Q1/01/catalog.json  month → links to items
    raw2ready-s2-vegetation/2024/Q1/01/<scene_id>/<scene_id>.json   item = sidecar, next to its assets
    raw2ready-s2-vegetation/2024/Q1/01/<scene_id>/{ndvi,lai,lai_flags,cloud_mask}.tif
    raw2ready-s2-vegetation/2024/Q1/01/<scene_id>/<scene_id>.skipped.json   (nothing-to-do record)
    raw2ready-s2-vegetation/index.json             item index (id, datetime, tile, bbox, assets)
    work/<scene_id>/…                              intermediate step outputs (removed after publish)

The item JSON is written once, by the ``stac`` step, after every asset is written and its checksum
verified; it already carries its final relative links. The catalog nodes (root, collection, year,
quarter and month catalogs and the index) are derived only from the sidecars found in storage, sorted,
built as pystac objects with explicit relative links, serialised with fixed key order
(:func:`steps.products.stacext.stac_dict`) and indentation (:func:`dumps`), and written only when their
bytes change — so a rebuild from storage alone gives byte-identical files, and a second run changes no byte.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pystac
from pystac.extensions.raster import RasterExtension

from steps.products.stacext import stac_dict
from steps.storage import LocalStorage, S3Storage, join
from steps.times import parse_datetime

log = logging.getLogger(__name__)

STAC_VERSION = pystac.get_stac_version()
"""The STAC version pystac writes (1.1.0; its core schemas are vendored for offline validation)."""
COLLECTION_ID = "raw2ready-s2-vegetation"
ROOT_ID = "raw2ready"
ROOT_TITLE = "raw2ready"
LICENSE_URL = "https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice"
WORK_PREFIX = "work"
INDEX_KEY = join(COLLECTION_ID, "index.json")

_ITEM_RE = re.compile(rf"^{COLLECTION_ID}/(\d{{4}})/Q([1-4])/(\d{{2}})/([^/]+)/\4\.json$")
_SKIP_RE = re.compile(rf"^{COLLECTION_ID}/(\d{{4}})/Q([1-4])/(\d{{2}})/([^/]+)/\4\.skipped\.json$")

Store = LocalStorage | S3Storage


def quarter(month: int) -> int:
    """Calendar quarter 1–4 of a month 1–12."""
    return (month - 1) // 3 + 1


def scene_folder(dt: datetime, scene_id: str) -> str:
    """Key of a scene's product folder: ``<collection>/<yyyy>/Q<q>/<mm>/<scene_id>``."""
    return join(COLLECTION_ID, f"{dt.year:04d}", f"Q{quarter(dt.month)}", f"{dt.month:02d}", scene_id)


def item_key(dt: datetime, scene_id: str) -> str:
    """Key of a scene's item sidecar."""
    return join(scene_folder(dt, scene_id), f"{scene_id}.json")


def skip_key(dt: datetime, scene_id: str) -> str:
    """Key of a scene's skip record (scene had nothing to process)."""
    return join(scene_folder(dt, scene_id), f"{scene_id}.skipped.json")


def is_complete(storage: LocalStorage | S3Storage, scene_id: str, dt: datetime) -> bool:
    """A scene is complete when its item sidecar or its skip record exists (the two end states)."""
    return bool(storage.exists(item_key(dt, scene_id)) or storage.exists(skip_key(dt, scene_id)))


def failure_key(scene_id: str) -> str:
    """Key of a scene's last failure record (removed when the scene later succeeds)."""
    return join("failures", f"{scene_id}.json")


def quarantine_folder(scene_id: str) -> str:
    """Where ``audit --requeue`` moves a corrupt scene's files before it is re-driven."""
    return join("quarantine", scene_id)


def work_folder(scene_id: str) -> str:
    """Key prefix for a scene's intermediate files."""
    return join(WORK_PREFIX, scene_id)


def dumps(obj: Any) -> bytes:
    """Canonical JSON bytes used for every catalog file: 2-space indent, trailing newline, UTF-8."""
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode()


def write_if_changed(storage: Store, key: str, data: bytes) -> bool:
    """Write ``data`` to ``key`` unless identical bytes are already there; return whether it wrote."""
    try:
        if storage.read_bytes(key) == data:
            return False
    except FileNotFoundError:
        pass
    storage.write_bytes(key, data)
    return True


def item_link_objects() -> list[pystac.Link]:
    """The relative links every derived item carries (root, parent month catalog, collection), as pystac links.

    Every item sits at ``<collection>/<yyyy>/Q<q>/<mm>/<scene_id>/<scene_id>.json``, so they are the same for all.
    """
    return [
        _link("root", "../../../../../catalog.json", ROOT_TITLE),
        _link("parent", "../catalog.json"),
        _link("collection", "../../../../collection.json"),
    ]


def item_links(dt: datetime) -> list[dict[str, str]]:
    """:func:`item_link_objects` as JSON objects (``dt`` is not needed: the depth of every item is the same)."""
    return [link.to_dict(transform_href=False) for link in item_link_objects()]


def record_skip(storage: Store, scene: dict[str, Any], reason: str, details: dict[str, Any] | None = None) -> str:
    """Write the durable "nothing to do" record for a scene (deterministic bytes); return its key."""
    dt = parse_datetime(scene["datetime"])
    body = {
        "scene_id": scene["scene_id"],
        "tile": scene["tile"],
        "datetime": scene["datetime"],
        "status": "skipped",
        "reason": reason,
        "source": {"l2a": scene.get("l2a_id"), "l1c": scene.get("l1c_id")},
        "details": details or {},
    }
    key = skip_key(dt, scene["scene_id"])
    write_if_changed(storage, key, dumps(body))
    return key


@dataclass(frozen=True)
class SceneRecord:
    """A scene found in storage: a published item or a skip record."""

    scene_id: str
    key: str
    year: int
    quarter: int
    month: int
    status: str  # "done" | "skipped"


def scan(storage: Store) -> list[SceneRecord]:
    """All item sidecars and skip records below the collection folder, sorted by key."""
    out = []
    for key in storage.list(COLLECTION_ID):
        for rx, status in ((_ITEM_RE, "done"), (_SKIP_RE, "skipped")):
            m = rx.match(key)
            if m:
                out.append(SceneRecord(m.group(4), key, int(m.group(1)), int(m.group(2)), int(m.group(3)), status))
    return out


def _catalog(id_: str, description: str, links: list[pystac.Link], title: str | None = None) -> dict[str, Any]:
    """A catalog node's JSON object, with exactly ``links`` (relative hrefs from the layout)."""
    cat = pystac.Catalog(id_, description, title=title)
    cat.links = links
    return stac_dict(cat)


def _link(rel: str, href: str, title: str | None = None,
          media_type: str = pystac.MediaType.JSON) -> pystac.Link:
    return pystac.Link(rel, href, media_type, title)


@dataclass
class RebuildResult:
    """What a rebuild found and wrote."""

    items: int
    skipped: int
    written: int
    unchanged: int
    removed: int


def rebuild_catalog(storage: Store) -> RebuildResult:
    """Rebuild root → collection → year → quarter → month catalogs and the index from the sidecars.

    Deterministic: the output depends only on the sidecars' content. Stale catalog nodes (months with no
    items any more) are removed. Items themselves are never rewritten.
    """
    records = scan(storage)
    items: list[dict[str, Any]] = []
    for rec in records:
        if rec.status != "done":
            continue
        item = json.loads(storage.read_bytes(rec.key))
        items.append(item)
    items.sort(key=lambda it: (it["properties"]["datetime"], it["id"]))

    tree: dict[int, dict[int, dict[int, list[dict[str, Any]]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for it in items:
        dt = parse_datetime(it["properties"]["datetime"])
        tree[dt.year][quarter(dt.month)][dt.month].append(it)

    files: dict[str, bytes] = {}
    root_links = [
        _link("root", "./catalog.json", ROOT_TITLE),
        _link("child", f"./{COLLECTION_ID}/collection.json", "Sentinel-2 NDVI and LAI"),
    ]
    files["catalog.json"] = dumps(_catalog(
        ROOT_ID, "raw2ready analysis-ready Sentinel-2 vegetation products (NDVI, LAI, cloud mask).",
        root_links, title=ROOT_TITLE))

    coll_links = [_link("root", "../catalog.json", ROOT_TITLE), _link("parent", "../catalog.json", ROOT_TITLE)]
    for year in sorted(tree):
        coll_links.append(_link("child", f"./{year:04d}/catalog.json", f"{year}"))
        ylinks = [_link("root", "../../catalog.json", ROOT_TITLE), _link("parent", "../collection.json")]
        for q in sorted(tree[year]):
            ylinks.append(_link("child", f"./Q{q}/catalog.json", f"{year} Q{q}"))
            qlinks = [_link("root", "../../../catalog.json", ROOT_TITLE), _link("parent", "../catalog.json")]
            for month in sorted(tree[year][q]):
                qlinks.append(_link("child", f"./{month:02d}/catalog.json", f"{year}-{month:02d}"))
                mlinks = [_link("root", "../../../../catalog.json", ROOT_TITLE), _link("parent", "../catalog.json")]
                for it in tree[year][q][month]:
                    mlinks.append(_link("item", f"./{it['id']}/{it['id']}.json", media_type=pystac.MediaType.GEOJSON))
                files[join(COLLECTION_ID, f"{year:04d}", f"Q{q}", f"{month:02d}", "catalog.json")] = dumps(
                    _catalog(f"{COLLECTION_ID}-{year:04d}-{month:02d}", f"Products acquired {year}-{month:02d}.",
                             mlinks, title=f"{year}-{month:02d}"))
            files[join(COLLECTION_ID, f"{year:04d}", f"Q{q}", "catalog.json")] = dumps(
                _catalog(f"{COLLECTION_ID}-{year:04d}-Q{q}", f"Products acquired in {year} Q{q}.", qlinks,
                         title=f"{year} Q{q}"))
        files[join(COLLECTION_ID, f"{year:04d}", "catalog.json")] = dumps(
            _catalog(f"{COLLECTION_ID}-{year:04d}", f"Products acquired in {year}.", ylinks, title=f"{year}"))
    files[join(COLLECTION_ID, "collection.json")] = dumps(_collection(items, coll_links))
    files[INDEX_KEY] = dumps(_index(items))

    written = unchanged = 0
    for key in sorted(files):
        if write_if_changed(storage, key, files[key]):
            written += 1
        else:
            unchanged += 1
    removed = 0
    node_re = re.compile(rf"^{COLLECTION_ID}/\d{{4}}(/Q[1-4](/\d{{2}})?)?/catalog\.json$")
    for key in list(storage.list(COLLECTION_ID)):
        if node_re.match(key) and key not in files:
            storage.delete(key)
            removed += 1
    n_skipped = sum(1 for r in records if r.status == "skipped")
    log.info("catalog: %d items, %d skipped scenes; %d files written, %d unchanged, %d removed",
             len(items), n_skipped, written, unchanged, removed)
    return RebuildResult(len(items), n_skipped, written, unchanged, removed)


def _collection(items: list[dict[str, Any]], links: list[pystac.Link]) -> dict[str, Any]:
    """The collection's JSON object: extent over ``items`` (the whole world and an open interval without any)."""
    if items:
        bboxes = [it["bbox"] for it in items]
        bbox = [min(b[0] for b in bboxes), min(b[1] for b in bboxes), max(b[2] for b in bboxes),
                max(b[3] for b in bboxes)]
        interval: list[datetime | None] = [parse_datetime(items[0]["properties"]["datetime"]),
                    parse_datetime(items[-1]["properties"]["datetime"])]
    else:
        bbox = [-180.0, -90.0, 180.0, 90.0]
        interval = [None, None]
    coll = pystac.Collection(
        id=COLLECTION_ID,
        title="Sentinel-2 NDVI and LAI (raw2ready)",
        description=(
            "Per-scene analysis-ready vegetation products derived from Sentinel-2 L2A (and the matching L1C "
            "for cloud masking): NDVI at 10 m, SNAP biophysical-processor LAI and its flags at 20 m, and the "
            "cloud/cirrus/shadow mask at 20 m. Cloud-Optimized GeoTIFFs in the tile's UTM CRS."
        ),
        extent=pystac.Extent(pystac.SpatialExtent([bbox]), pystac.TemporalExtent([interval])),
        keywords=["sentinel-2", "ndvi", "lai", "vegetation", "analysis-ready"],
        license="other",
        providers=[
            pystac.Provider("European Union/ESA/Copernicus", roles=[pystac.ProviderRole.PRODUCER,
                                                                    pystac.ProviderRole.LICENSOR],
                            url="https://sentinel.esa.int/web/sentinel/user-guides/sentinel-2-msi"),
            pystac.Provider("raw2ready", roles=[pystac.ProviderRole.PROCESSOR]),
        ],
    )
    RasterExtension.add_to(coll)
    coll.item_assets = _item_assets()
    if items:
        coll.add_asset("timeseries", _timeseries_asset(items))
    coll.links = [*links, _link("license", LICENSE_URL, "Copernicus Sentinel data terms", pystac.MediaType.HTML)]
    return stac_dict(coll)


def _timeseries_asset(items: list[dict[str, Any]]) -> pystac.Asset:
    """The collection-level asset describing the time-series store (:mod:`steps.products.cube`), derived from the
    COGs listed here and kept in step with them by every catalog rebuild (unless ``RAW2READY_CUBE=false``)."""
    tiles = sorted({str(it["properties"].get("grid:code", "")).removeprefix("MGRS-") for it in items} - {""})
    return pystac.Asset(
        "../cube/",
        title="NDVI, LAI, LAI flags and cloud mask time series per MGRS tile (Zarr v3, sharded)",
        description=(
            "Derived from this collection's COGs, which stay the product of record. Per tile: "
            "cube/<tile>/manifest.json names the write-once Zarr v3 groups (segments) holding the stored "
            "integers of each date, arrays (time, y, x) on the product's native grid, chunks of all the "
            "segment's dates x 32 x 32 pixels (zstd + crc32c) in shards of 512 x 512 pixels, with the item "
            "id and asset checksums of every date. Rebuild with `raw2ready cube rebuild`."),
        media_type="application/vnd+zarr",
        roles=["data", "timeseries"],
        extra_fields={"raw2ready:tiles": tiles},
    )


def _item_assets() -> dict[str, pystac.ItemAssetDefinition | dict[str, Any]]:
    from steps.products.definitions import PRODUCTS

    return {p.key: pystac.ItemAssetDefinition.create(title=p.title, description=None, media_type=pystac.MediaType.COG,
                                                     roles=list(p.roles)) for p in PRODUCTS}


def _index(items: list[dict[str, Any]]) -> dict[str, Any]:
    rows = []
    for it in items:
        folder = item_folder_from_item(it)
        rows.append({
            "id": it["id"],
            "datetime": it["properties"]["datetime"],
            "tile": it["properties"].get("grid:code", "").removeprefix("MGRS-"),
            "platform": it["properties"].get("platform"),
            "epsg": it["properties"].get("proj:code"),
            "bbox": it["bbox"],
            "clear_fraction": it["properties"].get("raw2ready:clear_fraction"),
            "item": join(folder, f"{it['id']}.json"),
            "assets": {k: join(folder, a["href"].removeprefix("./")) for k, a in sorted(it["assets"].items())},
            # Raster grid per asset (``proj:shape`` [rows, cols], ``proj:transform`` first six affine
            # coefficients, in the item's ``proj:code`` CRS), so readers (the EDR provider) can locate
            # pixels and size requests without opening any COG.
            "grids": {k: {"shape": a["proj:shape"], "transform": a["proj:transform"][:6]}
                      for k, a in sorted(it["assets"].items()) if "proj:shape" in a and "proj:transform" in a},
            # file:checksum per asset: the time-series store (steps.products.cube) copies a date only with the
            # checksums it was copied from, so a reader can tell a current copy from a stale one
            "checksums": {k: a["file:checksum"] for k, a in sorted(it["assets"].items()) if "file:checksum" in a},
        })
    return {"type": "raw2ready-index", "version": 1, "collection": COLLECTION_ID, "items": rows}


def item_folder_from_item(item: dict[str, Any]) -> str:
    """Product folder key of an item, from its datetime and id."""
    return scene_folder(parse_datetime(item["properties"]["datetime"]), item["id"])
