"""The two WorkflowTemplates of the pipeline, generated from :data:`steps.pipeline.registry.SCENE_DAG` and the steps.

* ``raw2ready-scene`` — the per-scene DAG ``ingest → mask → (ndvi ‖ lai) → cog → stac`` exactly as the
  registry declares it: every argument wired by name (scene field, workflow parameter or another task's
  output) and ``when: mask.status == done`` on the tasks that only run for scenes that were not skipped.
  It can be submitted on its own to (re)process one scene.
* ``raw2ready`` — the entry template. Parameters ``tiles``, ``start``, ``end``, ``source``, ``out`` (the
  fields of :class:`steps.queue.orders.WorkOrder`, which is how the Sensor maps messages by name). It runs the
  ``scenes`` step, fans out one ``raw2ready-scene`` per element of its ``scenes`` JSON list
  (``withParam``), then runs ``catalog`` once (fan-in) — also after some scenes failed, so everything that
  succeeded is published; the workflow still ends failed.

``source`` and ``out`` default to the empty string, meaning "the deployment's settings": the entry DAG
then reads ``RAW2READY_SOURCE`` / ``RAW2READY_OUT`` from the settings ConfigMap (an input parameter
``valueFrom.configMapKeyRef``). The default therefore lives in the ConfigMap that the overlays change, not
in a list inside this CRD, and the Argo UI form shows it as "empty = deployment default".

Fan-out: keep it to hundreds of scenes per workflow. Every node's status is stored in the Workflow object
and etcd refuses objects over ~1 MB (Argo can offload node status, but only with a database). A work order
is one tile × one calendar month (``steps.queue.orders.monthly_orders``: ~6–40 scenes); a backfill is many
messages, not one big workflow (:data:`MAX_SCENES_PER_WORKFLOW` is the documented ceiling).
"""

from __future__ import annotations

from typing import Any

from hera.workflows import DAG, Container, Parameter, Task, WorkflowTemplate
from hera.workflows import models as m

from steps.pipeline.registry import SCENE_DAG, STEPS, WORKFLOW_PARAMS, Ref
from steps.queue.orders import WorkOrder
from steps.settings import Settings
from workflows.labels import (
    LABEL_END,
    LABEL_START,
    LABEL_TILES,
    label_value_expr,
    tiles_label_expr,
)
from workflows.templates import (
    LIMITS_CONFIGMAP,
    SEMAPHORE_SCENES,
    SEMAPHORE_WORKFLOWS,
    SETTINGS_CONFIGMAP,
    WORKFLOW_SERVICE_ACCOUNT,
    param_str,
    pod_security_context,
    step_container,
)

ENTRY_TEMPLATE = "raw2ready"
"""Name of the entry WorkflowTemplate (what the Sensor, the UI and ``raw2ready submit`` run)."""
SCENE_TEMPLATE = "raw2ready-scene"
"""Name of the per-scene WorkflowTemplate."""
SCENE_DAG_TEMPLATE = "scene"
ENTRY_DAG_TEMPLATE = "main"

ENTRY_PARAMS = ("tiles", "start", "end", "source", "out", "force", "resolution")
"""Entry parameters in the order the submit form shows them (the set is ``steps.pipeline.registry.WORKFLOW_PARAMS``)."""
SETTINGS_DEFAULTED = ("source", "out")
"""Entry parameters whose empty value means "the ``RAW2READY_<NAME>`` setting of the deployment"."""

VERDICT_TASK = "fail-if-a-scene-failed"
"""Last task of the entry DAG: never runs; it makes the workflow Failed when a scene failed (see
:func:`entry_template`), while ``catalog`` still publishes the scenes that succeeded."""

MAX_SCENES_PER_WORKFLOW = 500
"""Documented ceiling of one fan-out (etcd object size); split larger ranges into more work orders."""

ENTRY_PARALLELISM = 16
"""Pods of one pipeline workflow running at once (on top of the cluster-wide semaphores)."""
SCENE_PARALLELISM = 4
"""Pods running at once when ``raw2ready-scene`` is submitted on its own."""
WORKFLOW_DEADLINE_S = 24 * 3600
"""A workflow still running after a day is stuck, not slow: fail it."""

LABELS = {"app.kubernetes.io/part-of": "raw2ready", "app.kubernetes.io/managed-by": "raw2ready-render"}


def _settings_input(name: str) -> str:
    return f"settings_{name}"


def _wf(name: str) -> str:
    """``{{workflow.parameters.<name>}}``, or for source/out an expression that falls back on the setting."""
    if name in SETTINGS_DEFAULTED:
        return (f"{{{{=workflow.parameters.{name} != '' ? workflow.parameters.{name} "
                f": inputs.parameters.{_settings_input(name)}}}}}")
    return f"{{{{workflow.parameters.{name}}}}}"


def order_option_default(name: str) -> str | None:
    """The Argo string of an optional work-order field's default (``force`` → ``false``); None if required.

    The one place option defaults come from: the entry template's parameter defaults and the Sensor's
    fallback values both use it.
    """
    field = WorkOrder.model_fields[name]
    return None if field.is_required() else param_str(field.default)


def _entry_param_default(name: str) -> str | None:
    """Default value of an entry parameter: "" for settings-defaulted ones, else the order option's default."""
    return "" if name in SETTINGS_DEFAULTED else order_option_default(name)


def _entry_param_description(name: str) -> str:
    desc = WorkOrder.model_fields[name].description or name
    if name in SETTINGS_DEFAULTED:
        desc += f"; empty = the deployment default (RAW2READY_{name.upper()} in ConfigMap {SETTINGS_CONFIGMAP})"
    return desc


def workflow_labels_from(params: dict[str, str]) -> m.WorkflowMetadata:
    """``spec.workflowMetadata``: Workflow labels computed by the controller from the workflow's parameters.

    ``params`` maps label → parameter name; ``tiles`` gets the tile-list encoding, any other parameter the
    free-text one (:mod:`workflows.labels`). Whoever submits (Argo UI, ``argo submit``, the Sensor,
    ``raw2ready submit``), the Workflow is labelled the same way, so ``argo list -l raw2ready/tiles=47PPR``
    and the UI's label filter find it.
    """
    return m.WorkflowMetadata(labels_from={
        label: m.LabelValueFrom(expression=(tiles_label_expr if name == "tiles" else label_value_expr)(
            f"workflow.parameters.{name}"))
        for label, name in params.items()})


ENTRY_LABELS = {LABEL_TILES: "tiles", LABEL_START: "start", LABEL_END: "end"}
"""Labels of a pipeline Workflow and the entry parameters they are computed from. Only the entry template
has them: Argo ignores a templateRef'd template's ``workflowMetadata``, and a lone ``raw2ready-scene`` run is
a repair job whose scene id is in its parameters."""


def _spec_options(parallelism: int) -> dict[str, Any]:
    """Workflow-level options shared by both templates (bounded, garbage-collected, non-root)."""
    return {
        "service_account_name": WORKFLOW_SERVICE_ACCOUNT,
        "parallelism": parallelism,
        "active_deadline_seconds": WORKFLOW_DEADLINE_S,
        # keep failed pods for `kubectl logs`; successful ones go at once (outputs are already recorded)
        "pod_gc": m.PodGC(strategy="OnPodSuccess", delete_delay_duration="5m"),
        "ttl_strategy": m.TTLStrategy(seconds_after_success=24 * 3600, seconds_after_failure=7 * 24 * 3600),
        "security_context": pod_security_context(),
        "pod_metadata": m.Metadata(labels=dict(LABELS)),
        "labels": dict(LABELS),
    }


def _scene_inputs() -> dict[str, m.Parameter]:
    """Inputs of the per-scene DAG: every ``scene.*`` and ``param.*`` reference of SCENE_DAG, in order.

    Description and default come from the step input field that consumes the reference first.
    """
    out: dict[str, m.Parameter] = {}
    for task in SCENE_DAG:
        fields = STEPS[task.step].input_fields()
        for arg, ref in task.args.items():
            if ref.kind == "task" or ref.name in out:
                continue
            f = fields[arg]
            out[ref.name] = m.Parameter(name=ref.name, description=f.description,
                                        default=None if f.is_required() else param_str(f.default))
    return out


def _scene_arg(ref: Ref) -> str:
    if ref.kind == "task":
        return f"{{{{tasks.{ref.name}.outputs.parameters.{ref.output}}}}}"
    return f"{{{{inputs.parameters.{ref.name}}}}}"


MASK_DONE = "'{{tasks.mask.outputs.parameters.status}}' == 'done'"
"""``when`` of the tasks that run only if ``mask`` did not skip the scene."""


def scene_template() -> WorkflowTemplate:
    """The ``raw2ready-scene`` WorkflowTemplate: container templates for the DAG's steps + the DAG."""
    inputs = _scene_inputs()
    arguments = [Parameter(name=p.name, description=p.description, value=p.default)
                 if p.default is not None else Parameter(name=p.name, description=p.description)
                 for p in inputs.values()]
    with WorkflowTemplate(
        name=SCENE_TEMPLATE,
        annotations={"workflows.argoproj.io/description":
                     "One Sentinel-2 scene: ingest → mask → ndvi ‖ lai → cog → stac (generated from "
                     "steps.pipeline.registry.SCENE_DAG)."},
        entrypoint=SCENE_DAG_TEMPLATE,
        arguments=arguments,
        **_spec_options(SCENE_PARALLELISM),
    ) as wt:
        containers: dict[str, Container] = {}
        for task in SCENE_DAG:
            if task.step not in containers:
                containers[task.step] = step_container(STEPS[task.step])
        with DAG(
            name=SCENE_DAG_TEMPLATE,
            inputs=[Parameter(name=p.name, description=p.description, default=p.default)
                    if p.default is not None else Parameter(name=p.name, description=p.description)
                    for p in inputs.values()],
            synchronization=m.Synchronization(semaphores=[m.SemaphoreRef(
                config_map_key_ref=m.ConfigMapKeySelector(name=LIMITS_CONFIGMAP, key=SEMAPHORE_SCENES))]),
        ):
            for task in SCENE_DAG:
                Task(
                    name=task.name,
                    template=containers[task.step],
                    arguments={arg: _scene_arg(ref) for arg, ref in task.args.items()},
                    depends=" && ".join(task.depends) or None,
                    when=MASK_DONE if task.only_if_mask_done else None,
                )
    return wt


def entry_template() -> WorkflowTemplate:
    """The ``raw2ready`` WorkflowTemplate: scenes → one ``raw2ready-scene`` per scene → catalog."""
    if set(ENTRY_PARAMS) != set(WORKFLOW_PARAMS):
        raise RuntimeError(f"entry parameters {ENTRY_PARAMS} do not match registry {WORKFLOW_PARAMS}")
    scenes_step, catalog_step = STEPS["scenes"], STEPS["catalog"]
    for st in (scenes_step, catalog_step):
        extra = set(st.input_fields()) - set(ENTRY_PARAMS)
        if extra:
            raise RuntimeError(f"step {st.name} needs inputs that are not workflow parameters: {extra}")
    scene_inputs = _scene_inputs()
    with WorkflowTemplate(
        name=ENTRY_TEMPLATE,
        annotations={"workflows.argoproj.io/description":
                     "NDVI/LAI products for MGRS tiles over a date range: list scenes, process each "
                     "(raw2ready-scene), rebuild the STAC catalog."},
        entrypoint=ENTRY_DAG_TEMPLATE,
        arguments=[Parameter(name=n, description=_entry_param_description(n), value=_entry_param_default(n))
                   if _entry_param_default(n) is not None else
                   Parameter(name=n, description=_entry_param_description(n))
                   for n in ENTRY_PARAMS],
        synchronization=m.Synchronization(semaphores=[m.SemaphoreRef(
            config_map_key_ref=m.ConfigMapKeySelector(name=LIMITS_CONFIGMAP, key=SEMAPHORE_WORKFLOWS))]),
        workflow_metadata=workflow_labels_from(ENTRY_LABELS),
        **_spec_options(ENTRY_PARALLELISM),
    ) as wt:
        scenes_c = step_container(scenes_step)
        catalog_c = step_container(catalog_step)
        with DAG(
            name=ENTRY_DAG_TEMPLATE,
            inputs=[Parameter(name=_settings_input(n),
                              description=f"RAW2READY_{n.upper()} from ConfigMap {SETTINGS_CONFIGMAP}",
                              value_from=m.ValueFrom(
                                  config_map_key_ref=m.ConfigMapKeySelector(
                                      name=SETTINGS_CONFIGMAP, key=f"RAW2READY_{n.upper()}"),
                                  default=""))
                    for n in SETTINGS_DEFAULTED],
        ):
            Task(name="scenes", template=scenes_c,
                 arguments={f: _wf(f) for f in scenes_step.input_fields()})
            Task(
                name="scene",
                template_ref=m.TemplateRef(name=SCENE_TEMPLATE, template=SCENE_DAG_TEMPLATE),
                depends="scenes",
                with_param="{{tasks.scenes.outputs.parameters.scenes}}",
                arguments={name: _wf(name) if name in WORKFLOW_PARAMS else f"{{{{item.{name}}}}}"
                           for name in scene_inputs},
            )
            # fan-in: publish whatever succeeded, also when some scenes failed
            catalog = Task(name="catalog", template=catalog_c, depends="scene || scene.Failed",
                           arguments={f: _wf(f) for f in catalog_step.input_fields()})
            # Argo takes a DAG's phase from its leaves only, so with `catalog` as the sole leaf a workflow
            # whose scenes failed ended Succeeded. This leaf never runs a pod: when every scene and the
            # catalog succeeded, `when` skips it (a skipped leaf inherits Succeeded); when a scene failed,
            # `depends` omits it, and an omitted leaf inherits its branch's Failed — after `catalog` ran.
            Task(name=VERDICT_TASK, template=catalog_c, depends=f"scene && {catalog.name}", when="false",
                 arguments={f: _wf(f) for f in catalog_step.input_fields()})
    return wt


def all_templates() -> list[WorkflowTemplate]:
    """Both WorkflowTemplates, in a stable order."""
    return [entry_template(), scene_template()]


def render_settings() -> Settings:
    """The settings used when rendering: the class defaults, never the caller's environment.

    Rendering must not depend on who runs it (the committed YAML is compared with a fresh render);
    deployment values belong in the settings ConfigMap of each overlay.
    """
    return Settings.model_construct()
