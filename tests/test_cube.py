"""The time-series store (``cube/<tile>``): values, appends, rebuilds, a killed writer, the lock, S3.

Expected values are read with rasterio from the product COGs and the store is read with zarr directly
(:func:`_zarr_dates`), not through :class:`steps.products.cube.CubeReader`, except where the reader is under test.
Tests that change a catalog work on a copy of the session's processed demo tree.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from edr_helpers import INDEX, get, index_items, physical, query_url, read_pixel, serving

from r2r_helpers import make_bucket, run_cli, upload_tree

KEYS = ("ndvi", "lai", "lai_flags", "cloud_mask")


def _copy(processed: Path, tmp_path: Path, *, with_cube: bool = True) -> Path:
    out = tmp_path / "products"
    shutil.copytree(processed, out, ignore=None if with_cube else shutil.ignore_patterns("cube"))
    return out


def _manifest(root: Path, tile: str) -> dict[str, Any]:
    return dict(json.loads((root / "cube" / tile / "manifest.json").read_text()))


def _zarr_dates(root: Path, tile: str, key: str) -> dict[str, np.ndarray]:
    """Item id → the whole (rows, cols) plane of ``key`` as the store holds it, read with zarr itself."""
    import zarr
    import zarr.storage

    man = _manifest(root, tile)
    out = {}
    for seg in man["segments"]:
        store = zarr.storage.LocalStore(root / "cube" / tile / "segments" / seg["name"], read_only=True)
        arr = zarr.open_array(store, path=key, mode="r")
        assert arr.shape[0] == len(seg["entries"])
        data = np.asarray(arr[:])
        for t, e in enumerate(seg["entries"]):
            out[e["item"]] = data[t]
    return out


def _cog(root: Path, row: dict[str, Any], key: str) -> np.ndarray:
    with rasterio.open(root / row["assets"][key]) as ds:
        return np.asarray(ds.read(1))


def _by_tile(root: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in index_items(root):
        out.setdefault(r["tile"], []).append(r)
    return out


def _assert_store_equals_cogs(root: Path) -> int:
    """Every date, every pixel, every product of every tile; returns the number of dates compared."""
    n = 0
    for tile, rows in _by_tile(root).items():
        for key in KEYS:
            held = _zarr_dates(root, tile, key)
            assert sorted(held) == sorted(r["id"] for r in rows), (tile, key)
            for r in rows:
                np.testing.assert_array_equal(held[r["id"]], _cog(root, r, key), err_msg=f"{r['id']} {key}")
                n += 1
    return n


def _write_index_rows(root: Path, rows: list[dict[str, Any]]) -> None:
    doc = json.loads((root / INDEX).read_text())
    doc["items"] = rows
    (root / INDEX).write_text(json.dumps(doc))


# ------------------------------------------------------------------------------------------------ values
def test_the_pipeline_keeps_a_store_whose_values_equal_the_cogs_on_every_date(processed: Path) -> None:
    """The catalog step of `raw2ready run` wrote the store; every stored integer equals the COG's, including
    no-data (cloud-masked NDVI/LAI) and every mask class."""
    assert _assert_store_equals_cogs(processed) >= 4 * 8
    tiles = _by_tile(processed)
    nd = np.stack([_cog(processed, r, "ndvi") for rows in tiles.values() for r in rows])
    classes = np.unique(np.stack([_cog(processed, r, "cloud_mask") for rows in tiles.values() for r in rows]))
    assert (nd == -32768).any() and (nd != -32768).any(), "the comparison must include no-data and data"
    assert len(classes) >= 3, f"the demo must exercise several mask classes, got {classes}"
    coll = json.loads((processed / "raw2ready-s2-vegetation" / "collection.json").read_text())
    asset = coll["assets"]["timeseries"]
    assert asset["type"] == "application/vnd+zarr" and asset["raw2ready:tiles"] == sorted(tiles)
    assert (processed / "raw2ready-s2-vegetation" / asset["href"]).resolve() == (processed / "cube").resolve()


def test_reader_windows_equal_cog_windows_and_follow_checksums(processed: Path) -> None:
    from steps.products.cube import CubeReader
    from steps.storage import open_storage

    reader = CubeReader(open_storage(str(processed)))
    for tile, rows in _by_tile(processed).items():
        items = {r["id"]: r["checksums"] for r in rows}
        for key in KEYS:
            where = reader.held(tile, items, key)
            assert set(where) == set(items)
            got = reader.read(tile, key, where, 37, 45, 9, 20)
            for r in rows:
                np.testing.assert_array_equal(got[r["id"]], _cog(processed, r, key)[37:46, 45:65])
        # another checksum than the store copied from: not held (the caller reads the COG)
        first = rows[0]["id"]
        other = {**items, first: {**items[first], "ndvi": "1220" + "0" * 64}}
        assert first not in reader.held(tile, other, "ndvi") and len(reader.held(tile, other, "ndvi")) == len(rows) - 1


def test_direct_chunk_reads_equal_zarr_across_chunk_and_shard_edges(processed: Path) -> None:
    """The server's reader (shard index + one range read per chunk, crc32c checked) against zarr itself."""
    from steps.products.cube import DirectArray, _Bytes, open_segment_array, segment_prefix
    from steps.storage import open_storage

    storage = open_storage(str(processed))
    rng = np.random.default_rng(7)
    for tile in _by_tile(processed):
        for seg in _manifest(processed, tile)["segments"]:
            for key in KEYS:
                direct = DirectArray.open(_Bytes(storage, segment_prefix(tile, seg["name"])), key)
                assert direct is not None, f"{key}: the layout we write must be read directly"
                ref = open_segment_array(storage, tile, seg["name"], key)
                rows, cols = ref.shape[1:]
                windows = [(0, 0, rows, cols), (31, 31, 2, 2), (rows - 1, cols - 1, 1, 1)]
                windows += [(int(r), int(c), int(rng.integers(1, min(70, rows - r) + 1)),
                             int(rng.integers(1, min(70, cols - c) + 1)))
                            for r, c in zip(rng.integers(0, rows, 6), rng.integers(0, cols, 6), strict=True)]
                for r0, c0, h, w in windows:
                    np.testing.assert_array_equal(direct.read(r0, c0, h, w), ref[:, r0:r0 + h, c0:c0 + w])


def test_a_new_pixel_is_one_range_request_per_array_once_the_shard_indexes_are_loaded(
        processed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``shard_indexes`` holds every shard's own index; with it a pixel never read before costs one range
    read (no shard-index read); without it (an older store) the shard indexes are read and values agree."""
    from steps.products import cube
    from steps.storage import open_storage

    calls: list[tuple[str, str]] = []
    for name in ("whole", "tail", "range"):
        orig = getattr(cube._Bytes, name)

        def counted(self: Any, path: str, *a: Any, _orig: Any = orig, _name: str = name) -> Any:
            calls.append((_name, path))
            return _orig(self, path, *a)

        monkeypatch.setattr(cube._Bytes, name, counted)
    root = _copy(processed, tmp_path)
    storage = open_storage(str(root))
    rows = _by_tile(root)["47PPR"]
    ndvi = {r["id"]: _cog(root, r, "ndvi") for r in rows}
    seg = _manifest(root, "47PPR")["segments"][0]["name"]
    for key in KEYS:
        assert (root / "cube" / "47PPR" / "segments" / seg / key / cube.SHARD_INDEXES).is_file(), key
        cube.check_shard_indexes(storage, "47PPR", seg, key)  # equal to the shards' own indexes

    reader = cube.CubeReader(storage)
    where = reader.held("47PPR", {r["id"]: r["checksums"] for r in rows}, "ndvi")
    reader.read("47PPR", "ndvi", where, 3, 3, 1, 1)  # opens the array, loads its shard_indexes
    assert ("whole", f"ndvi/{cube.SHARD_INDEXES}") in calls
    for r0, c0 in ((40, 70), (100, 9), (70, 110)):  # chunks not read before
        calls.clear()
        got = reader.read("47PPR", "ndvi", where, r0, c0, 1, 1)
        assert calls == [("range", f"ndvi/c/0/{r0 // cube.SHARD_PX}/{c0 // cube.SHARD_PX}")], (calls, where)
        for r in rows:
            assert got[r["id"]][0, 0] == ndvi[r["id"]][r0, c0]

    for key in KEYS:  # a store without the file: per-shard indexes, same values
        (root / "cube" / "47PPR" / "segments" / seg / key / cube.SHARD_INDEXES).unlink()
    reader = cube.CubeReader(storage)
    calls.clear()
    got = reader.read("47PPR", "ndvi", where, 70, 110, 1, 1)
    assert [c[0] for c in calls if c[0] != "whole"] == ["tail", "range"], calls
    for r in rows:
        assert got[r["id"]][0, 0] == ndvi[r["id"]][70, 110]
    assert run_cli("cube", "audit", "--out", str(root), "--deep").returncode == 0


def test_a_window_over_several_chunks_of_a_remote_store_reads_them_in_parallel(processed: Path) -> None:
    """On object storage each chunk is a round trip: an area over 2 × 2 chunks issues its four range
    requests at once (a local store reads them in turn), and the values are the same."""
    import threading

    from steps.products import cube
    from steps.storage import open_storage

    storage = open_storage(str(processed))
    seg = _manifest(processed, "47PPR")["segments"][0]["name"]
    local = cube.DirectArray.open(cube._Bytes(storage, cube.segment_prefix("47PPR", seg)), "ndvi")
    assert local is not None

    class SlowRemote:
        """The local bytes, answered like a remote store: a range request waits (up to 5 s) until
        ``expect`` requests are in flight, so requests issued one after another see only themselves."""

        remote = True

        def __init__(self, inner: Any) -> None:
            self.inner, self.active, self.most, self.expect = inner, 0, 0, 4
            self.cond = threading.Condition()

        def whole(self, path: str) -> bytes:
            return bytes(self.inner.whole(path))

        def range(self, path: str, start: int, length: int) -> bytes:
            with self.cond:
                self.active += 1
                self.most = max(self.most, self.active)
                self.cond.notify_all()
                self.cond.wait_for(lambda: self.active >= self.expect, timeout=5)
            data = bytes(self.inner.range(path, start, length))
            with self.cond:
                self.active -= 1
            return data

    slow = SlowRemote(local.src)
    remote = cube.DirectArray.open(slow, "ndvi")  # type: ignore[arg-type]
    assert remote is not None
    got = remote.read(30, 62, 5, 5)  # chunks (0, 1), (0, 2), (1, 1), (1, 2)
    np.testing.assert_array_equal(got, local.read(30, 62, 5, 5))
    assert slow.most == 4, slow.most
    slow.most, slow.expect = 0, 1
    remote.read(40, 40, 3, 3)  # one chunk: one request
    assert slow.most == 1


def test_a_damaged_or_wrong_shard_indexes_file_is_refused_and_found_by_the_deep_audit(
        processed: Path, tmp_path: Path) -> None:
    from numcodecs import Zstd

    from steps.products import cube
    from steps.storage import open_storage

    root = _copy(processed, tmp_path)
    storage = open_storage(str(root))
    rows = _by_tile(root)["47PPR"]
    seg = _manifest(root, "47PPR")["segments"][0]["name"]
    path = root / "cube" / "47PPR" / "segments" / seg / "ndvi" / cube.SHARD_INDEXES
    good = path.read_bytes()
    damaged = bytearray(good)
    damaged[5] ^= 0x10
    path.write_bytes(bytes(damaged))
    reader = cube.CubeReader(storage)
    where = reader.held("47PPR", {r["id"]: r["checksums"] for r in rows}, "ndvi")
    with pytest.raises(cube.CubeError, match="crc32c"):
        reader.read("47PPR", "ndvi", where, 5, 5, 1, 1)
    deep = run_cli("cube", "audit", "--out", str(root), "--deep")
    assert deep.returncode == 4 and f"broken: {seg}/ndvi" in deep.stdout, deep.stdout

    # well-formed (crc right) but not the shards' indexes: two chunks' entries swapped
    entries = np.frombuffer(Zstd().decode(good[:-4]), dtype=[("offset", "<u8"), ("nbytes", "<u8")]).copy()
    entries[[0, 1]] = entries[[1, 0]]
    path.write_bytes(cube.encode_shard_indexes([entries.tobytes()]))
    with pytest.raises(cube.CubeError, match="differs"):
        cube.check_shard_indexes(storage, "47PPR", seg, "ndvi")
    deep = run_cli("cube", "audit", "--out", str(root), "--deep")
    assert deep.returncode == 4 and "differs from the shard's own index" in deep.stdout, deep.stdout
    assert run_cli("cube", "rebuild", "--out", str(root), "--tile", "47PPR").returncode == 0
    assert run_cli("cube", "audit", "--out", str(root), "--deep").returncode == 0


def test_a_damaged_chunk_is_refused_by_the_reader_and_the_server_answers_from_the_cogs(
        processed: Path, tmp_path: Path) -> None:
    from steps.products.cube import CubeError, CubeReader
    from steps.storage import open_storage

    root = _copy(processed, tmp_path)
    rows = _by_tile(root)["47PPR"]
    seg = _manifest(root, "47PPR")["segments"][0]["name"]
    shard = root / "cube" / "47PPR" / "segments" / seg / "ndvi" / "c" / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    raw[100] ^= 0x55  # inside the first chunk (pixels 0-31 × 0-31)
    shard.write_bytes(bytes(raw))
    reader = CubeReader(open_storage(str(root)))
    where = reader.held("47PPR", {r["id"]: r["checksums"] for r in rows}, "ndvi")
    with pytest.raises(CubeError, match="crc32c"):
        reader.read("47PPR", "ndvi", where, 5, 5, 1, 1)

    expected = [physical(*read_pixel(root / r["assets"]["ndvi"], 5, 5)) for r in rows]
    with rasterio.open(root / rows[0]["assets"]["ndvi"]) as ds:
        from pyproj import Transformer

        lon, lat = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True).transform(*ds.xy(5, 5))
    (tmp_path / "cfg").mkdir()
    with serving(root, tmp_path / "cfg") as srv:
        status, _h, body = get(query_url(srv.base, "/collections/ndvi/position", coords=f"POINT({lon} {lat})",
                                         datetime="../..", f="json", **{"parameter-name": "ndvi"}))
        assert status == 200, body[:300]
        doc = json.loads(body)
    got = dict(zip(doc["raw2ready:items"], doc["ranges"]["ndvi"]["values"], strict=True))
    for r, e in zip(rows, expected, strict=True):
        assert (got[r["id"]] is None) if e is None else got[r["id"]] == pytest.approx(e), r["id"]


# ----------------------------------------------------------------------------------------------- appends
def test_appending_dates_writes_new_segments_and_never_rewrites_old_ones(processed: Path, tmp_path: Path) -> None:
    root = _copy(processed, tmp_path, with_cube=False)
    all_rows = index_items(root)
    tile = "47PPR"
    mine = [r for r in all_rows if r["tile"] == tile]
    others = [r for r in all_rows if r["tile"] != tile]
    assert len(mine) >= 4
    _write_index_rows(root, others + mine[:2])
    res = run_cli("cube", "sync", "--out", str(root), "--tile", tile)
    assert res.returncode == 0, res.stderr
    first = _manifest(root, tile)
    assert [s["dates"] for s in first["segments"]] == [2]
    seg0 = root / "cube" / tile / "segments" / first["segments"][0]["name"]
    before = {p: p.read_bytes() for p in seg0.rglob("*") if p.is_file()}

    _write_index_rows(root, others + mine[:3])  # one more date: a new segment, the old one untouched
    assert run_cli("cube", "sync", "--out", str(root), "--tile", tile).returncode == 0
    m = _manifest(root, tile)
    assert [s["dates"] for s in m["segments"]] == [2, 1] and m["generation"] == first["generation"] + 1
    assert {p: p.read_bytes() for p in seg0.rglob("*") if p.is_file()} == before

    _write_index_rows(root, others + mine[:4])  # [2, 1, 1] → [2, 2] → [4]: the binary-counter merge
    assert run_cli("cube", "sync", "--out", str(root), "--tile", tile).returncode == 0
    m = _manifest(root, tile)
    assert [s["dates"] for s in m["segments"]] == [4]
    assert [e["item"] for e in m["segments"][0]["entries"]] == [r["id"] for r in mine[:4]]
    assert seg0.exists(), "a replaced segment stays one generation for readers that still hold it"
    assert m["retired"] and first["segments"][0]["name"] in m["retired"]

    _write_index_rows(root, all_rows)
    assert run_cli("cube", "sync", "--out", str(root)).returncode == 0
    assert not seg0.exists(), "retired segments are deleted by the next commit"
    _assert_store_equals_cogs(root)
    audit = run_cli("cube", "audit", "--out", str(root), "--deep")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_a_long_history_is_copied_in_batches_that_the_binary_counter_merges(
        processed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import steps.products.cube as cube
    from steps.storage import open_storage

    root = _copy(processed, tmp_path, with_cube=False)
    monkeypatch.setattr(cube, "SYNC_BATCH", 2)  # ≤ 2 COGs open per product while copying
    opened: list[int] = []
    real_source = cube._cog_source

    def counting(storage: Any, rows: Any) -> Any:
        opened.append(len(rows))
        return real_source(storage, rows)

    monkeypatch.setattr(cube, "_cog_source", counting)
    results = cube.sync(open_storage(str(root)))
    n = {t: len(rows) for t, rows in _by_tile(root).items()}
    assert max(opened) == 2 and sum(opened) == sum(n.values())
    for r in results:  # 5 dates: [2] + [2] → [4], + [1] → [4, 1]
        sizes = [s["dates"] for s in _manifest(root, r.tile)["segments"]]
        assert sum(sizes) == n[r.tile] and sizes == sorted(sizes, reverse=True), sizes
        assert all(a > b for a, b in itertools.pairwise(sizes)), sizes
    _assert_store_equals_cogs(root)


def test_a_republished_scene_is_stale_until_synced_and_a_removed_one_is_dropped(processed: Path,
                                                                                tmp_path: Path) -> None:
    root = _copy(processed, tmp_path)
    rows = index_items(root)
    victim, gone = rows[0], rows[-1]
    # republish victim's NDVI with other values (and so another checksum), drop `gone` from the catalog
    path = root / victim["assets"]["ndvi"]
    with rasterio.open(path) as ds:
        profile, data = ds.profile, ds.read(1)
    new = np.where(data == -32768, data, np.clip(data.astype(np.int32) + 7, -10000, 10000)).astype(np.int16)
    path.unlink()
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(new, 1)
    victim["checksums"]["ndvi"] = "1220" + "ab" * 32
    _write_index_rows(root, [r for r in rows if r["id"] != gone["id"]])

    audit = run_cli("cube", "audit", "--out", str(root))
    assert audit.returncode == 4
    assert f"stale: {victim['id']}" in audit.stdout and f"extra: {gone['id']}" in audit.stdout

    from steps.products.cube import CubeReader
    from steps.storage import open_storage

    reader = CubeReader(open_storage(str(root)))
    assert victim["id"] not in reader.held(victim["tile"], {victim["id"]: victim["checksums"]}, "ndvi")

    assert run_cli("cube", "sync", "--out", str(root)).returncode == 0
    assert run_cli("cube", "audit", "--out", str(root)).returncode == 0
    held = _zarr_dates(root, victim["tile"], "ndvi")
    np.testing.assert_array_equal(held[victim["id"]], new)
    assert gone["id"] not in _zarr_dates(root, gone["tile"], "ndvi")


def test_rebuild_from_cogs_and_catalog_alone(processed: Path, tmp_path: Path) -> None:
    root = _copy(processed, tmp_path)
    shutil.rmtree(root / "cube")
    assert run_cli("cube", "audit", "--out", str(root)).returncode == 4
    res = run_cli("cube", "rebuild", "--out", str(root))
    assert res.returncode == 0, res.stderr
    for tile in _by_tile(root):
        assert len(_manifest(root, tile)["segments"]) == 1
    _assert_store_equals_cogs(root)
    status = run_cli("cube", "status", "--out", str(root))
    assert "47PPR:" in status.stdout and "1 segment(s)" in status.stdout
    assert run_cli("cube", "audit", "--out", str(root), "--deep").returncode == 0


def test_a_damaged_shard_is_found_by_the_deep_audit(processed: Path, tmp_path: Path) -> None:
    root = _copy(processed, tmp_path)
    seg = _manifest(root, "47PQR")["segments"][0]["name"]
    shard = next((root / "cube" / "47PQR" / "segments" / seg / "lai").rglob("c/*/*/*"))
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside a chunk: its crc32c no longer matches
    shard.write_bytes(bytes(raw))
    assert run_cli("cube", "audit", "--out", str(root)).returncode == 0  # the shallow audit reads no chunk
    deep = run_cli("cube", "audit", "--out", str(root), "--deep")
    assert deep.returncode == 4 and f"broken: {seg}/lai" in deep.stdout, deep.stdout
    assert run_cli("cube", "rebuild", "--out", str(root), "--tile", "47PQR").returncode == 0
    assert run_cli("cube", "audit", "--out", str(root), "--deep").returncode == 0


# ------------------------------------------------------------------------------------- writers and locks
_KILL_BEFORE_COMMIT = """
import os, signal, sys
import steps.products.cube as cube
def die(*a, **k):
    print("segment written, dying before the commit", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
cube._commit = die
from steps.storage import open_storage
cube.sync(open_storage(sys.argv[1]))
"""


def test_a_writer_killed_before_its_commit_leaves_the_store_readable_and_the_next_sync_cleans_up(
        processed: Path, tmp_path: Path) -> None:
    root = _copy(processed, tmp_path)
    tile = "47PPR"
    rows = index_items(root)
    mine = [r for r in rows if r["tile"] == tile]
    _write_index_rows(root, [r for r in rows if r["id"] != mine[-1]["id"]])
    assert run_cli("cube", "rebuild", "--out", str(root), "--tile", tile).returncode == 0
    before = _manifest(root, tile)
    _write_index_rows(root, rows)

    proc = subprocess.run([sys.executable, "-c", _KILL_BEFORE_COMMIT, str(root)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert _manifest(root, tile) == before, "the manifest (the commit point) is untouched"
    segs = sorted(p.name for p in (root / "cube" / tile / "segments").iterdir())
    assert len(segs) == len(before["segments"]) + 1, "the unfinished segment is there, unreferenced"
    held = _zarr_dates(root, tile, "ndvi")  # readers follow the manifest: the old dates, intact
    assert sorted(held) == sorted(r["id"] for r in mine[:-1])

    res = run_cli("cube", "sync", "--out", str(root))  # the kernel released the dead writer's lock
    assert res.returncode == 0, res.stderr
    assert "1 unreferenced removed" in res.stdout, res.stdout
    assert run_cli("cube", "audit", "--out", str(root), "--deep").returncode == 0
    _assert_store_equals_cogs(root)


_HOLD_LOCK = """
import sys, time
from steps.products.cube import tile_lock
from steps.storage import open_storage
with tile_lock(open_storage(sys.argv[1]), sys.argv[2]):
    print("locked", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def test_one_writer_per_tile_and_concurrent_syncs_converge(processed: Path, tmp_path: Path) -> None:
    from steps.errors import TransientError
    from steps.products.cube import tile_lock
    from steps.storage import open_storage

    root = _copy(processed, tmp_path, with_cube=False)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(root), "47PPR", "30"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        with pytest.raises(TransientError, match="lock held"), tile_lock(open_storage(str(root)), "47PPR", wait_s=0.5):
            pass
        assert time.monotonic() - t0 < 5
        with tile_lock(open_storage(str(root)), "47PQR", wait_s=0.5):  # other tiles are free
            pass
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    with tile_lock(open_storage(str(root)), "47PPR", wait_s=2):  # a killed holder's lock is released
        pass

    env = {"RAW2READY_LOG_LEVEL": "INFO"}
    procs = [subprocess.Popen([shutil.which("raw2ready", path=str(Path(sys.executable).parent)) or "raw2ready",
                               "cube", "sync", "--out", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, **env}) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    added = sorted(int(line.split("+", 1)[1].split()[0]) for o, _e in outs for line in o.splitlines()
                   if line.startswith("47PPR:"))
    n = len(_by_tile(root)["47PPR"])
    assert added == [0, 0, n], f"exactly one writer copied the dates: {added}"
    _assert_store_equals_cogs(root)


# ---------------------------------------------------------------------------------------------- serving
def test_edr_series_come_from_the_store_and_equal_the_cogs(processed: Path, tmp_path: Path) -> None:
    """With the tile's NDVI COGs moved away, a position series still answers (from the store) with the COG
    values; a single-date area query (read from the COGs) then fails over to 503, never a wrong value."""
    root = _copy(processed, tmp_path)
    rows = [r for r in index_items(root) if r["tile"] == "47PPR"]
    h, w = rows[0]["grids"]["ndvi"]["shape"]
    row, col = h // 3 + 1, (3 * w) // 4 + 1
    expected = [physical(*read_pixel(root / r["assets"]["ndvi"], row, col)) for r in rows]
    mh = rows[0]["grids"]["cloud_mask"]["shape"][0]
    mask = [physical(*read_pixel(root / r["assets"]["cloud_mask"], row * mh // h, col * mh // h)) for r in rows]
    with rasterio.open(root / rows[0]["assets"]["ndvi"]) as ds:
        x, y = ds.xy(row, col)
        from pyproj import Transformer

        lon, lat = Transformer.from_crs(ds.crs, "EPSG:4326", always_xy=True).transform(x, y)
    moved = tmp_path / "moved"
    moved.mkdir()
    for i, r in enumerate(rows):
        shutil.move(root / r["assets"]["ndvi"], moved / f"{i}.tif")
    (tmp_path / "cfg").mkdir()
    with serving(root, tmp_path / "cfg") as srv:
        status, _h, body = get(query_url(srv.base, "/collections/ndvi/position", coords=f"POINT({lon} {lat})",
                                         datetime="../..", f="json"))
        assert status == 200, body[:400]
        doc = json.loads(body)
        ids = doc["raw2ready:items"]
        got = dict(zip(ids, doc["ranges"]["ndvi"]["values"], strict=True))
        got_mask = dict(zip(ids, doc["ranges"]["cloud_mask"]["values"], strict=True))
        for r, e, m in zip(rows, expected, mask, strict=True):
            assert got[r["id"]] == pytest.approx(e) if e is not None else got[r["id"]] is None, r["id"]
            assert got_mask[r["id"]] == m
        assert any(v is not None for v in expected), "pick a pixel with data on some date"
        d = 0.0002
        ring = [(lon - d, lat - d), (lon + d, lat - d), (lon + d, lat + d), (lon - d, lat + d), (lon - d, lat - d)]
        poly = "POLYGON((" + ",".join(f"{a} {b}" for a, b in ring) + "))"
        status, _h, body = get(query_url(srv.base, "/collections/ndvi/area", coords=poly, datetime="../..",
                                         f="json"))
        assert status == 200, body[:400]
        single = rows[0]["datetime"]
        status, _h, body = get(query_url(srv.base, "/collections/ndvi/area", coords=poly, datetime=single,
                                         f="json"))
        assert status == 503, (status, body[:300])


def test_edr_answers_from_the_store_on_s3(processed: Path, s3_env: dict[str, str], tmp_path: Path) -> None:
    """The store written to S3 by `raw2ready cube rebuild` (obstore, range requests) is read by the
    server and equals the COGs; the S3 writer lock is a lease object taken with If-None-Match."""
    from steps.errors import TransientError
    from steps.products.cube import LOCK_TTL_S, CubeReader, tile_lock
    from steps.storage import open_storage

    make_bucket("cube-s3")
    upload_tree(_copy(processed, tmp_path, with_cube=False), "cube-s3", "products")
    uri = "s3://cube-s3/products"
    res = run_cli("cube", "rebuild", "--out", uri, env=s3_env)
    assert res.returncode == 0, res.stderr
    assert run_cli("cube", "audit", "--out", uri, "--deep", env=s3_env).returncode == 0
    storage = open_storage(uri)
    reader = CubeReader(storage)
    for tile, rows in _by_tile(processed).items():
        where = reader.held(tile, {r["id"]: r["checksums"] for r in rows}, "lai")
        got = reader.read(tile, "lai", where, 100, 100, 3, 4)
        for r in rows:
            np.testing.assert_array_equal(got[r["id"]], _cog(processed, r, "lai")[100:103, 100:104])

    with tile_lock(storage, "47PPR"), pytest.raises(TransientError, match="lock held"), \
            tile_lock(storage, "47PPR", wait_s=0.5):
        pass
    # a lease whose writer died (expired) is taken over
    storage.write_bytes("cube/47PPR/.lock", json.dumps({"owner": "dead", "expires": time.time() - 1}).encode())
    t0 = time.monotonic()
    with tile_lock(storage, "47PPR", wait_s=LOCK_TTL_S):
        assert json.loads(storage.read_bytes("cube/47PPR/.lock"))["owner"] != "dead"
    assert time.monotonic() - t0 < 10 and not storage.exists("cube/47PPR/.lock")
