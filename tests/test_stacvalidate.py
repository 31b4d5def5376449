"""Offline STAC validation (steps.products.stacvalidate) against the vendored schemas, with the network blocked."""

from __future__ import annotations

import datetime as dt
import json
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import pystac
import pytest
from pystac.extensions.eo import EOExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.grid import GridExtension
from pystac.extensions.mgrs import MgrsExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from pystac.extensions.view import ViewExtension

from steps.products import stacvalidate
from steps.products.stacvalidate import schema_map, validate_stac

PROJ = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
UNKNOWN_EXT = "https://stac-extensions.github.io/not-vendored/v9.9.9/schema.json"
PROCESSING = "https://stac-extensions.github.io/processing/v1.2.0/schema.json"
EXPECTED_EXTENSIONS = {
    PROJ,
    RASTER,
    "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
}


class NetworkAttemptError(AssertionError):
    """Raised by the patched socket layer: any network use fails the test."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Make every socket connect / DNS lookup fail loudly and record the attempt."""
    attempts: list[tuple[Any, ...]] = []

    def refuse(*args: Any, **kwargs: Any) -> Any:
        attempts.append(args)
        raise NetworkAttemptError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def _item() -> pystac.Item:
    item = pystac.Item(
        id="S2B_T32TNR_20240601_NDVI",
        geometry={
            "type": "Polygon",
            "coordinates": [[[9.0, 45.0], [10.4, 45.0], [10.4, 46.0], [9.0, 46.0], [9.0, 45.0]]],
        },
        bbox=[9.0, 45.0, 10.4, 46.0],
        datetime=dt.datetime(2024, 6, 1, 10, 20, 31, tzinfo=dt.UTC),
        properties={},
    )
    item.add_asset(
        "ndvi",
        pystac.Asset("./ndvi.tif", media_type=pystac.MediaType.COG, roles=["data"], title="NDVI"),
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.code = "EPSG:32632"
    proj.shape = [10980, 10980]
    proj.transform = [10.0, 0.0, 499980.0, 0.0, -10.0, 5100000.0]
    proj.bbox = [499980.0, 4990200.0, 609780.0, 5100000.0]
    asset = item.assets["ndvi"]
    RasterExtension.ext(asset, add_if_missing=True).bands = [
        RasterBand.create(data_type=DataType.FLOAT32, nodata=-9999, scale=1.0, offset=0.0, unit="1")
    ]
    file_ext = FileExtension.ext(asset, add_if_missing=True)
    file_ext.size = 123456
    file_ext.checksum = "1220" + "ab" * 32
    eo = EOExtension.ext(item, add_if_missing=True)
    eo.cloud_cover = 12.5
    view = ViewExtension.ext(item, add_if_missing=True)
    view.sun_elevation = 61.2
    view.sun_azimuth = 152.3
    mgrs = MgrsExtension.ext(item, add_if_missing=True)
    mgrs.utm_zone = 32
    mgrs.latitude_band = "T"
    mgrs.grid_square = "NR"
    GridExtension.ext(item, add_if_missing=True).code = "MGRS-32TNR"
    return item


def _build_catalog(root: Path) -> dict[str, Path]:
    catalog = pystac.Catalog("raw2ready", "raw2ready test catalog")
    collection = pystac.Collection(
        "s2-ndvi",
        "NDVI from Sentinel-2",
        pystac.Extent(
            pystac.SpatialExtent([[9.0, 45.0, 10.4, 46.0]]),
            pystac.TemporalExtent([[dt.datetime(2024, 6, 1, tzinfo=dt.UTC), None]]),
        ),
        license="CC-BY-4.0",
        summaries=pystac.Summaries(
            {"platform": ["sentinel-2b"], "eo:cloud_cover": {"minimum": 0, "maximum": 40}}
        ),
    )
    ProjectionExtension.summaries(collection, add_if_missing=True).code = ["EPSG:32632"]
    collection.add_item(_item())
    catalog.add_child(collection)
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return {
        "catalog": root / "catalog.json",
        "collection": root / "s2-ndvi" / "collection.json",
        "item": root / "s2-ndvi" / "S2B_T32TNR_20240601_NDVI" / "S2B_T32TNR_20240601_NDVI.json",
    }


def _edit(path: Path, change: Any) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj, indent=2))


def test_schema_map_is_complete_and_ids_match() -> None:
    """Every vendored file exists, its $id is the URL it is mapped from, and the $ref closure is vendored."""
    mapping = schema_map()
    assert set(mapping) >= EXPECTED_EXTENSIONS
    assert "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/item.json" in mapping
    missing: set[str] = set()
    for url, path in mapping.items():
        assert Path(path).is_absolute() and Path(path).is_file(), url
        schema = json.loads(Path(path).read_text(encoding="utf-8"))
        schema_id = schema["$id"].rstrip("#")
        if url.endswith("/common.json"):  # upstream typo in stac-spec v1.1.0: "$id": ".../commonjson"
            assert schema_id == url.removesuffix(".json") + "json"
        else:
            assert schema_id == url
        stack: list[Any] = [schema]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and not ref.startswith("#"):
                    target = urljoin(url, ref).split("#")[0]
                    if target not in mapping and urlparse(target).netloc != "json-schema.org":
                        missing.add(f"{url} -> {target}")
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    assert not missing, missing


def test_schema_map_returns_a_copy() -> None:
    """Callers may modify the returned dict without affecting validation."""
    first = schema_map()
    first.clear()
    assert schema_map()


def test_valid_catalog_passes_recursively_offline(tmp_path: Path, no_network: list[Any]) -> None:
    """(a) catalog → collection → item with all vendored extensions is valid, with no network use."""
    paths = _build_catalog(tmp_path / "cat")
    item = json.loads(paths["item"].read_text())
    assert set(item["stac_extensions"]) == EXPECTED_EXTENSIONS

    assert validate_stac(paths["catalog"]) == []
    assert validate_stac(str(paths["catalog"])) == []
    assert validate_stac(paths["catalog"].as_uri(), recursive=False) == []
    assert validate_stac(paths["item"], recursive=False) == []
    assert no_network == []


def test_recursion_reaches_the_item(tmp_path: Path, no_network: list[Any]) -> None:
    """An error in the item is found from the root only when recursing."""
    paths = _build_catalog(tmp_path / "cat")
    _edit(paths["item"], lambda o: o["properties"].pop("datetime"))
    assert validate_stac(paths["catalog"], recursive=False) == []
    errors = validate_stac(paths["catalog"])
    assert errors and all(str(paths["item"].name) in e for e in errors)
    assert no_network == []


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        pytest.param(
            lambda o: o["properties"].__setitem__("proj:code", 32632),
            ["extension " + PROJ, "32632", "proj:code"],
            id="proj-code-number",
        ),
        pytest.param(
            lambda o: o["properties"].pop("datetime"),
            ["core item v1.1.0", "datetime"],
            id="missing-datetime",
        ),
        pytest.param(
            lambda o: o["assets"]["ndvi"]["raster:bands"][0].__setitem__("data_type", "float99"),
            ["extension " + RASTER, "float99", "raster:bands"],
            id="raster-bad-data-type",
        ),
    ],
)
def test_broken_item_reports_the_problem(
    tmp_path: Path, no_network: list[Any], change: Any, needles: list[str]
) -> None:
    """(b) a broken item yields errors naming the file, the schema and the offending field/value."""
    paths = _build_catalog(tmp_path / "cat")
    _edit(paths["item"], change)
    errors = validate_stac(paths["catalog"])
    assert errors, "broken item passed validation"
    text = "\n".join(errors)
    assert str(paths["item"]) in text
    for needle in needles:
        assert needle in text, (needle, errors)
    assert no_network == []


def test_every_failing_extension_is_reported(tmp_path: Path, no_network: list[Any]) -> None:
    """One failing extension does not hide another (stac-validator alone stops at the first)."""
    paths = _build_catalog(tmp_path / "cat")

    def break_two(o: dict[str, Any]) -> None:
        o["properties"]["proj:code"] = 32632
        o["assets"]["ndvi"]["raster:bands"][0]["data_type"] = "float99"

    _edit(paths["item"], break_two)
    errors = validate_stac(paths["item"])
    assert any(PROJ in e for e in errors), errors
    assert any(RASTER in e for e in errors), errors
    assert no_network == []


@pytest.mark.parametrize("url", [UNKNOWN_EXT, PROCESSING])
def test_unknown_extension_is_an_error_not_a_download(
    tmp_path: Path, no_network: list[Any], url: str
) -> None:
    """(c) an extension without a vendored schema is reported by URL and never fetched."""
    paths = _build_catalog(tmp_path / "cat")
    # the case is only meaningful for a URL that is not vendored (another version of a vendored extension)
    assert url not in schema_map(), f"{url} is vendored now: pick another unvendored version for this test"
    _edit(paths["item"], lambda o: o["stac_extensions"].append(url))
    errors = validate_stac(paths["catalog"])
    assert len(errors) == 1, errors
    assert url in errors[0] and "unknown extension schema" in errors[0]
    assert no_network == []


def test_unknown_extension_on_a_catalog(tmp_path: Path, no_network: list[Any]) -> None:
    """Catalogs' stac_extensions are checked too (stac-validator's default mode skips them)."""
    paths = _build_catalog(tmp_path / "cat")
    _edit(paths["catalog"], lambda o: o.setdefault("stac_extensions", []).append(UNKNOWN_EXT))
    errors = validate_stac(paths["catalog"], recursive=False)
    assert len(errors) == 1 and UNKNOWN_EXT in errors[0]
    assert no_network == []


def test_unvendored_ref_is_reported_not_fetched(
    tmp_path: Path, no_network: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A $ref to a schema missing from the map fails by URL instead of going to the network."""
    paths = _build_catalog(tmp_path / "cat")
    geometry = "https://geojson.org/schema/Geometry.json"
    reduced = {u: p for u, p in schema_map().items() if u != geometry}
    monkeypatch.setattr(stacvalidate, "_load_schema_map", lambda: reduced)
    errors = validate_stac(paths["item"])
    assert errors and any(geometry in e for e in errors), errors
    assert no_network == []


def test_unvendored_stac_version_is_an_error(tmp_path: Path, no_network: list[Any]) -> None:
    """A STAC version without vendored core schemas is reported, not silently passed or fetched."""
    paths = _build_catalog(tmp_path / "cat")
    _edit(paths["collection"], lambda o: o.__setitem__("stac_version", "1.0.0"))
    errors = validate_stac(paths["catalog"])
    assert len(errors) == 1, errors
    assert "no vendored schema for STAC 1.0.0" in errors[0] and "collection.json" in errors[0]
    assert no_network == []


def test_remote_and_missing_links(tmp_path: Path, no_network: list[Any]) -> None:
    """Remote hrefs are not followed and missing local children are reported."""
    paths = _build_catalog(tmp_path / "cat")

    def add_links(o: dict[str, Any]) -> None:
        o["links"].append({"rel": "child", "href": "https://example.com/catalog.json"})
        o["links"].append({"rel": "child", "href": "./gone/catalog.json"})

    _edit(paths["catalog"], add_links)
    errors = validate_stac(paths["catalog"])
    assert any("https://example.com/catalog.json" in e and "not followed" in e for e in errors), errors
    assert any("gone" in e and "file not found" in e for e in errors), errors
    assert validate_stac("https://example.com/catalog.json") != []
    assert no_network == []
