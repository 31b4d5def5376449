"""The per-scene failure record: one format, written and cleared by the steps themselves.

``failures/<scene_id>.json`` (key :func:`steps.products.catalog.failure_key`) says that the last attempt of a scene
failed, in which step and how; ``raw2ready audit`` reports such a scene as ``failed`` (not ``missing``) and
``raw2ready status`` counts it by ``scene.datetime``. Both execution paths write it with the code below:

* the step entrypoint (``raw2ready step <name>``, one Argo pod) and the local runner (``raw2ready
  run``/``worker``, in-process for each task) both run a step through :meth:`steps.pipeline.contract.Step.run`,
  which writes the record when the step raises.

Which steps write it: every *per-scene* step, i.e. one whose ``Inputs`` name the scene
(:meth:`steps.pipeline.contract.StepInputs.scene_of`), either directly (``scene_id``: ``ingest``) or through the
scene manifest href ``scene`` (``<out>/work/<scene_id>/scene.json``: ``mask``, ``ndvi``, ``lai``, ``cog``,
``stac``), and carry the output root ``out``. ``scenes`` and ``catalog`` are not per-scene and write nothing.

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
the runner retries a ``TransientError`` in-process, each attempt through ``Step.run``. The record is
removed by the step that makes the scene complete, right after its commit point — ``stac`` after writing
the item sidecar, ``mask`` after writing the skip record — with :func:`clear_failure`, on both paths.

Bookkeeping never hides the real failure: writing or clearing the record logs one warning line on error
and never raises; ``Step.run`` re-raises the step's own exception, so the exit code and the one-line
error stay exactly what the step produced.
"""

from __future__ import annotations

import logging

from steps.products.catalog import dumps, failure_key
from steps.sentinel2.source import parse_scene_id
from steps.storage import LocalStorage, S3Storage
from steps.times import format_datetime

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
