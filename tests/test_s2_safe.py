"""SAFE reader (steps.sentinel2.safe) on the real T29UNU layout: real XML, small synthetic JP2 rasters.

The SAFE is built in a pytest tmp dir from the real MTD_MSIL2A.xml, manifest.safe and MTD_TL.xml copied in
tests/data/real/safe-layout-T29UNU/ (see PROVENANCE.md), plus JPEG 2000 rasters for some of the 36 listed
image files, and zipped as the Copernicus Data Space delivers it (one top-level <id>.SAFE/ folder).
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from steps.errors import InvalidInputError
from steps.sentinel2.safe import find_safe_products, open_safe, verify_manifest

LAYOUT = Path(__file__).parent / "data" / "real" / "safe-layout-T29UNU"
NAME = "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
GRANULE = "GRANULE/L2A_T29UNU_A038058_20221005T115407"
ULX, ULY = 499980.0, 5900040.0  # MTD_TL.xml Geoposition (checked in test_s2_metadata)
PIX = 24  # pixels per side of the synthetic rasters

# (band, resolution) written as rasters; the other 31 listed files stay absent
WRITTEN = [("B04", 10), ("B08", 10), ("B8A", 20), ("SCL", 20), ("B01", 60)]


def _rel(band: str, res: int) -> str:
    return f"{GRANULE}/IMG_DATA/R{res}m/T29UNU_20221005T115411_{band}_{res}m.jp2"


def _dn(band: str, res: int) -> np.ndarray:
    rng = np.random.default_rng([res, *band.encode()])  # deterministic per file
    if band == "SCL":
        return rng.integers(0, 12, (PIX, PIX), dtype=np.uint8)
    a = rng.integers(1, 12000, (PIX, PIX), dtype=np.uint16)
    a[:3, :] = 0  # a no-data strip
    return a


def write_jp2(path: Path, data: np.ndarray, res: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="JP2OpenJPEG", width=PIX, height=PIX, count=1, dtype=data.dtype,
        crs="EPSG:32629", transform=from_origin(ULX, ULY, res, res), QUALITY=100, REVERSIBLE="YES",
    ) as dst:
        dst.write(data, 1)


@pytest.fixture(scope="module")
def safe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("safe") / NAME
    shutil.copytree(LAYOUT / NAME, root)
    for band, res in WRITTEN:
        write_jp2(root / _rel(band, res), _dn(band, res), res)
    for aux in root.rglob("*.aux.xml"):  # GDAL side files are no part of a SAFE
        aux.unlink()
    return root


@pytest.fixture(scope="module")
def safe_zip(safe_dir: Path) -> Path:
    z = safe_dir.parent.parent / "zips" / (safe_dir.name.removesuffix(".SAFE") + ".zip")
    z.parent.mkdir()
    with zipfile.ZipFile(z, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{safe_dir.name}/", "")
        for p in sorted(safe_dir.rglob("*")):
            if p.is_file():
                zf.write(p, f"{safe_dir.name}/{p.relative_to(safe_dir).as_posix()}")
    return z


def test_all_36_image_files_appear_in_tree_txt() -> None:
    s = open_safe(LAYOUT / NAME)
    tree = (LAYOUT / "TREE.txt").read_text()
    listed = {line.split()[-1] for line in tree.splitlines() if line.strip() and not line.startswith("#")}
    files = [f"{NAME}/{f}.jp2" for f in s.product.image_files]
    assert len(files) == 36
    assert all(f in listed for f in files)
    # and only the XML is in the fixture: every listed image is reported missing
    assert len(s.missing_files()) == 36


def test_open_safe_directory(safe_dir: Path) -> None:
    s = open_safe(safe_dir)
    assert not s.is_zip and s.safe_name == NAME
    assert s.level == "L2A"
    assert s.product_id == NAME.removesuffix(".SAFE")
    assert s.product.processing_baseline == "04.00"
    assert s.tile.tile_id == "29UNU" and s.tile.epsg == 32629
    assert s.granule_dir == GRANULE
    assert set(s.band_hrefs) == {"B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11",
                                 "B12", "SCL", "AOT", "WVP", "TCI"}
    assert s.resolutions("B04") == [10, 20, 60]
    assert s.resolutions("B08") == [10]
    assert s.resolutions("SCL") == [20, 60]
    assert s.resolutions("B10") == []
    assert s.href("B04") == str(safe_dir / _rel("B04", 10))
    assert s.href("B8A") == str(safe_dir / _rel("B8A", 20))
    assert len(s.missing_files()) == 36 - len(WRITTEN)
    assert _rel("B02", 10) in s.missing_files()
    with pytest.raises(InvalidInputError, match=r"image file GRANULE/.*_B02_10m\.jp2 \(band B02, 10 m\) is missing"):
        s.href("B02")
    with pytest.raises(InvalidInputError, match="lists no image file for band B10"):
        s.href("B10")
    with pytest.raises(InvalidInputError, match=r"B08 is not listed at 20 m"):
        s.href("B08", 20)


def test_zip_gives_the_same_bands_and_gdal_opens_them(
    safe_dir: Path, safe_zip: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = open_safe(safe_dir)
    z = open_safe(safe_zip)
    assert z.is_zip and z.safe_name == NAME
    assert {b: sorted(r) for b, r in z.band_hrefs.items()} == {b: sorted(r) for b, r in d.band_hrefs.items()}
    assert z.missing_files() == d.missing_files()
    assert z.href("B04") == f"/vsizip/{safe_zip.resolve().as_posix()}/{NAME}/{_rel('B04', 10)}"
    caplog.set_level(logging.DEBUG)
    for band, res in WRITTEN:
        arrays = []
        for prod in (d, z):
            with rasterio.open(prod.href(band, res)) as src:
                assert src.driver == "JP2OpenJPEG"
                assert src.crs.to_epsg() == 32629
                assert src.transform == from_origin(ULX, ULY, res, res)
                arrays.append(src.read(1))
        np.testing.assert_array_equal(arrays[0], _dn(band, res))  # lossless round trip
        np.testing.assert_array_equal(arrays[1], arrays[0])
    # "No GDAL warnings on JP2 open options": nothing at WARNING or above from GDAL/rasterio
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    # positive control: this check does see GDAL warnings (an open option the JP2 driver lacks)
    with rasterio.open(z.href("B04"), BOGUS_OPTION="1") as src:
        src.read(1)
    assert any("BOGUS_OPTION" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def test_verify_manifest(safe_dir: Path, safe_zip: Path, tmp_path: Path) -> None:
    for prod in (open_safe(safe_dir), open_safe(safe_zip)):
        # the real XML files match manifest.safe; the synthetic rasters do not (their real ones are bigger)
        problems = verify_manifest(prod)
        assert problems and all(any(p.startswith(_rel(b, r)) for b, r in WRITTEN) for p in problems)
        assert not any("MTD_MSIL2A.xml" in p or "MTD_TL.xml" in p for p in problems)
        missing = [p for p in verify_manifest(prod, include_missing=True) if p.endswith("missing")]
        assert len(missing) == 86 - 2 - len(WRITTEN)  # 86 objects; MTD_MSIL2A.xml + MTD_TL.xml present
    # the real fixture alone: every present listed file (the two XML) verifies
    assert verify_manifest(open_safe(LAYOUT / NAME)) == []
    # a tampered XML is caught
    bad = tmp_path / NAME
    shutil.copytree(LAYOUT / NAME, bad)
    tl = bad / GRANULE / "MTD_TL.xml"
    tl.write_bytes(tl.read_bytes().replace(b"59.769726", b"59.769727"))
    probs = verify_manifest(open_safe(bad))
    assert len(probs) == 1 and probs[0].startswith(f"{GRANULE}/MTD_TL.xml: SHA3-256")


def test_find_safe_products(safe_dir: Path, safe_zip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    shutil.copytree(safe_dir, folder / NAME)
    shutil.copy(safe_zip, folder / safe_zip.name)
    with zipfile.ZipFile(folder / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "not a SAFE")
    (folder / "notes.txt").write_text("x")
    found = find_safe_products(folder)
    assert [p.name for p in found] == [NAME, safe_zip.name]  # sorted by name
    assert find_safe_products(safe_dir) == [safe_dir.resolve()]
    assert find_safe_products(safe_zip) == [safe_zip.resolve()]
    (folder / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(InvalidInputError, match=r"broken\.zip: not a readable zip"):
        find_safe_products(folder)
    with pytest.raises(InvalidInputError, match="no such folder"):
        find_safe_products(tmp_path / "nope")


def test_open_safe_errors(tmp_path: Path) -> None:
    empty = tmp_path / "X.SAFE"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match=r"X\.SAFE: no product metadata"):
        open_safe(empty)
    z = tmp_path / "plain.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.txt", "x")
    with pytest.raises(InvalidInputError, match=r"holds no top-level \.SAFE folder"):
        open_safe(z)
    with pytest.raises(InvalidInputError, match=r"not a \.SAFE directory or a \.zip"):
        open_safe(tmp_path / "missing.SAFE")
    # product and tile metadata from different products
    mixed = tmp_path / NAME
    shutil.copytree(LAYOUT / NAME, mixed)
    other = LAYOUT.parent / "real-metadata" / "S2B_MSIL2A_20191228T210519_N0212_R071_T01CCV_20201003T104658"
    shutil.copy(other / "MTD_TL.xml", mixed / GRANULE / "MTD_TL.xml")
    with pytest.raises(InvalidInputError, match=r"MTD_TL\.xml is tile 01CCV but the image files name 29UNU"):
        open_safe(mixed)
