"""Source and output storage are separate: settings, fallbacks, and two real S3 servers over HTTP.

The two-server tests run two moto server *processes* (``tests/s3_helpers.py``) with IAM authentication:
the source server knows only the source keys, the output server only the output keys, so a request
made with the wrong side's configuration fails instead of silently succeeding. Each server's request log
shows which requests reached it and with which headers (credential scope, ``x-amz-request-payer``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from s3_helpers import (  # noqa: F401  (the *_fixture names register the two_servers / two_sides fixtures)
    LOCKED_BUCKET,
    OUTPUT_BUCKET,
    SOURCE_BUCKET,
    MotoProcess,
    TwoSides,
    start_moto,
    two_servers_fixture,
    two_sides_fixture,
)

import steps
from steps.errors import InvalidInputError
from steps.products.raster import BandRead, raster_info, read_band, read_bands
from steps.settings import Settings, get_settings
from steps.storage import S3Storage, classify_s3_error, gdal_env, gdal_env_options, open_storage, read_uri, s3_client

from r2r_helpers import _free_port, invoke_cli, run_cli

OUT = "RAW2READY_S3_"
SRC = "RAW2READY_SOURCE_S3_"


# ------------------------------------------------------------------------------------------ settings
def test_source_side_inherits_the_output_server_when_its_endpoint_is_unset() -> None:
    s = Settings(s3_endpoint_url="http://minio:9000", s3_region="eu-west-1", s3_addressing_style="path",
                 s3_access_key_id="out-key", s3_secret_access_key="out-secret", s3_requester_pays=True,
                 s3_unsigned=False)
    src = s.s3_side("source")
    assert (src.endpoint_url, src.region, src.addressing_style) == ("http://minio:9000", "eu-west-1", "path")
    assert (src.access_key_id, src.secret_access_key) == ("out-key", "out-secret")
    assert src.requester_pays is False  # access modes are never inherited
    # each inherited value can be overridden on its own
    s2 = Settings(s3_endpoint_url="http://minio:9000", s3_access_key_id="out-key", s3_secret_access_key="out-secret",
                  source_s3_region="eu-central-1", source_s3_access_key_id="src-key",
                  source_s3_secret_access_key="src-secret", source_s3_requester_pays=True)
    src2 = s2.s3_side("source")
    assert (src2.endpoint_url, src2.region) == ("http://minio:9000", "eu-central-1")
    assert (src2.access_key_id, src2.secret_access_key, src2.requester_pays) == ("src-key", "src-secret", True)
    out = s2.s3_side("output")
    assert (out.access_key_id, out.region, out.requester_pays) == ("out-key", "us-east-1", False)


def test_source_side_on_another_server_inherits_nothing() -> None:
    base = {"s3_endpoint_url": "http://minio:9000", "s3_region": "eu-west-1", "s3_access_key_id": "out-key",
            "s3_secret_access_key": "out-secret"}
    aws = Settings(**base, source_s3_endpoint_url="AWS").s3_side("source")
    assert aws.endpoint_url is None and aws.addressing_style == "virtual" and aws.region == "us-east-1"
    assert aws.access_key_id is None and aws.secret_access_key is None  # default chain, not the MinIO keys
    other = Settings(**base, source_s3_endpoint_url="https://s3.example.org",
                     source_s3_region="eu-central-1").s3_side("source")
    assert (other.endpoint_url, other.addressing_style, other.region) == ("https://s3.example.org", "path",
                                                                          "eu-central-1")
    assert other.access_key_id is None
    # an unsigned source on the same server does not take the output keys either
    anon = Settings(**base, source_s3_unsigned=True).s3_side("source")
    assert anon.unsigned and anon.access_key_id is None and anon.endpoint_url == "http://minio:9000"


@pytest.mark.parametrize(("kwargs", "names"), [
    ({"source_s3_unsigned": True, "source_s3_access_key_id": "k", "source_s3_secret_access_key": "s"},
     [f"{SRC}UNSIGNED", f"{SRC}ACCESS_KEY_ID"]),
    ({"s3_unsigned": True, "s3_access_key_id": "k", "s3_secret_access_key": "s"},
     [f"{OUT}UNSIGNED", f"{OUT}ACCESS_KEY_ID"]),
    ({"source_s3_unsigned": True, "source_s3_requester_pays": True}, [f"{SRC}UNSIGNED", f"{SRC}REQUESTER_PAYS"]),
    ({"source_s3_access_key_id": "k"}, [f"{SRC}ACCESS_KEY_ID", f"{SRC}SECRET_ACCESS_KEY"]),
    ({"s3_secret_access_key": "s"}, [f"{OUT}SECRET_ACCESS_KEY", f"{OUT}ACCESS_KEY_ID"]),
    ({"source_s3_endpoint_url": "minio:9000"}, [f"{SRC}ENDPOINT_URL", "'aws'"]),
])
def test_contradictory_storage_settings_are_refused_naming_the_variables(kwargs: dict[str, object],
                                                                        names: list[str]) -> None:
    with pytest.raises(InvalidInputError) as err:
        Settings(**kwargs)  # type: ignore[arg-type]
    for name in names:
        assert name in str(err.value)


def test_settings_from_the_environment_are_checked_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{SRC}ADDRESSING_STYLE", "sideways")
    with pytest.raises(InvalidInputError, match=f"{SRC}ADDRESSING_STYLE"):
        get_settings()
    monkeypatch.setenv(f"{SRC}ADDRESSING_STYLE", "virtual")
    monkeypatch.setenv(f"{SRC}UNSIGNED", "true")
    monkeypatch.setenv(f"{SRC}ACCESS_KEY_ID", "k")
    monkeypatch.setenv(f"{SRC}SECRET_ACCESS_KEY", "s")
    get_settings.cache_clear()
    with pytest.raises(InvalidInputError, match="contradicts"):
        get_settings()
    # empty variables (ConfigMap placeholders) are unset ones
    monkeypatch.setenv(f"{SRC}UNSIGNED", "false")
    monkeypatch.setenv(f"{SRC}ACCESS_KEY_ID", "")
    monkeypatch.setenv(f"{SRC}SECRET_ACCESS_KEY", "")
    monkeypatch.setenv(f"{SRC}ENDPOINT_URL", "")
    monkeypatch.setenv(f"{OUT}ENDPOINT_URL", "http://minio:9000")
    get_settings.cache_clear()
    assert get_settings().s3_side("source").endpoint_url == "http://minio:9000"


def test_the_cli_refuses_contradictory_settings_with_exit_3() -> None:
    res = run_cli("tiles", "--help", env={f"{SRC}UNSIGNED": "true", f"{SRC}REQUESTER_PAYS": "true"})
    assert res.returncode == 3, res.stdout + res.stderr
    assert f"{SRC}UNSIGNED" in res.stderr and f"{SRC}REQUESTER_PAYS" in res.stderr


def test_gdal_options_per_side_set_every_side_dependent_option() -> None:
    s = Settings(s3_endpoint_url="http://minio:9000", s3_access_key_id="k", s3_secret_access_key="s",
                 source_s3_endpoint_url="aws", source_s3_region="eu-central-1", source_s3_requester_pays=True)
    src = gdal_env_options(s, side="source")
    out = gdal_env_options(s, side="output")
    assert src["AWS_S3_ENDPOINT"] == "s3.amazonaws.com" and src["AWS_HTTPS"] == "YES"
    assert src["AWS_VIRTUAL_HOSTING"] == "TRUE" and src["AWS_REGION"] == "eu-central-1"
    assert src["AWS_REQUEST_PAYER"] == "requester" and src["AWS_NO_SIGN_REQUEST"] == "NO"
    assert out["AWS_S3_ENDPOINT"] == "minio:9000" and out["AWS_HTTPS"] == "NO"
    assert out["AWS_VIRTUAL_HOSTING"] == "FALSE" and out["AWS_REQUEST_PAYER"] == ""
    anon = Settings(source_s3_endpoint_url="aws", source_s3_unsigned=True, source_s3_region="us-west-2")
    assert gdal_env_options(anon, side="source")["AWS_NO_SIGN_REQUEST"] == "YES"
    # a source environment entered inside an output one does not keep the output side's values
    from rasterio.env import get_gdal_config

    with gdal_env(s, side="output"), gdal_env(s, side="source"):
        assert get_gdal_config("AWS_S3_ENDPOINT") == "s3.amazonaws.com"
        assert get_gdal_config("AWS_REQUEST_PAYER") == "requester"
    with gdal_env(s, side="source"), gdal_env(s, side="output"):
        assert get_gdal_config("AWS_S3_ENDPOINT") == "minio:9000"
        assert not get_gdal_config("AWS_REQUEST_PAYER")


def test_one_boto3_client_per_side_and_configuration() -> None:
    s = Settings(s3_endpoint_url="http://127.0.0.1:9", s3_access_key_id="k", s3_secret_access_key="s",
                 source_s3_endpoint_url="http://127.0.0.1:10", source_s3_access_key_id="k2",
                 source_s3_secret_access_key="s2")
    out, src = s3_client(s, "output"), s3_client(s, "source")
    assert out is s3_client(s, "output") and src is s3_client(s, side="source") and out is not src
    assert out.meta.endpoint_url == "http://127.0.0.1:9" and src.meta.endpoint_url == "http://127.0.0.1:10"
    # equal settings read again (e.g. another Settings object) share the client
    assert s3_client(Settings(**s.model_dump()), "source") is src
    assert s3_client(Settings(**{**s.model_dump(), "source_s3_region": "eu-central-1"}), "source") is not src
    # storages use the client of their side
    assert open_storage("s3://b/p", s).client is out
    assert S3Storage("b", "p", s, side="source").client is src


def test_a_wrong_region_names_the_region_setting() -> None:
    from botocore.exceptions import ClientError

    err = ClientError({"Error": {"Code": "PermanentRedirect", "Message": "m"},
                       "ResponseMetadata": {"HTTPStatusCode": 301,
                                            "HTTPHeaders": {"x-amz-bucket-region": "eu-central-1"}}}, "GetObject")
    cfg = Settings(source_s3_endpoint_url="aws").s3_side("source")
    mapped = classify_s3_error(err, "s3://sentinel-s2-l2a/tiles/x", cfg)
    assert isinstance(mapped, InvalidInputError)
    assert "eu-central-1" in str(mapped) and f"{SRC}REGION" in str(mapped)


# --------------------------------------------------------------------------------- two real servers
def _geotiff(path: Path, data: np.ndarray) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=str(data.dtype), crs="EPSG:32647",
                       transform=rasterio.Affine(10, 0, 600000, 0, -10, 1600020), tiled=True,
                       blockxsize=16, blockysize=16) as ds:
        ds.write(data, 1)
    return path


def _hosts(server: MotoProcess) -> set[str]:
    return {r["url"].split("/")[2] for r in server.requests()}


def _key_ids(server: MotoProcess) -> set[str]:
    """Access key ids in the credential scopes of the requests the server received."""
    out = set()
    for r in server.requests():
        auth = r["headers"].get("authorization", "")
        if "Credential=" in auth:
            out.add(auth.split("Credential=")[1].split("/")[0])
    return out


@pytest.mark.s3
def test_source_read_from_one_server_outputs_written_to_another(two_sides: TwoSides, tmp_path: Path) -> None:
    src_admin, out_admin = two_sides.source.client(), two_sides.output.client()
    item = {"type": "Feature", "id": "S2B_47PPR_20240105_0_L2A", "assets": {"red": {"href": "s3://archive/b04.tif"}}}
    src_admin.put_object(Bucket=SOURCE_BUCKET, Key="items/one.json", Body=json.dumps(item).encode())
    band = (np.arange(48 * 48, dtype=np.uint16) * 7).reshape(48, 48)
    src_admin.upload_file(str(_geotiff(tmp_path / "b04.tif", band)), SOURCE_BUCKET, "b04.tif")
    two_sides.source.start_recording()  # from here on: only the code under test

    # source side: a STAC item through boto3, a band through GDAL /vsis3/
    got = json.loads(read_uri("s3://archive/items/one.json", side="source"))
    assert got == item
    data, grid = read_band(got["assets"]["red"]["href"])  # band reads default to the source side
    assert np.array_equal(data, band) and grid.shape == (48, 48)
    assert raster_info("s3://archive/b04.tif")["shape"] == (48, 48)

    # output side: a JSON object and a COG, then the COG read back by GDAL from the output server
    store = open_storage("s3://products/run1")
    store.write_bytes("items/one.json", json.dumps({"derived_from": "s3://archive/items/one.json"}).encode())
    work = _geotiff(tmp_path / "ndvi.tif", (band // 2).astype(np.int16))
    store.put_file(work, "ndvi.tif")
    back, _ = read_band("s3://products/run1/ndvi.tif", side="output")
    assert np.array_equal(back, band // 2)
    assert read_uri("s3://products/run1/items/one.json", side="output").startswith(b'{"derived_from"')
    src_reqs, out_reqs = two_sides.source.requests(), two_sides.output.requests()
    src_keys, out_keys = _key_ids(two_sides.source), _key_ids(two_sides.output)

    # each object is on one server only
    assert {b["Name"] for b in src_admin.list_buckets()["Buckets"]} == {SOURCE_BUCKET, LOCKED_BUCKET}
    assert {b["Name"] for b in out_admin.list_buckets()["Buckets"]} == {OUTPUT_BUCKET}
    assert sorted(o["Key"] for o in out_admin.list_objects_v2(Bucket=OUTPUT_BUCKET, Prefix="run1/")["Contents"]) \
        == ["run1/items/one.json", "run1/ndvi.tif"]
    # and each server saw only its own side's requests, signed with its own side's key
    assert src_reqs and all("/archive/" in r["url"] for r in src_reqs)
    assert out_reqs and all("/products/" in r["url"] for r in out_reqs)
    assert any(r["method"] == "GET" and r["headers"].get("range") for r in src_reqs)  # GDAL's ranged reads
    assert src_keys == {two_sides.source_keys[0]} and out_keys == {two_sides.output_keys[0]}
    assert {r["method"] for r in out_reqs} >= {"PUT", "GET"}
    assert not any(r["method"] == "PUT" for r in src_reqs)


@pytest.mark.s3
def test_the_wrong_side_fails_instead_of_reaching_the_other_server(two_sides: TwoSides) -> None:
    two_sides.source.client().put_object(Bucket=SOURCE_BUCKET, Key="only-here.json", Body=b"{}")
    # the archive bucket does not exist on the output server
    with pytest.raises(InvalidInputError, match=re.escape(
            f"bucket does not exist on {two_sides.output.endpoint} (the output side: check {OUT}ENDPOINT_URL)")):
        read_uri("s3://archive/only-here.json", side="output")
    # the output keys are unknown to the source server: pointed at it, they are refused
    s = get_settings()
    wrong = Settings(**{**s.model_dump(), "source_s3_access_key_id": two_sides.output_keys[0],
                        "source_s3_secret_access_key": two_sides.output_keys[1]})
    with pytest.raises(InvalidInputError) as err:
        read_uri("s3://archive/only-here.json", side="source", settings=wrong)
    msg = str(err.value)
    assert "s3://archive/only-here.json" in msg and "InvalidAccessKeyId" in msg and "source side" in msg
    assert f"{SRC}ACCESS_KEY_ID" in msg
    # a wrong secret is a signature mismatch, named as such
    bad_secret = Settings(**{**s.model_dump(), "source_s3_secret_access_key": "not-the-secret"})
    with pytest.raises(InvalidInputError, match=f"SignatureDoesNotMatch.*{SRC}SECRET_ACCESS_KEY"):
        read_uri("s3://archive/only-here.json", side="source", settings=bad_secret)


@pytest.mark.s3
def test_access_denied_names_the_bucket_and_the_setting_for_boto3_and_gdal(two_sides: TwoSides,
                                                                          tmp_path: Path) -> None:
    admin = two_sides.source.client()
    admin.put_object(Bucket=LOCKED_BUCKET, Key="tile/item.json", Body=b"{}")
    admin.upload_file(str(_geotiff(tmp_path / "b.tif", np.ones((16, 16), np.uint16))), LOCKED_BUCKET,
                      "tile/B04.tif")
    expected = [f"s3://{LOCKED_BUCKET}/tile/", "on the source side", f"{SRC}REQUESTER_PAYS=true",
                f"{SRC}ACCESS_KEY_ID"]

    with pytest.raises(InvalidInputError) as boto_err:  # boto3 GET: AccessDenied
        read_uri(f"s3://{LOCKED_BUCKET}/tile/item.json")
    with pytest.raises(InvalidInputError) as head_err:  # boto3 HEAD: a bare 403
        S3Storage(LOCKED_BUCKET, "tile", get_settings(), side="source").size("item.json")
    with pytest.raises(InvalidInputError) as gdal_err:  # GDAL /vsis3/
        read_bands([BandRead(f"s3://{LOCKED_BUCKET}/tile/B04.tif", what="S2B_47PPR B04")])
    for err in (boto_err, head_err, gdal_err):
        for text in expected:
            assert text in str(err.value), (text, str(err.value))
    assert "AccessDenied" in str(boto_err.value) and "(403)" in str(head_err.value)
    assert str(gdal_err.value).startswith("S2B_47PPR B04: s3://locked-archive/tile/B04.tif: access denied")
    # the output side names its own variables
    with pytest.raises(InvalidInputError, match=f"on the output side — set {OUT}REQUESTER_PAYS=true .* {OUT}ACCESS"):
        _denied_output(two_sides)


def _denied_output(two_sides: TwoSides) -> None:
    """Write to the source server's read-only archive through the output side (reader keys)."""
    s = Settings(**{**get_settings().model_dump(), "s3_endpoint_url": two_sides.source.endpoint,
                    "s3_access_key_id": two_sides.source_keys[0],
                    "s3_secret_access_key": two_sides.source_keys[1]})
    open_storage(f"s3://{SOURCE_BUCKET}/out", s).write_bytes("x.json", b"{}")


@pytest.mark.s3
def test_gdal_with_unknown_keys_names_the_key_setting(two_sides: TwoSides, tmp_path: Path) -> None:
    two_sides.source.client().upload_file(str(_geotiff(tmp_path / "k.tif", np.ones((16, 16), np.uint16))),
                                          SOURCE_BUCKET, "keys/B08.tif")
    monkey = pytest.MonkeyPatch()
    try:
        monkey.setenv(f"{SRC}ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
        get_settings.cache_clear()
        with pytest.raises(InvalidInputError) as err:
            read_band("s3://archive/keys/B08.tif")
    finally:
        monkey.undo()
        get_settings.cache_clear()
    msg = str(err.value)
    assert "s3://archive/keys/B08.tif" in msg and "InvalidAccessKeyId" in msg and f"{SRC}ACCESS_KEY_ID" in msg


@pytest.mark.s3
def test_requester_pays_header_goes_to_the_source_only(two_sides: TwoSides, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """moto stores a bucket's request-payment setting but does not enforce it: the request log proves the
    ``x-amz-request-payer: requester`` header reaches the source server from boto3 and GDAL alike."""
    admin = two_sides.source.client()
    admin.put_bucket_request_payment(Bucket=SOURCE_BUCKET, RequestPaymentConfiguration={"Payer": "Requester"})
    admin.put_object(Bucket=SOURCE_BUCKET, Key="rp/tileInfo.json", Body=b'{"rp": 1}')
    band = np.full((32, 32), 1234, np.uint16)
    admin.upload_file(str(_geotiff(tmp_path / "rp.tif", band)), SOURCE_BUCKET, "rp/B04.tif")
    admin.upload_file(str(_geotiff(tmp_path / "free.tif", band)), SOURCE_BUCKET, "free/B04.tif")

    # without the setting: no header
    two_sides.source.start_recording()
    assert np.array_equal(read_band("s3://archive/free/B04.tif")[0], band)
    assert two_sides.source.requests()
    assert not any("x-amz-request-payer" in r["headers"] for r in two_sides.source.requests())

    monkeypatch.setenv(f"{SRC}REQUESTER_PAYS", "true")
    get_settings.cache_clear()
    two_sides.source.start_recording()
    two_sides.output.start_recording()
    assert read_uri("s3://archive/rp/tileInfo.json") == b'{"rp": 1}'
    assert list(S3Storage(SOURCE_BUCKET, "rp", get_settings(), side="source").list()) == ["B04.tif", "tileInfo.json"]
    assert np.array_equal(read_band("s3://archive/rp/B04.tif")[0], band)
    open_storage("s3://products/rp").write_bytes("x.json", b"{}")

    src_reqs = two_sides.source.requests()
    gets = [r for r in src_reqs if r["method"] == "GET"]
    assert any("B04.tif" in r["url"] and r["headers"].get("range") for r in gets)  # GDAL
    assert any("tileInfo.json" in r["url"] for r in gets) and any("list-type=2" in r["url"] for r in gets)
    assert all(r["headers"].get("x-amz-request-payer") == "requester" for r in src_reqs)
    out_reqs = two_sides.output.requests()
    assert out_reqs and not any("x-amz-request-payer" in r["headers"] for r in out_reqs)


@pytest.mark.s3
def test_concurrent_reads_of_both_sides_each_use_their_own_server(two_sides: TwoSides, tmp_path: Path) -> None:
    a = np.full((32, 32), 11, np.uint16)
    b = np.full((32, 32), 22, np.uint16)
    two_sides.source.client().upload_file(str(_geotiff(tmp_path / "a.tif", a)), SOURCE_BUCKET, "mix/B05.tif")
    two_sides.output.client().upload_file(str(_geotiff(tmp_path / "b.tif", b)), OUTPUT_BUCKET, "mix/mask.tif")
    two_sides.source.start_recording()
    two_sides.output.start_recording()
    reqs = [BandRead("s3://archive/mix/B05.tif"), BandRead("s3://products/mix/mask.tif", side="output")] * 3
    got = read_bands(reqs, workers=2)
    for r, arr in zip(reqs, got, strict=True):
        assert np.array_equal(arr, a if r.side == "source" else b)
    assert _key_ids(two_sides.source) == {two_sides.source_keys[0]}
    assert _key_ids(two_sides.output) == {two_sides.output_keys[0]}


# ------------------------------------------------------------------------------------ unsigned source
@pytest.fixture(scope="module")
def public_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoProcess]:
    """A server without IAM auth (like a public bucket host): one public-read and one private object."""
    workdir = tmp_path_factory.mktemp("moto-public")
    server = start_moto(workdir, "public")
    try:
        admin = server.client()
        admin.create_bucket(Bucket="cogs")
        band = np.full((32, 32), 4321, np.uint16)
        for key, acl in (("open/B04.tif", "public-read"), ("closed/B04.tif", "private")):
            path = _geotiff(workdir / key.replace("/", "-"), band)
            admin.upload_file(str(path), "cogs", key, ExtraArgs={"ACL": acl})
        admin.put_object(Bucket="cogs", Key="open/item.json", Body=b'{"id": "x"}', ACL="public-read")
        admin.put_object(Bucket="cogs", Key="closed/item.json", Body=b'{"id": "y"}', ACL="private")
        yield server
    finally:
        server.stop()


@pytest.mark.s3
def test_unsigned_source_sends_no_credentials(public_server: MotoProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {f"{OUT}ENDPOINT_URL": "http://127.0.0.1:9", f"{OUT}ACCESS_KEY_ID": "out-key",
           f"{OUT}SECRET_ACCESS_KEY": "out-secret", f"{SRC}ENDPOINT_URL": public_server.endpoint,
           f"{SRC}UNSIGNED": "true"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    public_server.start_recording()
    assert read_uri("s3://cogs/open/item.json") == b'{"id": "x"}'
    assert np.array_equal(read_band("s3://cogs/open/B04.tif")[0], np.full((32, 32), 4321, np.uint16))
    reqs = public_server.requests()
    assert len(reqs) >= 2 and not any("authorization" in r["headers"] for r in reqs)

    with pytest.raises(InvalidInputError) as boto_err:
        read_uri("s3://cogs/closed/item.json")  # private: 403 to anonymous callers
    with pytest.raises(InvalidInputError) as gdal_err:
        read_band("s3://cogs/closed/B04.tif")  # a bare HTTP 403 from GDAL
    for err in (boto_err, gdal_err):
        assert "s3://cogs/closed/" in str(err.value) and "does not allow anonymous reads" in str(err.value)
        assert f"set {SRC}UNSIGNED=false and {SRC}ACCESS_KEY_ID" in str(err.value)


@pytest.mark.s3
@pytest.mark.slow
def test_pipeline_reads_the_archive_from_one_server_and_writes_products_to_another(
        two_sides: TwoSides, demo_archive: Path, demo_range: tuple[list[str], str, str], processed: Path) -> None:
    """``run`` with the archive on the source server (read-only user) and the products on the output server.

    Each server sees only its side's requests, signed with its side's key; the products are byte-identical to
    the local run of the same archive (``processed``).
    """
    root = demo_archive.parent if demo_archive.is_file() else demo_archive  # the archive's catalog.json
    two_sides.source.upload_tree(root, SOURCE_BUCKET, "demo")
    two_sides.source.start_recording()
    two_sides.output.start_recording()
    tiles, start, end = demo_range
    res = run_cli("-q", "run", "--source", f"s3://{SOURCE_BUCKET}/demo/catalog.json", "--tiles", ",".join(tiles),
                  "--start", start, "--end", end, "--out", f"s3://{OUTPUT_BUCKET}/run", "--workers", "2",
                  env=two_sides.env)
    assert res.returncode == 0, res.stderr
    src_reqs, out_reqs = two_sides.source.requests(), two_sides.output.requests()
    assert src_reqs and out_reqs
    assert {r["method"] for r in src_reqs} <= {"GET", "HEAD"}  # the archive is only read
    assert any(r["method"] == "PUT" for r in out_reqs)
    assert all(two_sides.source_keys[0] in r["headers"].get("authorization", "") for r in src_reqs)
    assert all(two_sides.output_keys[0] in r["headers"].get("authorization", "") for r in out_reqs)
    # same COG bytes as the local run
    out = two_sides.output.client()
    local_cogs = sorted(p for p in processed.rglob("*.tif") if "/work/" not in p.as_posix())
    assert local_cogs
    for p in local_cogs:
        key = f"run/{p.relative_to(processed).as_posix()}"
        body = out.get_object(Bucket=OUTPUT_BUCKET, Key=key)["Body"].read()
        assert body == p.read_bytes(), key


@pytest.mark.parametrize("argv", [
    ["-q", "worker", "--idle-exit", "1"],
    ["run", "--source", "nowhere", "--tiles", "47PPR", "--start", "2024-01-01", "--end", "2024-01-31",
     "--out", "nowhere-out"],
    ["step", "lai", "--scene", "nowhere/work/S2A_47PPR_20240115T035029/scene.json", "--out", "nowhere-out"],
], ids=["worker", "run", "step"])
def test_a_misspelt_lai_network_is_one_clear_error_at_start(argv: list[str]) -> None:
    """``3_O`` for ``3_0``: refused when the process starts (exit 3, one line naming the variable), before the
    worker connects to its broker (a dead port here: reaching it would be exit 75) or a scene is read."""
    env = {"RAW2READY_LAI_NETWORK": "3_O", "RAW2READY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{_free_port()}/%2F"}
    res = run_cli(*argv, env=env, timeout=120)
    assert res.returncode == 3, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "RAW2READY_LAI_NETWORK" in lines[0] and "'3_0'" in lines[0] and "'2_1'" in lines[0]


def test_lai_network_choices_are_the_sets_shipped_and_accept_snap_spellings() -> None:
    from typing import get_args

    from steps.settings import LaiNetworkSet

    shipped = {p.name for p in (Path(steps.__file__).parent / "data" / "snap_biophysical").iterdir() if p.is_dir()}
    assert set(get_args(LaiNetworkSet)) == shipped
    assert Settings(lai_network="3.0").lai_network == "3_0"
    assert Settings(lai_network="v2.1").lai_network == "2_1"


_START_ARGVS = {  # a command of each kind; none gets further than reading the settings when they are wrong
    "worker": ["-q", "worker", "--idle-exit", "1"],
    "run": ["run", "--source", "nowhere", "--tiles", "47PPR", "--start", "2024-01-01", "--end", "2024-01-31",
            "--out", "nowhere-out"],
    "step": ["step", "mask", "--scene", "nowhere/work/S2A_47PPR_20240115T035029/scene.json", "--out", "nowhere-out"],
}


@pytest.mark.parametrize("command", list(_START_ARGVS))
@pytest.mark.parametrize(("variable", "value", "says"), [
    ("CLOUD_RESOLUTION_M", "30", ["Input should be 10, 20 or 60"]),
    ("CLOUD_RESOLUTION_M", "160", ["160 m does not divide the 109800 m Sentinel-2 tile (686.25 pixels)",
                                   "choose one of 10, 20, 60"]),
    ("CLOUD_MODE", "fats", ["'fast' or 'exact'"]),
    ("LOG_LEVEL", "verbose", ["'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL'"]),
    ("S3_ADDRESSING_STYLE", "paths", ["'path' or 'virtual'"]),
    ("SOURCE_S3_ADDRESSING_STYLE", "Virtual", ["'path' or 'virtual'"]),
], ids=lambda v: v if isinstance(v, str) else "")
def test_every_choice_setting_is_one_clear_error_at_start(command: str, variable: str, value: str,
                                                          says: list[str]) -> None:
    """Each typed choice refused when the command starts: exit 3, one line naming the variable and the choices,
    before a scene is read or the worker reaches its broker (a dead port: reaching it would be exit 75). In-process
    (the subprocess path is proven for the LAI network above)."""
    env = {f"RAW2READY_{variable}": value,
           "RAW2READY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{_free_port()}/%2F"}
    res = invoke_cli(*_START_ARGVS[command], env=env)
    assert res.returncode == 3, res.stdout + res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("raw2ready: invalid input: invalid settings: "), line
    assert f"RAW2READY_{variable}:" in line and all(s in line for s in says), line


def test_a_cloud_resolution_that_does_not_divide_the_tile_is_refused() -> None:
    from steps.sentinel2.grid import GRID_SNAP_M, TILE_SIZE_M
    from steps.settings import CLOUD_RESOLUTIONS_M, check_divides_tile

    assert CLOUD_RESOLUTIONS_M == (10, 20, 60)
    for res in CLOUD_RESOLUTIONS_M:  # every choice covers the tile, and the 60 m corner snap, in whole pixels
        assert TILE_SIZE_M % res == 0 and GRID_SNAP_M % res == 0
        check_divides_tile(res)
        assert Settings(cloud_resolution_m=str(res)).cloud_resolution_m == res
    for bad in (160, 80, 7, 0, -20):
        with pytest.raises(ValueError, match=rf"{bad} m does not divide the 109800 m Sentinel-2 tile"):
            check_divides_tile(bad)
        with pytest.raises(ValueError, match="does not divide"):
            Settings(cloud_resolution_m=bad)
    with pytest.raises(ValueError, match="Input should be 10, 20 or 60"):  # divides the tile, not a choice
        Settings(cloud_resolution_m=30)


def test_log_level_is_a_choice_in_any_case() -> None:
    assert Settings(log_level=" debug ").log_level == "DEBUG"
    assert Settings().log_level == "INFO"


def test_the_tile_size_the_settings_check_is_the_grids():
    """settings spells the tile width itself (it may import only steps.errors): it must be the grid's."""
    from steps import settings
    from steps.sentinel2 import grid

    assert settings.TILE_SIZE_M == grid.TILE_SIZE_M == 10980 * 10
