"""Shared fixtures: a small synthetic archive, a processed product tree, and a real S3 API server.

The S3 server is moto in server mode (``ThreadedMotoServer``) on a free loopback port; the code under test
reaches it over HTTP exactly as it would reach MinIO or AWS — with boto3 and with GDAL's ``/vsis3/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from r2r_helpers import COUNTS_PROPERTY, SMALL, _free_port, run_cli


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the count lines of the fault and soak tests at the end of the run, also under xdist and without -s."""
    lines = sorted({f"{rep.nodeid}: {value}" for reports in terminalreporter.stats.values() for rep in reports
                    if getattr(rep, "when", None) == "call"
                    for key, value in getattr(rep, "user_properties", ()) if key == COUNTS_PROPERTY})
    if lines:
        terminalreporter.section("broker fault and soak counts")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings are cached per process; every test starts from a clean environment view."""
    from steps.settings import get_settings

    for k in list(os.environ):
        if k.startswith("RAW2READY_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("RAW2READY_RETRY_BACKOFF_S", "0.05")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo scenes (2 tiles, both baselines, a duplicate, a clouded scene, a no-L1C scene), small."""
    from synthesizer import demo_specs, synthesize_archive

    root = tmp_path_factory.mktemp("archive")
    return synthesize_archive(root, demo_specs(), size=SMALL, seed=0)


@pytest.fixture(scope="session")
def demo_range() -> tuple[list[str], str, str]:
    """Tiles and date range covering every demo scene."""
    from synthesizer import demo_specs

    specs = demo_specs()
    return (sorted({s.tile for s in specs}), min(s.datetime for s in specs).date().isoformat(),
            max(s.datetime for s in specs).date().isoformat())


@pytest.fixture(scope="session")
def processed(demo_archive: Path, demo_range: tuple[list[str], str, str],
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo archive processed once by the CLI into a local product tree (read-only for tests)."""
    tiles, start, end = demo_range
    out = tmp_path_factory.mktemp("products")
    res = run_cli("-q", "run", "--source", str(demo_archive), "--tiles", ",".join(tiles), "--start", start,
                  "--end", end, "--out", str(out), "--workers", "2", env={"RAW2READY_RETRY_BACKOFF_S": "0.05"})
    assert res.returncode == 0, res.stdout + res.stderr
    return out


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 API server on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment pointing raw2ready (boto3 and GDAL) at the moto server; also set in os.environ."""
    from steps.settings import get_settings

    env = {
        "RAW2READY_S3_ENDPOINT_URL": s3_server,
        "RAW2READY_S3_ACCESS_KEY_ID": "testing",
        "RAW2READY_S3_SECRET_ACCESS_KEY": "testing",
        "RAW2READY_S3_REGION": "us-east-1",
        "RAW2READY_RETRY_BACKOFF_S": "0.05",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    return env


