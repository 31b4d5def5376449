"""The local runner: the same per-scene DAG as the cluster, in-process, scenes in parallel.

``run_pipeline`` lists the scenes, skips those already complete (an item sidecar or a skip record exists),
runs :data:`steps.pipeline.registry.SCENE_DAG` for each remaining scene in a process pool, retries transient
failures with exponential backoff, then rebuilds the catalog from the sidecars. A scene is complete only
when its sidecar exists, so a run killed at any point and run again converges to the same catalog.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from steps.errors import (
    EXIT_FAILURE,
    EXIT_INVALID_INPUT,
    EXIT_OK,
    EXIT_TRANSIENT,
    Raw2ReadyError,
    TransientError,
    backoff_delay,
    exit_code_for,
)
from steps.pipeline.failures import failure_error, write_failure
from steps.pipeline.registry import SCENE_DAG, STEPS, Ref
from steps.products.catalog import is_complete
from steps.sentinel2.source import SceneRef
from steps.settings import Settings, get_settings
from steps.storage import open_storage

log = logging.getLogger(__name__)


@dataclass
class SceneResult:
    """Outcome of one scene."""

    scene_id: str
    status: str  # done | skipped | failed | complete (already done before this run)
    seconds: float = 0.0
    error: str = ""
    exit_code: int = 0
    step: str = ""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # task name -> wall seconds
    recorded: bool = False  # the failing step already wrote the failure record (steps.pipeline.contract.Step.run)


@dataclass
class RunSummary:
    """Outcome of a run."""

    results: list[SceneResult]
    catalog: str = ""

    def count(self, status: str) -> int:
        """Number of scenes with ``status``."""
        return sum(1 for r in self.results if r.status == status)

    @property
    def exit_code(self) -> int:
        """0 when nothing failed; else 1 if any unexpected error, 75 if any transient, else 3."""
        codes = {r.exit_code for r in self.results if r.status == "failed"}
        if not codes:
            return EXIT_OK
        for code in (EXIT_FAILURE, EXIT_TRANSIENT, EXIT_INVALID_INPUT):
            if code in codes:
                return code
        return EXIT_FAILURE


def resolve_arg(ref: Ref, scene: SceneRef, params: dict[str, str], outputs: dict[str, dict[str, Any]]) -> Any:
    """Value of one task input for a scene."""
    if ref.kind == "scene":
        return getattr(scene, ref.name)
    if ref.kind == "param":
        return params[ref.name]
    return outputs[ref.name][ref.output]


def call_with_retries(fn: Callable[[], Any], what: str, settings: Settings) -> Any:
    """Call ``fn``; on ``TransientError`` retry up to ``settings.retries`` times with doubling backoff."""
    for attempt in range(settings.retries + 1):
        try:
            return fn()
        except TransientError as exc:
            if attempt >= settings.retries:
                raise
            delay = backoff_delay(attempt + 1, settings.retry_backoff_s)
            log.warning("%s: transient failure (%s); retry %d/%d in %.1fs", what, exc, attempt + 1,
                        settings.retries, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def run_scene(scene: SceneRef, out: str, settings: Settings | None = None) -> SceneResult:
    """Run the per-scene DAG in order; never raises (errors become a failed result)."""
    s = settings or get_settings()
    t0 = time.monotonic()
    outputs: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    params = {"out": out}
    current = ""
    in_step = False
    try:
        for task in SCENE_DAG:
            current = task.name
            if task.only_if_mask_done and outputs.get("mask", {}).get("status") != "done":
                continue
            step = STEPS[task.step]
            kwargs = {name: resolve_arg(ref, scene, params, outputs) for name, ref in task.args.items()}
            inputs = step.Inputs(**kwargs)
            t_step = time.monotonic()
            # Step.run, as the `raw2ready step` entrypoint does: each failed attempt writes the failure record
            in_step = True
            result = call_with_retries(partial(step.run, inputs, s), f"{scene.scene_id} {task.name}", s)
            in_step = False
            timings[task.name] = time.monotonic() - t_step
            outputs[task.name] = result.model_dump()
        status = "skipped" if outputs.get("mask", {}).get("status") == "skipped" else "done"
        return SceneResult(scene.scene_id, status, time.monotonic() - t0, outputs=outputs, timings=timings)
    except Exception as exc:
        code = exit_code_for(exc)
        if not isinstance(exc, Raw2ReadyError):
            log.exception("%s: %s failed unexpectedly", scene.scene_id, current)
        else:
            log.error("%s: %s failed: %s", scene.scene_id, current, exc)
        return SceneResult(scene.scene_id, "failed", time.monotonic() - t0, error=failure_error(exc),
                           exit_code=code, step=current, recorded=in_step)


def record_outcome(storage: Any, result: SceneResult) -> None:
    """Record a failure that no step recorded (a dead worker process, inputs that could not be built).

    Failures inside a step were recorded by :meth:`steps.pipeline.contract.Step.run` (same code as the cluster path),
    and success is cleared by the step that completes the scene (``stac`` or ``mask`` skipping it), so
    this writes only what would otherwise be lost, with the same :func:`steps.pipeline.failures.write_failure`.
    """
    if result.status == "failed" and not result.recorded:
        write_failure(storage, result.scene_id, result.step, result.exit_code, result.error)


def _init_worker(level: int) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run_scenes(scenes: list[SceneRef], out: str, *, workers: int = 1, force: bool = False,
               settings: Settings | None = None, progress: Callable[[SceneResult], None] | None = None,
               catalog: bool = True) -> RunSummary:
    """Process scenes (skipping complete ones unless ``force``) and rebuild the catalog (unless ``catalog`` is
    False: a caller that rebuilds once per batch, like the queue worker; the item sidecars are written either way)."""
    from steps.pipeline.stac import CATALOG, CatalogInputs

    s = settings or get_settings()
    storage = open_storage(out, s)
    results: list[SceneResult] = []
    todo: list[SceneRef] = []
    for sc in scenes:
        if not force and is_complete(storage, sc.scene_id, sc.datetime):
            r = SceneResult(sc.scene_id, "complete")
            results.append(r)
            if progress:
                progress(r)
        else:
            todo.append(sc)
    log.info("%d scenes: %d already complete, %d to process with %d worker(s)", len(scenes),
             len(scenes) - len(todo), len(todo), workers)
    if workers <= 1 or len(todo) <= 1:
        for sc in todo:
            r = run_scene(sc, out, s)
            results.append(r)
            if progress:
                progress(r)
    else:
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(logging.getLogger().getEffectiveLevel(),)) as pool:
            pending: dict[Future[SceneResult], SceneRef] = {pool.submit(run_scene, sc, out, s): sc for sc in todo}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    sc = pending.pop(fut)
                    try:
                        r = fut.result()
                    except Exception as exc:  # a worker process died (OOM-killed, segfault …)
                        r = SceneResult(sc.scene_id, "failed", error=f"worker died: {exc}", exit_code=EXIT_FAILURE)
                    results.append(r)
                    if progress:
                        progress(r)
    for r in results:
        record_outcome(storage, r)
    href = call_with_retries(partial(CATALOG.run, CatalogInputs(out=out), s), "catalog", s).catalog if catalog else ""
    order = {sc.scene_id: i for i, sc in enumerate(scenes)}
    results.sort(key=lambda r: order.get(r.scene_id, 0))
    return RunSummary(results=results, catalog=href)
