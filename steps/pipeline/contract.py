"""The step contract: a step is declared once and consumed three ways.

A :class:`Step` has a kebab-case ``name``, a pydantic ``Inputs`` model, a pydantic ``Outputs`` model, a
``body(inputs, ctx) -> Outputs`` function, resource hints and the image that runs it. :meth:`Step.run`
``(inputs, settings)`` is the one way to run it, and what all three consumers call or describe:

1. ``raw2ready step <name> --field value …`` — the container entrypoint — is generated from ``Inputs``
   (one ``--option`` per field, ``snake_case`` field ``l2a_href`` → ``--l2a-href``); outputs are printed as
   JSON and written one file per field (``<outputs-dir>/<field>``) for Argo's ``valueFrom.path``.
2. ``workflows`` turns each step into an Argo container template with one input parameter per ``Inputs``
   field and one output parameter per ``Outputs`` field, using the same snake_case names and the field
   descriptions.
3. The local runner (and so the queue worker) calls :meth:`Step.run` in-process.

All three take the parameters in the order of :meth:`Parameters.parameters`. All fields are scalar (str,
int, float, bool) so that they map one-to-one onto Argo parameters; structured values travel as JSON
strings (documented in the field description).

The parts every scene step shares live here, once:

* the inputs :class:`SceneStepInputs` (``scene``, the manifest ingest wrote, and ``out``, the output root)
  and :class:`CloudMaskInputs` (adds ``cloud_mask``); ``ingest`` names its scene by ``scene_id``;
* the outputs base :class:`StatusOutputs` (``status``: ``done`` unless the body says ``skipped``);
* the :class:`StepContext` handed to each body: the settings, the output storage opened once per step run,
  the scene manifest loaded once, the scene id and its work folder;
* the failure record: when a per-scene step raises, :meth:`Step.run` writes ``failures/<scene_id>.json``
  (:mod:`steps.pipeline.failures`) with the step's storage and re-raises — on both paths, since both call
  :meth:`Step.run`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.fields import FieldInfo

from steps.errors import exit_code_for
from steps.pipeline.failures import Store, failure_error, write_failure
from steps.pipeline.scene import Scene, load_scene
from steps.products.catalog import WORK_PREFIX, work_folder
from steps.settings import Settings
from steps.storage import join, open_storage

log = logging.getLogger(__name__)

Status = Literal["done", "skipped"]
STATUSES: tuple[Status, ...] = ("done", "skipped")

OUT_ROOT = "output root: directory or s3://bucket/prefix"
"""Description of the ``out`` input of every step that writes under the output root."""


class Parameters(BaseModel):
    """Fields published as parameters (CLI options, Argo parameters): strict, scalar, described.

    Pydantic lists a base's fields before a subclass's; the published order can differ: names in
    ``leading`` come first and names in ``trailing`` last, each in that order, the rest in declaration order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    leading: ClassVar[tuple[str, ...]] = ()
    trailing: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parameters(cls) -> dict[str, FieldInfo]:
        """Field name → pydantic FieldInfo in published order."""
        fields = cls.model_fields
        unknown = [n for n in (*cls.leading, *cls.trailing) if n not in fields]
        if unknown:
            raise TypeError(f"{cls.__name__}: leading/trailing name no field: {', '.join(unknown)}")
        middle = [n for n in fields if n not in cls.leading and n not in cls.trailing]
        return {n: fields[n] for n in (*cls.leading, *middle, *cls.trailing)}


class StepInputs(Parameters):
    """Base for every step's inputs. A step's output root, when it has one, is its ``out`` field."""

    def scene_of(self) -> str | None:
        """The scene these inputs are about (from the inputs alone), or None for a step that is not per-scene."""
        return None


class SceneStepInputs(StepInputs):
    """Inputs of a step that works on one scene after ``ingest``: the scene manifest and the output root."""

    scene: str = Field(description="href of the scene manifest written by ingest")
    out: str = Field(description=OUT_ROOT)

    leading: ClassVar[tuple[str, ...]] = ("scene", "out")

    def scene_of(self) -> str | None:
        """The scene id read from the manifest href ``…/work/<scene_id>/scene.json``, not from the manifest
        (which may be what is missing); None for an href of another shape."""
        parts = self.scene.rstrip("/").split("/")
        if len(parts) >= 3 and parts[-3] == WORK_PREFIX and parts[-1] == "scene.json" and parts[-2]:
            return parts[-2]
        return None


class CloudMaskInputs(SceneStepInputs):
    """Inputs of a step that reads the scene's 20 m work cloud mask (written by ``mask``)."""

    cloud_mask: str = Field(description="href of the 20 m work cloud mask written by mask")

    leading: ClassVar[tuple[str, ...]] = ("scene", "cloud_mask", "out")


class StepOutputs(Parameters):
    """Base for every step's outputs."""


class StatusOutputs(StepOutputs):
    """Outputs with a ``status`` (published last): ``done``, or ``skipped`` when there is nothing to do (exit 0)."""

    status: str = Field("done", description="done")

    trailing: ClassVar[tuple[str, ...]] = ("status",)

    @field_validator("status")
    @classmethod
    def _known_status(cls, value: str) -> str:
        if value not in STATUSES:
            raise ValueError(f"status {value!r} is not one of {', '.join(STATUSES)}")
        return value


@dataclass
class StepContext:
    """What a step's body works with, made once per step run by :meth:`Step.run`.

    ``storage`` (the output root ``out``) and ``scene`` (the manifest named by the inputs' ``scene``) are
    opened at most once per step run and then kept, so a body and the failure record share one storage
    object. For a per-scene step :meth:`Step.run` opens both before the body (:meth:`open`); other steps
    open the storage on first use (``scenes`` only when it has an ``out`` to look in).
    """

    settings: Settings
    out: str = ""
    scene_id: str | None = None
    """The scene the inputs name (:meth:`StepInputs.scene_of`); None for a step that is not per-scene."""
    manifest: str = ""
    """Href of the scene manifest ('' for steps without one, e.g. ``ingest``, which writes it)."""

    @cached_property
    def storage(self) -> Store:
        """The output storage (opened once per step run)."""
        return open_storage(self.out, self.settings)

    @cached_property
    def scene(self) -> Scene:
        """The scene manifest (read once per step run; a missing or invalid one is an ``InvalidInputError``)."""
        if not self.manifest:
            raise RuntimeError("this step's inputs name no scene manifest")
        return load_scene(self.manifest)

    def open(self) -> None:
        """For a per-scene step, load the scene manifest (if it has one), then open the output storage."""
        if self.scene_id is not None:
            if self.manifest:
                _ = self.scene
            _ = self.storage

    @property
    def work(self) -> str:
        """Key of the scene's work folder, ``work/<scene_id>``."""
        scene_id = self.scene.scene_id if self.manifest else self.scene_id
        if not scene_id:
            raise RuntimeError("this step's inputs name no scene")
        return work_folder(scene_id)

    def work_key(self, name: str) -> str:
        """Key of ``name`` in the scene's work folder."""
        return join(self.work, name)

    def record_failure(self, step: str, exc: BaseException) -> None:
        """Write the scene's failure record for ``exc`` raised by ``step``; nothing when not per-scene. Never raises."""
        if self.scene_id is None:
            return
        try:
            storage = self.storage
        except Exception as err:  # a bad output root: the step's own error says more
            log.warning("could not record the failure of %s (%s: %s)", self.scene_id, type(err).__name__, err)
            return
        write_failure(storage, self.scene_id, step, exit_code_for(exc), failure_error(exc))


_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class Resources:
    """Kubernetes resource hints for one step (requests; limits = memory request × ``limit_factor``)."""

    cpu: str = "1"
    memory: str = "2Gi"
    limit_factor: float = 1.5
    ephemeral_storage: str = "4Gi"


@dataclass(frozen=True)
class Step[I: StepInputs, O: StepOutputs]:
    """One pipeline step, declared once: its own fields (``Inputs``/``Outputs``) and its ``body``."""

    name: str
    description: str
    Inputs: type[I]
    Outputs: type[O]
    body: Callable[[I, StepContext], O]
    image: str = "steps"
    resources: Resources = field(default_factory=Resources)
    retries: int = 3

    def __post_init__(self) -> None:
        if self.name != self.name.lower() or "_" in self.name or " " in self.name:
            raise ValueError(f"step name {self.name!r} must be kebab-case")
        for model in (self.Inputs, self.Outputs):
            for fname, f in model.parameters().items():
                if f.annotation not in _SCALARS:
                    raise TypeError(f"{self.name}.{model.__name__}.{fname}: only str/int/float/bool fields")
                if not f.description:
                    raise TypeError(f"{self.name}.{model.__name__}.{fname}: a description is required")

    def input_fields(self) -> dict[str, FieldInfo]:
        """Input field name → pydantic FieldInfo, in published order."""
        return self.Inputs.parameters()

    def output_fields(self) -> dict[str, FieldInfo]:
        """Output field name → pydantic FieldInfo, in published order."""
        return self.Outputs.parameters()

    def context(self, inputs: I, settings: Settings) -> StepContext:
        """The context of one run of this step on ``inputs``."""
        return StepContext(settings=settings, out=str(getattr(inputs, "out", "")), scene_id=inputs.scene_of(),
                           manifest=inputs.scene if isinstance(inputs, SceneStepInputs) else "")

    def run(self, inputs: I, settings: Settings) -> O:
        """Run the step in-process: the entrypoint of the container CLI, the local runner and the worker.

        Builds the :class:`StepContext`, calls the body and checks that it returned this step's ``Outputs``.
        If a per-scene step raises, the scene's failure record is written (with the step's name and
        :func:`steps.errors.exit_code_for` of the exception, the code the process exits with), then the
        step's own exception is re-raised unchanged.
        """
        if not isinstance(inputs, self.Inputs):
            raise TypeError(f"step {self.name}: inputs are {type(inputs).__name__}, not {self.Inputs.__name__}")
        ctx = self.context(inputs, settings)
        try:
            ctx.open()
            result = self.body(inputs, ctx)
            if not isinstance(result, self.Outputs):
                raise TypeError(f"step {self.name}: its body returned {type(result).__name__}, "
                                f"not {self.Outputs.__name__}")
            return result
        except Exception as exc:
            ctx.record_failure(self.name, exc)
            raise


def write_outputs(outputs: StepOutputs, outputs_dir: Path | None) -> str:
    """Serialise outputs: return one JSON line; also write ``<dir>/<field>`` files when ``outputs_dir``."""
    data: dict[str, Any] = outputs.model_dump(mode="json")
    if outputs_dir is not None:
        outputs_dir.mkdir(parents=True, exist_ok=True)
        for k, v in data.items():
            text = v if isinstance(v, str) else json.dumps(v)
            (outputs_dir / k).write_text(text)
    return json.dumps(data, sort_keys=True)
