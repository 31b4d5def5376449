"""Helpers shared by the tests (a unique module name: a third-party wheel ships a top-level ``tests``)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

SMALL = 120  # scene side in 10 m pixels for most tests (multiple of 6)
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


COUNTS_PROPERTY = "raw2ready_counts"
"""``record_property`` key of the count lines the broker-fault and soak tests report (sent, acked, lost, …);
``conftest.pytest_terminal_summary`` prints them at the end of the run."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the installed ``raw2ready`` console script in a subprocess."""
    exe = shutil.which("raw2ready", path=str(Path(sys.executable).parent)) or "raw2ready"
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([exe, *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False)


def invoke_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``raw2ready ARGS`` in this process with Click's ``CliRunner``; the result looks like :func:`run_cli`'s.

    For tests where the process boundary is not the point (it saves the ~1.5 s of CPU a ``raw2ready`` process
    spends importing). What a process would see is reproduced: ``env`` is added to the environment, the
    settings cache is cleared before and after, logging goes to the captured stderr as the command configures
    it (``-q``/``-v``/``RAW2READY_LOG_LEVEL``), and an unexpected exception gives exit 1 with one
    ``raw2ready: error:`` line as :func:`steps.cli.entrypoint` prints it (the exception itself is kept as the
    result's ``exception`` attribute, for the test's own message). The environment, the root logger and the
    levels the command sets are restored afterwards.
    """
    import logging
    import traceback

    from click.testing import CliRunner

    from steps.cli import main
    from steps.settings import get_settings

    saved_env = dict(os.environ)
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    loggers = ["raw2ready", "botocore", "boto3", "urllib3", "rasterio", "rio_cogeo", "s3transfer", "stac_validator",
               "pika"]
    saved_levels = {n: logging.getLogger(n).level for n in loggers}
    os.environ.update(env or {})
    get_settings.cache_clear()
    root.handlers = []  # so that the command's logging.basicConfig installs its stderr handler, as in a process
    try:
        res = CliRunner().invoke(main, list(args), catch_exceptions=True, prog_name="raw2ready")
    finally:
        for h in root.handlers:
            h.close()
        root.handlers, _ = saved_root
        root.setLevel(saved_root[1])
        for n, level in saved_levels.items():
            logging.getLogger(n).setLevel(level)
        os.environ.clear()
        os.environ.update(saved_env)
        get_settings.cache_clear()
    code, stderr = res.exit_code, res.stderr
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        code = 1
        stderr += f"raw2ready: error: {res.exception}\n"
    out = subprocess.CompletedProcess(["raw2ready", *args], code, res.stdout, stderr)
    out.exception = res.exception  # type: ignore[attr-defined]
    out.traceback = "".join(traceback.format_exception(res.exception)) if res.exception else ""  # type: ignore[attr-defined]
    return out


def make_bucket(name: str) -> None:
    """Create a bucket on the configured S3 endpoint (idempotent)."""
    from steps.storage import s3_client

    client = s3_client()
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if name not in existing:
        client.create_bucket(Bucket=name)


def upload_tree(local: Path, bucket: str, prefix: str) -> None:
    """Copy a local folder into s3://bucket/prefix (for source archives)."""
    from steps.storage import open_storage

    st = open_storage(f"s3://{bucket}/{prefix}")
    for p in sorted(local.rglob("*")):
        if p.is_file():
            st.put_file(p, p.relative_to(local).as_posix())


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` (relative path → bytes), with the time-series store (``cube/``) by content.

    The store's files depend on its history (segment names, how dates were grouped into segments); what must
    match between two trees is what it holds: ``cube/<tile>/<item>/<product>`` → the asset checksum it was
    copied from and the stored array of that date (read with zarr).
    """
    out = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
           if p.is_file() and not p.relative_to(root).as_posix().startswith("cube/")}
    return {**out, **store_contents(root)}


def store_contents(root: Path) -> dict[str, bytes]:
    """``cube/<tile>/<item>/<product>`` → checksum + stored values of that date, for every date held."""
    import hashlib
    import json

    import numpy as np
    import zarr
    import zarr.storage

    out: dict[str, bytes] = {}
    for man_path in sorted(root.glob("cube/*/manifest.json")):
        man = json.loads(man_path.read_text())
        for seg in man["segments"]:
            store = zarr.storage.LocalStore(man_path.parent / "segments" / seg["name"], read_only=True)
            for key in man["grids"]:
                data = np.asarray(zarr.open_array(store, path=key, mode="r")[:])
                for t, e in enumerate(seg["entries"]):
                    digest = hashlib.sha256(np.ascontiguousarray(data[t]).tobytes()).hexdigest()
                    out[f"cube/{man['tile']}/{e['item']}/{key}"] = f"{e['checksums'][key]} {digest}".encode()
    return out

