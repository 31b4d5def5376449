"""The pygeoapi configuration and OpenAPI document for a raw2ready catalog.

Used by ``raw2ready serve`` and, through that same command with ``--write-config-only``, by the Kubernetes
manifests. Two collections are published, ``ndvi`` and ``lai`` (see :data:`steps.edr.query.COLLECTIONS`),
each with one EDR provider (:class:`steps.edr.provider.Raw2ReadyEDRProvider`) reading the catalog at
``catalog`` (a directory or ``s3://bucket/prefix``; the pod needs the same ``RAW2READY_S3_*`` settings).

The spatial extent (WGS84 bbox) is taken from the catalog index when the configuration is written. The
temporal extent is deliberately *not* written into the configuration: the WSGI app
(:mod:`steps.edr.app`) fills it into the collection documents from the live index, so it follows new
acquisitions without a restart, and ``datetime`` values are validated strictly by the provider rather than
by pygeoapi's lenient parser.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from steps.edr.index import CatalogIndex
from steps.edr.provider import DEFAULT_PIXEL_BUDGET, DEFAULT_READ_WORKERS
from steps.edr.query import COLLECTIONS, RADIUS_UNITS

log = logging.getLogger(__name__)

PROVIDER_NAME = "steps.edr.provider.Raw2ReadyEDRProvider"
CONFIG_NAME = "pygeoapi-config.yml"
OPENAPI_NAME = "pygeoapi-openapi.yml"
_TERMS = "https://sentinels.copernicus.eu/documents/247904/690755/Sentinel_Data_Legal_Notice"

_TITLES = {
    "ndvi": ("Sentinel-2 NDVI (raw2ready)",
             "Per-acquisition NDVI at 10 m from Sentinel-2 L2A, cloud-masked (masked pixels are null), with the "
             "20 m cloud/cirrus/shadow class mask. Values are physical NDVI (−1…1)."),
    "lai": ("Sentinel-2 leaf area index (raw2ready)",
            "Per-acquisition green LAI (m²/m²) at 20 m from the SNAP biophysical processor on Sentinel-2 L2A, "
            "cloud-masked (masked pixels are null), with the SNAP quality flags and the cloud class mask."),
}


@dataclass(frozen=True)
class ServeOptions:
    """Everything that goes into the generated configuration."""

    catalog: str
    host: str = "127.0.0.1"
    port: int = 5000
    url: str | None = None
    pixel_budget: int = DEFAULT_PIXEL_BUDGET
    read_workers: int = DEFAULT_READ_WORKERS
    #: answer multi-date queries from the time-series store (steps.products.cube) where it holds the dates
    cube: bool = True
    log_level: str = "WARNING"

    @property
    def public_url(self) -> str:
        """The URL clients use (``server.url``); defaults to ``http://host:port``."""
        return (self.url or f"http://{self.host}:{self.port}").rstrip("/")


def build_config(opts: ServeOptions, index: CatalogIndex) -> dict[str, Any]:
    """The pygeoapi configuration (a dict ready for YAML) publishing the ``ndvi`` and ``lai`` collections."""
    bbox, _first, _last = index.extent()
    resources: dict[str, Any] = {}
    for cid in COLLECTIONS:
        title, description = _TITLES[cid]
        resources[cid] = {
            "type": "collection",
            "title": title,
            "description": description,
            "keywords": ["sentinel-2", cid, "vegetation", "analysis-ready", "raw2ready"],
            "extents": {"spatial": {"bbox": [round(v, 7) for v in bbox],
                                    "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}},
            "providers": [{
                "type": "edr",
                "name": PROVIDER_NAME,
                "data": opts.catalog,
                "options": {"collection": cid, "pixel_budget": int(opts.pixel_budget),
                            "read_workers": int(opts.read_workers), "cube": bool(opts.cube)},
                "format": {"name": "CoverageJSON", "mimetype": "application/vnd.cov+json"},
            }],
        }
    return {
        "server": {
            "bind": {"host": opts.host, "port": int(opts.port)},
            "url": opts.public_url,
            "mimetype": "application/json; charset=UTF-8",
            "encoding": "utf-8",
            "languages": ["en-US"],
            "pretty_print": False,
            "limits": {"default_items": 10, "max_items": 1000},
            "map": {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png",
                    "attribution": "&copy; OpenStreetMap contributors"},
        },
        "logging": {"level": opts.log_level.upper()},
        "metadata": {
            "identification": {
                "title": "raw2ready EDR",
                "description": "OGC API - Environmental Data Retrieval over raw2ready Sentinel-2 NDVI and LAI "
                               f"products ({len(index.items)} scenes). Radius units: {', '.join(RADIUS_UNITS)}.",
                "keywords": ["sentinel-2", "ndvi", "lai", "edr"],
                "keywords_type": "theme",
                "terms_of_service": _TERMS,
                "url": "https://github.com/raw2ready/raw2ready",
            },
            "license": {"name": "Copernicus Sentinel data terms; products Apache-2.0", "url": _TERMS},
            "provider": {"name": "raw2ready", "url": "https://github.com/raw2ready/raw2ready"},
            "contact": {"name": "raw2ready maintainers", "url": "https://github.com/raw2ready/raw2ready",
                        "role": "pointOfContact"},
        },
        "resources": resources,
    }


def write_config(opts: ServeOptions, index: CatalogIndex, out_dir: Path) -> tuple[Path, Path]:
    """Write the pygeoapi configuration and its OpenAPI document into ``out_dir``; return both paths.

    The OpenAPI document is produced by pygeoapi itself from the written configuration (it loads the
    provider, so the catalog must be readable).
    """
    from pygeoapi.openapi import generate_openapi_document

    out_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = out_dir / CONFIG_NAME
    oas_path = out_dir / OPENAPI_NAME
    cfg = build_config(opts, index)
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    doc = generate_openapi_document(cfg_path, "yaml")  # pygeoapi compares the format with a str
    oas_path.write_text(doc, encoding="utf-8")
    log.info("wrote %s and %s", cfg_path, oas_path)
    return cfg_path, oas_path


def example_urls(opts: ServeOptions, index: CatalogIndex) -> list[str]:
    """A few ready-to-run query URLs for this catalog (a point time series, an area on a date, …)."""
    base = opts.public_url
    out = [f"{base}/collections?f=html", f"{base}/collections/ndvi?f=json"]
    if not index.items:
        return out
    it = index.items[-1]
    w, s, e, n = it.bbox
    lon, lat = round((w + e) / 2, 6), round((s + n) / 2, 6)
    day = it.datetime.strftime("%Y-%m-%d")
    dw, dh = (e - w) / 20, (n - s) / 20
    poly = (f"POLYGON(({lon - dw:.6f} {lat - dh:.6f},{lon + dw:.6f} {lat - dh:.6f},{lon + dw:.6f} {lat + dh:.6f},"
            f"{lon - dw:.6f} {lat + dh:.6f},{lon - dw:.6f} {lat - dh:.6f}))")
    out += [
        f"{base}/collections/ndvi/position?coords=POINT({lon} {lat})&datetime=../..&parameter-name=ndvi",
        f"{base}/collections/lai/position?coords=POINT({lon} {lat})&datetime={day[:4]}-01-01/..",
        f"{base}/collections/ndvi/area?coords={poly.replace(' ', '%20')}&datetime={day}",
        f"{base}/collections/lai/cube?bbox={lon - dw:.6f},{lat - dh:.6f},{lon + dw:.6f},{lat + dh:.6f}"
        f"&datetime={day}",
        f"{base}/collections/ndvi/radius?coords=POINT({lon} {lat})&within=50&within-units=m&datetime={day}",
    ]
    return [u.replace(" ", "%20") for u in out]
