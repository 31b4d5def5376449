"""The rendered Argo objects, executed: static resolution, broken copies, runs through the local executor.

``tests/argo_local.py`` interprets what ``kubectl kustomize manifests/overlays/dev`` emits: every reference
must resolve (a broken copy fails with its location), the pipeline run pod by pod (each container's
command as a subprocess, S3 through a moto server) gives the same catalog bytes as ``raw2ready run``, a real
RabbitMQ message taken off the broker becomes the Workflow through the Sensor, and a failed scene makes the
Workflow fail the way Argo's DAG rules say. See docs/ARGO_LOCAL.md for what only a cluster shows.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from argo_local import (
    ROOT,
    ArgoLocalError,
    Build,
    Executor,
    LocalCluster,
    Node,
    amqp_config,
    broker_url_of,
    check,
    consume_event,
    kustomize_build,
    sensor_workflows,
    workflow_for,
)

DEV = ROOT / "manifests" / "overlays" / "dev"
BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
# Slices of the demo archive that keep the runs short (every pod is a `raw2ready` process) and still cover
# the DAG's branches: tile 47PPR from mid-January to February 2022 has a clear scene (all six steps) and a
# fully clouded one (mask skips it: ndvi/lai/cog/stac Skipped by `when`).
TILE, START, END = "47PPR", "2022-01-15", "2022-02-28"
# 47PQR from December 2021 to January 2022, with the 2021-12-09 scene's red band corrupted: that scene
# fails at ingest (exit 3, not retried); the clouded 2022-01-23 scene is skipped and recorded.
BAD_TILE, BAD_START, BAD_END = "47PQR", "2021-12-05", "2022-01-31"
BAD_SCENE_DIR, BAD_SCENE = "S2B_47PQR_20211209_0_L2A", "S2B_47PQR_20211209T034720"


def dev_objects() -> list[dict[str, Any]]:
    """A fresh deep copy of the dev overlay's objects (tests modify their copy)."""
    return kustomize_build(DEV)


def _obj(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


def _tmpl(objs: list[dict[str, Any]], wt: str, name: str) -> dict[str, Any]:
    return next(t for t in _obj(objs, "WorkflowTemplate", wt)["spec"]["templates"] if t["name"] == name)


def _task(objs: list[dict[str, Any]], wt: str, dag: str, task: str) -> dict[str, Any]:
    return next(t for t in _tmpl(objs, wt, dag)["dag"]["tasks"] if t["name"] == task)


def _arg(task: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in task["arguments"]["parameters"] if p["name"] == name)


# ------------------------------------------------------------------------------------- static resolution
def test_check_resolves_every_reference_of_the_dev_overlay_from_the_command_line(
        capsys: pytest.CaptureFixture[str]) -> None:
    # `python tests/argo_local.py --overlay DIR --check`, through its argument parser, in this process (the
    # kustomize build is cached here; the module is the script that command runs)
    import argo_local

    code = argo_local.main(["--overlay", str(DEV), "--check"])
    res = capsys.readouterr()
    assert code == 0, res.out + res.err
    assert re.fullmatch(r"check: (\d+) objects, every reference resolves", res.out.splitlines()[0]), res.out
    assert int(res.out.split()[1]) == len(dev_objects())
    # a spec-level difference between the scene template and its caller is reported, not hidden
    objs = dev_objects()
    scene_p = _obj(objs, "WorkflowTemplate", "raw2ready-scene")["spec"].get("parallelism")
    if scene_p != _obj(objs, "WorkflowTemplate", "raw2ready")["spec"].get("parallelism"):
        assert f"raw2ready-scene spec.parallelism={scene_p} applies only when it is submitted on its own" in res.out


def _misspell_task_argument(objs: list[dict[str, Any]]) -> None:
    p = _arg(_task(objs, "raw2ready", "main", "scene"), "out")
    p["value"] = p["value"].replace("inputs.parameters.settings_out", "inputs.parameters.settings_otu")


def _misspell_container_input(objs: list[dict[str, Any]]) -> int:
    args = _tmpl(objs, "raw2ready-scene", "ingest")["container"]["args"]
    i = args.index("{{inputs.parameters.scene_id}}")
    args[i] = "{{inputs.parameters.scene_ide}}"
    return i


def _misspell_task_output(objs: list[dict[str, Any]]) -> None:
    p = _arg(_task(objs, "raw2ready-scene", "scene", "ndvi"), "cloud_mask")
    p["value"] = "{{tasks.mask.outputs.parameters.cloudmask}}"


def _wrong_output_path(objs: list[dict[str, Any]]) -> None:
    out = next(p for p in _tmpl(objs, "raw2ready-scene", "mask")["outputs"]["parameters"] if p["name"] == "cloud_mask")
    out["valueFrom"]["path"] = "/tmp/outputs/cloudmask"


def _unknown_step(objs: list[dict[str, Any]]) -> None:
    _tmpl(objs, "raw2ready-scene", "ingest")["container"]["args"][1] = "ingests"


def _unknown_option(objs: list[dict[str, Any]]) -> int:
    args = _tmpl(objs, "raw2ready-scene", "lai")["container"]["args"]
    i = args.index("--cloud-mask")
    args[i] = "--cloudmask"
    return i


def _unknown_command(objs: list[dict[str, Any]]) -> None:
    _tmpl(objs, "raw2ready", "catalog")["container"]["command"] = ["raw2ready-catalog"]


def _unknown_template_ref(objs: list[dict[str, Any]]) -> None:
    _task(objs, "raw2ready", "main", "scene")["templateRef"]["template"] = "scenes"


def _sensor_dest_out_of_range(objs: list[dict[str, Any]]) -> None:
    params = _obj(objs, "Sensor", "raw2ready-orders")["spec"]["triggers"][0]["template"]["argoWorkflow"]["parameters"]
    params[0]["dest"] = "spec.arguments.parameters.9.value"


def _misspell_label_expression(objs: list[dict[str, Any]]) -> None:
    labels = _obj(objs, "WorkflowTemplate", "raw2ready")["spec"]["workflowMetadata"]["labelsFrom"]
    key = next(iter(labels))
    labels[key]["expression"] = labels[key]["expression"].replace("workflow.parameters.", "workflow.parameters.x")


BROKEN = {
    "misspelt-label-expression": (_misspell_label_expression,
                                  "WorkflowTemplate/raw2ready spec.workflowMetadata.labelsFrom"),
    "misspelt-task-argument": (_misspell_task_argument,
                               "WorkflowTemplate/raw2ready templates[main].dag.tasks[scene].arguments.parameters[out]: "
                               "unknown parameter inputs.parameters.settings_otu"),
    "misspelt-container-input": (_misspell_container_input,
                                 "WorkflowTemplate/raw2ready-scene templates[ingest].container.args[{i}]: "
                                 "unknown parameter inputs.parameters.scene_ide"),
    "misspelt-task-output": (_misspell_task_output,
                             "WorkflowTemplate/raw2ready-scene templates[scene].dag.tasks[ndvi].arguments"
                             ".parameters[cloud_mask]: unknown parameter tasks.mask.outputs.parameters.cloudmask"),
    "wrong-output-path": (_wrong_output_path,
                          "WorkflowTemplate/raw2ready-scene templates[mask].outputs.parameters[cloud_mask]"
                          ".valueFrom.path: /tmp/outputs/cloudmask is not written by `raw2ready step mask`"),
    "unknown-step": (_unknown_step,
                     "WorkflowTemplate/raw2ready-scene templates[ingest].container.args: unknown entrypoint: "
                     "`raw2ready step` has no subcommand 'ingests'"),
    "unknown-option": (_unknown_option,
                       "WorkflowTemplate/raw2ready-scene templates[lai].container.args[{i}]: "
                       "`raw2ready step lai` has no option '--cloudmask'"),
    "unknown-command": (_unknown_command,
                        "WorkflowTemplate/raw2ready templates[catalog].container.command: unknown entrypoint "
                        "['raw2ready-catalog']"),
    "unknown-template-ref": (_unknown_template_ref,
                             "WorkflowTemplate/raw2ready templates[main].dag.tasks[scene].templateRef.template: "
                             "no template 'scenes' in WorkflowTemplate/raw2ready-scene"),
    "sensor-dest-out-of-range": (_sensor_dest_out_of_range,
                                 "Sensor/raw2ready-orders spec.triggers[0].template.argoWorkflow.parameters[0].dest"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_copy_fails_the_check_with_its_location(case: str) -> None:
    objs = dev_objects()
    check(Build(copy.deepcopy(objs)))  # the unmodified build passes
    breaker, location = BROKEN[case]
    index = breaker(objs)  # the argument index, for breakers that change one container arg
    with pytest.raises(ArgoLocalError) as err:
        check(Build(objs))
    assert location.format(i=index) in str(err.value)


def test_an_unresolved_workflow_never_starts_a_pod(tmp_path: Path) -> None:
    objs = dev_objects()
    _wrong_output_path(objs)
    ex = Executor(Build(objs), LocalClusterFree.env(), tmp_path)
    with pytest.raises(ArgoLocalError, match=r"templates\[mask\]\.outputs\.parameters\[cloud_mask\]"):
        ex.run(workflow_for("raw2ready", {"tiles": TILE, "start": START, "end": END}))
    assert ex.pods_run == 0


def test_unknown_argo_fields_fail_instead_of_being_ignored() -> None:
    objs = dev_objects()
    _task(objs, "raw2ready", "main", "catalog")["continueOn"] = {"failed": True}
    with pytest.raises(ArgoLocalError, match=r"tasks\[catalog\]: field\(s\) \['continueOn'\] are not interpreted"):
        check(Build(objs))


def test_regression_scene_template_settings_ignored_through_template_ref() -> None:
    """Pins the draft's bug (b): spec-level settings of raw2ready-scene (e.g. a semaphore) do not apply when
    the entry template calls its DAG through templateRef; the check refuses such a setting."""
    objs = dev_objects()
    scene_spec = _obj(objs, "WorkflowTemplate", "raw2ready-scene")["spec"]
    assert "synchronization" not in scene_spec  # the scenes semaphore sits on the DAG template itself
    assert _tmpl(objs, "raw2ready-scene", "scene")["synchronization"]["semaphores"][0]["configMapKeyRef"]["key"] \
        == "scenes"
    scene_spec["synchronization"] = {"semaphores": [{"configMapKeyRef": {"name": "raw2ready-limits", "key": "scenes"}}]}
    with pytest.raises(ArgoLocalError) as err:
        check(Build(objs))
    assert str(err.value).startswith("WorkflowTemplate/raw2ready-scene spec.synchronization: ignored when called "
                                     "through templateRef from WorkflowTemplate/raw2ready templates[main]"
                                     ".dag.tasks[scene]")


class LocalClusterFree:
    """An Env for runs that must not reach any server (they fail before the first pod)."""

    @staticmethod
    def env() -> Any:
        from argo_local import Env

        return Env()


# ------------------------------------------------------------------------------------------------ runs
@dataclass
class Run:
    """One executed Workflow and the local runner's output for the same order."""

    root: Node
    workflow: dict[str, Any]
    order: dict[str, Any]
    argo: dict[str, bytes]
    local: dict[str, bytes]
    local_rc: int
    local_stdout: str


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The dev overlay's build with a moto server standing in for Service minio (one per module)."""
    with LocalCluster(Build(dev_objects()), tmp_path_factory.mktemp("cluster")) as c:
        c.bucket(c.out_bucket())
        yield c


def _local_run(cluster: LocalCluster, source: str, tiles: str, start: str, end: str,
               out: str) -> subprocess.Popen[str]:
    """Start ``raw2ready run`` against the same moto server, with the dev overlay's S3 settings.

    Started before the executor's run and awaited after it: the two write to different prefixes, and
    overlapping them keeps the module's wall time down on a busy machine.
    """
    env = {**os.environ, "RAW2READY_S3_ENDPOINT_URL": cluster.moto.endpoint,
           "RAW2READY_S3_ACCESS_KEY_ID": "testing", "RAW2READY_S3_SECRET_ACCESS_KEY": "testing",
           "RAW2READY_S3_ADDRESSING_STYLE": "path", "RAW2READY_S3_REGION": "us-east-1",
           "RAW2READY_RETRY_BACKOFF_S": "0.05"}
    exe = shutil.which("raw2ready", path=str(Path(sys.executable).parent)) or "raw2ready"
    return subprocess.Popen([exe, "-q", "run", "--source", source, "--tiles", tiles, "--start", start, "--end", end,
                             "--out", out, "--workers", "1"], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def _run_beside[T](local: subprocess.Popen[str], run: Callable[[], T]) -> T:
    """Run the executor while ``raw2ready run`` works beside it; if the executor fails, stop that process."""
    try:
        return run()
    except BaseException:
        local.kill()
        local.communicate()
        raise


def _comparable(tree: dict[str, bytes]) -> dict[str, bytes]:
    """Every object except the time-series store ``cube/``, whose segment files depend on its history
    (how many catalog runs added dates), not on the products; the rest must match byte for byte."""
    return {k: v for k, v in tree.items() if not k.startswith("cube/")}


@pytest.fixture(scope="module")
def sensor_run(cluster: LocalCluster, demo_archive: Path) -> Iterator[Run]:
    """A work order published to the real broker → EventSource → Sensor → Workflow → executed."""
    from steps.queue.orders import WorkOrder
    from steps.queue.transport import delete_topology, publish_orders

    prefix = f"s3://{cluster.out_bucket()}/sensor-{uuid.uuid4().hex[:8]}"
    cluster.upload(demo_archive.parent, f"{prefix}/source")
    source = f"{prefix}/source/catalog.json"  # demo_archive is the archive's root catalog.json
    queue = f"argo-local-{uuid.uuid4().hex[:8]}"
    build = cluster.build
    sensor = copy.deepcopy(_obj(build.objects, "Sensor", "raw2ready-orders"))
    dep, cfg = amqp_config(build, sensor)
    # a queue of our own: rename the queue everywhere in the EventSource's config (its declaration
    # arguments included, so they still agree with what `raw2ready enqueue` declares for that queue)
    assert "raw2ready.orders" in json.dumps(cfg)
    cfg = json.loads(json.dumps(cfg).replace("raw2ready.orders", queue))
    order = WorkOrder(tiles=TILE, start=START, end=END, source=source, out=f"{prefix}/argo")
    try:
        assert publish_orders([order], url=BROKER, queue=queue) == 1
        event = consume_event(cfg, broker_url_of(cfg, cluster.env))  # the URL from the Secret it names
    finally:
        delete_topology(BROKER, queue)
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(BROKER))
        conn.channel().exchange_delete(f"{queue}.events")
        conn.close()
    workflows = sensor_workflows(sensor, {dep["name"]: event})
    assert len(workflows) == 1
    local = _local_run(cluster, source, TILE, START, END, f"{prefix}/local")
    root = _run_beside(local, lambda: Executor(build, cluster.env, cluster.workdir).run(workflows[0]))
    out, _ = local.communicate(timeout=600)
    yield Run(root, workflows[0], json.loads(order.canonical()), cluster.objects(f"{prefix}/argo"),
              cluster.objects(f"{prefix}/local"), local.returncode, out)


@pytest.mark.slow  # its run (the module fixture) takes 1–2 min on a busy 2-core machine
def test_a_broker_message_becomes_the_workflow_with_the_orders_parameters(sensor_run: Run) -> None:
    params = {p["name"]: p["value"] for p in sensor_run.workflow["spec"]["arguments"]["parameters"]}
    order = sensor_run.order
    assert sensor_run.workflow["spec"]["workflowTemplateRef"] == {"name": "raw2ready"}
    assert {k: params[k] for k in ("tiles", "start", "end", "source", "out")} == \
        {k: order[k] for k in ("tiles", "start", "end", "source", "out")}
    assert (params["force"], params["resolution"]) == ("false", "0")


@pytest.mark.slow  # its run (the module fixture) takes 1–2 min on a busy 2-core machine
def test_the_dev_pipeline_through_the_executor_equals_raw2ready_run_byte_for_byte(sensor_run: Run) -> None:
    assert sensor_run.root.phase == "Succeeded", sensor_run.root.tree()
    assert sensor_run.local_rc == 0, sensor_run.local_stdout
    argo, local = _comparable(sensor_run.argo), _comparable(sensor_run.local)
    assert "catalog.json" in argo
    items = [k for k in argo if k.endswith(".json") and k.count("/") == 5 and not k.endswith("skipped.json")]
    assert len(items) == 1, sorted(argo)  # the clear scene; the clouded one is recorded as skipped
    assert len([k for k in argo if k.endswith("skipped.json")]) == 1
    assert sorted(argo) == sorted(local)
    differing = sorted(k for k in argo if argo[k] != local[k])
    assert differing == [], differing  # catalog tree, item sidecars, COGs: identical bytes


@pytest.mark.slow  # its run (the module fixture) takes 1–2 min on a busy 2-core machine
def test_skipped_scene_tasks_are_skipped_by_when_and_the_scene_still_succeeds(sensor_run: Run) -> None:
    scenes = next(c for c in sensor_run.root.children if c.name.endswith(".scene"))
    assert scenes.type == "TaskGroup" and len(scenes.children) == 2
    skipped = [s for s in scenes.children if any(n.phase == "Skipped" for n in s.children)]
    assert len(skipped) == 1 and skipped[0].phase == "Succeeded"
    assert {n.name.rsplit(".", 1)[1] for n in skipped[0].children if n.phase == "Skipped"} == \
        {"ndvi", "lai", "cog", "stac"}


@pytest.fixture(scope="module")
def failed_run(cluster: LocalCluster, demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The entry template on an archive where one scene's band is corrupt."""
    archive = tmp_path_factory.mktemp("bad") / "archive"
    shutil.copytree(demo_archive.parent, archive)  # demo_archive is the archive's root catalog.json
    band = archive / "sentinel-2-c1-l2a" / BAD_SCENE_DIR / "B04.tif"
    band.write_bytes(band.read_bytes()[:200])  # a truncated GeoTIFF: unreadable band → exit 3
    prefix = f"s3://{cluster.out_bucket()}/failed-{uuid.uuid4().hex[:8]}"
    cluster.upload(archive, f"{prefix}/source")
    source = f"{prefix}/source/catalog.json"
    params = {"tiles": BAD_TILE, "start": BAD_START, "end": BAD_END, "source": source, "out": f"{prefix}/argo"}
    wf = workflow_for("raw2ready", params)
    local = _local_run(cluster, source, BAD_TILE, BAD_START, BAD_END, f"{prefix}/local")
    root = _run_beside(local, lambda: Executor(cluster.build, cluster.env, cluster.workdir).run(wf))
    out, _ = local.communicate(timeout=600)
    return Run(root, wf, params, cluster.objects(f"{prefix}/argo"), cluster.objects(f"{prefix}/local"),
               local.returncode, out)


@pytest.mark.slow  # its run (the module fixture) takes 1–2 min on a busy 2-core machine
def test_regression_workflow_with_a_failed_scene_ended_succeeded(failed_run: Run) -> None:
    """Pins the draft's bug (a): the catalog task ran on ``scene.Failed`` and was the DAG's only leaf, so
    Argo reported Succeeded although a scene failed. Now the catalog still publishes what succeeded and the
    workflow ends Failed."""
    root = failed_run.root
    assert root.phase == "Failed", root.tree()
    tasks = {c.name.rsplit(".", 1)[1]: c for c in root.children}
    assert tasks["scene"].phase == "Failed"
    bad = [s for s in tasks["scene"].children if s.phase == "Failed"]
    assert len(bad) == 1 and len(tasks["scene"].children) == 2
    failed_pods = [n for n in bad[0].walk() if n.type == "Pod" and n.phase == "Failed"]
    # exit 3 (invalid input) is not retried: exactly one attempt of the failing step
    assert [n.exit_code for n in failed_pods] == ["3"]
    assert tasks["catalog"].phase == "Succeeded" and tasks["catalog"].outputs["skipped"] == "1"
    assert tasks["fail-if-a-scene-failed"].phase == "Omitted"
    # nothing of the bad scene is published; its failure record (what `raw2ready audit` reports as
    # `failed`) is written by the failing step's pod itself (steps.pipeline.contract.Step.run)
    published = [k for k in failed_run.argo if BAD_SCENE in k and not k.startswith("failures/")]
    assert "catalog.json" in failed_run.argo and published == []
    record = json.loads(failed_run.argo[f"failures/{BAD_SCENE}.json"])
    assert (record["step"], record["exit_code"], record["status"]) == ("ingest", 3, "failed")
    assert record["error"].startswith("InvalidInputError: ") and record["scene"]["scene_id"] == BAD_SCENE
    # the local runner agrees: it exits non-zero and leaves the same tree — catalog and failure record —
    # byte for byte (the record has no timestamp: the same failure gives the same bytes on either path)
    assert failed_run.local_rc != 0
    argo, local = _comparable(failed_run.argo), _comparable(failed_run.local)
    assert sorted(argo) == sorted(local)
    differing = sorted(k for k in argo if argo[k] != local[k])
    assert differing == [], differing


def test_transient_exit_is_retried_as_the_retry_strategy_says(tmp_path: Path) -> None:
    objs = dev_objects()
    settings = _obj(objs, "ConfigMap", "raw2ready-settings")["data"]
    settings["RAW2READY_RETRIES"] = "0"  # the step's own S3 retries off: each attempt fails fast
    _tmpl(objs, "raw2ready", "scenes")["retryStrategy"]["limit"] = 1  # two attempts keep the test short
    with LocalCluster(Build(objs), tmp_path) as c:
        c.moto.stop()  # S3 unreachable: every attempt of `scenes` ends with exit 75 (EX_TEMPFAIL)
        root = Executor(c.build, c.env, tmp_path).run(workflow_for("raw2ready", {
            "tiles": TILE, "start": START, "end": END, "source": "s3://raw2ready-dev/nowhere/catalog.json"}))
    scenes = next(n for n in root.children if n.name.endswith(".scenes"))
    limit = _tmpl(objs, "raw2ready", "scenes")["retryStrategy"]["limit"]
    assert [p.exit_code for p in scenes.children] == ["75"] * (limit + 1)
    assert scenes.phase == "Failed" and root.phase == "Failed"


if os.environ.get("R2R_ARGO_LOCAL_TREE"):  # debugging aid: print the trees of the module's runs
    @pytest.fixture(autouse=True)
    def _print_tree(request: pytest.FixtureRequest) -> Iterator[None]:
        yield
        for name in ("sensor_run", "failed_run"):
            if name in request.fixturenames:
                print(request.getfixturevalue(name).root.tree())


def test_steps_with_items_and_a_failing_exit_handler_fail_the_workflow(cluster: LocalCluster) -> None:
    """The interpreter's other paths on an inline Workflow built from the real catalog container: a steps
    template fanning out over ``withItems``, and an ``onExit`` handler whose failure fails the workflow
    (as the controller marks a Succeeded workflow Failed when its exit handler fails)."""
    catalog = copy.deepcopy(_tmpl(cluster.build.objects, "raw2ready", "catalog"))
    bucket = cluster.out_bucket()
    # an exit handler gets no arguments; this one writes to a bucket that does not exist, once
    broken = copy.deepcopy(catalog) | {"name": "publish-broken", "inputs": {}}
    broken.pop("retryStrategy")
    broken["container"]["args"] = [a.replace("{{inputs.parameters.out}}", f"s3://{bucket}-missing/{{{{workflow.status}}}}")
                                   for a in broken["container"]["args"]]
    wf = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "steps-local"},
          "spec": {"entrypoint": "main", "onExit": "publish-broken", "parallelism": 2,
                   "arguments": {"parameters": [{"name": "prefix", "value": f"s3://{bucket}/steps"}]},
                   "templates": [
                       {"name": "main", "steps": [[{
                           "name": "publish", "template": "catalog", "withItems": ["a", "b"],
                           "arguments": {"parameters": [
                               {"name": "out", "value": "{{workflow.parameters.prefix}}-{{item}}"}]}}]]},
                       catalog, broken]}}
    root = Executor(cluster.build, cluster.env, cluster.workdir).run(wf)
    pods = [n for n in root.walk() if n.type == "Pod"]
    publish = [p for p in pods if p.template == "catalog"]
    assert [p.phase for p in publish] == ["Succeeded", "Succeeded"], root.tree()
    assert {o for p in publish for o in [p.outputs["catalog"]]} == {f"s3://{bucket}/steps-a/catalog.json",
                                                                   f"s3://{bucket}/steps-b/catalog.json"}
    exit_pods = [p for p in pods if p.template == "publish-broken"]
    assert len(exit_pods) == 1 and exit_pods[0].phase == "Failed" and exit_pods[0].exit_code != "0"
    assert f"s3://{bucket}-missing/Succeeded" in " ".join(exit_pods[0].message.split())  # {{workflow.status}}
    assert root.phase == "Failed" and root.message == "onExit handler failed"
