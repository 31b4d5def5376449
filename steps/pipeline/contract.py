"""The step contract: a step is declared once and consumed three ways.

A :class:`Step` has a kebab-case ``name``, a pydantic ``Inputs`` model, a pydantic ``Outputs`` model, a
``run(inputs, settings) -> Outputs`` function, resource hints and the image that runs it.

1. ``raw2ready step <name> --field value …`` — the container entrypoint — is generated from ``Inputs``
   (one ``--option`` per field, ``snake_case`` field ``l2a_href`` → ``--l2a-href``); outputs are printed as
   JSON and written one file per field (``<outputs-dir>/<field>``) for Argo's ``valueFrom.path``.
2. ``workflows`` turns each step into an Argo container template with one input parameter per ``Inputs``
   field and one output parameter per ``Outputs`` field, using the same snake_case names and the field
   descriptions.
3. The local runner calls ``run`` in-process.

All fields are scalar (str, int, float, bool) so that they map one-to-one onto Argo parameters; structured
values travel as JSON strings (documented in the field description).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from steps.settings import Settings

log = logging.getLogger(__name__)

Status = Literal["done", "skipped"]


class StepInputs(BaseModel):
    """Base for every step's inputs: strict (unknown fields rejected), scalar fields only."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StepOutputs(BaseModel):
    """Base for every step's outputs; ``status`` is ``done`` or ``skipped`` (nothing to do: exit 0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
    """One pipeline step, declared once."""

    name: str
    description: str
    Inputs: type[I]
    Outputs: type[O]
    run: Callable[[I, Settings], O]
    image: str = "steps"
    resources: Resources = field(default_factory=Resources)
    retries: int = 3

    def __post_init__(self) -> None:
        if self.name != self.name.lower() or "_" in self.name or " " in self.name:
            raise ValueError(f"step name {self.name!r} must be kebab-case")
        for model in (self.Inputs, self.Outputs):
            for fname, f in model.model_fields.items():
                if f.annotation not in _SCALARS:
                    raise TypeError(f"{self.name}.{model.__name__}.{fname}: only str/int/float/bool fields")
                if not f.description:
                    raise TypeError(f"{self.name}.{model.__name__}.{fname}: a description is required")

    def input_fields(self) -> dict[str, Any]:
        """Input field name → pydantic FieldInfo, in declaration order."""
        return dict(self.Inputs.model_fields)

    def output_fields(self) -> dict[str, Any]:
        """Output field name → pydantic FieldInfo, in declaration order."""
        return dict(self.Outputs.model_fields)

    def __call__(self, inputs: I, settings: Settings) -> O:
        """Run the step in-process."""
        return self.run(inputs, settings)


def write_outputs(outputs: StepOutputs, outputs_dir: Path | None) -> str:
    """Serialise outputs: return one JSON line; also write ``<dir>/<field>`` files when ``outputs_dir``."""
    data = outputs.model_dump(mode="json")
    if outputs_dir is not None:
        outputs_dir.mkdir(parents=True, exist_ok=True)
        for k, v in data.items():
            text = v if isinstance(v, str) else json.dumps(v)
            (outputs_dir / k).write_text(text)
    return json.dumps(data, sort_keys=True)
