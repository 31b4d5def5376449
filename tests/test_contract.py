"""The step contract: the registry, the per-scene DAG and the generated CLI stay in line, by name."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pytest

from steps.cli import step as step_group
from steps.pipeline.registry import SCENE_DAG, STEPS, WORKFLOW_PARAMS
from steps.sentinel2.source import SceneRef


def test_every_step_is_kebab_case_with_described_scalar_fields() -> None:
    assert {"scenes", "ingest", "mask", "ndvi", "cog", "stac", "catalog"} <= set(STEPS)
    for name, st in STEPS.items():
        assert st.name == name and name == name.lower() and "_" not in name
        for f in [*st.input_fields().values(), *st.output_fields().values()]:
            assert f.description and f.annotation in (str, int, float, bool)


def test_dag_feeds_every_required_input_from_a_declared_source() -> None:
    seen: set[str] = set()
    scene_fields = set(SceneRef.model_fields)
    for task in SCENE_DAG:
        st = STEPS[task.step]
        required = {n for n, f in st.input_fields().items() if f.is_required()}
        assert required <= set(task.args), (task.name, required - set(task.args))
        assert set(task.args) <= set(st.input_fields()), task.name
        for ref in task.args.values():
            if ref.kind == "scene":
                assert ref.name in scene_fields
            elif ref.kind == "param":
                assert ref.name in WORKFLOW_PARAMS
            else:
                assert ref.name in seen, f"{task.name} uses {ref} before it runs"
                producer = next(t for t in SCENE_DAG if t.name == ref.name)
                assert ref.output in STEPS[producer.step].output_fields(), str(ref)
        assert set(task.depends) <= seen
        seen.add(task.name)
    assert [t.name for t in SCENE_DAG][:2] == ["ingest", "mask"] and SCENE_DAG[-1].name == "stac"


@pytest.mark.parametrize("name", sorted(STEPS))
def test_generated_cli_options_match_the_inputs_model(name: str) -> None:
    cmd = step_group.commands[name]
    opts = {p.name: p for p in cmd.params if isinstance(p, click.Option) and p.name != "outputs_dir"}
    fields = STEPS[name].input_fields()
    assert set(opts) == set(fields)
    for fname, f in fields.items():
        assert opts[fname].required == f.is_required()
        assert opts[fname].opts == [f"--{fname.replace('_', '-')}"]


# ------------------------------------------------------------------------------------------ the one step base
def test_the_cli_offers_exactly_the_registered_steps_and_every_scene_step_names_its_scene() -> None:
    from steps.pipeline.contract import StatusOutputs

    assert set(step_group.commands) == set(STEPS)
    scene = SimpleNamespace(scene_id=SCENE_ID, l2a_href="/a/item.json", l1c_href="", resolution=0)
    out = "s3://b/p"
    produced = {"ingest": {"scene": f"{out}/work/{scene.scene_id}/scene.json"}}
    for task in SCENE_DAG:
        st = STEPS[task.step]
        args = {n: getattr(scene, r.name) if r.kind == "scene" else out if r.kind == "param"
                else produced.get(r.name, {}).get(r.output, "x") for n, r in task.args.items()}
        # a per-scene step whose inputs do not name the scene would write no failure record
        assert st.Inputs.model_construct(**args).scene_of() == scene.scene_id, task.name
        assert issubclass(st.Outputs, StatusOutputs) and list(st.output_fields())[-1] == "status", task.name
    assert STEPS["catalog"].Inputs(out=out).scene_of() is None
    # the bodies take the scene and the storage from the context the base opened, never open their own
    for task in SCENE_DAG:
        module = importlib.import_module(STEPS[task.step].body.__module__)
        assert not {"open_storage", "load_scene"} & set(vars(module)), module.__name__


def test_parameter_order_is_leading_declared_trailing_and_a_misnamed_order_is_refused() -> None:
    from pydantic import Field

    from steps.pipeline.contract import CloudMaskInputs, StatusOutputs, Step

    class Inputs(CloudMaskInputs):
        extra: int = Field(0, description="own field")

    class Outputs(StatusOutputs):
        href: str = Field(description="own output")

    assert list(Inputs.model_fields) == ["scene", "out", "cloud_mask", "extra"]  # pydantic's order
    assert list(Inputs.parameters()) == ["scene", "cloud_mask", "out", "extra"]  # the published one
    assert list(Outputs.parameters()) == ["href", "status"]
    assert list(STEPS["ndvi"].input_fields()) == ["scene", "cloud_mask", "out"]

    class Misnamed(Outputs):
        trailing = ("stauts",)

    with pytest.raises(TypeError, match="stauts"):
        Step("bad", "a typo in the order", Inputs, Misnamed, lambda i, c: Misnamed(href=""))


def test_status_defaults_to_done_and_an_unknown_status_is_refused() -> None:
    from pydantic import ValidationError

    out = STEPS["cog"].Outputs(assets="{}")
    assert out.status == "done"  # type: ignore[attr-defined]
    assert STEPS["mask"].Outputs(cloud_mask="", clear_fraction=0.0, method="scl", provenance="{}",
                                 status="skipped").status == "skipped"  # type: ignore[attr-defined]
    with pytest.raises(ValidationError, match="finished"):
        STEPS["cog"].Outputs(assets="{}", status="finished")


SCENE_ID = "S2B_47PQR_20211209T034720"


class _Counted:
    """Counts the calls of a function it wraps."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.fn(*args, **kwargs)


def _fake_scene(monkeypatch: pytest.MonkeyPatch) -> _Counted:
    """``load_scene`` in the contract returns a stand-in scene (the base, not the science, is under test)."""
    import steps.pipeline.contract as contract

    loads = _Counted(lambda href: SimpleNamespace(scene_id=SCENE_ID, href=href))
    monkeypatch.setattr(contract, "load_scene", loads)
    return loads


def _probe_step(body: Callable[..., Any]) -> Any:
    from pydantic import Field

    from steps.pipeline.contract import CloudMaskInputs, StatusOutputs, Step

    class ProbeOutputs(StatusOutputs):
        href: str = Field(description="what the body wrote")

    return Step("probe", "a step for testing the base", CloudMaskInputs, ProbeOutputs, body)


def test_the_base_opens_storage_and_scene_once_and_the_body_gets_them(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import steps.pipeline.contract as contract
    from steps.settings import get_settings

    loads = _fake_scene(monkeypatch)
    opens = _Counted(contract.open_storage)
    monkeypatch.setattr(contract, "open_storage", opens)
    seen: list[Any] = []

    def body(inputs: Any, ctx: Any) -> Any:
        assert ctx.scene is ctx.scene and ctx.storage is ctx.storage
        seen.append(ctx)
        ctx.storage.write_bytes(ctx.work_key("probe.txt"), b"x")
        return step.Outputs(href=ctx.storage.url(ctx.work_key("probe.txt")))

    step = _probe_step(body)
    inputs = step.Inputs(scene=f"{tmp_path}/work/{SCENE_ID}/scene.json", cloud_mask="m.tif", out=str(tmp_path))
    result = step.run(inputs, get_settings())
    assert result.status == "done" and (tmp_path / "work" / SCENE_ID / "probe.txt").read_bytes() == b"x"
    assert (opens.calls, loads.calls) == (1, 1)
    assert seen[0].scene_id == SCENE_ID and seen[0].work == f"work/{SCENE_ID}"


@pytest.mark.parametrize("defect", ["raises", "returns-the-wrong-outputs"])
def test_a_failing_body_is_recorded_once_with_the_step_storage(defect: str, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import steps.pipeline.contract as contract
    from steps.errors import InvalidInputError
    from steps.settings import get_settings

    _fake_scene(monkeypatch)
    opens = _Counted(contract.open_storage)
    monkeypatch.setattr(contract, "open_storage", opens)

    def body(inputs: Any, ctx: Any) -> Any:
        if defect == "raises":
            raise InvalidInputError("band B04 unreadable")
        return STEPS["cog"].Outputs(assets="{}")  # another step's outputs: a body that forgot its own model

    step = _probe_step(body)
    inputs = step.Inputs(scene=f"{tmp_path}/work/{SCENE_ID}/scene.json", cloud_mask="m.tif", out=str(tmp_path))
    expected = InvalidInputError if defect == "raises" else TypeError
    with pytest.raises(expected) as info:
        step.run(inputs, get_settings())
    record = json.loads((tmp_path / "failures" / f"{SCENE_ID}.json").read_text())
    assert (record["step"], record["exit_code"]) == ("probe", 3 if defect == "raises" else 1)
    assert record["error"] == f"{expected.__name__}: {info.value}"
    if defect != "raises":
        assert "CogOutputs" in str(info.value) and "ProbeOutputs" in str(info.value)
    assert opens.calls == 1  # the failure record went through the step's own storage


def test_a_step_that_is_not_per_scene_records_nothing(tmp_path: Path) -> None:
    from steps.errors import InvalidInputError
    from steps.pipeline.contract import Step
    from steps.settings import get_settings

    catalog = STEPS["catalog"]

    def body(inputs: Any, ctx: Any) -> Any:
        raise InvalidInputError("no")

    step = Step("probe-catalog", "fails", catalog.Inputs, catalog.Outputs, body)
    with pytest.raises(InvalidInputError):
        step.run(catalog.Inputs(out=str(tmp_path)), get_settings())
    assert not (tmp_path / "failures").exists()
    with pytest.raises(TypeError, match="inputs are"):
        step.run(STEPS["mask"].Inputs(scene="s", out=str(tmp_path)), get_settings())


@pytest.mark.s3
def test_two_scenes_in_one_process_share_one_s3_client(s3_env: dict[str, str], demo_archive: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner or worker process processing many scenes creates one boto3 client per S3 side, not one per
    step or scene, and each step run opens its output storage once."""
    import steps.pipeline.contract as contract
    import steps.storage as storage
    from steps.pipeline.runner import run_scenes
    from steps.sentinel2.source import find_scenes
    from steps.settings import get_settings

    from r2r_helpers import make_bucket

    make_bucket("clients")
    scenes = list(find_scenes(str(demo_archive), ["47PQR"], "2021-12-01", "2021-12-10"))
    assert len(scenes) == 2
    monkeypatch.setattr(storage, "_CLIENTS", {})
    clients = _Counted(storage._new_client)
    monkeypatch.setattr(storage, "_new_client", clients)
    opens = _Counted(contract.open_storage)
    monkeypatch.setattr(contract, "open_storage", opens)
    summary = run_scenes(scenes, "s3://clients/run", settings=get_settings())
    assert [r.status for r in summary.results] == ["done", "done"], [r.error for r in summary.results]
    assert clients.calls == 1  # the output side; the source archive is local
    assert opens.calls == 2 * 6 + 1  # once per step run: six per scene, and the catalog
