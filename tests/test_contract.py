"""The step contract: the registry, the per-scene DAG and the generated CLI stay in line, by name."""

from __future__ import annotations

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
