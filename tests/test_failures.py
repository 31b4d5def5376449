"""The failure record ``failures/<scene_id>.json``: written by the failing step on either path, cleared by
the step that completes the scene, never in the way of the real error (steps/pipeline/failures.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from r2r_helpers import run_cli

TILE, START, END = "47PQR", "2021-12-05", "2022-01-31"
BAD = "S2B_47PQR_20211209T034720"  # a clear scene: all six steps run
CLOUDED = "S2B_47PQR_20220123T034720"  # fully clouded: mask records it as skipped


@pytest.fixture
def archive(demo_archive: Path, tmp_path: Path) -> Path:
    """A private copy of the demo archive (tests corrupt and repair its bands); returns its catalog.json."""
    root = tmp_path / "archive"
    shutil.copytree(demo_archive.parent, root)
    return root / "catalog.json"


def _scene(catalog: Path, scene_id: str):  # type: ignore[no-untyped-def]
    from steps.sentinel2.source import find_scenes

    return next(s for s in find_scenes(str(catalog), [TILE], START, END) if s.scene_id == scene_id)


def _corrupt(scene) -> bytes:  # type: ignore[no-untyped-def]
    """Truncate the scene's red band (an unreadable GeoTIFF: exit 3 at ingest); return the original bytes."""
    band = Path(scene.l2a_href).parent / "B04.tif"
    original = band.read_bytes()
    band.write_bytes(original[:200])
    return original


def _repair(scene, original: bytes) -> None:  # type: ignore[no-untyped-def]
    (Path(scene.l2a_href).parent / "B04.tif").write_bytes(original)


def _ingest(scene, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli("step", "ingest", "--scene-id", scene.scene_id, "--l2a-href", scene.l2a_href,
                   "--l1c-href", scene.l1c_href, "--resolution", str(scene.resolution), "--out", str(out), *extra)


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.startswith("raw2ready:")]
    assert len(lines) == 1, stderr
    return lines[0]


def _record(out: Path, scene_id: str) -> dict:  # type: ignore[type-arg]
    return json.loads((out / "failures" / f"{scene_id}.json").read_text())


def test_a_step_command_failing_with_exit_3_records_its_step_and_exit_code(archive: Path, tmp_path: Path) -> None:
    from steps.ops.audit import audit, status_rows
    from steps.sentinel2.source import find_scenes
    from steps.storage import open_storage

    bad = _scene(archive, BAD)
    _corrupt(bad)
    out = tmp_path / "out"
    res = _ingest(bad, out)
    assert res.returncode == 3, res.stderr
    line = _error_line(res.stderr)
    assert line.startswith("raw2ready: invalid input: ") and "Traceback" not in res.stderr
    rec = _record(out, BAD)
    assert (rec["scene_id"], rec["status"], rec["step"], rec["exit_code"]) == (BAD, "failed", "ingest", 3)
    # the record's error is the message the process printed, with the exception type instead of the kind
    assert rec["error"].startswith("InvalidInputError: ")
    assert rec["error"].removeprefix("InvalidInputError: ").splitlines()[0] == \
        line.removeprefix("raw2ready: invalid input: ")
    assert rec["scene"] == {"scene_id": BAD, "tile": TILE, "datetime": "2021-12-09T03:47:20Z"}
    assert bad.datetime.replace(microsecond=0).isoformat() == "2021-12-09T03:47:20+00:00"  # source time, UTC
    # the readers: audit says failed (not missing) with step and exit code, status counts it
    storage = open_storage(out)
    verdicts = {v.scene_id: v for v in audit(storage, find_scenes(str(archive), [TILE], START, END)).scenes}
    assert verdicts[BAD].state == "failed" and verdicts[CLOUDED].state == "missing"
    assert verdicts[BAD].problems[0].startswith("step ingest exit 3: InvalidInputError: ")
    assert dict(status_rows(storage))["2021-12"]["failed"] == 1


def test_a_later_success_in_the_runner_clears_the_record(archive: Path, tmp_path: Path) -> None:
    from steps.pipeline.runner import run_scene
    from steps.settings import get_settings

    bad = _scene(archive, BAD)
    original = _corrupt(bad)
    out = tmp_path / "out"
    assert _ingest(bad, out).returncode == 3
    assert (out / "failures" / f"{BAD}.json").exists()
    _repair(bad, original)
    result = run_scene(bad, str(out), get_settings())  # the local runner; stac publishes and clears
    assert result.status == "done", result.error
    assert list(out.rglob(f"{BAD}.json")) == [out / "raw2ready-s2-vegetation" / "2021" / "Q4" / "12" / BAD /
                                              f"{BAD}.json"]  # the item sidecar, and no failure record


def test_a_later_skip_by_the_mask_step_command_clears_the_record(archive: Path, tmp_path: Path) -> None:
    clouded = _scene(archive, CLOUDED)
    original = _corrupt(clouded)
    out = tmp_path / "out"
    assert _ingest(clouded, out).returncode == 3
    assert _record(out, CLOUDED)["step"] == "ingest"
    _repair(clouded, original)
    outputs = tmp_path / "outputs"
    assert _ingest(clouded, out, "--outputs-dir", str(outputs)).returncode == 0
    # a success that does not complete the scene leaves the record: the scene is still not done
    assert _record(out, CLOUDED)["step"] == "ingest"
    mask = run_cli("step", "mask", "--scene", (outputs / "scene").read_text(), "--out", str(out),
                   "--outputs-dir", str(outputs))
    assert mask.returncode == 0, mask.stderr
    assert (outputs / "status").read_text() == "skipped"
    assert list(out.rglob(f"{CLOUDED}.skipped.json")) and not (out / "failures" / f"{CLOUDED}.json").exists()


def test_a_failure_while_writing_the_record_keeps_the_exit_code_and_error(archive: Path, tmp_path: Path) -> None:
    bad = _scene(archive, BAD)
    _corrupt(bad)
    plain = _ingest(bad, tmp_path / "plain")
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "failures").write_text("a file where the failures/ folder would go")
    res = _ingest(bad, blocked)
    assert (plain.returncode, res.returncode) == (3, 3)
    assert _error_line(res.stderr) == _error_line(plain.stderr)
    assert f"could not record the failure of {BAD}" in res.stderr and "Traceback" not in res.stderr
    assert (blocked / "failures").read_text().startswith("a file")


def test_the_runner_and_the_step_command_write_the_same_record_bytes(archive: Path, tmp_path: Path) -> None:
    from steps.pipeline.runner import run_scenes
    from steps.settings import get_settings

    bad = _scene(archive, BAD)
    _corrupt(bad)
    assert _ingest(bad, tmp_path / "step").returncode == 3
    summary = run_scenes([bad], str(tmp_path / "run"), settings=get_settings())
    [r] = summary.results
    assert (r.status, r.step, r.exit_code, r.recorded) == ("failed", "ingest", 3, True)
    key = Path("failures") / f"{BAD}.json"
    assert (tmp_path / "run" / key).read_bytes() == (tmp_path / "step" / key).read_bytes()


def test_the_runner_records_only_failures_no_step_recorded(tmp_path: Path) -> None:
    from steps.pipeline.failures import failure_record
    from steps.pipeline.runner import SceneResult, record_outcome
    from steps.storage import open_storage

    storage = open_storage(tmp_path)
    key = tmp_path / "failures" / f"{BAD}.json"
    # a worker process that died: no step could write the record, the runner does (same format)
    record_outcome(storage, SceneResult(BAD, "failed", error="worker died: killed", exit_code=1))
    assert key.read_bytes() == failure_record(BAD, "", 1, "worker died: killed")
    # a failure the step already recorded is not written a second time with the runner's view of it
    record_outcome(storage, SceneResult(BAD, "failed", error="other", exit_code=3, step="mask", recorded=True))
    assert json.loads(key.read_bytes())["error"] == "worker died: killed"


def test_only_per_scene_steps_name_a_scene() -> None:
    from steps.pipeline.registry import STEPS

    def scene_of(step: str, **kw: object) -> str | None:
        return STEPS[step].Inputs.model_construct(**kw).scene_of()  # type: ignore[no-any-return]

    assert scene_of("ingest", scene_id=BAD, out="s3://b/p") == BAD
    for step in ("mask", "ndvi", "lai", "cog", "stac"):
        assert scene_of(step, scene=f"s3://b/p/work/{BAD}/scene.json", out="s3://b/p") == BAD, step
    assert scene_of("mask", scene="s3://b/p/elsewhere/scene.json", out="s3://b/p") is None
    assert scene_of("catalog", out="s3://b/p") is None
    assert scene_of("scenes", source="x", tiles=TILE, start=START, end=END, out="") is None
