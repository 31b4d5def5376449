"""One source-product view over a STAC item: what is read from which metadata asset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from steps.errors import InvalidInputError


def _item_copy(demo_archive: Path, tmp_path: Path) -> Path:
    """A copy of one synthetic L2A item folder (Earth Search v1 shape with MTD_TL/MTD_MSIL2A/tileInfo assets)."""
    root = demo_archive.parent if demo_archive.is_file() else demo_archive
    src = next((root / "sentinel-2-c1-l2a").glob("S2A_47PPR_20240113_0_L2A"))
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst / f"{src.name}.json"


def test_item_metadata_assets_are_read_where_they_live(demo_archive: Path, tmp_path: Path) -> None:
    from steps.sentinel2.product import load_source_product

    sp = load_source_product(str(_item_copy(demo_archive, tmp_path)))
    assert sp.product is not None and sp.tile_meta is not None
    assert sp.product.processing_baseline == sp.baseline == "05.10"
    assert sp.product.add_offsets["B04"] == -1000.0  # from MTD_MSIL2A.xml, not from MTD_TL.xml
    assert sp.tile_meta.tile_id == "47PPR" and sp.origin == (600000.0, 1600020.0)
    assert sp.format == "stac-item:earth-search-c1"
    assert set(sp.files) >= {"B04", "B08", "SCL"} and all(len(v) == 1 for v in sp.files.values())


def test_without_granule_xml_the_tileinfo_origin_checks_the_grid(demo_archive: Path, tmp_path: Path) -> None:
    from steps.sentinel2.product import load_source_product

    path = _item_copy(demo_archive, tmp_path)
    item = json.loads(path.read_text())
    item["assets"].pop("granule_metadata")
    path.write_text(json.dumps(item))
    sp = load_source_product(str(path))
    assert sp.tile_meta is None and sp.origin == (600000.0, 1600020.0)

    info_path = path.parent / "tileinfo_metadata.json"
    info = json.loads(info_path.read_text())
    info["tileOrigin"]["coordinates"] = [600060.0, 1600020.0]
    info_path.write_text(json.dumps(info))
    with pytest.raises(InvalidInputError, match=r"tileInfo.json tileOrigin \(600060.0, 1600020.0\)"):
        load_source_product(str(path))


def test_a_missing_metadata_file_names_the_item_and_the_href(demo_archive: Path, tmp_path: Path) -> None:
    from steps.sentinel2.product import load_source_product

    path = _item_copy(demo_archive, tmp_path)
    (path.parent / "product_metadata.xml").unlink()
    with pytest.raises(InvalidInputError, match=r"item S2A_47PPR_20240113_0_L2A: product metadata not found"):
        load_source_product(str(path))


def test_jp2_bands_open_without_gdal_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ESA's JPEG 2000 bands are read with no driver warning (the GTiff-only NUM_THREADS open option warned)."""
    import numpy as np

    from steps.products.raster import BandRead, read_bands
    from synthesizer.safe import write_jp2

    paths = []
    for k in range(2):
        p = tmp_path / f"b{k}.jp2"
        write_jp2(p, np.full((64, 64), 1000 + k, dtype=np.uint16), 60.0, 32647, 600000.0, 1600020.0)
        paths.append(p)
    caplog.set_level("DEBUG")
    arrays = read_bands([BandRead(str(p)) for p in paths])
    assert [int(a[0, 0]) for a in arrays] == [1000, 1001]
    assert not [r for r in caplog.records if r.levelname == "WARNING"], [r.getMessage() for r in caplog.records]
