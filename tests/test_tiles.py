"""The Thailand tiling grid and bbox tile selection: known tiles in/out, footprints against the rule."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from steps.grid import TILE_SIZE_M, parse_tile
from steps.tiles import (
    Boundary,
    box_intersects_polygon,
    candidate_tiles,
    thailand_boundary,
    thailand_tiles,
    tiles_for_bbox,
    tiles_for_geometry,
)

from r2r_helpers import run_cli


def test_thailand_tile_list_has_the_expected_size_and_zones() -> None:
    tiles = thailand_tiles()
    assert 100 <= len(tiles) <= 150
    assert list(tiles) == sorted(set(tiles))
    assert {t[:2] for t in tiles} == {"47", "48"}
    assert all(parse_tile(t).id == t for t in tiles)


@pytest.mark.parametrize("tile", ["47PPR", "47PPS", "47QNA", "47NPG", "48PUB", "47PLS"])
def test_tiles_over_thai_land_are_in(tile: str) -> None:
    # Bangkok, Ayutthaya, Chiang Mai, Hat Yai area, Ubon Ratchathani, Kanchanaburi
    assert tile in thailand_tiles()


@pytest.mark.parametrize(("tile", "where"), [
    ("48QWE", "central Laos (Khammouane)"),
    ("48QVG", "Laos (Xieng Khouang)"),
    ("47PQM", "open sea in the middle of the Gulf of Thailand"),
    ("47PPM", "Gulf of Thailand between Ko Tao and the Cambodian coast"),
    ("48PVV", "Cambodia (Tonle Sap)"),
])
def test_tiles_off_thai_land_are_out(tile: str, where: str) -> None:
    assert tile not in thailand_tiles(), where


def test_border_tiles_reaching_across_the_mekong_are_in() -> None:
    # 48QTE/48QUE are mostly Laos (Vientiane, Paksan) but their footprints reach Nong Khai / Bueng Kan.
    b = thailand_boundary()
    for tid in ("48QTE", "48QUE"):
        t = parse_tile(tid)
        assert tid in thailand_tiles()
        assert any(box_intersects_polygon(t.bounds, rings) for rings in b.projected(t.epsg))


def test_footprints_follow_the_grid_rule() -> None:
    for tid in thailand_tiles():
        t = parse_tile(tid)
        xmin, ymin, xmax, ymax = t.bounds
        assert xmax - xmin == TILE_SIZE_M and ymax - ymin == TILE_SIZE_M
        assert xmin % 60 == 0 and ymax % 60 == 0
        assert t.epsg == 32600 + int(tid[:2])
    assert parse_tile("47PPR").bounds == (600000.0, 1600020.0 - TILE_SIZE_M, 709800.0, 1600020.0)


def test_tile_list_matches_the_rule_checked_with_shapely() -> None:
    """Every candidate near Thailand is in the list iff its footprint intersects the boundary (shapely)."""
    import shapely  # an independent geometry engine (installed with the serve extra): a must, not a skip
    from pyproj import Transformer
    from shapely.geometry import MultiPolygon, Polygon, box

    b = thailand_boundary()
    listed = set(thailand_tiles())
    projected: dict[int, object] = {}
    cands = candidate_tiles(b.bbox)
    assert len(cands) > 3 * len(listed)
    for tid in cands:
        t = parse_tile(tid)
        if t.epsg not in projected:
            tr = Transformer.from_crs("EPSG:4326", t.crs, always_xy=True)
            polys = []
            for poly in b.polygons:
                rings = [np.column_stack(tr.transform(r[:, 0], r[:, 1])) for r in poly]
                polys.append(Polygon(rings[0], rings[1:]))
            projected[t.epsg] = MultiPolygon(polys)
        hit = shapely.intersects(projected[t.epsg], box(*t.bounds))
        assert bool(hit) == (tid in listed), tid


def test_committed_list_is_what_the_rule_computes() -> None:
    assert tuple(tiles_for_geometry(thailand_boundary())) == thailand_tiles()
    doc = json.loads(resources.files("steps").joinpath("data/thailand/tiles.json").read_text())
    assert doc["count"] == len(doc["tiles"]) == len(thailand_tiles())


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


def test_cli_tiles_aoi_thailand_lists_the_committed_tiles() -> None:
    res = run_cli("tiles", "--aoi", "thailand")
    assert res.returncode == 0, res.stderr
    assert tuple(res.stdout.split()) == thailand_tiles()
    res = run_cli("tiles", "--bbox", "100.3,13.5,100.9,14.0", "--format", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == ["47PPQ", "47PPR", "47PQQ", "47PQR"]


@pytest.mark.parametrize("args", [["--aoi", "atlantis"], ["--bbox", "1,2,3"], ["--bbox", "10,5,9,6"], []])
def test_cli_tiles_bad_arguments_exit_2(args: list[str]) -> None:
    from click.testing import CliRunner

    from steps.cli import main

    res = CliRunner().invoke(main, ["tiles", *args])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith("raw2ready: usage error:")
