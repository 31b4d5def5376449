"""``raw2ready serve``: write the pygeoapi configuration for a catalog and serve it with gunicorn.

Joins the ``raw2ready`` command through ``steps.cli.EXTRA_COMMAND_MODULES`` (this module's ``COMMANDS``).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from steps.errors import InvalidInputError, UsageError

log = logging.getLogger(__name__)


@click.command("serve")
@click.option("--catalog", required=True, help="Product output root: a directory or s3://bucket/prefix.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=5000, show_default=True, type=click.IntRange(0, 65535), help="Port to bind.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64),
              help="gunicorn worker processes.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 64),
              help="Request threads per worker (gthread).")
@click.option("--read-workers", default=8, show_default=True, type=click.IntRange(1, 128),
              help="COG read threads per worker process.")
@click.option("--pixel-budget", default=4_000_000, show_default=True, type=click.IntRange(1),
              help="Largest request in values (pixels × time steps × parameters); larger ones get 400.")
@click.option("--cube/--no-cube", default=True, show_default=True,
              help="Answer multi-date queries from the time-series store (cube/<tile>, see `raw2ready cube`) "
                   "for the dates it holds; --no-cube reads every date from the COGs.")
@click.option("--url", default=None, help="Public base URL (default http://HOST:PORT).")
@click.option("--config-out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Directory for pygeoapi-config.yml and pygeoapi-openapi.yml (default: a temporary one).")
@click.option("--write-config-only", is_flag=True, help="Write the configuration and OpenAPI document, then exit.")
@click.option("--log-level", default="WARNING", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="pygeoapi/gunicorn log level.")
def serve(catalog: str, host: str, port: int, workers: int, threads: int, read_workers: int, pixel_budget: int,
          cube: bool, url: str | None, config_out: Path | None, write_config_only: bool, log_level: str) -> None:
    """Serve NDVI and LAI over OGC API-EDR (pygeoapi + gunicorn) straight from the catalog's COGs.

    \b
    Writes the pygeoapi configuration and OpenAPI document for the catalog (the Kubernetes manifests run
    this same command with --write-config-only), prints example query URLs, then runs gunicorn.
    Example:
      raw2ready serve --catalog ./products --port 5000
    """
    from steps.edr.config import ServeOptions, example_urls, write_config
    from steps.edr.index import load_index

    try:
        index, _storage = load_index(catalog)
    except FileNotFoundError as exc:
        raise InvalidInputError(f"no catalog index below {catalog} (run `raw2ready catalog rebuild` first)") from exc
    opts = ServeOptions(catalog=catalog, host=host, port=port, url=url, pixel_budget=pixel_budget,
                        read_workers=read_workers, cube=cube, log_level=log_level)
    out = config_out or Path(tempfile.mkdtemp(prefix="raw2ready-edr-"))
    cfg_path, oas_path = write_config(opts, index, out)
    click.echo(f"pygeoapi configuration: {cfg_path}")
    click.echo(f"OpenAPI document:       {oas_path}")
    click.echo("example queries:")
    for u in example_urls(opts, index):
        click.echo(f"  {u}")
    if write_config_only:
        return
    gunicorn = shutil.which("gunicorn", path=str(Path(sys.executable).parent)) or shutil.which("gunicorn")
    if gunicorn is None:
        raise UsageError("gunicorn is not installed (pip install 'raw2ready[serve]')")
    # pygeoapi reads its configuration from these two variables; gunicorn inherits the environment
    os.environ["PYGEOAPI_CONFIG"] = str(cfg_path.resolve())
    os.environ["PYGEOAPI_OPENAPI"] = str(oas_path.resolve())
    argv = [gunicorn, "--bind", f"{host}:{port}", "--workers", str(workers), "--threads", str(threads),
            "--worker-class", "gthread", "--log-level", log_level.lower(), "--timeout", "120",
            "steps.edr.app:application"]
    click.echo(f"serving on http://{host}:{port} (Ctrl-C to stop)", err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(gunicorn, argv)  # replace this process: signals reach gunicorn directly (containers)


COMMANDS: list[click.Command] = [serve]
