"""The per-scene failure record: one format, written and cleared by the steps themselves.

``failures/<scene_id>.json`` (key :func:`steps.products.catalog.failure_key`) says that the last attempt of a scene
failed, in which step and how; ``raw2ready audit`` reports such a scene as ``failed`` (not ``missing``) and
``raw2ready status`` counts it by ``scene.datetime``. Both execution paths write it with the code below:

* the step entrypoint (``raw2ready step <name>``, one Argo pod) runs the step through :func:`run_step`;
* the local runner (``raw2ready run``/``worker``) calls :func:`run_step` in-process for each task.

Which steps write it: every *per-scene* step, i.e. one whose ``Inputs`` carry the output root ``out`` and
name the scene, either directly (``scene_id``: ``ingest``) or through the scene manifest href ``scene``
(``<out>/work/<scene_id>/scene.json``: ``mask``, ``ndvi``, ``lai``, ``cog``, ``stac``). ``scenes`` and
``catalog`` are not per-scene and write nothing.

The body (canonical JSON, :func:`steps.products.catalog.dumps`)::

    {"scene_id": …, "status": "failed", "step": <step name>, "exit_code": <steps.errors.exit_code_for>,
     "error": "<ExceptionType>: <message>",
     "scene": {"scene_id": …, "tile": …, "datetime": "YYYY-MM-DDTHH:MM:SSZ"} | null}

``scene`` holds only what every per-scene step knows without reading anything: the tile and the sensing
time (UTC, whole seconds) decoded from the derived scene id (:func:`steps.sentinel2.source.parse_scene_id`) — so the
record is the same bytes whichever path wrote it and cannot fail because the thing that broke (an
unreadable source, a missing manifest) is needed to describe it. That is what the readers use: ``status``
needs ``scene.datetime``; ``audit`` needs step/exit code/error; ``audit --requeue`` and ``coverage`` work
from the scene id and list the source again, so the source hrefs need not be kept here. A scene id that
is not a derived one gives ``scene: null`` (``status`` then leaves the record out; ``audit`` still says
``failed``).

Lifecycle. Each failed attempt rewrites the record ("last failure"): Argo retries a step that exits 75 and
the runner retries a ``TransientError`` in-process, each attempt through :func:`run_step`. The record is
removed by the step that makes the scene complete, right after its commit point — ``stac`` after writing
the item sidecar, ``mask`` after writing the skip record — with :func:`clear_failure`, on both paths.

Bookkeeping never hides the real failure: writing or clearing the record logs one warning line on error
and never raises; :func:`run_step` re-raises the step's own exception, so the exit code and the one-line
error stay exactly what the step produced.
"""

from __future__ import annotations

import logging

from steps.errors import exit_code_for
from steps.pipeline.contract import Step, StepInputs, StepOutputs
from steps.products.catalog import WORK_PREFIX, dumps, failure_key, format_datetime
from steps.sentinel2.source import parse_scene_id
from steps.settings import Settings
from steps.storage import LocalStorage, S3Storage, open_storage

log = logging.getLogger(__name__)

Store = LocalStorage | S3Storage


def failure_error(exc: BaseException) -> str:
    """The ``error`` text of a failure: ``"<ExceptionType>: <message>"`` (also the runner's result error)."""
    return f"{type(exc).__name__}: {exc}"


def failure_scene(scene_id: str) -> dict[str, str] | None:
    """The record's ``scene`` block decoded from a derived scene id, or None when the id is not one."""
    parsed = parse_scene_id(scene_id)
    if parsed is None:
        return None
    tile, dt = parsed
    return {"scene_id": scene_id, "tile": tile, "datetime": format_datetime(dt)}


def failure_record(scene_id: str, step: str, exit_code: int, error: str) -> bytes:
    """The record's bytes (the one place its format is spelled)."""
    body = {"scene_id": scene_id, "status": "failed", "step": step, "exit_code": exit_code, "error": error,
            "scene": failure_scene(scene_id)}
    return dumps(body)


def write_failure(storage: Store, scene_id: str, step: str, exit_code: int, error: str) -> bool:
    """Write (replace) the scene's failure record; return whether it was written. Never raises."""
    try:
        storage.write_bytes(failure_key(scene_id), failure_record(scene_id, step, exit_code, error))
    except Exception as exc:  # never let bookkeeping hide the real failure
        log.warning("could not record the failure of %s (%s: %s)", scene_id, type(exc).__name__, exc)
        return False
    return True


def clear_failure(storage: Store, scene_id: str) -> None:
    """Remove the scene's failure record if there is one (call after the scene's commit point). Never raises.

    A record left behind by an error here is harmless: ``audit`` and ``status`` look at the item sidecar
    and the skip record first, and a complete scene is never reported as failed.
    """
    key = failure_key(scene_id)
    try:
        if storage.exists(key):
            storage.delete(key)
    except Exception as exc:  # the scene is published; a stale record must not fail the step
        log.warning("could not clear the failure record of %s (%s: %s)", scene_id, type(exc).__name__, exc)


def scene_id_of(inputs: StepInputs) -> str | None:
    """The scene a step's inputs are about, or None for a step that is not per-scene.

    Per-scene inputs carry ``out`` and either ``scene_id`` or ``scene``, the manifest href
    ``…/work/<scene_id>/scene.json`` (the id is read from the href, not from the manifest, which may be
    what is missing).
    """
    values = inputs.model_dump()
    if "out" not in values:
        return None
    if "scene_id" in values:
        return str(values["scene_id"]) or None
    if "scene" in values:
        parts = str(values["scene"]).rstrip("/").split("/")
        if len(parts) >= 3 and parts[-3] == WORK_PREFIX and parts[-1] == "scene.json" and parts[-2]:
            return parts[-2]
    return None


def run_step[I: StepInputs, O: StepOutputs](step: Step[I, O], inputs: I, settings: Settings) -> O:
    """Run ``step`` on ``inputs``; if it raises and is per-scene, record the failure, then re-raise.

    The entrypoint of both paths (the ``raw2ready step`` command and the local runner). The record's
    ``step`` is the step's name and ``exit_code`` :func:`steps.errors.exit_code_for` of the exception —
    the code the process exits with.
    """
    try:
        return step.run(inputs, settings)
    except Exception as exc:
        scene_id = scene_id_of(inputs)
        if scene_id is not None:
            try:
                storage = open_storage(str(inputs.model_dump()["out"]), settings)
            except Exception as err:  # a bad output root: the step's own error says more
                log.warning("could not record the failure of %s (%s: %s)", scene_id, type(err).__name__, err)
            else:
                write_failure(storage, scene_id, step.name, exit_code_for(exc), failure_error(exc))
        raise
