"""Never lose data: fault injection — lost catalog, deleted/corrupted assets, a flaky S3, bad inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from r2r_faultproxy import FaultProxy

from r2r_helpers import SMALL, invoke_cli, make_bucket, run_cli, tree_bytes, upload_tree


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=shutil.copy2)
    return dst


def test_deleted_catalog_is_rebuilt_byte_identical(processed: Path, tmp_path: Path) -> None:
    out = _copy(processed, tmp_path / "out")
    removed = [p for p in out.rglob("*") if p.name in ("catalog.json", "collection.json", "index.json")]
    assert len(removed) >= 10
    for p in removed:
        p.unlink()
    res = invoke_cli("catalog", "rebuild", "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert tree_bytes(out) == tree_bytes(processed)


def test_audit_names_a_deleted_and_a_corrupted_asset_and_a_rerun_restores_them(
        processed: Path, demo_archive: Path, demo_range: tuple[list[str], str, str], tmp_path: Path) -> None:
    out = _copy(processed, tmp_path / "out")
    coll = out / "raw2ready-s2-vegetation"
    deleted = sorted(coll.rglob("ndvi.tif"))[0]
    corrupted = sorted(coll.rglob("lai.tif"))[-1]
    deleted.unlink()
    data = bytearray(corrupted.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupted.write_bytes(bytes(data))
    tiles, start, end = demo_range
    args = ["--source", str(demo_archive), "--out", str(out), "--tiles", ",".join(tiles),
            "--start", start, "--end", end]
    res = invoke_cli("audit", *args, "--json", str(tmp_path / "audit.json"))
    assert res.returncode == 4, res.stdout + res.stderr
    report = json.loads((tmp_path / "audit.json").read_text())
    bad = {s["scene_id"]: s for s in report["scenes"] if s["state"] != "ok" and s["state"] != "skipped"}
    assert set(bad) == {deleted.parent.name, corrupted.parent.name}
    assert any("ndvi missing" in p for p in bad[deleted.parent.name]["problems"])
    assert any("lai checksum mismatch" in p for p in bad[corrupted.parent.name]["problems"])
    assert report["counts"]["corrupt"] == 2 and not report["complete"]

    # re-drive without a broker: quarantine (nothing is deleted) and run the range again
    from steps.ops.audit import AuditReport, SceneAudit, requeue_plan
    from steps.storage import open_storage

    rep = AuditReport([SceneAudit(**s) for s in report["scenes"]], report["orphans"])
    orders = requeue_plan(open_storage(out), rep, str(demo_archive), str(out))
    assert sorted({o.tiles for o in orders}) == sorted({deleted.parent.name.split("_")[1],
                                                       corrupted.parent.name.split("_")[1]})
    assert (out / "quarantine" / corrupted.parent.name / "lai.tif").exists()
    for o in orders:
        r = invoke_cli("-q", "run", "--source", o.source, "--tiles", o.tiles, "--start", o.start.isoformat(),
                       "--end", o.end.isoformat(), "--out", o.out, "--workers", "1")
        assert r.returncode == 0, r.stderr
    res2 = invoke_cli("audit", *args)
    assert res2.returncode == 0, res2.stdout
    visible = {k: v for k, v in tree_bytes(out).items() if not k.startswith("quarantine/")}
    assert visible == tree_bytes(processed)


@pytest.mark.s3
def test_flaky_s3_with_503s_and_dropped_connections_loses_nothing(
        s3_env: dict[str, str], s3_server: str, demo_archive: Path, demo_range: tuple[list[str], str, str],
        processed: Path) -> None:
    make_bucket("flaky-src")
    make_bucket("flaky-out")
    upload_tree(demo_archive.parent, "flaky-src", "archive")
    tiles, start, end = demo_range
    with FaultProxy(s3_server, fault_requests=150, every_503=4, every_drop=9) as proxy:
        env = {**s3_env, "RAW2READY_S3_ENDPOINT_URL": proxy.url, "RAW2READY_RETRIES": "6"}
        res = run_cli("-q", "run", "--source", "s3://flaky-src/archive/catalog.json", "--tiles", ",".join(tiles),
                      "--start", start, "--end", end, "--out", "s3://flaky-out/p", "--workers", "2", env=env)
        assert proxy.injected_503 >= 20 and proxy.injected_drop >= 10, (proxy.injected_503, proxy.injected_drop)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    from steps.storage import open_storage

    st = open_storage("s3://flaky-out/p")
    got = {}
    for key in st.list("raw2ready-s2-vegetation"):
        if key.endswith(".json") and key.count("/") == 5 and not key.endswith("skipped.json"):
            item = json.loads(st.read_bytes(key))
            got[item["id"]] = {k: a["file:checksum"] for k, a in item["assets"].items()}
    want = {}
    for p in (processed / "raw2ready-s2-vegetation").rglob("S2*T*.json"):
        if not p.name.endswith("skipped.json"):
            item = json.loads(p.read_text())
            want[item["id"]] = {k: a["file:checksum"] for k, a in item["assets"].items()}
    assert got == want


def _edit_json(path: Path, fn) -> None:  # type: ignore[no-untyped-def]
    obj = json.loads(path.read_text())
    fn(obj)
    path.write_text(json.dumps(obj))


def _bad_inputs_archive(tmp_path: Path) -> Path:
    """Eight 47PPR scenes of 2024-02: four broken inputs, an all-no-data and a clouded scene, two healthy."""
    from synthesizer import SceneSpec, synthesize_archive

    def spec(day: int, **kw: object) -> SceneSpec:
        return SceneSpec(tile="47PPR", datetime=datetime(2024, 2, day, 3, 47, 20, tzinfo=UTC), **kw)  # type: ignore[arg-type]

    clear = {"cloud_cover": 0.03, "cirrus": 0.0}  # a 1.2 km scene: keep the healthy ones mostly clear
    specs = [spec(1, **clear), spec(2, **clear), spec(3, **clear), spec(4, **clear), spec(5, **clear),
             spec(6, cloud_cover=1.0), spec(7, **clear), spec(8, **clear)]
    root = synthesize_archive(tmp_path / "archive", specs, size=SMALL, seed=3)
    l2a = root.parent / "sentinel-2-c1-l2a"
    items = {d.name[: len("S2A_47PPR_20240201")]: d for d in sorted(l2a.iterdir()) if d.is_dir()}
    keys = sorted(items)
    # 1: a truncated COG band
    band = items[keys[0]] / "B04.tif"
    band.write_bytes(band.read_bytes()[: band.stat().st_size // 3])
    # 2: a missing asset (red: B04 has no substitute; a missing nir falls back to nir08 = B8A)
    _edit_json(items[keys[1]] / f"{items[keys[1]].name}.json", lambda o: o["assets"].pop("red"))
    # 3: an item whose CRS does not match its tile
    _edit_json(items[keys[2]] / f"{items[keys[2]].name}.json",
               lambda o: o["properties"].update({"proj:epsg": 32648}))
    # 4: malformed granule metadata
    (items[keys[3]] / "granule_metadata.xml").write_text("<Level-2A_Tile_ID><General_Info>")
    # 5: all no data (every band and SCL zero)
    import numpy as np
    import rasterio

    for tif in items[keys[4]].glob("*.tif"):
        with rasterio.open(tif) as src:
            profile = src.profile
        profile.update(driver="GTiff")
        with rasterio.open(tif, "w", **profile) as dst:
            dst.write(np.zeros((profile["height"], profile["width"]), dtype=profile["dtype"]), 1)
    # 6: fully clouded (cloud_cover=1.0); 7, 8: healthy
    return root


def test_bad_inputs_give_exit_3_or_skipped_and_the_rest_completes(tmp_path: Path) -> None:
    root = _bad_inputs_archive(tmp_path)
    out = tmp_path / "out"
    # in-process, one scene at a time: every scene's log lines reach the captured stderr
    res = invoke_cli("run", "--source", str(root), "--tiles", "47PPR", "--start", "2024-02-01", "--end", "2024-02-29",
                     "--out", str(out), "--workers", "1")
    assert res.returncode == 3, res.stdout + res.stderr[-2000:]
    assert "2 done, 2 skipped, 0 already complete, 4 failed" in res.stdout
    failed_lines = [ln for ln in res.stdout.splitlines() if "FAILED" in ln]
    assert len(failed_lines) == 4 and all("(exit 3)" in ln for ln in failed_lines)
    failed = {ln.split()[1]: ln.split("(exit 3): ", 1)[1] for ln in failed_lines}  # scene → its one reason
    assert sorted(failed) == [f"S2A_47PPR_2024020{d}T034720" for d in (1, 2, 3, 4)]
    assert failed["S2A_47PPR_20240201T034720"].startswith(
        "InvalidInputError: S2A_47PPR_20240201T034720 L2A B04: unreadable")  # the truncated COG
    assert failed["S2A_47PPR_20240202T034720"] == "InvalidInputError: S2A_47PPR_20240202_0_L2A: no file for B04"
    assert "EPSG:32648 is not the UTM CRS of tile 47PPR" in failed["S2A_47PPR_20240203T034720"]
    assert "granule_metadata.xml: not well-formed XML" in failed["S2A_47PPR_20240204T034720"]
    assert "retry" not in res.stderr.lower()  # invalid input is never retried
    reasons = sorted(json.loads(p.read_text())["reason"] for p in out.rglob("*.skipped.json"))
    assert reasons == ["fully clouded: no clear pixel", "no valid pixels (outside the swath)"]
    assert len(list((out / "failures").glob("*.json"))) == 4
    status = invoke_cli("status", "--out", str(out), "--json")
    assert json.loads(status.stdout)["total"] == {"done": 2, "skipped": 2, "failed": 4, "missing": 0}


@pytest.mark.broker
def test_a_worker_dead_letters_an_order_with_bad_inputs_once_and_publishes_the_rest(tmp_path: Path) -> None:
    """Bad inputs through the queue: exit 3 goes straight to the dead-letter queue (no retry loop)."""
    from datetime import date

    from steps.queue.orders import WorkOrder
    from steps.queue.transport import delete_topology, peek_dead, publish_orders, queue_depths
    from steps.queue.worker import Worker

    root = _bad_inputs_archive(tmp_path)
    out = tmp_path / "out"
    broker = "amqp://guest:guest@127.0.0.1:5672/%2F"
    queue = f"r2r-test-bad-{uuid.uuid4().hex[:8]}"
    order = WorkOrder(tiles="47PPR", start=date(2024, 2, 1), end=date(2024, 2, 29), source=str(root), out=str(out))
    try:
        publish_orders([order], url=broker, queue=queue)
        stats = Worker(url=broker, queue=queue, idle_exit=1.0, max_retries=3, retry_backoff_s=0.05).run(
            install_signals=False)
        assert (stats.done, stats.retried, stats.dead) == (0, 0, 1)
        [dead] = peek_dead(url=broker, queue=queue)
        assert dead.message_id == order.message_id and dead.exit_code == 3 and dead.retries == 0
        assert "4 of 8 scene(s) failed" in dead.reason
        assert queue_depths(url=broker, queue=queue) == {queue: 0, f"{queue}.retry": 0, f"{queue}.dead": 1}
    finally:
        delete_topology(broker, queue)
    assert len(list((out / "raw2ready-s2-vegetation").rglob("S2*_47PPR_*T??????.json"))) == 2  # healthy: published
    assert len(list(out.rglob("*.skipped.json"))) == 2


def test_audit_defaults_to_what_the_store_has_seen_and_groups_by_tile(
        processed: Path, demo_archive: Path, demo_range: tuple[list[str], str, str], tmp_path: Path) -> None:
    tiles, start, end = demo_range
    out = _copy(processed, tmp_path / "out")
    full = invoke_cli("audit", "--source", str(demo_archive), "--out", str(out), "--tiles", ",".join(tiles),
                   "--start", start, "--end", end, "--json", "-")
    inferred = invoke_cli("audit", "--source", str(demo_archive), "--out", str(out), "--json", "-")
    assert full.returncode == inferred.returncode == 0, inferred.stdout + inferred.stderr
    assert "defaults from the output store" in inferred.stderr

    def report(text: str) -> dict[str, object]:
        return json.loads(text[text.index("\n{") + 1: text.rindex("}") + 1])

    assert report(inferred.stdout)["scenes"] == report(full.stdout)["scenes"]
    # a whole scene lost: still found from the rest of the store; grouped per tile
    lost = sorted((out / "raw2ready-s2-vegetation").glob("*/Q*/*/S2*_47PQR_*"))[0]
    shutil.rmtree(lost)
    res = invoke_cli("audit", "--source", str(demo_archive), "--out", str(out), "--by", "tile")
    assert res.returncode == 4, res.stdout + res.stderr
    rows = {ln.split()[0]: ln.split()[1:] for ln in res.stdout.splitlines()[1:4]}
    assert set(rows) == {"47PPR", "47PQR", "total"}
    assert rows["47PQR"][2] == rows["total"][2] == "1"  # the "missing" column
    assert f"MISSING  {lost.name}" in res.stdout
    status = invoke_cli("status", "--out", str(out), "--source", str(demo_archive), "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["total"]["missing"] == 1
    empty = invoke_cli("audit", "--source", str(demo_archive), "--out", str(tmp_path / "nothing"))
    assert empty.returncode == 2 and "give --tiles" in empty.stderr


@pytest.mark.s3
def test_kill_9_while_an_asset_uploads_leaves_nothing_partial_and_the_next_run_completes(
        s3_env: dict[str, str], s3_server: str, demo_archive: Path, demo_range: tuple[list[str], str, str],
        processed: Path, tmp_path: Path) -> None:
    """The uploader dies with an asset PUT in flight (held by the proxy): no partial asset or item is visible."""
    from steps.storage import open_storage

    bucket = f"kill-{uuid.uuid4().hex[:8]}"
    make_bucket(bucket)
    tiles, start, end = demo_range
    exe = str(Path(sys.executable).parent / "raw2ready")
    argv = [exe, "-q", "run", "--source", str(demo_archive), "--tiles", ",".join(tiles), "--start", start,
            "--end", end, "--out", f"s3://{bucket}/p", "--workers", "1"]
    # freeze the first scene's lai upload: its ndvi is published by then, its item not yet
    hold = rf"^/{bucket}/p/raw2ready-s2-vegetation/.*/lai\.tif"
    with FaultProxy(s3_server, fault_requests=0, hold_put=hold) as proxy:
        env = {**os.environ, **s3_env, "RAW2READY_S3_ENDPOINT_URL": proxy.url}
        proc = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            assert proxy.held.wait(120), "no upload to the product tree reached the proxy"
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
            proxy.release()
        assert proxy.held_done.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert proxy.held_outcome.startswith("discarded"), proxy.held_outcome  # killed mid-upload
    held_key = proxy.held_path.split("?")[0].removeprefix(f"/{bucket}/p/")

    st = open_storage(f"s3://{bucket}/p")
    want = tree_bytes(processed)
    visible = {k: st.read_bytes(k) for k in st.list("") if not k.startswith(("work/", "cube/"))}
    assert held_key not in visible
    for key, data in visible.items():
        if key.count("/") == 5:  # scene files: item sidecars, assets, skip records
            assert data == want[key], f"{key} is visible but differs from the uninterrupted run"
    for key, data in visible.items():
        if key.count("/") == 5 and key.endswith(".json") and not key.endswith(".skipped.json"):
            folder = key.rsplit("/", 1)[0]
            for name, asset in json.loads(data)["assets"].items():
                assert f"{folder}/{asset['href'][2:]}" in visible, f"{key}: asset {name} missing"
    held_folder = held_key.rsplit("/", 1)[0]
    assert not any(k.startswith(held_folder + "/") and k.endswith(".json") for k in visible)  # no item yet
    assert f"{held_folder}/ndvi.tif" in visible  # publishing of that scene had begun

    res = run_cli("-q", "run", "--source", str(demo_archive), "--tiles", ",".join(tiles), "--start", start,
                  "--end", end, "--out", f"s3://{bucket}/p")
    assert res.returncode == 0, res.stderr[-2000:]
    copy = tmp_path / "after"  # downloaded, so that the store (written over S3) is compared by content too
    for k in st.list(""):
        if not k.startswith("work/"):
            (copy / k).parent.mkdir(parents=True, exist_ok=True)
            (copy / k).write_bytes(st.read_bytes(k))
    assert tree_bytes(copy) == want


@pytest.mark.broker
def test_audit_requeue_and_a_worker_restore_deleted_and_corrupted_assets(
        processed: Path, demo_archive: Path, demo_range: tuple[list[str], str, str], tmp_path: Path) -> None:
    """The issue's acceptance path end to end: audit names both → --requeue → worker → audit clean."""
    from steps.queue.transport import delete_topology

    out = _copy(processed, tmp_path / "out")
    coll = out / "raw2ready-s2-vegetation"
    deleted = sorted(coll.rglob("cloud_mask.tif"))[1]
    corrupted = sorted(coll.rglob("ndvi.tif"))[-2]
    deleted.unlink()
    corrupted.write_bytes(corrupted.read_bytes()[:-100])  # truncated
    tiles, start, end = demo_range
    args = ["--source", str(demo_archive), "--out", str(out), "--tiles", ",".join(tiles),
            "--start", start, "--end", end]
    queue = f"r2r-test-requeue-{uuid.uuid4().hex[:8]}"
    env = {"RAW2READY_QUEUE_NAME": queue, "RAW2READY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672/%2F"}
    try:
        res = invoke_cli("audit", *args, "--requeue", env=env)
        assert res.returncode == 4, res.stdout + res.stderr
        assert f"CORRUPT  {deleted.parent.name}" in res.stdout and "cloud_mask missing" in res.stdout
        assert f"CORRUPT  {corrupted.parent.name}" in res.stdout and "ndvi has" in res.stdout
        assert "requeued" in res.stdout
        work = run_cli("-q", "worker", "--idle-exit", "3", env=env)
        assert work.returncode == 0, work.stderr[-2000:]
        clean = invoke_cli("audit", *args, env=env)
        assert clean.returncode == 0, clean.stdout
    finally:
        delete_topology(env["RAW2READY_BROKER_URL"], queue)
    visible = {k: v for k, v in tree_bytes(out).items()
               if not k.startswith(("quarantine/", "orders/"))}
    assert visible == tree_bytes(processed)
