"""The one list of steps and the one per-scene DAG.

Both the local runner and the Argo templates (``workflows``) are built from :data:`STEPS` and
:data:`SCENE_DAG`, so they cannot drift: every task names its step, where each input comes from (a field
of the scene being processed, a workflow parameter, or another task's output — always *by name*), and
whether it runs only when the ``mask`` step did not skip the scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from steps.pipeline.cog import COG
from steps.pipeline.contract import Step
from steps.pipeline.ingest import INGEST, SCENES
from steps.pipeline.lai import LAI_STEP
from steps.pipeline.mask import MASK
from steps.pipeline.ndvi import NDVI_STEP
from steps.pipeline.stac import CATALOG, STAC

STEPS: dict[str, Step[Any, Any]] = {
    s.name: s for s in (SCENES, INGEST, MASK, NDVI_STEP, LAI_STEP, COG, STAC, CATALOG)
}


@dataclass(frozen=True)
class Ref:
    """Where a task input comes from: ``scene.<field>``, ``param.<name>`` or ``task.<task>.<output>``."""

    kind: Literal["scene", "param", "task"]
    name: str
    output: str = ""

    def __str__(self) -> str:
        return f"{self.kind}.{self.name}" + (f".{self.output}" if self.output else "")


@dataclass(frozen=True)
class Task:
    """One node of the per-scene DAG."""

    name: str
    step: str
    args: dict[str, Ref]
    depends: tuple[str, ...] = ()
    only_if_mask_done: bool = False
    optional_args: dict[str, Ref] = field(default_factory=dict)


def _s(name: str) -> Ref:
    return Ref("scene", name)


def _p(name: str) -> Ref:
    return Ref("param", name)


def _t(task: str, output: str) -> Ref:
    return Ref("task", task, output)


def _scene_dag() -> tuple[Task, ...]:
    tasks = [
        Task("ingest", "ingest", {"scene_id": _s("scene_id"), "l2a_href": _s("l2a_href"),
                                  "l1c_href": _s("l1c_href"), "resolution": _s("resolution"), "out": _p("out")}),
        Task("mask", "mask", {"scene": _t("ingest", "scene"), "out": _p("out")}, depends=("ingest",)),
        Task("ndvi", "ndvi", {"scene": _t("ingest", "scene"), "cloud_mask": _t("mask", "cloud_mask"),
                              "out": _p("out")}, depends=("mask",), only_if_mask_done=True),
    ]
    cog_args = {"scene": _t("ingest", "scene"), "out": _p("out"), "cloud_mask": _t("mask", "cloud_mask"),
                "ndvi": _t("ndvi", "ndvi")}
    stac_args = {"scene": _t("ingest", "scene"), "out": _p("out"), "assets": _t("cog", "assets"),
                 "clear_fraction": _t("mask", "clear_fraction"), "mask_provenance": _t("mask", "provenance")}
    tasks.append(Task("lai", "lai", {"scene": _t("ingest", "scene"), "cloud_mask": _t("mask", "cloud_mask"),
                                     "out": _p("out")}, depends=("mask",), only_if_mask_done=True))
    cog_args |= {"lai": _t("lai", "lai"), "lai_flags": _t("lai", "lai_flags")}
    stac_args |= {"lai_provenance": _t("lai", "provenance"), "ndvi_provenance": _t("ndvi", "provenance")}
    tasks.append(Task("cog", "cog", cog_args, depends=("ndvi", "lai"), only_if_mask_done=True))
    tasks.append(Task("stac", "stac", stac_args, depends=("cog",), only_if_mask_done=True))
    return tuple(tasks)


SCENE_DAG: tuple[Task, ...] = _scene_dag()
"""ingest → mask → (ndvi ‖ lai) → cog → stac, in a valid topological order."""

WORKFLOW_PARAMS = ("source", "tiles", "start", "end", "out", "force", "resolution")
"""Parameters of the entry workflow (also the fields of a work order)."""


def get_step(name: str) -> Step[Any, Any]:
    """Look up a step by name (``KeyError`` with the known names otherwise)."""
    try:
        return STEPS[name]
    except KeyError:
        raise KeyError(f"unknown step {name!r}; known: {', '.join(STEPS)}") from None
