"""Real ESA metadata (MTD_TL.xml, MTD_MSIL2A.xml, MTD_MSIL1C.xml) through steps.sentinel2.metadata.

Fixtures: tests/data/real/real-metadata/ and tests/data/real/safe-layout-T29UNU/ (byte copies, see
tests/data/real/PROVENANCE.md). The expected values are those listed in shared/real/README.md, re-read here
from the files by eye (grep) and not from the parser.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from steps.errors import InvalidInputError
from steps.science.angles import fill_nan_nearest, interpolate_azimuth_grid, interpolate_grid
from steps.sentinel2.bands import L1C_BANDS
from steps.sentinel2.metadata import (
    baseline_from_product_id,
    baseline_key,
    parse_product_metadata,
    parse_tile_metadata,
)

REAL = Path(__file__).parent / "data" / "real"
META = REAL / "real-metadata"
T29UNU = REAL / "safe-layout-T29UNU" / "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
T01KAB = META / "S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825"
T01CCV = META / "S2B_MSIL2A_20191228T210519_N0212_R071_T01CCV_20201003T104658"
T46RER = META / "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248"

TILE_FILES = {
    "29UNU": T29UNU / "GRANULE" / "L2A_T29UNU_A038058_20221005T115407" / "MTD_TL.xml",
    "01KAB": T01KAB / "MTD_TL.xml",
    "01CCV": T01CCV / "MTD_TL.xml",
    "46RER": T46RER / "MTD_TL.xml",
}
PRODUCT_FILES = {
    "29UNU": T29UNU / "MTD_MSIL2A.xml",
    "01KAB": T01KAB / "MTD_MSIL2A.xml",
    "01CCV": T01CCV / "MTD_MSIL2A.xml",
    "46RER": T46RER / "MTD_MSIL1C.xml",
}

# tile: level, EPSG, UL (10 m Geoposition), #viewing grids, baseline in TILE_ID, CLOUDY_PIXEL_PERCENTAGE
TILE_FACTS = {
    "29UNU": ("L2A", 32629, (499980.0, 5900040.0), 52, "04.00", 59.769726),
    "01KAB": ("L2A", 32701, (99960.0, 8200000.0), 78, "05.09", 59.050727),
    "01CCV": ("L2A", 32701, (300000.0, 2000020.0), 26, "02.12", 99.998890),
    "46RER": ("L1C", 32646, (499980.0, 3100020.0), 26, "03.01", 88.2972),
}
# product: level, type, PB, platform, U, Cloud_Coverage_Assessment, #IMAGE_FILE, relative orbit
PRODUCT_FACTS = {
    "29UNU": ("L2A", "S2MSI2A", "04.00", "sentinel-2a", 0.998456468000941, 59.769726, 36, 23),
    "01KAB": ("L2A", "S2MSI2A", "05.09", "sentinel-2a", 0.976023471600241, 59.050727, 36, 29),
    "01CCV": ("L2A", "S2MSI2A", "02.12", "sentinel-2b", 1.03382780603275, 99.998890, 35, 71),
    "46RER": ("L1C", "S2MSI1C", "03.01", "sentinel-2a", 0.983841990384341, 88.2972, 14, 133),
}


def _tile(key: str):
    f = TILE_FILES[key]
    return parse_tile_metadata(f.read_bytes(), source=str(f))


def _product(key: str):
    f = PRODUCT_FILES[key]
    return parse_product_metadata(f.read_bytes(), source=str(f))


def test_every_real_metadata_file_is_covered() -> None:
    found = sorted(p.relative_to(REAL) for p in REAL.rglob("MTD_*.xml") if "real-metadata" in p.parts
                   or "safe-layout-T29UNU" in p.parts)
    expected = sorted(p.relative_to(REAL) for p in (*TILE_FILES.values(), *PRODUCT_FILES.values()))
    assert found == expected


@pytest.mark.parametrize("key", sorted(TILE_FACTS))
def test_real_tile_metadata(key: str) -> None:
    level, epsg, ul, n_view, pb, cloud = TILE_FACTS[key]
    t = _tile(key)
    assert t.level == level
    assert t.tile_id == key
    assert t.granule_id.endswith(f"_T{key}_N{pb}")
    assert t.baseline_hint == pb
    assert t.epsg == epsg
    assert (t.ulx, t.uly) == ul
    assert t.sizes == {10: (10980, 10980), 20: (5490, 5490), 60: (1830, 1830)}
    assert t.shape(20) == (5490, 5490)
    assert t.angle_step == 5000.0
    assert t.sun_zenith.shape == t.sun_azimuth.shape == (23, 23)
    assert not np.isnan(t.sun_zenith).any()
    assert len(t.view_grids) == n_view
    assert t.cloud_coverage == pytest.approx(cloud, abs=1e-9)
    assert t.sensing_time.tzinfo is not None and t.sensing_time.utcoffset().total_seconds() == 0
    assert set(t.mean_view_by_band) == set(L1C_BANDS)  # all 13 bands, B10 included, for L1C and L2A
    # the combined view grid is NaN exactly where no detector of any band sees the node
    seen = np.zeros((23, 23), dtype=bool)
    for z, _a in t.view_grids.values():
        seen |= np.isfinite(z)
    assert np.array_equal(np.isfinite(t.view_zenith), seen)
    assert np.array_equal(np.isfinite(t.view_azimuth), seen)


def test_real_tile_metadata_specific_values() -> None:
    t = _tile("29UNU")
    assert t.mean_sun_zenith == pytest.approx(57.820574357679)
    assert t.mean_sun_azimuth == pytest.approx(172.840206897213)
    assert t.sensing_time == datetime(2022, 10, 5, 11, 56, 49, 581767, tzinfo=UTC)
    assert t.datastrip_id == "S2A_OPER_MSI_L2A_DS_ATOS_20221005T164454_S20221005T115407_N04.00"
    assert sorted({d for _, d in t.view_grids}) == [9, 10, 11, 12]
    # NaN outside each detector's footprint: every single detector grid has gaps
    assert all(np.isnan(z).any() for z, _ in t.view_grids.values())
    assert t.mean_view_by_band["B02"] == pytest.approx((9.15788418738189, 288.982250210564))
    assert _tile("46RER").mean_sun_zenith == pytest.approx(26.4932, abs=5e-5)
    kab = _tile("01KAB")
    assert sorted({d for _, d in kab.view_grids}) == [4, 5, 6, 7, 8, 9]
    assert 90 - _tile("46RER").mean_sun_zenith == pytest.approx(63.5068, abs=5e-5)  # stactools sun_elevation


@pytest.mark.parametrize("key", sorted(PRODUCT_FACTS))
def test_real_product_metadata(key: str) -> None:
    level, ptype, pb, platform, u, cloud, n_files, orbit = PRODUCT_FACTS[key]
    p = _product(key)
    assert p.level == level
    assert p.product_type == ptype
    assert p.processing_baseline == pb
    assert p.platform == platform
    assert p.reflectance_u == pytest.approx(u, rel=1e-14)
    assert p.cloud_coverage == pytest.approx(cloud, abs=1e-9)
    assert len(p.image_files) == n_files
    assert p.relative_orbit == orbit
    assert p.tile_ids == (key,)
    assert p.quantification == 10000.0
    assert (p.nodata_value, p.saturated_value) == (0, 65535)
    assert p.product_uri == (T29UNU.name if key == "29UNU" else PRODUCT_FILES[key].parent.name + ".SAFE")
    assert baseline_from_product_id(p.product_uri) == pb
    assert p.datatake_id is not None and p.datatake_id.endswith(f"_N{pb}")
    assert not any(f.endswith(".jp2") for f in p.image_files)
    assert p.offset_tag == ("BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET")
    # offsets present iff PB >= 04.00 (L2A on both sides: 01CCV 02.12 vs 29UNU 04.00 / 01KAB 05.09)
    if baseline_key(pb) >= (4, 0):
        assert p.add_offsets == dict.fromkeys(L1C_BANDS, -1000.0)
    else:
        assert p.add_offsets == {}


def test_real_product_metadata_specific_values() -> None:
    p = _product("01KAB")
    assert p.sensing_start == datetime(2023, 8, 21, 22, 19, 41, 24000, tzinfo=UTC)
    assert p.generation_time == datetime(2023, 8, 22, 2, 18, 25, tzinfo=UTC)
    assert p.datatake_id == "GS2A_20230821T221941_042640_N05.09"
    assert p.product_id == "S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825"
    assert p.image_files[0] == "GRANULE/L2A_T01KAB_A042640_20230821T221944/IMG_DATA/R10m/T01KAB_20230821T221941_B02_10m"
    c = _product("01CCV")
    assert c.generation_time is not None and c.generation_time.date().isoformat() == "2020-10-03"
    assert _product("29UNU").sensing_start == datetime(2022, 10, 5, 11, 54, 11, 24000, tzinfo=UTC)


def test_offsets_follow_band_id_mapping_of_spectral_information() -> None:
    """band_id → band goes through Spectral_Information; a permuted mapping permutes the offsets."""
    xml = PRODUCT_FILES["29UNU"].read_bytes()
    # make band_id 8 carry a distinct offset: it must land on B8A (physicalBand="B8A"), not B09
    xml2 = xml.replace(b'<BOA_ADD_OFFSET band_id="8">-1000</BOA_ADD_OFFSET>',
                       b'<BOA_ADD_OFFSET band_id="8">-1234</BOA_ADD_OFFSET>')
    assert xml2 != xml
    p = parse_product_metadata(xml2)
    assert p.add_offsets["B8A"] == -1234.0
    assert p.add_offsets["B09"] == -1000.0
    # swap the physical bands of ids 8 and 9: the distinct offset must follow
    xml3 = (xml2.replace(b'bandId="8" physicalBand="B8A"', b'bandId="8" physicalBand="B9"')
            .replace(b'bandId="9" physicalBand="B9"', b'bandId="9" physicalBand="B8A"'))
    assert xml3 != xml2
    assert parse_product_metadata(xml3).add_offsets["B09"] == -1234.0


def test_baseline_key_and_product_id() -> None:
    assert baseline_key("05.09") == (5, 9)
    assert baseline_key("02.14") < baseline_key("04.00") <= baseline_key("04.00") < baseline_key("05.10")
    for bad in ("5.9", "0509", "N05.09", "", "05.09.1", "ab.cd"):
        with pytest.raises(InvalidInputError, match="processing baseline"):
            baseline_key(bad)
    assert baseline_from_product_id("S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825") == "05.09"
    assert baseline_from_product_id("S2A_MSIL2A_20230821T221941_N0509_R029_T01KAB_20230822T021825.SAFE") == "05.09"
    assert baseline_from_product_id("S2A_OPER_MSI_L2A_TL_2APS_20230822T021825_A042640_T01KAB_N05.09") == "05.09"
    assert baseline_from_product_id("S2A_MSIL1C_20250831T103701_N0511_R008_T31TFL_20250831T145420") == "05.11"
    assert baseline_from_product_id("S2B_MSIL2A_20220101T000000_N9999_R001_T47PPR_20220101T000000") is None
    assert baseline_from_product_id("S2B_MSIL2A_20220101T000000_N0000_R001_T47PPR_20220101T000000") is None
    assert baseline_from_product_id("S2A_29RKH_20200219_0_L2A") is None


def test_errors_name_file_and_element() -> None:
    with pytest.raises(InvalidInputError, match=r"x\.xml: not well-formed XML"):
        parse_tile_metadata(b"<a>", source="x.xml")
    with pytest.raises(InvalidInputError, match="is not a Sentinel-2 tile metadata root"):
        parse_tile_metadata(PRODUCT_FILES["29UNU"].read_bytes(), source="MTD_MSIL2A.xml")
    with pytest.raises(InvalidInputError, match="is not a Sentinel-2 product metadata root"):
        parse_product_metadata(TILE_FILES["29UNU"].read_bytes())
    tl = TILE_FILES["46RER"].read_bytes()
    with pytest.raises(InvalidInputError, match=r"MTD_TL\.xml: missing element General_Info/SENSING_TIME"):
        parse_tile_metadata(tl.replace(b"SENSING_TIME", b"SENSING_TYME"), source="MTD_TL.xml")
    with pytest.raises(InvalidInputError, match="Geoposition elements disagree"):
        parse_tile_metadata(tl.replace(b"<ULX>499980</ULX>", b"<ULX>499960</ULX>", 1), source="MTD_TL.xml")
    pr = PRODUCT_FILES["46RER"].read_bytes()
    with pytest.raises(InvalidInputError, match="QUANTIFICATION_VALUE"):
        parse_product_metadata(pr.replace(b"QUANTIFICATION_VALUE", b"Q_VALUE"), source="MTD_MSIL1C.xml")
    with pytest.raises(InvalidInputError, match="PROCESSING_BASELINE"):
        parse_product_metadata(pr.replace(b">03.01<", b">3.1.0<"), source="MTD_MSIL1C.xml")


# --------------------------------------------------------------------------------------------------
# angle acceptance: real grids (with detector gaps) interpolate NaN-free; means match the file's means
# --------------------------------------------------------------------------------------------------


ANGLE_TEST_RES = 180


def _circ_mean(a: np.ndarray) -> float:
    r = np.deg2rad(a)
    return float(np.degrees(np.arctan2(np.sin(r).mean(), np.cos(r).mean())) % 360.0)


def _ang_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.mark.parametrize("key", sorted(TILE_FILES))
def test_real_angle_grids_interpolate_nan_free_and_match_file_means(key: str) -> None:
    """Interpolate every real grid to the tile's 60 m pixel grid and compare means with the file's.

    What the file's means are (checked below on the nodes, to 1e-3°):
    * ``Mean_Sun_Angle`` = the plain mean of the 23×23 sun grid nodes. Compared with the mean of the
      interpolated 610×610 field over the whole tile.
    * ``Mean_Viewing_Incidence_Angle`` of a band = the arithmetic mean of all valid nodes of all that
      band's detector grids pooled, i.e. a node-count-weighted mean over detectors (also for the azimuth).
      A pixel-area weighting of the detectors cannot reproduce it: tile-edge nodes count fully but cover
      half a cell, and adjacent (staggered) detectors differ by ~7° in azimuth, which moves a pixel-area
      mean by up to 0.9° (46RER). So per detector we average the interpolated field over that detector's
      footprint (the pixels whose nearest node the detector sees) and combine the detectors with ESA's
      weights (their valid node counts). The azimuth per detector is a circular mean; ESA combines the
      detectors arithmetically, so do we (near nadir, 01KAB, the detectors' azimuths span ~180°).
    """
    t = _tile(key)
    rows, cols = (n * 60 // ANGLE_TEST_RES for n in t.shape(60))
    kw = {"step_m": t.angle_step, "out_shape": (rows, cols), "res_m": float(ANGLE_TEST_RES)}

    # sun: file mean = node mean; interpolated mean within 0.2°
    assert t.mean_sun_zenith == pytest.approx(float(t.sun_zenith.mean()), abs=1e-3)
    sz = interpolate_grid(t.sun_zenith, **kw)
    sa = interpolate_azimuth_grid(t.sun_azimuth, **kw)
    assert not np.isnan(sz).any() and not np.isnan(sa).any()
    assert abs(float(sz.mean()) - t.mean_sun_zenith) <= 0.2
    assert _ang_diff(_circ_mean(sa), t.mean_sun_azimuth) <= 0.2

    # the band-averaged view grids (what LAI uses) interpolate NaN-free although they have gaps
    assert np.isnan(fill_nan_nearest(t.view_zenith)).sum() == 0
    assert not np.isnan(interpolate_grid(t.view_zenith, **kw)).any()
    assert not np.isnan(interpolate_azimuth_grid(t.view_azimuth, **kw)).any()

    nearest = np.rint((np.arange(rows) + 0.5) * ANGLE_TEST_RES / t.angle_step).astype(int)
    band_means_z: list[float] = []
    for band, (mz, ma) in t.mean_view_by_band.items():
        counts, pix_z, pix_a, node_z, node_a = [], [], [], [], []
        for (b, _det), (z, a) in t.view_grids.items():
            if b != band:
                continue
            valid = np.isfinite(z)
            assert valid.any() and (~valid).any()  # real detector gaps
            iz = interpolate_grid(z, **kw)
            ia = interpolate_azimuth_grid(a, **kw)
            assert not np.isnan(iz).any() and not np.isnan(ia).any()
            foot = valid[nearest[:, None], nearest[None, :]]
            counts.append(int(valid.sum()))
            pix_z.append(float(iz[foot].mean()))
            pix_a.append(_circ_mean(ia[foot]))
            node_z.extend(z[valid])
            node_a.extend(a[valid])
        n = np.array(counts, dtype=float)
        # what the file's mean is: the pooled node mean
        assert float(np.mean(node_z)) == pytest.approx(mz, abs=1e-3)
        assert float(np.mean(node_a)) == pytest.approx(ma, abs=1e-3)
        # the interpolated field, ESA's detector weights
        dz = abs(float((n * pix_z).sum() / n.sum()) - mz)
        assert dz <= 0.2, band
        assert abs(float((n * pix_a).sum() / n.sum()) - ma) <= 0.2, band
        band_means_z.append(float((n * pix_z).sum() / n.sum()))
    assert t.mean_view_zenith is not None
    assert abs(float(np.mean(band_means_z)) - t.mean_view_zenith) <= 0.2


def test_band_table_is_esa_order_with_band_ids_and_earth_search_keys() -> None:
    """ESA band order B01…B08, B8A, B09…B12 = band_id 0…12 (the ids of BOA_ADD_OFFSET / Spectral_Information)."""
    from steps.sentinel2.bands import BAND_BY_ASSET_KEY, BAND_NAMES, BANDS, L2A_BANDS, S2CLOUDLESS_BANDS

    assert BAND_NAMES == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
    assert [BANDS[b].band_id for b in BAND_NAMES] == list(range(13))
    assert "B10" not in L2A_BANDS
    assert BAND_BY_ASSET_KEY["red"] == "B04" and BAND_BY_ASSET_KEY["nir08"] == "B8A"
    assert {BANDS[b].resolution for b in ("B02", "B03", "B04", "B08")} == {10}
    # s2cloudless's 10 features, in its order (sentinel-hub/sentinel2-cloud-detector)
    assert S2CLOUDLESS_BANDS == ("B01", "B02", "B04", "B05", "B08", "B8A", "B09", "B10", "B11", "B12")
