"""Sentinel-2 constants, granule metadata writer/parser round trip, offsets and angle averaging."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from steps import sentinel2 as s2
from steps.errors import InvalidInputError

T0 = datetime(2024, 1, 15, 3, 47, 24, 24000, tzinfo=UTC)


def _meta(level: str = "L2A", baseline: str = "05.10") -> s2.GranuleMetadata:
    n = s2.ANGLE_GRID_SIZE
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    sun_z = 40.0 + 0.01 * ii + 0.02 * jj
    sun_a = 140.0 + 0.05 * jj
    # two detectors: west half and east half, overlapping in column 11, NaN elsewhere
    vz1 = np.where(jj <= 11, 5.0 + 0.1 * jj, np.nan)
    va1 = np.where(jj <= 11, 100.0, np.nan)
    vz2 = np.where(jj >= 11, 6.0 + 0.1 * jj, np.nan)
    va2 = np.where(jj >= 11, 120.0, np.nan)
    bands = s2.L2A_BANDS if level == "L2A" else s2.L1C_BANDS
    grids = {}
    for b in bands:
        grids[(b, 1)] = (vz1, va1)
        grids[(b, 2)] = (vz2, va2)
    vz, va = s2.mean_view_angles(list(grids.values()))
    offsets = dict.fromkeys(s2.BAND_NAMES, -1000.0) if s2.baseline_has_offsets(baseline) else {}
    return s2.GranuleMetadata(
        level=level, tile_id="47PPR",
        granule_id=s2.granule_id(level, "sentinel-2b", "47PPR", T0, baseline), platform="sentinel-2b",
        epsg=32647, ulx=600000.0, uly=1600020.0,
        sizes={10: (10980, 10980), 20: (5490, 5490), 60: (1830, 1830)},
        sensing_time=T0, processing_baseline=baseline, quantification=10000.0, add_offsets=offsets,
        sun_zenith=sun_z, sun_azimuth=sun_a, view_zenith=vz, view_azimuth=va, angle_step=5000.0,
        mean_sun_zenith=40.3, mean_sun_azimuth=140.5, mean_view_zenith=6.1, mean_view_azimuth=110.0,
        view_grids=grids,
    )


def test_band_table_is_esa_order_with_earth_search_keys():
    assert s2.BAND_NAMES == ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
                             "B11", "B12")
    assert [s2.BANDS[b].band_id for b in s2.BAND_NAMES] == list(range(13))
    assert s2.BANDS["B8A"].asset_key == "nir08" and s2.BANDS["B8A"].resolution == 20
    assert s2.BANDS["B10"].asset_key == "cirrus" and s2.BANDS["B10"].resolution == 60
    assert {s2.BANDS[b].resolution for b in ("B02", "B03", "B04", "B08")} == {10}
    assert len(s2.L2A_ASSET_KEYS) == 14 and "cirrus" not in s2.L2A_ASSET_KEYS and "scl" in s2.L2A_ASSET_KEYS
    assert len(s2.L1C_ASSET_KEYS) == 14 and "cirrus" in s2.L1C_ASSET_KEYS and "scl" not in s2.L1C_ASSET_KEYS
    wl = [s2.BANDS[b].center_wavelength for b in s2.BAND_NAMES]
    assert wl == sorted(wl)


@pytest.mark.parametrize("level", ["L2A", "L1C"])
def test_metadata_round_trip(level):
    meta = _meta(level)
    xml = s2.build_granule_metadata_xml(meta)
    got = s2.parse_granule_metadata(xml)
    assert got.level == level
    assert got.tile_id == "47PPR" and got.platform == "sentinel-2b"
    assert got.granule_id == meta.granule_id and got.granule_id.endswith("_T47PPR_N05.10")
    assert (got.epsg, got.ulx, got.uly) == (32647, 600000.0, 1600020.0)
    assert got.sizes == meta.sizes
    assert got.sensing_time == T0
    assert got.processing_baseline == "05.10" and got.quantification == 10000.0
    assert got.add_offsets == dict.fromkeys(s2.BAND_NAMES, -1000.0)
    assert got.angle_step == 5000.0
    np.testing.assert_allclose(got.sun_zenith, meta.sun_zenith, atol=1e-6)
    np.testing.assert_allclose(got.sun_azimuth, meta.sun_azimuth, atol=1e-6)
    np.testing.assert_allclose(got.view_zenith, meta.view_zenith, atol=1e-6)
    np.testing.assert_allclose(got.view_azimuth, meta.view_azimuth, atol=1e-6)
    assert got.mean_sun_zenith == pytest.approx(40.3)
    assert len(got.view_grids) == len(meta.view_grids)
    n_grids = len(re.findall(rb"<Viewing_Incidence_Angles_Grids ", xml))
    assert n_grids == (12 if level == "L2A" else 13) * 2


def test_l2a_offsets_present_from_baseline_04_and_reflectance_params():
    for baseline in ("04.00", "05.10"):
        got = s2.parse_granule_metadata(s2.build_granule_metadata_xml(_meta("L2A", baseline)))
        assert b"BOA_ADD_OFFSET" in s2.build_granule_metadata_xml(_meta("L2A", baseline))
        assert got.add_offsets["B04"] == -1000.0
        scale, offset = s2.reflectance_params(got, "B04")
        assert scale == pytest.approx(1e-4) and offset == pytest.approx(-0.1)
        assert 6000 * scale + offset == pytest.approx(0.5)


def test_offsets_absent_before_baseline_04_means_zero_offset():
    xml = s2.build_granule_metadata_xml(_meta("L2A", "03.01"))
    assert b"ADD_OFFSET" not in xml
    got = s2.parse_granule_metadata(xml)
    assert got.add_offsets == {}
    assert s2.reflectance_params(got, "B08") == (pytest.approx(1e-4), 0.0)


def test_offsets_decided_by_metadata_not_by_baseline_or_date():
    # an old acquisition reprocessed at 05.00 carries offsets; a metadata file without a list gets none
    old = replace(_meta("L1C", "05.00"), sensing_time=datetime(2019, 3, 1, 3, 47, tzinfo=UTC))
    got = s2.parse_granule_metadata(s2.build_granule_metadata_xml(old))
    assert got.sensing_time.year == 2019
    assert s2.reflectance_params(got, "B10")[1] == pytest.approx(-0.1)
    no_list = replace(_meta("L2A", "05.10"), add_offsets={})
    got = s2.parse_granule_metadata(s2.build_granule_metadata_xml(no_list))
    assert s2.reflectance_params(got, "B04")[1] == 0.0


def test_reflectance_params_rejects_unknown_band_and_missing_offset():
    meta = replace(_meta(), add_offsets={"B02": -1000.0})
    with pytest.raises(InvalidInputError, match="B04"):
        s2.reflectance_params(meta, "B04")
    with pytest.raises(InvalidInputError, match="B13"):
        s2.reflectance_params(meta, "B13")


def _good_xml() -> str:
    return s2.build_granule_metadata_xml(_meta()).decode()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda x: x[: len(x) // 2], "well-formed"),
        (lambda x: x.replace("Level-2A_Tile_ID", "Level-3_Tile_ID"), "root"),
        (lambda x: re.sub(r"<TILE_ID[^>]*>[^<]*</TILE_ID>", "", x), "TILE_ID"),
        (lambda x: x.replace("EPSG:32647", "UTM47"), "HORIZONTAL_CS_CODE"),
        (lambda x: x.replace(">10000<", ">ten thousand<"), "BOA_QUANTIFICATION_VALUE"),
        (lambda x: x.replace('band_id="3"', 'band_id="42"'), "band_id"),
        (lambda x: x.replace("<SENSING_TIME", "<X").replace("</SENSING_TIME>", "</X>"), "SENSING_TIME"),
        (lambda x: x.replace("05.10</PROCESSING_BASELINE>", "five</PROCESSING_BASELINE>"), "baseline"),
        (lambda x: re.sub(r"(<Sun_Angles_Grid>\s*<Zenith>.*?<VALUES>)(\S+) ", r"\1", x, count=1,
                          flags=re.S), "ragged"),
        (lambda x: re.sub(r"<Mean_Sun_Angle>.*?</Mean_Sun_Angle>", "", x, flags=re.S), "Mean_Sun_Angle"),
    ],
)
def test_malformed_metadata_raises_invalid_input(mutate, match):
    bad = mutate(_good_xml())
    with pytest.raises(InvalidInputError, match=match) as info:
        s2.parse_granule_metadata(bad.encode())
    assert "\n" not in str(info.value)


def test_view_angle_mean_ignores_nan_and_averages_azimuth_as_vectors():
    z1 = np.array([[1.0, 2.0, np.nan, np.nan]])
    a1 = np.array([[350.0, 90.0, np.nan, np.nan]])
    z2 = np.array([[3.0, np.nan, 5.0, np.nan]])
    a2 = np.array([[10.0, np.nan, 180.0, np.nan]])
    z, a = s2.mean_view_angles([(z1, a1), (z2, a2)])
    np.testing.assert_allclose(z[0, :3], [2.0, 2.0, 5.0])
    assert a[0, 0] == pytest.approx(0.0, abs=1e-9) or a[0, 0] == pytest.approx(360.0)  # not 180
    assert a[0, 1] == pytest.approx(90.0) and a[0, 2] == pytest.approx(180.0)
    assert np.isnan(z[0, 3]) and np.isnan(a[0, 3])  # no warning for the empty node (warnings are errors)


def test_parsed_mean_view_grid_uses_both_detectors_in_overlap():
    got = s2.parse_granule_metadata(_good_xml().encode())
    # column 11 is seen by both detectors: zenith mean of 6.1 and 7.1, azimuth between 100 and 120
    assert got.view_zenith[0, 11] == pytest.approx(6.6)
    assert got.view_azimuth[0, 11] == pytest.approx(110.0)
    assert got.view_zenith[0, 0] == pytest.approx(5.0) and got.view_azimuth[0, 22] == pytest.approx(120.0)
