"""Sentinel-2 tile geometry (ESA's grid, the tile-origin rule, 39 real origins) and the local storage backend."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from steps.errors import InvalidInputError
from steps.sentinel2.grid import (
    FALSE_NORTHING_SOUTH_M,
    TILE_SIZE_M,
    all_tiles,
    grid_table,
    mgrs_square_corner,
    normalize_tiles,
    parse_tile,
    tile_origin,
)
from steps.storage import LocalStorage, open_storage

REAL_ORIGINS = Path(__file__).parent / "data" / "real" / "s2-grid" / "real_tile_origins.csv"


def _real_origins() -> list[dict[str, str]]:
    with REAL_ORIGINS.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize(("tile", "epsg", "ulx", "uly"), [
    ("47PPR", 32647, 600000.0, 1600020.0),  # DESIGN.md: Bangkok
    ("T47PPR", 32647, 600000.0, 1600020.0),
    ("32TMT", 32632, 399960.0, 5300040.0),  # x snapped −40 m, y +40 m
    ("48PUC", 32648, 300000.0, 1800000.0),
    ("35LNE", 32735, 499980.0, 8500000.0),  # south: −1 500 000 m is on the 60 m grid, so no shift
    ("35LNF", 32735, 499980.0, 8600020.0),  # south: −1 400 000 → +20 m
    ("01CCV", 32701, 300000.0, 2000020.0),  # band C, zone 1 (antimeridian)
    ("33XWJ", 32633, 499980.0, 8900040.0),  # band X (Svalbard)
])
def test_tile_upper_left_corner_follows_the_60m_snapping_rule(tile: str, epsg: int, ulx: float, uly: float) -> None:
    t = parse_tile(tile)
    assert (t.epsg, t.ulx, t.uly) == (epsg, ulx, uly)
    xmin, ymin, xmax, ymax = t.bounds
    assert xmax - xmin == ymax - ymin == TILE_SIZE_M
    assert t.ulx % 60 == 0
    fn = FALSE_NORTHING_SOUTH_M if t.south else 0
    assert (t.uly - fn) % 60 == 0  # the 60 m grid of y is counted from the equator


@pytest.mark.parametrize("row", _real_origins(), ids=lambda r: r["tile"])
def test_tile_origin_equals_the_real_origin(row: dict[str, str]) -> None:
    """39 origins read from real metadata (MTD_TL Geoposition, tileInfo.json, STAC proj:transform)."""
    t = parse_tile(row["tile"])
    assert (t.epsg, t.ulx, t.uly) == (int(row["epsg"]), float(row["ulx_real"]), float(row["uly_real"]))


def test_real_origins_span_both_hemispheres_all_zones_and_all_snapping_phases() -> None:
    rows = _real_origins()
    assert len(rows) == 39
    assert {r["epsg"][:3] for r in rows} == {"326", "327"}
    zones = {int(r["tile"][:2]) for r in rows}
    assert min(zones) == 1 and max(zones) == 60
    assert {int(r["ulx_real"]) % 100_000 for r in rows} == {0, 99_960, 99_980}
    fn = {r["tile"]: FALSE_NORTHING_SOUTH_M if r["epsg"].startswith("327") else 0 for r in rows}
    assert {(int(r["uly_real"]) - fn[r["tile"]]) % 100_000 for r in rows} == {0, 20, 40}


def test_the_world_table_follows_the_origin_rule_for_every_tile() -> None:
    """Every one of the 56,686 rows: CRS from zone and hemisphere, corner = rule(letters) on the 60 m grid."""
    table = grid_table()
    assert len(table) == 56_686
    assert {t[2] for t in table} == set("CDEFGHJKLMNPQRSTUVWX")
    for tid, e in table.items():
        zone, band = int(tid[:2]), tid[2]
        south = band < "N"
        assert e.epsg == (32700 if south else 32600) + zone, tid
        west, north = mgrs_square_corner(zone, south, tid[3], tid[4], e.uly)
        assert tile_origin(south, west, north) == (e.ulx, e.uly), tid
    assert sum(e.land for e in table.values()) == 20_430
    assert all_tiles()[:2] == ["01CCV", "01CDH"]


def test_tile_contains_its_own_mgrs_square_centre() -> None:
    from pyproj import Transformer

    t = parse_tile("47PPR")
    lon, lat = Transformer.from_crs(t.crs, "EPSG:4326", always_xy=True).transform(t.ulx + 50000, t.uly - 50000)
    assert 100.0 < lon < 101.5 and 13.0 < lat < 14.5  # Bangkok area


@pytest.mark.parametrize("tile", ["05CNL", "35LNE", "01KAB", "01CCV", "33XWJ", "60CWS", "22MHD", "47NMH", "01WCS"])
def test_footprint_centre_lies_in_its_latitude_band_and_zone(tile: str) -> None:
    """Band C–X and both hemispheres: the centre is within its 8° band (±1°: tiles overhang band edges, and
    bands C/X also reach 80°S/84°N) and within its 6° zone (± overhang, more near the poles), on the
    right side of the equator. 01KAB/60CWS straddle the antimeridian."""
    from pyproj import Transformer

    bands = "CDEFGHJKLMNPQRSTUVWX"
    t = parse_tile(tile)
    lon, lat = Transformer.from_crs(t.crs, "EPSG:4326", always_xy=True).transform(
        t.ulx + TILE_SIZE_M / 2, t.uly - TILE_SIZE_M / 2)
    south = -80.0 + 8.0 * bands.index(t.band)
    north = 84.0 if t.band == "X" else south + 8.0
    assert south - 1.0 < lat < north + 1.0
    assert (lat < 0) == t.south == (t.epsg // 100 == 327)
    central = -183.0 + 6.0 * t.zone
    d_lon = (lon - central + 180.0) % 360.0 - 180.0
    assert abs(d_lon) < 3.0 + (1.0 if abs(lat) < 60 else 6.0)


def test_zone_is_zero_padded() -> None:
    assert parse_tile("5CNL").id == "05CNL"
    assert parse_tile("T5CNL") == parse_tile("05CNL")
    assert parse_tile("  47ppr ").id == "47PPR"


@pytest.mark.parametrize("bad", ["47PPA", "47PIR", "61PPR", "47P", "", "ABCDE", "47PAR", "0PPR"])
def test_unknown_tiles_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_tile(bad)


@pytest.mark.parametrize("ghost", ["47PMJ", "47QMT", "48QSC", "47QPT", "32XNG"])
def test_well_formed_mgrs_squares_outside_esas_grid_are_refused(ghost: str) -> None:
    # 47QPT: ESA lists that square as 47PPT; 32XNG: the grid has no zone-32 tiles in band X (Svalbard zones)
    with pytest.raises(InvalidInputError, match="is not a Sentinel-2 tile \\(not in ESA's tiling grid\\)"):
        parse_tile(ghost)


def test_normalize_tiles_dedupes_and_sorts() -> None:
    assert normalize_tiles("47pqr, 47PPR 47PPR 5cnl") == ["05CNL", "47PPR", "47PQR"]


def test_local_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    st = open_storage(tmp_path)
    assert isinstance(st, LocalStorage)
    st.write_bytes("a/b.txt", b"first")

    def boom(self: Path, target: Path) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(Path, "replace", boom)
    with pytest.raises(OSError):
        st.write_bytes("a/b.txt", b"second, never visible")
    monkeypatch.undo()
    assert st.read_bytes("a/b.txt") == b"first"
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.txt"]
    assert list(st.list()) == ["a/b.txt"]


def test_open_storage_refuses_http_outputs() -> None:
    with pytest.raises(InvalidInputError):
        open_storage("https://example.org/out")
