"""Storage and the whole pipeline against a real S3 API server (moto server mode) over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from botocore.exceptions import ClientError, EndpointConnectionError

from steps.errors import InvalidInputError, TransientError
from steps.storage import S3Storage, classify_s3_error, gdal_env, open_storage, read_uri

from r2r_helpers import invoke_cli, make_bucket, run_cli, upload_tree

pytestmark = pytest.mark.s3


def test_s3_storage_roundtrip_list_and_delete(s3_env: dict[str, str]) -> None:
    make_bucket("store")
    st = open_storage("s3://store/some/prefix")
    assert isinstance(st, S3Storage)
    st.write_bytes("a/b.json", b'{"x": 1}')
    st.write_bytes("a/c.bin", b"\x00" * 10)
    assert st.read_bytes("a/b.json") == b'{"x": 1}'
    assert st.exists("a/c.bin") and not st.exists("a/missing")
    assert st.size("a/c.bin") == 10
    assert list(st.list("a")) == ["a/b.json", "a/c.bin"]
    with pytest.raises(FileNotFoundError):
        st.read_bytes("nope")
    st.delete_prefix("a")
    assert list(st.list("a")) == []


def test_gdal_reads_s3_through_the_same_settings(s3_env: dict[str, str], tmp_path: Path) -> None:
    """Only ``RAW2READY_S3_*`` set: the source side is the same server, GDAL reads both sides from it."""
    make_bucket("rasters")
    data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    p = tmp_path / "x.tif"
    with rasterio.open(p, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint16",
                       crs="EPSG:32647", transform=rasterio.Affine(10, 0, 600000, 0, -10, 1600020)) as ds:
        ds.write(data, 1)
    st = open_storage("s3://rasters/p")
    st.put_file(p, "x.tif")
    with gdal_env(side="output"), rasterio.open("s3://rasters/p/x.tif") as ds:
        assert np.array_equal(ds.read(1), data)
    with gdal_env(side="source"), rasterio.open("s3://rasters/p/x.tif") as ds:
        assert np.array_equal(ds.read(1), data)
    assert read_uri("s3://rasters/p/x.tif", side="source") == p.read_bytes()


def test_s3_errors_are_classified() -> None:
    def client_error(code: str, status: int) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                           "GetObject")

    assert isinstance(classify_s3_error(client_error("SlowDown", 503), "x"), TransientError)
    assert isinstance(classify_s3_error(client_error("InternalError", 500), "x"), TransientError)
    assert isinstance(classify_s3_error(client_error("NoSuchKey", 404), "x"), FileNotFoundError)
    assert isinstance(classify_s3_error(client_error("AccessDenied", 403), "x"), InvalidInputError)
    assert isinstance(classify_s3_error(EndpointConnectionError(endpoint_url="http://x"), "x"), TransientError)


def test_pipeline_reads_and_writes_s3_over_http(s3_env: dict[str, str], demo_archive: Path,
                                                 demo_range: tuple[list[str], str, str], processed: Path) -> None:
    make_bucket("source")
    make_bucket("products")
    upload_tree(demo_archive.parent, "source", "archive")
    tiles, start, end = demo_range
    res = run_cli("-q", "run", "--source", "s3://source/archive/catalog.json", "--tiles", ",".join(tiles),
                  "--start", start, "--end", end, "--out", "s3://products/run1", "--workers", "2", env=s3_env)
    assert res.returncode == 0, res.stdout + res.stderr
    n_skipped = len(list(processed.rglob("*.skipped.json")))
    assert f"{12 - n_skipped} done, {n_skipped} skipped" in res.stdout
    st = open_storage("s3://products/run1")
    keys = set(st.list())
    assert "catalog.json" in keys and not any(k.startswith("work/") for k in keys)
    local_dir = processed / "raw2ready-s2-vegetation"
    local_items = {p.name: json.loads(p.read_text()) for p in local_dir.rglob("S2*T*.json")
                   if not p.name.endswith("skipped.json")}
    s3_items = {k.rsplit("/", 1)[1]: json.loads(st.read_bytes(k)) for k in keys
                if k.endswith(".json") and "/S2" in k and not k.endswith("skipped.json") and k.count("/") == 5}
    assert set(s3_items) == set(local_items)
    for name, item in s3_items.items():
        # same products, bit for bit, whatever the storage
        got = {k: a["file:checksum"] for k, a in item["assets"].items()}
        want = {k: a["file:checksum"] for k, a in local_items[name]["assets"].items()}
        assert got == want
        assert all(lk["href"].startswith("s3://source/archive/") for lk in item["links"] if lk["rel"] == "derived_from")
    # GDAL reads the published COG straight from S3
    some = sorted(k for k in keys if k.endswith("/ndvi.tif"))[0]
    with gdal_env(side="output"), rasterio.open(f"s3://products/run1/{some}") as ds:
        arr = ds.read(1)
    local = next((processed / "raw2ready-s2-vegetation").rglob(some.split("/", 1)[1]))
    with rasterio.open(local) as ds:
        assert np.array_equal(arr, ds.read(1))
    # rerun against S3: nothing to do
    # rerun against S3 (in-process: the settings are in the environment): nothing to do, nothing written
    before = {k: st.read_bytes(k) for k in keys if not k.startswith("cube/")}
    res2 = invoke_cli("-q", "run", "--source", "s3://source/archive/catalog.json", "--tiles", ",".join(tiles),
                      "--start", start, "--end", end, "--out", "s3://products/run1", env=s3_env)
    assert res2.returncode == 0, res2.stdout + res2.stderr
    assert "0 done, 0 skipped, 12 already complete, 0 failed" in res2.stdout
    assert {k: st.read_bytes(k) for k in st.list() if not k.startswith("cube/")} == before
