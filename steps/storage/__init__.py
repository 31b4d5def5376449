"""One small storage interface over local directories and S3-compatible object stores.

A ``Storage`` is rooted at a URI (``/data/out``, ``file:///data/out`` or ``s3://bucket/prefix``); keys
are POSIX paths relative to that root. Writes are atomic: a local file is written to a hidden temporary
name in the same directory, flushed and renamed over the target; an S3 object only appears when its
PUT (or multipart upload) completes. A reader therefore never sees a partial object or file.

Every S3 access belongs to one of two **sides** (:data:`steps.settings.Side`), each with its own
endpoint, region, credentials, unsigned access and requester-pays (see :class:`steps.settings.Settings`):
``"source"`` — the input archive (STAC items, metadata XML, band rasters) — and ``"output"`` — products,
work files, catalog. :func:`open_storage` is always the output side; :func:`read_uri`, :func:`s3_client`
and :func:`gdal_env` take the side as an argument. boto3 clients are created once per process and
resolved side configuration (:func:`s3_client`).

S3 errors are classified once, here: throttling, 5xx, timeouts and dropped connections become
``TransientError`` (exit 75, retried); a missing key becomes ``FileNotFoundError``; access denied,
unknown keys and bad signatures become ``InvalidInputError`` whose message names the bucket, the side
and the ``RAW2READY_…`` setting to change (:func:`access_denied_message`, also used for GDAL errors).

``gdal_env(side=…)`` returns the ``rasterio.Env`` that lets GDAL read ``s3://`` (through ``/vsis3/``) and
``https://`` assets directly with that side's endpoint, credentials, unsigned and requester-pays settings.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

from steps.errors import InvalidInputError, TransientError
from steps.settings import S3Side, Settings, Side, get_settings

log = logging.getLogger(__name__)

_DENIED_S3_CODES = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "AllAccessDisabled", "AccountProblem", "InvalidToken", "ExpiredToken"}
_REGION_S3_CODES = {"PermanentRedirect", "301", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
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


def _bucket_of(url: str) -> str | None:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        return None
    return parsed.netloc


def access_denied_message(url: str, code: str, cfg: S3Side | None) -> str:
    """One line saying that ``url`` was refused and which ``RAW2READY_…`` setting to change.

    ``code`` is the S3 error code (``AccessDenied``, ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``,
    or ``403`` when only the HTTP status is known, as from a HEAD request or GDAL). ``cfg`` is the side
    the request was made with (``None``: unknown — the message then only names the code).
    """
    bucket = _bucket_of(url)
    head = f"{url}: access denied ({code})"
    if cfg is None:
        return head
    p = cfg.env_prefix
    where = f"s3://{bucket}" if bucket else "this object"
    server = cfg.endpoint_url or f"AWS ({cfg.region})"
    keys = f"{p}ACCESS_KEY_ID/{p}SECRET_ACCESS_KEY"
    if code in ("InvalidAccessKeyId", "InvalidToken", "ExpiredToken"):
        fix = f"the access key is not valid on {server} — set {keys}"
        if cfg.side == "source":
            fix += (" (with RAW2READY_SOURCE_S3_ENDPOINT_URL unset the source side uses the output side's "
                    "server and keys; set it, or 'aws', when the archive lives elsewhere)")
    elif code == "SignatureDoesNotMatch":
        fix = f"the secret key does not match the access key — check {p}SECRET_ACCESS_KEY"
    elif cfg.unsigned:
        fix = (f"{where} does not allow anonymous reads — set {p}UNSIGNED=false and {keys} "
               f"(and {p}REQUESTER_PAYS=true if it is a requester-pays bucket)")
    elif cfg.requester_pays:
        fix = f"{p}REQUESTER_PAYS is already true — check that {keys} may read {where}"
    else:
        fix = (f"set {p}REQUESTER_PAYS=true if {where} is a requester-pays bucket (e.g. sentinel-s2-l1c, "
               f"sentinel-s2-l2a), or {keys} to credentials allowed to read it"
               if cfg.side == "source" else
               f"set {p}REQUESTER_PAYS=true if {where} is a requester-pays bucket, or {keys} "
               "to credentials allowed to access it")
    return f"{head} on the {cfg.side} side — {fix}"


def classify_s3_error(exc: BaseException, what: str, cfg: S3Side | None = None) -> BaseException:
    """Turn a botocore exception into ``TransientError``/``FileNotFoundError``/``InvalidInputError``/itself.

    ``cfg`` (the side the request used) lets access-denied messages name the setting to change.
    """
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
            where = "" if cfg is None else (
                f" on {cfg.endpoint_url or 'AWS'} (the {cfg.side} side: check {cfg.env_prefix}ENDPOINT_URL)")
            return InvalidInputError(f"{what}: bucket does not exist{where}")
        if code in _DENIED_S3_CODES or (status == 403 and not code):
            return InvalidInputError(access_denied_message(what, code or "403", cfg))
        if code in _REGION_S3_CODES:
            hint = f" — set {cfg.env_prefix}REGION to the bucket's region" if cfg is not None else ""
            region = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
            return InvalidInputError(f"{what}: wrong region ({code}"
                                     + (f", the bucket is in {region}" if region else "") + f"){hint}")
        if code in _TRANSIENT_S3_CODES or status >= 500 or status == 429:
            return TransientError(f"{what}: S3 answered {code or status}")
        return exc
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ConnectTimeoutError | ReadTimeoutError
                  | ResponseStreamingError | ProtocolError | ConnectionError | TimeoutError):
        return TransientError(f"{what}: {type(exc).__name__}: {exc}")
    return exc


@contextlib.contextmanager
def _s3_errors(what: str, cfg: S3Side | None = None) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # classified and re-raised
        mapped = classify_s3_error(exc, what, cfg)
        if mapped is exc:
            raise
        raise mapped from exc


_CLIENTS: dict[tuple[int, S3Side], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def s3_client(settings: Settings | None = None, side: Side = "output") -> Any:
    """The boto3 S3 client of one storage side (endpoint, region, keys, addressing, retries).

    One client per process and resolved side configuration: repeated calls return the same (thread-safe)
    client, so connections are pooled. An unsigned side gets a client that signs nothing.
    """
    cfg = (settings or get_settings()).s3_side(side)
    key = (os.getpid(), cfg)  # a forked worker builds its own client
    client = _CLIENTS.get(key)
    if client is not None:
        return client
    with _CLIENTS_LOCK:
        client = _CLIENTS.get(key)
        if client is None:
            client = _new_client(cfg)
            _CLIENTS[key] = client
            log.debug("S3 client for the %s side: endpoint %s, region %s, %s", side,
                      cfg.endpoint_url or "AWS", cfg.region,
                      "unsigned" if cfg.unsigned else ("keys" if cfg.has_keys else "default credentials"))
    return client


def _new_client(cfg: S3Side) -> Any:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    extra: dict[str, Any] = {"signature_version": UNSIGNED} if cfg.unsigned else {}
    boto_cfg = Config(
        region_name=cfg.region,
        s3={"addressing_style": cfg.addressing_style},
        retries={"max_attempts": 8, "mode": "standard"},
        connect_timeout=10,
        read_timeout=60,
        **extra,
    )
    kwargs: dict[str, Any] = {"config": boto_cfg}
    if cfg.endpoint_url:
        kwargs["endpoint_url"] = cfg.endpoint_url
    if cfg.has_keys:
        kwargs["aws_access_key_id"] = cfg.access_key_id
        kwargs["aws_secret_access_key"] = cfg.secret_access_key
    # a private session: boto3's default session is not thread-safe to create clients from
    return boto3.session.Session().client("s3", **kwargs)


@dataclass
class S3Storage:
    """A prefix in an S3-compatible bucket (AWS, MinIO, moto, Ceph …)."""

    bucket: str
    prefix: str = ""
    settings: Settings = field(default_factory=get_settings)
    side: Side = "output"
    _client: Any = field(default=None, repr=False)

    @property
    def cfg(self) -> S3Side:
        """The resolved configuration of this storage's side."""
        return self.settings.s3_side(self.side)

    @property
    def client(self) -> Any:
        """The process-wide boto3 client of this storage's side (see :func:`s3_client`)."""
        if self._client is None:
            self._client = s3_client(self.settings, self.side)
        return self._client

    @property
    def uri(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def _key(self, key: str) -> str:
        return join(self.prefix, key)

    def _extra(self) -> dict[str, str]:
        return {"RequestPayer": "requester"} if self.cfg.requester_pays else {}

    def url(self, key: str) -> str:
        """``s3://bucket/prefix/key``."""
        return f"s3://{self.bucket}/{self._key(key)}"

    def read_bytes(self, key: str) -> bytes:
        """GET an object."""
        with _s3_errors(self.url(key), self.cfg):
            resp = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **self._extra())
            return bytes(resp["Body"].read())

    def write_bytes(self, key: str, data: bytes) -> None:
        """PUT an object (atomic: visible only once complete) with a Content-MD5 integrity check."""
        import base64

        md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
        with _s3_errors(self.url(key), self.cfg):
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentMD5=md5)

    def put_file(self, local: Path, key: str) -> None:
        """Upload a file (multipart above 64 MiB; an object appears only when complete)."""
        from boto3.s3.transfer import TransferConfig

        cfg = TransferConfig(multipart_threshold=64 * 1024 * 1024, multipart_chunksize=64 * 1024 * 1024)
        with _s3_errors(self.url(key), self.cfg):
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
        with _s3_errors(self.url(key), self.cfg):
            resp = self.client.head_object(Bucket=self.bucket, Key=self._key(key), **self._extra())
            return int(resp["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[str]:
        """List keys below ``prefix`` (paginated), relative to the storage root, sorted."""
        full = self._key(prefix)
        if full and prefix.endswith("/") is False and prefix:
            full = full + "/"
        keys: list[str] = []
        with _s3_errors(self.url(prefix), self.cfg):
            pager = self.client.get_paginator("list_objects_v2")
            for page in pager.paginate(Bucket=self.bucket, Prefix=full, **self._extra()):
                for obj in page.get("Contents", []):
                    k = obj["Key"]
                    keys.append(k[len(self.prefix):].lstrip("/") if self.prefix else k)
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        """Delete an object (no error if absent)."""
        with _s3_errors(self.url(key), self.cfg):
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


def split_uri(uri: str, *, side: Side = "output",
              settings: Settings | None = None) -> tuple[LocalStorage | S3Storage, str]:
    """Split an absolute object URI/path into (storage of its parent folder on ``side``, file name)."""
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InvalidInputError(f"S3 URI {text!r} has no bucket")
        path = parsed.path.strip("/")
        parent, _, name = path.rpartition("/")
        return S3Storage(bucket=parsed.netloc, prefix=parent, settings=settings or get_settings(), side=side), name
    p = Path(parsed.path if parsed.scheme == "file" else text).expanduser().resolve()
    return LocalStorage(p.parent), p.name


def read_uri(uri: str, *, side: Side = "source", settings: Settings | None = None) -> bytes:
    """Read any object by absolute URI: local path, ``file://``, ``s3://`` or ``http(s)://``.

    ``side`` picks the S3 configuration for ``s3://`` URIs: ``"source"`` (the default) for the input
    archive — STAC items, metadata XML — and ``"output"`` for anything raw2ready wrote itself (scene
    manifests, work files, product items). Local and ``http(s)://`` reads ignore it.
    """
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        return _http_get(uri)
    storage, name = split_uri(uri, side=side, settings=settings)
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
    return _multihash(hashlib.sha256(data))


def sha256_multihash_file(path: Path) -> str:
    """``file:checksum`` multihash of a local file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return _multihash(h)


def _multihash(sha256: Any) -> str:
    """The multihash spelling of a finished sha256: code 0x12 (sha2-256), length 0x20, then the digest."""
    return "1220" + sha256.hexdigest()


def gdal_env_options(settings: Settings | None = None, *, side: Side) -> dict[str, Any]:
    """GDAL configuration options so that rasterio reads ``s3://`` and ``https://`` assets of ``side``.

    Every ``AWS_*`` option that depends on the side is set explicitly, also to its default (AWS endpoint,
    HTTPS, no requester-pays), so that an environment entered inside another side's never inherits its
    values. Credentials are not among them: see :func:`gdal_env`.
    """
    cfg = (settings or get_settings()).s3_side(side)
    opts: dict[str, Any] = {
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF,.jp2,.xml,.json",
        "GDAL_HTTP_MAX_RETRY": "5",
        "GDAL_HTTP_RETRY_DELAY": "1",
        "GDAL_HTTP_MULTIRANGE": "YES",
        "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
        "VSI_CACHE": "TRUE",
        "AWS_REGION": cfg.region,
        "AWS_S3_ENDPOINT": "s3.amazonaws.com",
        "AWS_HTTPS": "YES",
        "AWS_VIRTUAL_HOSTING": "TRUE" if cfg.addressing_style == "virtual" else "FALSE",
        "AWS_REQUEST_PAYER": "requester" if cfg.requester_pays else "",
        "AWS_NO_SIGN_REQUEST": "YES" if cfg.unsigned else "NO",
    }
    if cfg.endpoint_url:
        ep = urlparse(cfg.endpoint_url)
        opts["AWS_S3_ENDPOINT"] = ep.netloc + ep.path.rstrip("/")
        opts["AWS_HTTPS"] = "YES" if ep.scheme == "https" else "NO"
    return opts


_DEFAULT_CHAIN: dict[tuple[int, str], Any] = {}
_DEFAULT_CHAIN_LOCK = threading.Lock()


def _default_chain_session(region: str) -> Any | None:
    """A boto3 session over the default credential chain if it finds credentials, else ``None``.

    Looked up once per process and region (the chain may probe the instance metadata service); the
    session's credentials refresh themselves (IRSA, instance roles).
    """
    import boto3

    key = (os.getpid(), region)
    with _DEFAULT_CHAIN_LOCK:
        if key not in _DEFAULT_CHAIN:
            session = boto3.session.Session(region_name=region)
            _DEFAULT_CHAIN[key] = session if session.get_credentials() is not None else None
        return _DEFAULT_CHAIN[key]


def gdal_env(settings: Settings | None = None, *, side: Side) -> Any:
    """A ``rasterio.Env`` for GDAL reads/writes on ``side``: :func:`gdal_env_options` plus credentials.

    Credentials go through rasterio's ``AWSSession`` (rasterio refuses them as plain options): none for
    an unsigned side; else the side's keys when set, else boto3's default chain, else unsigned requests
    (public buckets). GDAL configuration is thread-local in rasterio, so threads may use different sides
    at the same time.
    """
    import rasterio
    from rasterio.session import AWSSession

    cfg = (settings or get_settings()).s3_side(side)
    if cfg.unsigned:
        session = AWSSession(aws_unsigned=True, region_name=cfg.region)
    elif cfg.has_keys:
        session = AWSSession(aws_access_key_id=cfg.access_key_id, aws_secret_access_key=cfg.secret_access_key,
                             region_name=cfg.region, requester_pays=cfg.requester_pays)
    elif (chain := _default_chain_session(cfg.region)) is not None:
        session = AWSSession(chain, requester_pays=cfg.requester_pays)
    else:
        log.debug("no credentials for the %s side: unsigned GDAL requests", side)
        session = AWSSession(aws_unsigned=True, region_name=cfg.region)
    return rasterio.Env(session=session, **gdal_env_options(settings, side=side))


@contextlib.contextmanager
def scratch_dir(prefix: str = "raw2ready-") -> Iterator[Path]:
    """A private temporary directory removed afterwards (for staging files before upload)."""
    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)
