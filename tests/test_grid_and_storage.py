"""MGRS tile geometry and the local storage backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.errors import InvalidInputError
from steps.grid import TILE_SIZE_M, normalize_tiles, parse_tile
from steps.storage import LocalStorage, open_storage


@pytest.mark.parametrize(("tile", "epsg", "ulx", "uly"), [
    ("47PPR", 32647, 600000.0, 1600020.0),  # DESIGN.md: Bangkok
    ("T47PPR", 32647, 600000.0, 1600020.0),
    ("32TMT", 32632, 399960.0, 5300040.0),  # x snapped −40 m, y +40 m
    ("48PUC", 32648, 300000.0, 1800000.0),
])
def test_tile_upper_left_corner_follows_the_60m_snapping_rule(tile: str, epsg: int, ulx: float, uly: float) -> None:
    t = parse_tile(tile)
    assert (t.epsg, t.ulx, t.uly) == (epsg, ulx, uly)
    xmin, ymin, xmax, ymax = t.bounds
    assert xmax - xmin == ymax - ymin == TILE_SIZE_M
    assert t.ulx % 60 == 0 and t.uly % 60 == 0


def test_tile_contains_its_own_mgrs_square_centre() -> None:
    from pyproj import Transformer

    t = parse_tile("47PPR")
    lon, lat = Transformer.from_crs(t.crs, "EPSG:4326", always_xy=True).transform(t.ulx + 50000, t.uly - 50000)
    assert 100.0 < lon < 101.5 and 13.0 < lat < 14.5  # Bangkok area


@pytest.mark.parametrize("bad", ["47PPA", "47PIR", "61PPR", "47P", "", "ABCDE", "47PAR"])
def test_unknown_tiles_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_tile(bad)


def test_normalize_tiles_dedupes_and_sorts() -> None:
    assert normalize_tiles("47pqr, 47PPR 47PPR") == ["47PPR", "47PQR"]


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
