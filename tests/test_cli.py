"""The command line: help texts, one-line errors and documented exit codes.

Most commands run in-process through Click's ``CliRunner`` (:func:`r2r_helpers.invoke_cli`); the tests whose
point is the process boundary — the installed console script, the exit code a pod returns to Argo — start
``raw2ready`` as a subprocess (:func:`r2r_helpers.run_cli`).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from r2r_helpers import invoke_cli, run_cli


@pytest.mark.parametrize("cmd", [[], ["run"], ["synth"], ["demo"], ["validate"], ["catalog", "rebuild"],
                                 ["step"], ["step", "ingest"], ["step", "ndvi"], ["step", "scenes"]])
def test_every_command_explains_itself(cmd: list[str]) -> None:
    res = invoke_cli(*cmd, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(" ".join(["Usage: raw2ready", *cmd]) + " [OPTIONS]"), res.stdout
    assert "\nOptions:\n" in res.stdout and "--help  " in res.stdout
    assert len(res.stdout.splitlines()) > 4


def test_the_installed_console_script_runs_and_maps_usage_errors_to_exit_2() -> None:
    """The real entrypoint (``raw2ready = steps.cli:entrypoint``), plugins included, in its own process."""
    res = run_cli("--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Usage: raw2ready [OPTIONS] COMMAND [ARGS]...")
    for plugin in ("demo", "render", "submit", "synth"):  # entry-point commands of the raw2ready.commands group
        assert f"\n  {plugin} " in res.stdout, plugin
    bad = run_cli("run", "--tiles", "47PPR")
    assert bad.returncode == 2 and "Missing option" in bad.stderr and "Traceback" not in bad.stderr


def _one_line_error(res, code: int, *needles: str) -> None:  # type: ignore[no-untyped-def]
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("raw2ready:")]
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert "Traceback" not in res.stderr


def test_unknown_tile_is_a_usage_error(tmp_path: Path, demo_archive: Path) -> None:
    res = invoke_cli("run", "--source", str(demo_archive), "--tiles", "47PPA", "--start", "2022-01-01",
                  "--end", "2022-01-31", "--out", str(tmp_path))
    _one_line_error(res, 2, "not a Sentinel-2 tile", "47PPA")


def test_end_before_start_is_a_usage_error(tmp_path: Path, demo_archive: Path) -> None:
    res = invoke_cli("run", "--source", str(demo_archive), "--tiles", "47PPR", "--start", "2022-02-01",
                  "--end", "2022-01-31", "--out", str(tmp_path))
    _one_line_error(res, 2, "before start")


def test_missing_source_is_invalid_input(tmp_path: Path) -> None:
    res = invoke_cli("run", "--source", str(tmp_path / "nowhere"), "--tiles", "47PPR", "--start", "2022-01-01",
                  "--end", "2022-01-31", "--out", str(tmp_path / "out"))
    _one_line_error(res, 3, "source not found")


def test_unreachable_remote_source_is_a_temporary_failure(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = run_cli("run", "--source", f"http://127.0.0.1:{port}/catalog.json", "--tiles", "47PPR",
                  "--start", "2022-01-01", "--end", "2022-01-31", "--out", str(tmp_path / "out"))
    _one_line_error(res, 75, "temporary failure")


def test_step_entrypoint_writes_argo_output_files(tmp_path: Path, demo_archive: Path) -> None:
    outdir = tmp_path / "outputs"
    res = invoke_cli("step", "scenes", "--source", str(demo_archive), "--tiles", "47PPR", "--start", "2022-02-01",
                  "--end", "2022-02-28", "--outputs-dir", str(outdir))
    assert res.returncode == 0, res.stderr
    assert (outdir / "count").read_text() == "1"
    import json

    scenes = json.loads((outdir / "scenes").read_text())
    assert [s["scene_id"] for s in scenes] == ["S2A_47PPR_20220202T034720"]
    assert json.loads(res.stdout)["count"] == 1


def test_step_with_bad_input_exits_3(tmp_path: Path) -> None:
    res = run_cli("step", "ingest", "--scene-id", "x", "--l2a-href", str(tmp_path / "missing.json"),
                  "--out", str(tmp_path))
    _one_line_error(res, 3, "not found")


def test_scenes_step_leaves_complete_scenes_out_unless_forced(tmp_path: Path, demo_archive: Path,
                                                              processed: Path) -> None:
    # the cluster's fan-out: a repeated order lists only what is still to do; --force lists everything
    import json

    args = ("step", "scenes", "--source", str(demo_archive), "--tiles", "47PPR,47PQR", "--start", "2022-01-01",
            "--end", "2022-02-28")
    every = json.loads(invoke_cli(*args).stdout)
    assert every["count"] == 4 and every["complete"] == 0
    done = json.loads(invoke_cli(*args, "--out", str(processed)).stdout)
    assert (done["count"], done["complete"]) == (0, 4) and json.loads(done["scenes"]) == []
    forced = invoke_cli(*args, "--out", str(processed), "--force", "true", "--outputs-dir", str(tmp_path / "o"))
    assert json.loads(forced.stdout)["count"] == 4 and (tmp_path / "o" / "complete").read_text() == "0"
    partial = tmp_path / "partial"
    shutil.copytree(processed, partial)
    for p in partial.rglob("S2A_47PPR_20220202T034720*.json"):  # one scene lost its sidecar
        p.unlink()
    left = json.loads(invoke_cli(*args, "--out", str(partial)).stdout)
    assert [s["scene_id"] for s in json.loads(left["scenes"])] == ["S2A_47PPR_20220202T034720"]
    assert left["complete"] == 3


def test_demo_leaves_a_valid_catalog_and_says_how_to_serve_it(demo_run: subprocess.CompletedProcess[str],
                                                             processed: Path) -> None:
    # The README's first command, at a small scene size, run once per test run by the `demo_run` fixture as a
    # subprocess (its tree is the `processed` fixture): exit 0, a catalog that validates (STAC schemas,
    # recursively, and every asset as a COG), and a closing hint that names `serve` with example queries.
    res = demo_run
    assert res.args[1:7] == ["-q", "demo", "--dir", str(processed.parent), "--size", "120"], res.args
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"scenes: (\d+) done, (\d+) skipped, 0 already complete, 0 failed", res.stdout)
    assert m, res.stdout
    assert int(m[1]) + int(m[2]) == 12 and int(m[1]) >= 8  # the fully clouded scenes are skipped, not failed
    assert int(m[2]) == len(list(processed.rglob("*.skipped.json")))
    assert "raw2ready serve --catalog" in res.stdout
    assert "/collections/ndvi/position?coords=POINT(" in res.stdout
    catalog = processed / "catalog.json"
    assert f"validate it:         raw2ready validate {catalog}" in res.stdout
    val = invoke_cli("validate", str(catalog))
    assert val.returncode == 0, val.stdout + val.stderr
    assert val.stdout.strip() == f"valid: {catalog}"


def test_validate_takes_an_output_root_or_its_catalog_and_refuses_a_folder_without_one(processed: Path,
                                                                                      tmp_path: Path) -> None:
    root = invoke_cli("validate", "--no-cogs", str(processed))
    assert root.returncode == 0 and root.stdout.strip() == f"valid: {processed / 'catalog.json'}"
    empty = invoke_cli("validate", str(tmp_path))
    assert empty.returncode == 3
    assert f"no catalog.json in {tmp_path}" in empty.stderr and "Errno" not in empty.stderr
