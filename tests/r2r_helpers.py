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

