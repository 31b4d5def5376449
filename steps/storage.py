"""One small storage interface over local directories and S3-compatible object stores.

A ``Storage`` is rooted at a URI (``/data/out``, ``file:///data/out`` or ``s3://bucket/prefix``); keys
are POSIX paths relative to that root. Writes are atomic: a local file is written to a hidden temporary
name in the same directory, flushed and renamed over the target; an S3 object only appears when its
PUT (or multipart upload) completes. A reader therefore never sees a partial object or file.

S3 errors are classified once, here: throttling, 5xx, timeouts and dropped connections become
``TransientError`` (exit 75, retried); a missing key becomes ``FileNotFoundError``.

``gdal_env()`` returns the ``rasterio.Env`` options that let GDAL read ``s3://`` (through ``/vsis3/``)
and ``https://`` assets directly with the same endpoint, credentials and requester-pays setting.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from steps.errors import InvalidInputError, TransientError
from steps.settings import Settings, get_settings

log = logging.getLogger(__name__)

_TRANSIENT_S3_CODES = {
    "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
    "InternalError", "ServiceUnavailable", "503", "500", "502", "504", "RequestLimitExceeded",
}


class Storage(Protocol):
    """What every backend offers. Keys are relative POSIX paths below ``uri``."""

    uri: str

    def url(self, key: str) -> str:
        """Absolute URI of ``key`` (local path or ``s3://…``), usable by rasterio under ``gdal_env``."""
        ...

    def read_bytes(self, key: str) -> bytes:
        """Whole object; ``FileNotFoundError`` if absent."""
        ...

    def write_bytes(self, key: str, data: bytes) -> None:
        """Atomically create or replace ``key``."""
        ...

    def put_file(self, local: Path, key: str) -> None:
        """Atomically upload/copy a local file to ``key``."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        ...

    def size(self, key: str) -> int:
        """Size in bytes; ``FileNotFoundError`` if absent."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """All keys below ``prefix`` (recursive), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Delete ``key`` if present."""
        ...

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key below ``prefix``."""
        ...


def join(*parts: str) -> str:
    """Join key parts with ``/``, ignoring empty parts and duplicate slashes."""
    out = "/".join(p.strip("/") for p in parts if p and p.strip("/"))
    return out


@dataclass
class LocalStorage:
    """A directory on a local or mounted file system."""

    root: Path

    @property
    def uri(self) -> str:
        """The root directory as a string."""
        return str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / key if key else self.root

    def url(self, key: str) -> str:
        """Absolute local path of ``key``."""
        return str(self._path(key))

    def read_bytes(self, key: str) -> bytes:
        """Read a file; ``FileNotFoundError`` if absent."""
        return self._path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        """Write via a temporary file in the same directory, fsync, then rename (atomic on POSIX)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
        try:
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, local: Path, key: str) -> None:
        """Copy a local file into place atomically."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex}"
        try:
            shutil.copyfile(local, tmp)
            with tmp.open("rb+") as f:
                os.fsync(f.fileno())
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        """Whether the file exists."""
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """File size in bytes."""
        return self._path(key).stat().st_size

    def list(self, prefix: str = "") -> Iterator[str]:
        """Files below ``prefix``, excluding in-flight temporary files, sorted."""
        base = self._path(prefix)
        if not base.exists():
            return iter(())
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".") and ".tmp-" in name:
                    continue
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                keys.append(rel)
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        """Remove a file if present."""
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        """Remove a whole directory below the root."""
        p = self._path(prefix)
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def classify_s3_error(exc: BaseException, what: str) -> BaseException:
    """Turn a botocore exception into ``TransientError``/``FileNotFoundError``/itself."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from urllib3.exceptions import ProtocolError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in {"NoSuchKey", "404", "NotFound"}:
            return FileNotFoundError(what)
        if code == "NoSuchBucket":
            return InvalidInputError(f"{what}: bucket does not exist")
        if code in {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"}:
            return InvalidInputError(f"{what}: access denied ({code})")
        if code in _TRANSIENT_S3_CODES or status >= 500 or status == 429:
            return TransientError(f"{what}: S3 answered {code or status}")
        return exc
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ConnectTimeoutError | ReadTimeoutError
                  | ResponseStreamingError | ProtocolError | ConnectionError | TimeoutError):
        return TransientError(f"{what}: {type(exc).__name__}: {exc}")
    return exc


@contextlib.contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # classified and re-raised
        mapped = classify_s3_error(exc, what)
        if mapped is exc:
            raise
        raise mapped from exc


def s3_client(settings: Settings | None = None) -> Any:
    """A boto3 S3 client configured from settings (endpoint, region, keys, addressing, retries)."""
    import boto3
    from botocore.config import Config

    s = settings or get_settings()
    cfg = Config(
        region_name=s.s3_region,
        s3={"addressing_style": s.s3_addressing_style},
        retries={"max_attempts": 8, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
    )
    kwargs: dict[str, Any] = {"config": cfg}
    if s.s3_endpoint_url:
        kwargs["endpoint_url"] = s.s3_endpoint_url
    if s.s3_access_key_id and s.s3_secret_access_key:
        kwargs["aws_access_key_id"] = s.s3_access_key_id
        kwargs["aws_secret_access_key"] = s.s3_secret_access_key.get_secret_value()
    return boto3.client("s3", **kwargs)


@dataclass
class S3Storage:
    """A prefix in an S3-compatible bucket (AWS, MinIO, moto, Ceph …)."""

    bucket: str
    prefix: str = ""
    settings: Settings = field(default_factory=get_settings)
    _client: Any = field(default=None, repr=False)

    @property
    def client(self) -> Any:
        """Lazily created boto3 client (one per storage object; clients are thread-safe)."""
        if self._client is None:
            self._client = s3_client(self.settings)
        return self._client

    @property
    def uri(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return join(self.prefix, key)

    def _extra(self) -> dict[str, str]:
        return {"RequestPayer": "requester"} if self.settings.s3_requester_pays else {}

    def url(self, key: str) -> str:
        """``s3://bucket/prefix/key``."""
        return f"s3://{self.bucket}/{self._key(key)}"

    def read_bytes(self, key: str) -> bytes:
        """GET an object."""
        with _s3_errors(self.url(key)):
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **self._extra())
            return bytes(resp["Body"].read())

    def write_bytes(self, key: str, data: bytes) -> None:
        """PUT an object (atomic: visible only once complete) with a Content-MD5 integrity check."""
        import base64

        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        with _s3_errors(self.url(key)):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentMD5=md5)

    def put_file(self, local: Path, key: str) -> None:
        """Upload a file (multipart above 64 MiB; an object appears only when complete)."""
        from boto3.s3.transfer import TransferConfig

        cfg = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=64 * 1024 * 1024)
        with _s3_errors(self.url(key)):
            self.client.upload_file(str(local), self.bucket, self._key(key), Config=cfg)

    def exists(self, key: str) -> bool:
        """HEAD the object."""
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        """Object size from HEAD."""
        with _s3_errors(self.url(key)):
            resp = self.client.head_object(Bucket=self.bucket, Key=self._key(key), **self._extra())
            return int(resp["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[str]:
        """List keys below ``prefix`` (paginated), relative to the storage root, sorted."""
        full = self._key(prefix)
        if full and prefix.endswith("/") is False and prefix:
            full = full + "/"
        keys: list[str] = []
        with _s3_errors(self.url(prefix)):
            pager = self.client.get_paginator("list_objects_v2")
            for page in pager.paginate(Bucket=self.bucket, Prefix=full, **self._extra()):
                for obj in page.get("Contents", []):
                    k = obj["Key"]
                    keys.append(k[len(self.prefix):].lstrip("/") if self.prefix else k)
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        """Delete an object (no error if absent)."""
        with _s3_errors(self.url(key)):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_prefix(self, prefix: str) -> None:
        """Delete all objects below ``prefix``."""
        for k in list(self.list(prefix)):
            self.delete(k)


def open_storage(uri: str | Path, settings: Settings | None = None) -> LocalStorage | S3Storage:
    """Storage for a root URI: ``s3://bucket/prefix``, ``file:///dir`` or a plain directory path."""
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidInputError(f"S3 URI {text!r} has no bucket")
        return S3Storage(bucket=parsed.netloc, prefix=parsed.path.strip("/"), settings=settings or get_settings())
    if parsed.scheme == "file":
        return LocalStorage(Path(parsed.path))
    if parsed.scheme in ("http", "https"):
        raise InvalidInputError(f"cannot write to {text!r}: outputs go to a directory or s3://bucket/prefix")
    return LocalStorage(Path(text).expanduser().resolve())


def split_uri(uri: str) -> tuple[LocalStorage | S3Storage, str]:
    """Split an absolute object URI/path into (storage of its parent folder, file name)."""
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        path = parsed.path.strip("/")
        parent, _, name = path.rpartition("/")
        return open_storage(f"s3://{parsed.netloc}/{parent}"), name
    p = Path(parsed.path if parsed.scheme == "file" else text).expanduser().resolve()
    return LocalStorage(p.parent), p.name


def read_uri(uri: str) -> bytes:
    """Read any object by absolute URI: local path, ``file://``, ``s3://`` or ``http(s)://``."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        return _http_get(uri)
    storage, name = split_uri(uri)
    return storage.read_bytes(name)


def _http_get(url: str, timeout: float = 60.0) -> bytes:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return bytes(resp.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise FileNotFoundError(url) from exc
        if exc.code >= 500 or exc.code == 429:
            raise TransientError(f"{url}: HTTP {exc.code}") from exc
        raise InvalidInputError(f"{url}: HTTP {exc.code}") from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise TransientError(f"{url}: {exc}") from exc


def sha256_multihash(data: bytes) -> str:
    """STAC ``file:checksum`` value: multihash hex (0x12 = sha2-256, 0x20 = 32 bytes) of ``data``."""
    return "1220" + hashlib.sha256(data).hexdigest()


def sha256_multihash_file(path: Path) -> str:
    """``file:checksum`` multihash of a local file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "1220" + h.hexdigest()


def gdal_env_options(settings: Settings | None = None) -> dict[str, Any]:
    """GDAL configuration options so that rasterio reads ``s3://`` and ``https://`` assets directly."""
    s = settings or get_settings()
    opts: dict[str, Any] = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.jp2,.xml,.json",
        "GDAL_HTTP_MAX_RETRY": "5",
        "GDAL_HTTP_RETRY_DELAY": "1",
        "GDAL_HTTP_MULTIRANGE": "YES",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "VSI_CACHE": "TRUE",
        "AWS_REGION": s.s3_region,
    }
    if s.s3_endpoint_url:
        ep = urlparse(s.s3_endpoint_url)
        opts["AWS_S3_ENDPOINT"] = ep.netloc + ep.path.rstrip("/")
        opts["AWS_HTTPS"] = "YES" if ep.scheme == "https" else "NO"
    opts["AWS_VIRTUAL_HOSTING"] = "TRUE" if s.s3_addressing_style == "virtual" else "FALSE"
    if s.s3_requester_pays:
        opts["AWS_REQUEST_PAYER"] = "requester"
    return opts


def gdal_env(settings: Settings | None = None) -> Any:
    """A ``rasterio.Env`` for reads/writes: :func:`gdal_env_options` plus an AWS session.

    Credentials go through rasterio's ``AWSSession`` (rasterio refuses them as plain options): the keys
    from settings when set, else boto3's default chain, else unsigned requests (public buckets).
    """
    import boto3
    import rasterio
    from rasterio.session import AWSSession

    s = settings or get_settings()
    if s.s3_access_key_id and s.s3_secret_access_key:
        session = AWSSession(aws_access_key_id=s.s3_access_key_id,
                             aws_secret_access_key=s.s3_secret_access_key.get_secret_value(),
                             region_name=s.s3_region, requester_pays=s.s3_requester_pays)
    elif boto3.Session().get_credentials() is not None:
        session = AWSSession(boto3.Session(region_name=s.s3_region), requester_pays=s.s3_requester_pays)
    else:
        session = AWSSession(aws_unsigned=True, region_name=s.s3_region)
    return rasterio.Env(session=session, **gdal_env_options(s))


@contextlib.contextmanager
def scratch_dir(prefix: str = "raw2ready-") -> Iterator[Path]:
    """A private temporary directory removed afterwards (for staging files before upload)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
