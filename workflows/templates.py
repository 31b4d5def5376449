"""The container-template factory: one :class:`steps.pipeline.contract.Step` → one Argo ``container`` template.

Hera 7 retired the decorators that built container templates from models, so this is a small explicit
factory. For a step it produces:

* one input parameter per ``Inputs`` field — same snake_case name, the field description, the field
  default when the field is optional — in the published order (:meth:`steps.pipeline.contract.Step.input_fields`,
  the order the CLI options have too);
* one output parameter per ``Outputs`` field, read from ``/tmp/outputs/<field>`` (the files written by
  ``raw2ready step <name> … --outputs-dir /tmp/outputs``);
* args ``["step", "<name>", "--field-name", "{{inputs.parameters.field_name}}", …, "--outputs-dir",
  "/tmp/outputs"]`` — the same options the CLI generates from the same model;
* resources from the step's hints (limits: memory × ``limit_factor``, ephemeral storage × 2);
* a retry strategy that retries **only exit code 75** (``EX_TEMPFAIL``, :mod:`steps.errors`), with
  exponential backoff: bad input (3) and bugs (1) fail at once;
* environment from the settings ConfigMap and the Secret (``envFrom``; names only, never values) and a
  non-root, read-only-root-filesystem security context (``/tmp`` is an ``emptyDir``).

Deployment names (ConfigMaps, Secret, ServiceAccount, images) live here as constants so that the
templates, the hand-written manifests and the tests agree on them.
"""

from __future__ import annotations

import re
from typing import Any

from hera.workflows import (
    ConfigMapEnvFrom,
    Container,
    EmptyDirVolume,
    Env,
    Parameter,
    Resources,
    RetryStrategy,
    SecretEnvFrom,
)
from hera.workflows import models as m

import steps
from steps.errors import EXIT_TRANSIENT
from steps.pipeline.contract import Step
from workflows.labels import LABEL_STEP

OUTPUTS_DIR = "/tmp/outputs"  # an emptyDir inside the pod, not a shared host path
"""Where ``raw2ready step … --outputs-dir`` writes one file per output field."""

SETTINGS_CONFIGMAP = "raw2ready-settings"
"""ConfigMap with the non-secret ``RAW2READY_*`` settings (``envFrom`` of every step pod)."""
SECRET_NAME = "raw2ready-secrets"
"""Secret with ``RAW2READY_S3_ACCESS_KEY_ID``, ``…_SECRET_ACCESS_KEY``, ``…_BROKER_URL``, ``…_ARGO_TOKEN``.
Created out of band (see docs/ORCHESTRATION.md); manifests only reference it."""
LIMITS_CONFIGMAP = "raw2ready-limits"
"""ConfigMap holding the Argo semaphore limits (keys :data:`SEMAPHORE_WORKFLOWS`, :data:`SEMAPHORE_SCENES`)."""
SEMAPHORE_WORKFLOWS = "workflows"
SEMAPHORE_SCENES = "scenes"
WORKFLOW_SERVICE_ACCOUNT = "raw2ready-workflow"
"""ServiceAccount of workflow pods (may only report task results; see manifests/base/rbac)."""

IMAGE_REPOSITORY = "ghcr.io/raw2ready"
"""Registry prefix of the project's images; overlays retag them with kustomize ``images:``."""

RUN_AS_USER = 10001
"""The non-root uid of the images (the shared runtime stage of images/Dockerfile creates it)."""

RETRY_BACKOFF = m.Backoff(duration="30s", factor=2, cap="10m")
"""First retry after 30 s, doubling, never waiting more than 10 min between attempts.

No ``maxDuration`` on purpose: Argo counts it from the start of the *first* attempt and also cuts the
deadline of every retry pod to it, so a transient failure late in a long step would not be retried, or
its retry would be killed half-way. Attempts are bounded by ``limit`` × :data:`STEP_DEADLINE_S` and the
whole run by the workflow's ``activeDeadlineSeconds``."""

STEP_DEADLINE_S = 2 * 3600
"""A single step attempt that runs longer than this is killed (a hung read, not a slow scene)."""


def image_for(step: Step[Any, Any]) -> str:
    """Image reference for a step: ``<registry>/raw2ready-<image>:<package version>``."""
    return f"{IMAGE_REPOSITORY}/raw2ready-{step.image}:{steps.__version__}"


def _quantity_mi(q: str) -> int:
    """A memory/storage quantity such as ``512Mi``, ``4Gi`` or ``1G`` in MiB (rounded up)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?", q)
    if match is None:
        raise ValueError(f"unsupported quantity {q!r}")
    value, unit = float(match.group(1)), match.group(2) or ""
    factor = {"": 1 / 2**20, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2,
              "K": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}[unit]
    return int(-(-value * factor // 1))


def step_resources(step: Step[Any, Any]) -> Resources:
    """Requests from the step's hints; memory limit = request × ``limit_factor``; no CPU limit.

    No CPU limit on purpose: CFS throttling slows GDAL without protecting anyone that requests do not.
    """
    r = step.resources
    return Resources(
        cpu_request=r.cpu,
        memory_request=r.memory,
        memory_limit=f"{_quantity_mi(r.memory) * r.limit_factor:.0f}Mi",
        ephemeral_request=r.ephemeral_storage,
        ephemeral_limit=f"{_quantity_mi(r.ephemeral_storage) * 2}Mi",
    )


def retry_strategy(limit: int) -> RetryStrategy:
    """Retry only exit code 75 (transient), up to ``limit`` times, with exponential backoff.

    ``lastRetry.exitCode`` is a string in Argo expressions (``""`` when the pod never ran), so it is
    compared as a string: pod errors, exit 1 (bug) and exit 3 (invalid input) are never retried.
    """
    return RetryStrategy(
        limit=limit,
        retry_policy="Always",
        expression=f'lastRetry.exitCode == "{EXIT_TRANSIENT}"',
        backoff=RETRY_BACKOFF,
    )


NON_ROOT: dict[str, Any] = {"run_as_non_root": True, "run_as_user": RUN_AS_USER}
"""What the pod and every container state alike: never root, always the images' uid."""


def container_security_context() -> m.SecurityContext:
    """Non-root, no privilege escalation, no capabilities, read-only root filesystem."""
    return m.SecurityContext(**NON_ROOT, allow_privilege_escalation=False, read_only_root_filesystem=True,
                             capabilities=m.Capabilities(drop=["ALL"]))


def pod_security_context() -> m.PodSecurityContext:
    """Pod-level security context shared by every workflow pod (group and volume ownership: the same uid)."""
    return m.PodSecurityContext(**NON_ROOT, run_as_group=RUN_AS_USER, fs_group=RUN_AS_USER,
                                seccomp_profile=m.SeccompProfile(type="RuntimeDefault"))


def param_str(value: Any) -> str:
    """A Python scalar as an Argo parameter string (``true``/``false`` for booleans, as click reads them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else str(value)


def input_parameters(step: Step[Any, Any]) -> list[Parameter]:
    """One input parameter per ``Inputs`` field: same name, its description, its default if optional."""
    params = []
    for name, f in step.input_fields().items():
        kwargs: dict[str, Any] = {"name": name, "description": f.description}
        if not f.is_required():
            kwargs["default"] = param_str(f.default)
        params.append(Parameter(**kwargs))
    return params


def output_parameters(step: Step[Any, Any]) -> list[Parameter]:
    """One output parameter per ``Outputs`` field, read from ``/tmp/outputs/<field>``."""
    return [Parameter(name=name, description=f.description,
                      value_from=m.ValueFrom(path=f"{OUTPUTS_DIR}/{name}"))
            for name, f in step.output_fields().items()]


def step_args(step: Step[Any, Any]) -> list[str]:
    """Container args: ``step <name> --field-name {{inputs.parameters.field_name}} … --outputs-dir DIR``."""
    args = ["step", step.name]
    for name in step.input_fields():
        args += [f"--{name.replace('_', '-')}", f"{{{{inputs.parameters.{name}}}}}"]
    return [*args, "--outputs-dir", OUTPUTS_DIR]


def step_container(step: Step[Any, Any]) -> Container:
    """The Argo container template of one step (created in the enclosing Hera template context)."""
    return Container(
        name=step.name,
        annotations={"workflows.argoproj.io/description": step.description},
        # pod label: `kubectl get pods -l raw2ready/step=mask`, and the step is visible on every pod
        labels={LABEL_STEP: step.name},
        image=image_for(step),
        command=["raw2ready"],
        args=step_args(step),
        inputs=input_parameters(step),
        outputs=output_parameters(step),
        resources=step_resources(step),
        retry_strategy=retry_strategy(step.retries),
        active_deadline_seconds=STEP_DEADLINE_S,
        env=[Env(name="HOME", value="/tmp")],  # caches (GDAL, matplotlib) go to the emptyDir
        env_from=[ConfigMapEnvFrom(name=SETTINGS_CONFIGMAP, optional=False),
                  SecretEnvFrom(name=SECRET_NAME, optional=False)],
        security_context=container_security_context(),
        volumes=[EmptyDirVolume(name="tmp", mount_path="/tmp")],
    )
