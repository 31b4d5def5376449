"""The one Sentinel-2 STAC item reader over every real item in tests/data/real, and L2A↔L1C pairing.

Expected values below were written by hand from reading each JSON file (see tests/data/real/PROVENANCE.md);
none is computed by the code under test.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from steps.errors import InvalidInputError
from steps.sentinel2.items import (
    CONVENTIONS,
    S2Item,
    best_per_scene,
    canonical_tile,
    match_l1c,
    pair_items,
    parse_item,
    parse_items,
    parse_tileinfo,
    processable,
)

REAL = Path(__file__).parent / "data" / "real"
ITEMS = REAL / "stac-items"
HAND = Path(__file__).parent / "data" / "handwritten" / "stac-items"
RKH = REAL / "rio-tiler-pds" / "S2A_29RKH_20200219_0_L2A" / "S2A_29RKH_20200219_0_L2A.json"
NBJ = REAL / "rio-tiler-pds" / "S2A_31NBJ_20190524_0_L2A" / "S2A_31NBJ_20190524_0_L2A.json"
EOPF = ITEMS / "EOPF-Explorer+data-pipeline" / "S2A_MSIL2A_20250831T103701_N0511_R008_T31TFL_20250831T145420.json"
PC = ITEMS / "opendatacube+odc-stac" / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531.json"
PC_RASTER = ITEMS / "opendatacube+odc-stac" / "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531_raster_ext.json"
SITE1 = ITEMS / "opendatacube+odc-stac" / "site1-20200606-tall-strip-africa.geojson"
SITE2 = ITEMS / "opendatacube+odc-stac" / "site2-2020_jun_jul-35MNM.geojson"
QCH = ITEMS / "opendatacube+odc-stac" / "S2A_28QCH_20200714_0_L2A.json"
TITILER = ITEMS / "developmentseed+titiler" / "item.json"
PYSTAC_L1C = ITEMS / "stac-utils+pystac" / "example-sentinel2.json"
PYSTAC_RASTER = ITEMS / "stac-utils+pystac" / "raster-sentinel2-example.json"
PAYLOAD = ITEMS / "stac-utils+stac-task" / "sentinel2-l2a-j2k-payload.json"
CDSE_L2A = HAND / "cdse-S2B_MSIL2A_20240419T001429_N0510_R116_T56NNG_20240419T013152.json"
CDSE_L1C = HAND / "cdse-S2A_MSIL1C_20250831T103701_N0511_R008_T31TFL_20250831T124510.json"
ES_L1C = HAND / "earth-search-v1-S2A_29RKH_20200219_0_L1C.json"
C1 = HAND / "earth-search-c1-S2B_T10TFR_20231223T190950_L2A.json"

COGS = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs"
PCB = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2"
PC_06VVN_IMG = (f"{PCB}/06/V/VN/2019/06/29/S2B_MSIL2A_20190629T212529_N0212_R043_T06VVN_20201006T080531.SAFE/GRANULE/"
                "L2A_T06VVN_A012081_20190629T212530/IMG_DATA")
PC_06VVN_HREFS = (f"{PC_06VVN_IMG}/R10m/T06VVN_20190629T212529_B04_10m.tif",
                  f"{PC_06VVN_IMG}/R10m/T06VVN_20190629T212529_B08_10m.tif",
                  f"{PC_06VVN_IMG}/R20m/T06VVN_20190629T212529_SCL_20m.tif")
"""B04, B08, SCL of the Planetary Computer item of 06VVN (the same with and without its raster extension)."""


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _items(path: Path) -> list[S2Item]:
    return parse_items(_load(path), str(path))


def _by_id(path: Path) -> dict[str, S2Item]:
    return {it.id: it for it in _items(path)}


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------------------
# One row per single-item file: every field written by hand from the file.
# (file, id, convention, level, tile, datetime, platform, baseline, product id, sequence, epsg,
#  B04 href, B08 href, SCL href, B04 (scale, offset, nodata), boa_offset_applied, cloud cover)
# --------------------------------------------------------------------------------------------------

SINGLE = [
    pytest.param(
        RKH, "S2A_29RKH_20200219_0_L2A", "earth-search-v1", "L2A", "29RKH", "2020-02-19T11:34:25.405", "sentinel-2a",
        "02.14", "S2A_MSIL2A_20200219T112111_N0214_R037_T29RKH_20200219T123947", 0, 32629,
        f"{COGS}/29/R/KH/2020/2/S2A_29RKH_20200219_0_L2A/B04.tif",
        f"{COGS}/29/R/KH/2020/2/S2A_29RKH_20200219_0_L2A/B08.tif",
        f"{COGS}/29/R/KH/2020/2/S2A_29RKH_20200219_0_L2A/SCL.tif", (0.0001, 0.0, 0.0), False, 4.051854,
        id="es-v1-29RKH"),
    pytest.param(
        NBJ, "S2A_31NBJ_20190524_0_L2A", "earth-search-v0", "L2A", "31NBJ", "2019-05-24T10:28:59", "sentinel-2a",
        "02.12", "S2A_MSIL2A_20190524T101031_N0212_R022_T31NBJ_20190524T130304", 0, 32631,
        f"{COGS}/31/N/BJ/2019/5/S2A_31NBJ_20190524_0_L2A/B04.tif",
        f"{COGS}/31/N/BJ/2019/5/S2A_31NBJ_20190524_0_L2A/B08.tif",
        f"{COGS}/31/N/BJ/2019/5/S2A_31NBJ_20190524_0_L2A/SCL.tif", (None, None, None), None, 0.0,
        id="es-v0-31NBJ"),
    pytest.param(
        QCH, "S2A_28QCH_20200714_0_L2A", "earth-search-v0", "L2A", "28QCH", "2020-07-14T11:55:52", "sentinel-2a",
        "02.14", "S2A_MSIL2A_20200714T115221_N0214_R123_T28QCH_20200714T191310", 0, 32628,
        f"{COGS}/2020/S2A_28QCH_20200714_0_L2A/B04.tif", f"{COGS}/2020/S2A_28QCH_20200714_0_L2A/B08.tif",
        f"{COGS}/2020/S2A_28QCH_20200714_0_L2A/SCL.tif", (None, None, None), None, 2.36,
        id="es-v0-beta1-28QCH-no-utm-zone"),
    pytest.param(
        TITILER, "S2A_34SGA_20200318_0_L2A", "earth-search-v0", "L2A", "34SGA", "2020-03-18T09:11:33", "sentinel-2a",
        "02.14", "S2A_MSIL2A_20200318T085701_N0214_R007_T34SGA_20200318T115254", 0, 32634,
        "https://myurl.com/B04.tif", "https://myurl.com/B08.tif", "https://myurl.com/SCL.tif", (None, None, None),
        None, 89.84, id="es-v0-titiler-34SGA"),
    pytest.param(
        PYSTAC_RASTER, "S2B_33SVB_20210221_0_L2A", "earth-search-v0", "L2A", "33SVB", "2021-02-21T10:00:17",
        "sentinel-2b", "02.14", "S2B_MSIL2A_20210221T095029_N0214_R079_T33SVB_20210221T115149", 0, 32633,
        f"{COGS}/33/S/VB/2021/2/S2B_33SVB_20210221_0_L2A/B04.tif",
        f"{COGS}/33/S/VB/2021/2/S2B_33SVB_20210221_0_L2A/B08.tif",
        f"{COGS}/33/S/VB/2021/2/S2B_33SVB_20210221_0_L2A/SCL.tif", (None, None, 0.0), None, 21.22,
        id="es-v0-fields-pystac-raster-33SVB"),
    pytest.param(
        PC, "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531", "planetary-computer", "L2A", "06VVN",
        "2019-06-29T21:25:29.024", "sentinel-2b", "02.12",
        "S2B_MSIL2A_20190629T212529_N0212_R043_T06VVN_20201006T080531", None, 32606, *PC_06VVN_HREFS,
        (None, None, None), None, 0.314306, id="pc-06VVN"),
    pytest.param(
        PC_RASTER, "S2B_MSIL2A_20190629T212529_R043_T06VVN_20201006T080531", "planetary-computer", "L2A", "06VVN",
        "2019-06-29T21:25:29.024", "sentinel-2b", "02.12",
        "S2B_MSIL2A_20190629T212529_N0212_R043_T06VVN_20201006T080531", None, 32606, *PC_06VVN_HREFS,
        (None, None, 0.0), None, 0.314306, id="pc-06VVN-raster-ext"),
    pytest.param(
        PYSTAC_L1C, "S2A_MSIL1C_20210908T042701_R133_T46RER_20210908T070248", "stactools", "L1C", "46RER",
        "2021-09-08T04:27:01.024", "sentinel-2a", "03.01",
        "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248", None, 32646,
        "/Users/philvarner/code/sentinel2/tests/data-files/S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248"
        ".SAFE/GRANULE/L1C_T46RER_A032448_20210908T043714/IMG_DATA/T46RER_20210908T042701_B04.jp2",
        "/Users/philvarner/code/sentinel2/tests/data-files/S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248"
        ".SAFE/GRANULE/L1C_T46RER_A032448_20210908T043714/IMG_DATA/T46RER_20210908T042701_B08.jp2",
        None, (0.0001, 0.0, 0.0), None, 88.2972, id="stactools-46RER-L1C"),
    pytest.param(
        EOPF, "S2A_MSIL2A_20250831T103701_N0511_R008_T31TFL_20250831T145420", "eopf", "L2A", "31TFL",
        "2025-08-31T10:37:01.024", "sentinel-2a", "05.11",
        "S2A_MSIL2A_20250831T103701_N0511_R008_T31TFL_20250831T145420", None, 32631,
        "https://esa-zarr-sentinel-explorer-fra.s3.de.io.cloud.ovh.net/tests-output/sentinel-2-l2a-staging/"
        "S2A_MSIL2A_20250831T103701_N0511_R008_T31TFL_20250831T145420.zarr/measurements/reflectance/r10m/b04",
        "https://esa-zarr-sentinel-explorer-fra.s3.de.io.cloud.ovh.net/tests-output/sentinel-2-l2a-staging/"
        "S2A_MSIL2A_20250831T103701_N0511_R008_T31TFL_20250831T145420.zarr/measurements/reflectance/r10m/b08",
        "https://esa-zarr-sentinel-explorer-fra.s3.de.io.cloud.ovh.net/tests-output/sentinel-2-l2a-staging/"
        "S2A_MSIL2A_20250831T103701_N0511_R008_T31TFL_20250831T145420.zarr/conditions/mask/l2a_classification/r20m/scl",
        (None, None, None), None, 2.060995, id="eopf-31TFL"),
]


@pytest.mark.parametrize(
    ("path", "item_id", "convention", "level", "tile", "when", "platform", "baseline", "product_id", "sequence",
     "epsg", "b04", "b08", "scl", "b04_radiometry", "boa", "cloud"), SINGLE)
def test_real_single_item_reads_as_written(path: Path, item_id: str, convention: str, level: str, tile: str,
                                           when: str, platform: str, baseline: str, product_id: str,
                                           sequence: int | None, epsg: int, b04: str, b08: str, scl: str | None,
                                           b04_radiometry: tuple[float | None, ...], boa: bool | None,
                                           cloud: float) -> None:
    (item,) = _items(path)
    assert item.id == item_id
    assert item.convention == convention
    assert item.level == level
    assert item.tile == tile
    assert item.datetime == _utc(when)
    assert item.datetime.tzinfo is not None
    assert item.platform == platform
    assert item.processing_baseline == baseline
    assert item.product_id == product_id
    assert item.sequence == sequence
    assert item.epsg == epsg
    assert item.bands["B04"].href == b04
    assert item.bands["B08"].href == b08
    assert (item.scl.href if item.scl else None) == scl
    ba = item.bands["B04"]
    assert (ba.scale, ba.offset, ba.nodata) == b04_radiometry
    assert item.boa_offset_applied is boa
    assert item.cloud_cover == cloud
    assert item.href == str(path)


# The stac-task payload (Earth Search v1, Oct 2022 variant): two items in one FeatureCollection.
def test_oct_2022_earth_search_items_read_sentinel2_prefix_and_pad_the_zone() -> None:
    items = _by_id(PAYLOAD)
    assert sorted(items) == ["S2A_52HGH_20221007_0_L2A", "S2B_5CNL_20221009_0_L2A"]
    hgh, cnl = items["S2A_52HGH_20221007_0_L2A"], items["S2B_5CNL_20221009_0_L2A"]
    assert (hgh.convention, cnl.convention) == ("earth-search-v1-2022", "earth-search-v1-2022")
    assert (hgh.tile, cnl.tile) == ("52HGH", "05CNL")  # grid:code MGRS-5CNL, sentinel2:id …_T05CNL
    assert (hgh.datetime, cnl.datetime) == (_utc("2022-10-07T01:16:42.073"), _utc("2022-10-09T16:27:07.934"))
    assert (hgh.platform, cnl.platform) == ("sentinel-2a", "sentinel-2b")
    assert (hgh.processing_baseline, cnl.processing_baseline) == ("04.00", "04.00")
    assert hgh.product_id is None and cnl.product_id is None  # these items carry no product URI
    assert (hgh.epsg, cnl.epsg) == (32752, 32705)
    assert hgh.boa_offset_applied is None and cnl.boa_offset_applied is None  # no earthsearch:* field
    assert cnl.bands["B04"].href == "s3://sentinel-s2-l2a/tiles/5/C/NL/2022/10/9/0/R10m/B04.jp2"
    assert cnl.bands["B08"].href == "s3://sentinel-s2-l2a/tiles/5/C/NL/2022/10/9/0/R10m/B08.jp2"
    assert cnl.scl is not None and cnl.scl.href == "s3://sentinel-s2-l2a/tiles/5/C/NL/2022/10/9/0/R20m/SCL.jp2"
    assert hgh.bands["B04"].href == "s3://sentinel-s2-l2a/tiles/52/H/GH/2022/10/7/0/R10m/B04.jp2"
    assert (hgh.bands["B04"].scale, hgh.bands["B04"].offset, hgh.bands["B04"].nodata) == (0.0001, -0.1, 0.0)
    assert hgh.bands["B04"].media_type == "image/jp2" and hgh.bands["B04"].jp2_href is None
    assert hgh.granule_metadata_href == "https://roda.sentinel-hub.com/sentinel-s2-l2a/tiles/52/H/GH/2022/10/7/0/metadata.xml"
    assert hgh.tileinfo_href == "https://roda.sentinel-hub.com/sentinel-s2-l2a/tiles/52/H/GH/2022/10/7/0/tileInfo.json"
    assert hgh.cloud_cover == 78.295034 and cnl.cloud_cover == 99.999821


# Planetary Computer ItemCollections: every item, by id, from the files.
SITE1_EXPECTED = {  # id: (tile, generation part of the product id, cloud cover)
    "S2B_MSIL2A_20200606T080609_R078_T35MNM_20200826T094900": ("35MNM", "20200826T094900", 0.973945),
    "S2B_MSIL2A_20200606T080609_R078_T35LNL_20201027T072719": ("35LNL", "20201027T072719", 0.958716),
    "S2B_MSIL2A_20200606T080609_R078_T35LNK_20201027T072717": ("35LNK", "20201027T072717", 0.083978),
    "S2B_MSIL2A_20200606T080609_R078_T35LNJ_20201027T072717": ("35LNJ", "20201027T072717", 0.081327),
    "S2B_MSIL2A_20200606T080609_R078_T35LNH_20201027T072716": ("35LNH", "20201027T072716", 0.319793),
    "S2B_MSIL2A_20200606T080609_R078_T35LNG_20200919T034411": ("35LNG", "20200919T034411", 3.826759),
    "S2B_MSIL2A_20200606T080609_R078_T35LNF_20201027T072716": ("35LNF", "20201027T072716", 5.371107),
    "S2B_MSIL2A_20200606T080609_R078_T35LNE_20200826T094846": ("35LNE", "20200826T094846", 16.400486),
    "S2B_MSIL2A_20200606T080609_R078_T35LND_20200826T094848": ("35LND", "20200826T094848", 7.730612),
}

SITE2_EXPECTED = {  # id: (datetime, platform, cloud cover)
    "S2A_MSIL2A_20200731T080611_R078_T35MNM_20200818T062751": ("2020-07-31T08:06:11.024", "sentinel-2a", 0.004742),
    "S2B_MSIL2A_20200726T080609_R078_T35MNM_20200908T180357": ("2020-07-26T08:06:09.024", "sentinel-2b", 0.003642),
    "S2A_MSIL2A_20200721T080611_R078_T35MNM_20200908T180356": ("2020-07-21T08:06:11.024", "sentinel-2a", 0.016489),
    "S2B_MSIL2A_20200716T080609_R078_T35MNM_20200816T092511": ("2020-07-16T08:06:09.024", "sentinel-2b", 0.00724),
    "S2A_MSIL2A_20200711T080611_R078_T35MNM_20201101T145944": ("2020-07-11T08:06:11.024", "sentinel-2a", 26.800215),
    "S2B_MSIL2A_20200706T080609_R078_T35MNM_20201027T081700": ("2020-07-06T08:06:09.024", "sentinel-2b", 0.701501),
    "S2A_MSIL2A_20200701T080611_R078_T35MNM_20200824T191001": ("2020-07-01T08:06:11.024", "sentinel-2a", 29.220387),
    "S2B_MSIL2A_20200626T080609_R078_T35MNM_20200824T052748": ("2020-06-26T08:06:09.024", "sentinel-2b", 5.859933),
    "S2A_MSIL2A_20200621T080611_R078_T35MNM_20200823T125142": ("2020-06-21T08:06:11.024", "sentinel-2a", 1.042966),
    "S2B_MSIL2A_20200616T080609_R078_T35MNM_20201027T073925": ("2020-06-16T08:06:09.024", "sentinel-2b", 0.020833),
    "S2A_MSIL2A_20200611T080611_R078_T35MNM_20200826T230619": ("2020-06-11T08:06:11.024", "sentinel-2a", 1.206609),
    "S2B_MSIL2A_20200606T080609_R078_T35MNM_20200826T094900": ("2020-06-06T08:06:09.024", "sentinel-2b", 0.973945),
    "S2A_MSIL2A_20200601T080611_R078_T35MNM_20201027T072253": ("2020-06-01T08:06:11.024", "sentinel-2a", 6.477739),
}


def test_pc_strip_collection_every_item() -> None:
    items = _by_id(SITE1)
    assert set(items) == set(SITE1_EXPECTED)
    for item_id, (tile, gen, cloud) in SITE1_EXPECTED.items():
        it = items[item_id]
        assert it.convention == "planetary-computer"
        assert it.tile == tile
        assert it.datetime == _utc("2020-06-06T08:06:09.024")
        assert it.platform == "sentinel-2b"
        assert it.processing_baseline == "02.12"
        assert it.product_id == f"S2B_MSIL2A_20200606T080609_N0212_R078_T{tile}_{gen}"
        assert it.datatake_id == "GS2B_20200606T080609_016978_N02.12"
        assert it.cloud_cover == cloud
        assert it.epsg == 32735
        assert it.bands["B04"].href.endswith(f"/IMG_DATA/R10m/T{tile}_20200606T080609_B04_10m.tif")
        assert it.bands["B08"].href.endswith(f"/IMG_DATA/R10m/T{tile}_20200606T080609_B08_10m.tif")
        assert it.scl is not None and it.scl.href.endswith(f"/IMG_DATA/R20m/T{tile}_20200606T080609_SCL_20m.tif")
        assert it.granule_metadata_href is not None and it.granule_metadata_href.endswith("/MTD_TL.xml")
        assert it.product_metadata_href == (f"{PCB}/35/{tile[2]}/{tile[3:]}/2020/06/06/"
                                            f"S2B_MSIL2A_20200606T080609_N0212_R078_T{tile}_{gen}.SAFE/MTD_MSIL2A.xml")
    lnd = items["S2B_MSIL2A_20200606T080609_R078_T35LND_20200826T094848"]
    assert lnd.bands["B04"].href == (
        f"{PCB}/35/L/ND/2020/06/06/S2B_MSIL2A_20200606T080609_N0212_R078_T35LND_20200826T094848.SAFE/GRANULE/"
        "L2A_T35LND_A016978_20200606T083047/IMG_DATA/R10m/T35LND_20200606T080609_B04_10m.tif")


def test_pc_time_series_collection_every_item() -> None:
    items = _by_id(SITE2)
    assert set(items) == set(SITE2_EXPECTED)
    for item_id, (when, platform, cloud) in SITE2_EXPECTED.items():
        it = items[item_id]
        assert (it.convention, it.tile, it.processing_baseline) == ("planetary-computer", "35MNM", "02.12")
        assert it.datetime == _utc(when)
        assert it.platform == platform
        assert it.cloud_cover == cloud
        assert it.product_id is not None and it.product_id.startswith(item_id[:27] + "N0212_R078_T35MNM_")
    first = items["S2A_MSIL2A_20200731T080611_R078_T35MNM_20200818T062751"]
    assert first.product_id == "S2A_MSIL2A_20200731T080611_N0212_R078_T35MNM_20200818T062751"
    assert first.bands["B04"].href == (
        f"{PCB}/35/M/NM/2020/07/31/S2A_MSIL2A_20200731T080611_N0212_R078_T35MNM_20200818T062751.SAFE/GRANULE/"
        "L2A_T35MNM_A026673_20200731T081835/IMG_DATA/R10m/T35MNM_20200731T080611_B04_10m.tif")


def test_every_real_item_file_parses_31_plus_2() -> None:
    files = [p for p in ITEMS.rglob("*.json") if "handwritten" not in p.parts] + list(ITEMS.rglob("*.geojson"))
    n = sum(len(_items(p)) for p in files)
    assert n == 31
    assert len(_items(RKH)) + len(_items(NBJ)) == 2


# --------------------------------------------------------------------------------------------------
# details per convention
# --------------------------------------------------------------------------------------------------


def test_earth_search_v1_prefers_cog_and_keeps_the_jp2_twin() -> None:
    (it,) = _items(RKH)
    b04 = it.bands["B04"]
    assert b04.key == "red"
    assert b04.media_type == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert b04.jp2_href == "s3://sentinel-s2-l2a/tiles/29/R/KH/2020/2/19/0/B04.jp2"
    assert b04.transform == (10.0, 0.0, 199980.0, 0.0, -10.0, 2800020.0)
    assert b04.shape == (10980, 10980)
    assert it.bands["B8A"].key == "nir08" and it.bands["B8A"].resolution == 20
    assert it.bands["B01"].resolution == 60
    assert it.scl is not None and it.scl.jp2_href == "s3://sentinel-s2-l2a/tiles/29/R/KH/2020/2/19/0/SCL.jp2"
    assert it.scl.resolution == 20 and it.scl.scale is None and it.scl.nodata == 0.0
    assert "B10" not in it.bands  # L2A has no cirrus band
    assert it.granule_metadata_href == f"{COGS}/29/R/KH/2020/2/S2A_29RKH_20200219_0_L2A/granule_metadata.xml"
    assert it.tileinfo_href == f"{COGS}/29/R/KH/2020/2/S2A_29RKH_20200219_0_L2A/tileinfo_metadata.json"
    assert it.product_metadata_href is None
    assert it.datatake_id == "GS2A_20200219T112111_024344_N02.14"
    assert it.derived_from == (
        "https://earth-search.aws.element84.com/v1/collections/sentinel-2-l1c/items/S2A_29RKH_20200219_0_L1C",)
    assert it.collection == "sentinel-2-l2a"
    assert it.scene_key == ("29RKH", "2020-02-19T11:34:25Z", "sentinel-2a")
    assert (it.sensing_start, it.relative_orbit) == ("20200219T112111", 37)
    assert it.origin == (199980.0, 2800020.0)


def test_earth_search_v0_nine_element_transform_and_metadata_assets() -> None:
    (it,) = _items(NBJ)
    assert it.bands["B04"].transform == (10.0, 0.0, 199980.0, 0.0, -10.0, 900000.0)
    assert it.scl is not None and it.scl.transform == (20.0, 0.0, 199980.0, 0.0, -20.0, 900000.0)
    assert it.granule_metadata_href == "https://roda.sentinel-hub.com/sentinel-s2-l2a/tiles/31/N/BJ/2019/5/24/0/metadata.xml"
    assert it.tileinfo_href == "https://roda.sentinel-hub.com/sentinel-s2-l2a/tiles/31/N/BJ/2019/5/24/0/tileInfo.json"


def test_pystac_raster_example_nan_nodata_and_missing_raster_bands() -> None:
    (it,) = _items(PYSTAC_RASTER)
    assert math.isnan(it.bands["B09"].nodata or 0.0)  # "nodata": "nan" in the file
    assert it.bands["B08"].scale is None and it.bands["B08"].nodata is None  # no raster:bands on B08


def test_stactools_l1c_keys_by_common_name_include_cirrus() -> None:
    (it,) = _items(PYSTAC_L1C)
    assert it.bands["B10"].key == "cirrus" and it.bands["B10"].resolution == 60
    assert len(it.bands) == 13
    assert it.scl is None
    assert it.product_metadata_href is not None and it.product_metadata_href.endswith(
        "S2A_MSIL1C_20210908T042701_N0301_R133_T46RER_20210908T070248.SAFE/MTD_MSIL1C.xml")
    assert it.datatake_id == "GS2A_20210908T042701_032448_N03.01"
    assert processable(it) is None


def test_eopf_zarr_item_parses_but_is_not_processable() -> None:
    (it,) = _items(EOPF)
    assert it.bands["B01"].resolution == 20  # the item's bands list gives b01 gsd 20 (EOPF r20m group)
    assert it.bands["B8A"].href.endswith(".zarr/measurements/reflectance/r20m/b8a")
    assert it.bands["B04"].shape == (10980, 10980) and it.bands["B04"].transform is None
    assert it.scl is not None and it.scl.transform == (20.0, 0.0, 600000.0, 0.0, -20.0, 5100000.0)
    assert it.datatake_id == "GS2A_20250831T103701_053230_N05.11"
    reason = processable(it)
    assert reason is not None
    assert reason.startswith(f"item {it.id}: B04 is an array inside a Zarr store")


def test_cdse_per_resolution_keys_pick_the_native_resolution() -> None:
    it = parse_item(_load(CDSE_L2A), str(CDSE_L2A))
    assert it.convention == "cdse" and it.level == "L2A" and it.tile == "56NNG" and it.epsg == 32656
    assert it.processing_baseline == "05.10"
    assert it.product_id == "S2B_MSIL2A_20240419T001429_N0510_R116_T56NNG_20240419T013152"
    safe = ("s3://eodata/Sentinel-2/MSI/L2A/2024/04/19/S2B_MSIL2A_20240419T001429_N0510_R116_T56NNG_20240419T013152"
            ".SAFE")
    gran = f"{safe}/GRANULE/L2A_T56NNG_A037179_20240419T001424"
    assert it.bands["B04"].href == f"{gran}/IMG_DATA/R10m/T56NNG_20240419T001429_B04_10m.jp2"
    assert it.bands["B04"].key == "B04_10m" and it.bands["B04"].resolution == 10
    assert it.bands["B01"].key == "B01_60m"
    assert it.scl is not None and it.scl.key == "SCL_20m" and it.scl.resolution == 20
    assert (it.bands["B08"].scale, it.bands["B08"].offset) == (0.0001, -0.1)
    assert it.product_metadata_href == f"{safe}/MTD_MSIL2A.xml"
    assert it.granule_metadata_href == f"{gran}/MTD_TL.xml"
    assert it.origin is None  # no proj:transform in this item


def test_earth_search_c1_item() -> None:
    it = parse_item(_load(C1), str(C1))
    assert (it.convention, it.level, it.tile, it.platform, it.epsg) == (
        "earth-search-c1", "L2A", "10TFR", "sentinel-2b", 32610)
    assert it.bands["B04"].href == ("https://e84-earth-search-sentinel-data.s3.us-west-2.amazonaws.com/"
                                    "sentinel-2-c1-l2a/10/T/FR/2023/12/S2B_T10TFR_20231223T190950_L2A/B04.tif")
    assert (it.bands["B04"].scale, it.bands["B04"].offset) == (0.0001, -0.1)
    assert it.sequence is None


def test_relative_hrefs_resolve_against_the_item_href() -> None:
    obj = _load(RKH)
    obj["assets"]["red"]["href"] = "./B04.tif"
    obj["assets"]["granule_metadata"]["href"] = "granule_metadata.xml"
    it = parse_item(obj, "s3://bucket/tiles/29/R/KH/item.json")
    assert it.bands["B04"].href == "s3://bucket/tiles/29/R/KH/B04.tif"
    assert it.granule_metadata_href == "s3://bucket/tiles/29/R/KH/granule_metadata.xml"
    it = parse_item(obj, "https://example.org/a/b/item.json")
    assert it.bands["B04"].href == "https://example.org/a/b/B04.tif"
    it = parse_item(obj, "/data/items/item.json")
    assert it.bands["B04"].href == "/data/items/B04.tif"


def test_empty_href_falls_back_to_the_self_link() -> None:
    it = parse_item(_load(NBJ), "")
    assert it.href == f"{COGS}/31/N/BJ/2019/5/S2A_31NBJ_20190524_0_L2A/S2A_31NBJ_20190524_0_L2A.json"


# --------------------------------------------------------------------------------------------------
# grid: tile origins from proj:transform equal the real origins table
# --------------------------------------------------------------------------------------------------


def test_tile_origins_from_proj_transform_match_the_real_origins_table() -> None:
    with (REAL / "s2-grid" / "real_tile_origins.csv").open() as fh:
        table = {r["tile"]: (int(r["epsg"]), float(r["ulx_real"]), float(r["uly_real"])) for r in csv.DictReader(fh)}
    items = [it for p in [*ITEMS.rglob("*.json"), *ITEMS.rglob("*.geojson"), RKH, NBJ] for it in _items(p)]
    checked = set()
    for it in items:
        if it.origin is None:
            continue
        assert it.tile in table, it.id
        epsg, ulx, uly = table[it.tile]
        assert (it.epsg, *it.origin) == (epsg, ulx, uly), it.id
        checked.add(it.tile)
    # every tile of a real item with a proj:transform is in the table
    assert checked >= {"06VVN", "28QCH", "29RKH", "31NBJ", "31TFL", "33SVB", "34SGA", "46RER", "52HGH", "05CNL",
                       "35LND", "35LNE", "35LNF", "35LNG", "35LNH", "35LNJ", "35LNK", "35LNL", "35MNM"}


def test_tileinfo_json_origin_matches_the_table() -> None:
    ti = parse_tileinfo(_load(REAL / "rio-tiler-pds" / "S2A_19UDP_20170729_L1C" / "tileInfo.json"))
    assert ti.tile == "19UDP" and ti.epsg == 32619
    assert ti.origin == (399960.0, 5400000.0)  # real_tile_origins.csv 19UDP
    assert ti.product_name == "S2A_MSIL1C_20170729T153601_N0205_R111_T19UDP_20170729T153557"
    assert ti.timestamp == _utc("2017-07-29T15:35:57.455")
    assert (ti.data_coverage, ti.cloudy_pixel_percentage) == (62.13, 24.48)


@pytest.mark.parametrize(("text", "tile"), [("5CNL", "05CNL"), ("05CNL", "05CNL"), ("T47PPR", "47PPR"),
                                            ("47ppr", "47PPR"), ("61AAA", None), ("47IPR", None), ("47PIR", None),
                                            ("47PPW", None), ("", None)])
def test_canonical_tile(text: str, tile: str | None) -> None:
    assert canonical_tile(text) == tile


# --------------------------------------------------------------------------------------------------
# items that cannot be understood
# --------------------------------------------------------------------------------------------------


def _rkh_without(*props: str) -> dict[str, Any]:
    obj = _load(RKH)
    for p in props:
        obj["properties"].pop(p, None)
    return obj


def test_no_datetime_is_refused_naming_the_item() -> None:
    obj = _load(RKH)
    obj["properties"]["datetime"] = None
    with pytest.raises(InvalidInputError, match=r"^item S2A_29RKH_20200219_0_L2A: datetime is missing$"):
        parse_item(obj, str(RKH))


def test_no_tile_anywhere_is_refused_naming_the_item() -> None:
    obj = _load(PC)
    obj["properties"].pop("s2:mgrs_tile")
    obj["properties"].pop("s2:product_uri")
    obj["properties"].pop("s2:granule_id")  # …_A012081_T06VVN_N02.12 names the tile too
    obj["id"] = "scene-without-tile"
    obj["properties"]["s2:product_type"] = "S2MSI2A"
    with pytest.raises(InvalidInputError, match=r"^item scene-without-tile: no tile anywhere"):
        parse_item(obj, "x.json")


def test_conflicting_tile_fields_are_refused_naming_both() -> None:
    obj = _load(RKH)
    obj["properties"]["grid:code"] = "MGRS-29RKJ"
    with pytest.raises(InvalidInputError, match=r"^item S2A_29RKH_20200219_0_L2A: conflicting tile fields "
                                                r"\(grid:code=29RKJ, mgrs:\*=29RKH"):
        parse_item(obj, str(RKH))


def test_v0_latitude_band_that_contradicts_the_id_is_refused() -> None:
    obj = _load(QCH)  # no sentinel:utm_zone: the tile comes from the ids; band/square must still agree
    obj["properties"]["sentinel:grid_square"] = "CJ"
    with pytest.raises(InvalidInputError, match=r"item S2A_28QCH_20200714_0_L2A: conflicting tile fields"):
        parse_item(obj, str(QCH))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda o: o["properties"].update(platform="sentinel-2b"), "conflicting platform fields"),
    (lambda o: o["properties"].update({"s2:processing_baseline": "04.00"}), "conflicting processing baseline"),
    (lambda o: o["assets"]["red"].update({"proj:epsg": 32630}), "conflicting EPSG fields"),
    (lambda o: o["properties"].update({"s2:product_type": "S2MSI1C"}), "conflicting processing level fields"),
    (lambda o: o["assets"]["red"].update({"proj:transform": [10, 0, 199990, 0, -10, 2800020]}),
     "assets disagree on the tile's upper-left corner"),
    (lambda o: o["assets"]["red"].update({"proj:transform": [10, 0, 199980, 0, -10]}),
     "asset 'red' proj:transform must be 6 or 9 numbers"),
    (lambda o: o["properties"].update({"earthsearch:boa_offset_applied": "false"}), "is not a boolean"),
    (lambda o: o["properties"].update({"s2:processing_baseline": "2.14b"}), "is not a baseline"),
    (lambda o: o["properties"].update({"platform": "landsat-8"}), "is not a Sentinel-2 unit"),
])
def test_contradicting_or_malformed_fields_are_refused(mutate: Any, message: str) -> None:
    obj = _load(RKH)
    mutate(obj)
    with pytest.raises(InvalidInputError, match=r"^item S2A_29RKH_20200219_0_L2A: ") as exc:
        parse_item(obj, str(RKH))
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


def test_epsg_of_another_zone_than_the_tile_is_refused() -> None:
    obj = _load(NBJ)
    for a in obj["assets"].values():
        a.pop("proj:epsg", None)
    obj["properties"]["proj:epsg"] = 32731  # south, but 31N is north
    with pytest.raises(InvalidInputError, match=r"EPSG:32731 is not the UTM CRS of tile 31NBJ \(EPSG:32631\)"):
        parse_item(obj, str(NBJ))


def test_not_sentinel2_at_all_is_refused() -> None:
    obj = {"type": "Feature", "id": "LC08_L2SP_001002", "properties": {"datetime": "2020-01-01T00:00:00Z"},
           "assets": {}, "links": []}
    with pytest.raises(InvalidInputError, match=r"^item LC08_L2SP_001002: no known Sentinel-2 STAC convention"):
        parse_item(obj, "x.json")


def test_an_unparseable_item_in_a_collection_names_its_id() -> None:
    obj = _load(SITE1)
    obj["features"][3]["properties"]["datetime"] = "yesterday"
    with pytest.raises(InvalidInputError, match=r"item S2B_MSIL2A_20200606T080609_R078_T35LNJ_20201027T072717: "
                                                r"datetime 'yesterday' is not RFC 3339"):
        parse_items(obj, str(SITE1))


def test_conventions_constant_lists_every_value_seen() -> None:
    files = [*ITEMS.rglob("*.json"), *ITEMS.rglob("*.geojson"), *HAND.glob("*.json"), RKH, NBJ]
    seen = {it.convention for p in files for it in _items(p)}
    assert seen == set(CONVENTIONS)


# --------------------------------------------------------------------------------------------------
# pairing and duplicates
# --------------------------------------------------------------------------------------------------


def test_pairing_across_conventions(caplog: pytest.LogCaptureFixture) -> None:
    (rkh,) = _items(RKH)
    (eopf,) = _items(EOPF)
    (nbj,) = _items(NBJ)
    cdse_l2a = parse_item(_load(CDSE_L2A), str(CDSE_L2A))
    es_l1c = parse_item(_load(ES_L1C), str(ES_L1C))
    cdse_l1c = parse_item(_load(CDSE_L1C), str(CDSE_L1C))
    pyl1c = _items(PYSTAC_L1C)[0]
    caplog.set_level(logging.INFO, logger="steps.sentinel2.items")
    pairs = pair_items([rkh, eopf, nbj, cdse_l2a], [pyl1c, cdse_l1c, es_l1c])
    assert [(a.id, c.id if c else None) for a, c in pairs] == [
        ("S2A_29RKH_20200219_0_L2A", "S2A_29RKH_20200219_0_L1C"),  # Earth Search v1: derived_from link
        ("S2A_MSIL2A_20250831T103701_N0511_R008_T31TFL_20250831T145420",  # EOPF L2A ↔ CDSE L1C: product id
         "S2A_MSIL1C_20250831T103701_N0511_R008_T31TFL_20250831T124510"),
        ("S2A_31NBJ_20190524_0_L2A", None),  # its derived_from names an L2A item, no L1C here
        ("S2B_MSIL2A_20240419T001429_N0510_R116_T56NNG_20240419T013152", None),
    ]
    assert match_l1c(rkh, [es_l1c])[1] == "derived_from"
    assert match_l1c(eopf, [cdse_l1c])[1] == "product id"
    assert "paired with L1C S2A_29RKH_20200219_0_L1C by derived_from" in caplog.text


def test_pairing_by_datatake_then_by_tile_second_platform() -> None:
    l2a = _load(RKH)
    l2a["links"] = [lk for lk in l2a["links"] if lk["rel"] != "derived_from"]
    l2a["properties"].pop("s2:product_uri")
    l1c = _load(ES_L1C)
    l1c["properties"].pop("s2:product_uri")
    a, c = parse_item(l2a, "a.json"), parse_item(l1c, "c.json")
    assert match_l1c(a, [c]) == (c, "datatake id")  # GS2A_20200219T112111_024344 (N02.14 vs N02.09)
    l2a["properties"].pop("s2:datatake_id")
    a = parse_item(l2a, "a.json")
    assert match_l1c(a, [c]) == (c, "tile+second+platform")  # 29RKH, 2020-02-19T11:34:25, sentinel-2a
    l1c["properties"]["datetime"] = "2020-02-19T11:34:26.405Z"  # one second later: another scene
    l1c["properties"].pop("s2:datatake_id")
    assert match_l1c(a, [parse_item(l1c, "c.json")]) == (None, "none")


def test_pairing_refuses_an_l1c_on_the_l2a_side() -> None:
    with pytest.raises(InvalidInputError, match=r"item S2A_29RKH_20200219_0_L1C: is L1C, expected L2A"):
        pair_items([parse_item(_load(ES_L1C), "c.json")], [])


def test_best_per_scene_collapses_the_real_duplicate_and_keeps_the_rest() -> None:
    items = _items(SITE1) + _items(SITE2)  # S2B 35MNM 2020-06-06 is in both files
    best = best_per_scene(items)
    assert len(items) == 22 and len(best) == 21
    assert [it.id for it in best].count("S2B_MSIL2A_20200606T080609_R078_T35MNM_20200826T094900") == 1


def test_best_per_scene_prefers_newer_baseline_then_sequence(caplog: pytest.LogCaptureFixture) -> None:
    base = _load(RKH)
    seq1 = copy.deepcopy(base)
    seq1["id"] = "S2A_29RKH_20200219_1_L2A"
    seq1["properties"]["s2:sequence"] = "1"
    newer = copy.deepcopy(base)
    newer["id"] = "S2A_29RKH_20200219_0_L2A"
    for k, v in {"s2:processing_baseline": "05.00", "s2:datatake_id": "GS2A_20200219T112111_024344_N05.00",
                 "s2:product_uri": "S2A_MSIL2A_20200219T112111_N0500_R037_T29RKH_20230401T000000.SAFE"}.items():
        newer["properties"][k] = v
    a, b, c = (parse_item(o, f"{i}.json") for i, o in enumerate((base, seq1, newer)))
    caplog.set_level(logging.INFO, logger="steps.sentinel2.items")
    assert best_per_scene([a, b]) == [b]
    assert ("item S2A_29RKH_20200219_1_L2A (baseline 02.14, sequence 1) supersedes S2A_29RKH_20200219_0_L2A"
            in caplog.text)
    (win,) = best_per_scene([b, c, a])
    assert win is c and win.processing_baseline == "05.00"


def test_processable_names_missing_bands() -> None:
    it = parse_item(_load(C1), str(C1))
    assert processable(it) is None
    assert processable(it, ("B04", "B08", "B11")) == "item S2B_T10TFR_20231223T190950_L2A: no asset for B11"
    obj = _load(C1)
    obj["assets"].pop("scl")
    assert processable(parse_item(obj, "c1.json")) == "item S2B_T10TFR_20231223T190950_L2A: no asset for SCL"


def test_item_baselines_are_read_as_the_metadata_reader_reads_them() -> None:
    """One baseline behaviour: an item's stated baseline is normalised through ``baseline_key``, and its product and
    datatake ids are read by ``baseline_from_product_id`` (placeholders N0000/N9999 state none)."""
    from steps.sentinel2 import items

    assert items._baseline("2.14") == "02.14" and items._baseline(" 05.10 ") == "05.10"
    for bad in ("5.1", "05", "x", "123.00", True, None, 5.1):
        assert items._baseline(bad) is None, bad
    pid = "S2B_MSIL2A_20230821T221941_N{}_R029_T01KAB_20230822T021825"
    datatake = "GS2B_20230821T221941_033553_N05.09"
    assert items._processing_baseline({}, "i", pid.format("0509"), datatake) == "05.09"
    for placeholder in ("0000", "9999"):
        assert items._processing_baseline({}, "i", pid.format(placeholder), None) is None
        assert items._processing_baseline({}, "i", pid.format(placeholder), datatake) == "05.09"
    with pytest.raises(InvalidInputError, match="conflicting processing baseline"):
        items._processing_baseline({"s2:processing_baseline": "05.10"}, "i", pid.format("0509"), None)
