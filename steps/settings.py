"""Deployment settings: the one place raw2ready reads its environment (prefix ``RAW2READY_``).

Per-run values (tile, dates, hrefs) are arguments; deployment values (endpoints, buckets, broker,
STAC API) come from here — in the cluster from a ConfigMap and a Secret.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All deployment configuration. Every field maps to ``RAW2READY_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RAW2READY_", extra="ignore")

    # Object storage (S3-compatible)
    s3_endpoint_url: str | None = Field(None, description="S3 API endpoint, e.g. http://minio:9000; unset = AWS")
    s3_region: str = Field("us-east-1", description="S3 region")
    s3_access_key_id: str | None = Field(None, description="S3 access key (unset: default boto3 chain)")
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key")
    s3_requester_pays: bool = Field(False, description="send x-amz-request-payer for source buckets")
    s3_addressing_style: str = Field("path", description="'path' (MinIO, moto) or 'virtual' (AWS)")

    # Processing
    workers: int = Field(2, ge=1, description="scenes processed in parallel by the local runner")
    retries: int = Field(3, ge=0, description="retries of transient failures per step")
    retry_backoff_s: float = Field(2.0, ge=0, description="first retry delay in seconds (doubles each time)")
    lai_network: str = Field("3_0", description="SNAP LAI network set: '3_0' (per platform) or '2_1'")
    cloud_resolution_m: int = Field(60, description="s2cloudless evaluation resolution: 20, 60 or 160 m")
    work_prefix: str = Field("work", description="folder under --out for intermediate step outputs")

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
    log_level: str = Field("INFO", description="logging level")
    pygeoapi_config: str | None = Field(
        None, validation_alias="PYGEOAPI_CONFIG",
        description="pygeoapi configuration file (pygeoapi's own variable, no prefix; set by `raw2ready serve`)")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process-wide settings (read once from the environment)."""
    return Settings()
