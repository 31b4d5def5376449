"""Deployment settings: the one place raw2ready reads its environment (prefix ``RAW2READY_``).

Per-run values (tile, dates, hrefs) are arguments; deployment values (endpoints, buckets, broker,
STAC API) come from here — in the cluster from a ConfigMap and a Secret.

Object storage has two sides, each resolved into an :class:`S3Side` by :meth:`Settings.s3_side`:

* **output** (``RAW2READY_S3_*``, the names deployments have always used): where products, work files
  and the catalog are written and read back;
* **source** (``RAW2READY_SOURCE_S3_*``): where the input archive is read — STAC items and metadata XML
  through boto3, band rasters through GDAL ``/vsis3/``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, get_args
from urllib.parse import urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from steps.errors import InvalidInputError

TILE_SIZE_M = 109_800
"""Width of a Sentinel-2 tile in metres (10980 pixels of 10 m). The same fact as
:data:`steps.sentinel2.grid.TILE_SIZE_M`, spelt here because settings imports nothing of ours but
``steps.errors``; ``tests/test_storage_sides.py`` checks that the two agree."""

Side = Literal["source", "output"]
"""Which storage configuration an S3 access uses: the input archive or the products."""

AddressingStyle = Literal["path", "virtual"]
CloudMode = Literal["fast", "exact"]
LaiNetworkSet = Literal["3_0", "2_1"]
"""SNAP LAI network sets shipped in ``steps/data/snap_biophysical/`` (``3_0``: SNAP ≥ 8, per platform;
``2_1``: SNAP ≤ 7, one network)."""
CloudResolution = Literal[10, 20, 60]
"""Pixel sizes (m) the s2cloudless step runs at (its post-processing radii scale with them). Each divides the
109 800 m tile (10 980, 5 490, 1 830 px) and the 60 m grid its corner is snapped to, so the evaluation grid
covers any Sentinel-2 scene exactly; 160 m (686.25 px per tile) is refused (:func:`check_divides_tile`)."""
CLOUD_RESOLUTIONS_M: tuple[int, ...] = get_args(CloudResolution)
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

AWS_ENDPOINT = "aws"
"""Value of ``RAW2READY_SOURCE_S3_ENDPOINT_URL`` meaning "AWS's own endpoints" (no override)."""

ENV_PREFIX = {"output": "RAW2READY_S3_", "source": "RAW2READY_SOURCE_S3_"}
"""Environment-variable prefix of each side's settings (used in error messages)."""


@dataclass(frozen=True)
class S3Side:
    """The resolved S3 configuration of one side (what boto3 and GDAL are configured from).

    ``endpoint_url`` is ``None`` for AWS. ``access_key_id``/``secret_access_key`` are both set or both
    ``None``; ``None`` means boto3's default credential chain (environment, profile, IRSA, instance
    role), unless ``unsigned``. Hashable: the boto3 client cache is keyed by it.
    """

    side: Side
    endpoint_url: str | None
    region: str
    addressing_style: AddressingStyle
    access_key_id: str | None
    secret_access_key: str | None = field(repr=False)
    unsigned: bool
    requester_pays: bool

    @property
    def env_prefix(self) -> str:
        """``RAW2READY_S3_`` or ``RAW2READY_SOURCE_S3_``: where this side is configured."""
        return ENV_PREFIX[self.side]

    @property
    def has_keys(self) -> bool:
        """Whether explicit keys are configured (else the default chain, or unsigned)."""
        return self.access_key_id is not None and self.secret_access_key is not None


class Settings(BaseSettings):
    """All deployment configuration. Every field maps to ``RAW2READY_<FIELD>`` in the environment.

    **Two storage sides.** ``RAW2READY_S3_*`` configure the *output* side; ``RAW2READY_SOURCE_S3_*``
    the *source* side. The rule for a source value that is not set:

    * ``RAW2READY_SOURCE_S3_ENDPOINT_URL`` unset: the source is on the **same server** as the outputs.
      Endpoint, region, addressing style and the key pair are inherited from ``RAW2READY_S3_*``; each
      can still be overridden by its own ``RAW2READY_SOURCE_S3_*`` variable. (A single MinIO holding
      both the archive and the products needs no ``SOURCE`` variable at all.)
    * ``RAW2READY_SOURCE_S3_ENDPOINT_URL`` set — to a URL, or to ``aws`` for AWS's own endpoints (what
      the public ``sentinel-s2-l1c``/``sentinel-s2-l2a``/``sentinel-cogs`` buckets need when the
      outputs go to a MinIO): the source is **another server** and inherits nothing. Region defaults to
      ``us-east-1``, addressing style to ``virtual`` for AWS and ``path`` for any other endpoint, and
      credentials to ``RAW2READY_SOURCE_S3_ACCESS_KEY_ID``/``…_SECRET_ACCESS_KEY`` or else boto3's
      default chain (environment, profile, IRSA) — never the output side's keys.
    * ``…_UNSIGNED`` and ``…_REQUESTER_PAYS`` describe how a bucket is accessed, not the server: they
      are **never inherited** and default to false on both sides. An unsigned source never inherits
      keys.

    Checked when the settings are loaded (:class:`~steps.errors.InvalidInputError`, exit 3): on each
    side, ``UNSIGNED`` together with explicit keys, ``UNSIGNED`` together with ``REQUESTER_PAYS``
    (AWS only bills signed requests), and an access key without its secret (or the reverse).
    """

    model_config = SettingsConfigDict(env_prefix="RAW2READY_", extra="ignore")

    # Object storage, output side (S3-compatible)
    s3_endpoint_url: str | None = Field(None, description="output S3 endpoint, e.g. http://minio:9000; unset = AWS")
    s3_region: str = Field("us-east-1", description="output S3 region")
    s3_access_key_id: str | None = Field(None, description="output S3 access key (unset: default boto3 chain)")
    s3_secret_access_key: SecretStr | None = Field(None, description="output S3 secret key")
    s3_unsigned: bool = Field(False, description="output side: anonymous (unsigned) requests")
    s3_requester_pays: bool = Field(False, description="output side: send x-amz-request-payer: requester")
    s3_addressing_style: AddressingStyle = Field("path", description="'path' (MinIO, moto) or 'virtual' (AWS)")

    # Object storage, source side (the input archive); unset values: see the class docstring
    source_s3_endpoint_url: str | None = Field(
        None, description="source S3 endpoint URL, or 'aws'; unset = the output side's server")
    source_s3_region: str | None = Field(None, description="source S3 region")
    source_s3_access_key_id: str | None = Field(None, description="source S3 access key")
    source_s3_secret_access_key: SecretStr | None = Field(None, description="source S3 secret key")
    source_s3_unsigned: bool = Field(False, description="source side: anonymous requests (e.g. sentinel-cogs)")
    source_s3_requester_pays: bool = Field(
        False, description="source side: requester-pays buckets (sentinel-s2-l1c, sentinel-s2-l2a)")
    source_s3_addressing_style: AddressingStyle | None = Field(None, description="source: 'path' or 'virtual'")

    # Processing
    workers: int = Field(2, ge=1, description="scenes processed in parallel by the local runner")
    retries: int = Field(3, ge=0, description="retries of transient failures per step")
    retry_backoff_s: float = Field(2.0, ge=0, description="first retry delay in seconds (doubles each time)")
    lai_network: LaiNetworkSet = Field("3_0", description="SNAP LAI network set: '3_0' (per platform) or '2_1'")
    cloud_resolution_m: CloudResolution = Field(60, description="s2cloudless evaluation resolution: 10, 20 or 60 m")
    cloud_mode: CloudMode = Field(
        "fast", description="s2cloudless evaluator: 'fast' (compiled model, proven same mask) or 'exact' "
                            "(LightGBM's predictor, no compile step, 5-6x slower)")
    cube: bool = Field(True, description="keep the time-series store (cube/<tile>) in step with the catalog "
                                         "after each catalog rebuild")

    # Defaults for work orders that do not name them
    source: str | None = Field(None, description="default STAC source for work orders (catalog or API URL)")
    out: str | None = Field(None, description="default output root for work orders (directory or s3://…)")

    # Services
    stac_api_url: str | None = Field(None, description="default STAC API for `run --source`")
    broker_url: str = Field("amqp://guest:guest@127.0.0.1:5672/%2F", description="RabbitMQ URL")
    queue_name: str = Field("raw2ready.orders", description="durable work-order queue")
    argo_server_url: str | None = Field(None, description="Argo Server, e.g. https://argo.example.org")
    argo_token: SecretStr | None = Field(None, description="Argo Server bearer token")
    argo_namespace: str = Field("raw2ready", description="namespace of the WorkflowTemplates")
    log_level: LogLevel = Field("INFO", description="logging level (any case): DEBUG, INFO, WARNING, ERROR, CRITICAL")
    pygeoapi_config: str | None = Field(
        None, validation_alias="PYGEOAPI_CONFIG",
        description="pygeoapi configuration file (pygeoapi's own variable, no prefix; set by `raw2ready serve`)")


    @field_validator("s3_endpoint_url", "s3_access_key_id", "s3_secret_access_key", "source_s3_endpoint_url",
                     "source_s3_region", "source_s3_access_key_id", "source_s3_secret_access_key",
                     "source_s3_addressing_style", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty variable (``RAW2READY_S3_ENDPOINT_URL=``) means unset, as in a ConfigMap placeholder."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("lai_network", mode="before")
    @classmethod
    def _lai_network_spelling(cls, value: object) -> object:
        """``3.0``, ``v2.1`` name the same sets as ``3_0``, ``2_1`` (as ``steps.science.lai.load_network`` reads
        them); anything else is refused when the process starts, not when the first LAI step runs."""
        return value.strip().lower().lstrip("v").replace(".", "_") if isinstance(value, str) else value

    @field_validator("cloud_resolution_m", mode="before")
    @classmethod
    def _cloud_resolution_divides_the_tile(cls, value: object) -> object:
        """A pixel size that does not divide the tile is refused with that reason (then the choices apply)."""
        try:
            metres = float(str(value).strip())
        except ValueError:
            return value  # not a number: the choices' own error
        check_divides_tile(metres, f"choose one of {', '.join(map(str, CLOUD_RESOLUTIONS_M))}")
        return int(metres) if metres == int(metres) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level_any_case(cls, value: object) -> object:
        """``info``, ``Debug`` name the levels as ``logging`` does; anything else is refused at start."""
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_storage_sides(self) -> Settings:
        """Refuse contradictory storage settings (see the class docstring)."""
        sides: tuple[Side, ...] = ("output", "source")
        for side in sides:
            self.s3_side(side)
        return self

    def s3_side(self, side: Side) -> S3Side:
        """The resolved configuration of one storage side, fallbacks applied and checked.

        Raises :class:`~steps.errors.InvalidInputError` for contradictory settings.
        """
        if side == "output":
            return _resolve(side, self.s3_endpoint_url, self.s3_region, self.s3_addressing_style,
                            self.s3_access_key_id, _secret(self.s3_secret_access_key),
                            self.s3_unsigned, self.s3_requester_pays)
        if side != "source":
            raise ValueError(f"unknown storage side {side!r} (expected 'source' or 'output')")
        key_id, secret = self.source_s3_access_key_id, _secret(self.source_s3_secret_access_key)
        if self.source_s3_endpoint_url is None:  # same server as the outputs
            endpoint = self.s3_endpoint_url
            region = self.source_s3_region or self.s3_region
            style = self.source_s3_addressing_style or self.s3_addressing_style
            if key_id is None and secret is None and not self.source_s3_unsigned:
                key_id, secret = self.s3_access_key_id, _secret(self.s3_secret_access_key)
        else:  # another server: nothing inherited
            endpoint = None if self.source_s3_endpoint_url.strip().lower() == AWS_ENDPOINT \
                else self.source_s3_endpoint_url
            region = self.source_s3_region or "us-east-1"
            style = self.source_s3_addressing_style or ("virtual" if endpoint is None else "path")
        return _resolve(side, endpoint, region, style, key_id, secret, self.source_s3_unsigned,
                        self.source_s3_requester_pays)


def check_divides_tile(metres: float, hint: str = "") -> None:
    """Refuse a pixel size whose grid does not cover the 109 800 m Sentinel-2 tile in whole pixels.

    Raises:
        ValueError: not positive, or ``TILE_SIZE_M / metres`` is not a whole number (``hint`` appended).
    """
    pixels = TILE_SIZE_M / metres if metres > 0 else math.nan
    if not (math.isfinite(pixels) and pixels.is_integer()):
        count = f" ({pixels:g} pixels)" if math.isfinite(pixels) else ""
        raise ValueError(f"{metres:g} m does not divide the {TILE_SIZE_M} m Sentinel-2 tile{count}"
                         + (f"; {hint}" if hint else ""))


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None


def _resolve(side: Side, endpoint: str | None, region: str, style: AddressingStyle, key_id: str | None,
             secret: str | None, unsigned: bool, requester_pays: bool) -> S3Side:
    """Check one side's values for contradictions and build its :class:`S3Side`."""
    p = ENV_PREFIX[side]
    if (key_id is None) != (secret is None):
        given, missing = ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY") if secret is None \
            else ("SECRET_ACCESS_KEY", "ACCESS_KEY_ID")
        raise InvalidInputError(f"{side} storage: {p}{given} is set but {p}{missing} is not; set both or neither")
    if unsigned and key_id is not None:
        raise InvalidInputError(
            f"{side} storage: {p}UNSIGNED=true (anonymous access) contradicts {p}ACCESS_KEY_ID/"
            f"{p}SECRET_ACCESS_KEY; unset the keys or the unsigned flag")
    if unsigned and requester_pays:
        raise InvalidInputError(
            f"{side} storage: {p}UNSIGNED=true contradicts {p}REQUESTER_PAYS=true (requester-pays buckets "
            "only serve signed requests); unset one of them")
    if endpoint is not None:
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            hint = " or 'aws'" if side == "source" else ""
            raise InvalidInputError(f"{side} storage: {p}ENDPOINT_URL={endpoint!r} is not an http(s):// URL{hint}")
    return S3Side(side=side, endpoint_url=endpoint, region=region, addressing_style=style,
                  access_key_id=key_id, secret_access_key=secret, unsigned=unsigned, requester_pays=requester_pays)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once from the environment).

    Invalid settings (a malformed value, contradictory storage settings) raise
    :class:`~steps.errors.InvalidInputError` naming the variable.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"RAW2READY_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors())
        raise InvalidInputError(f"invalid settings: {problems}") from exc
