"""Sizing the Argo path for the Thailand backfill: the arithmetic behind ``raw2ready-limits`` and the Sensor.

Everything here is computed from the **rendered** objects (the scene DAG, each step's resource requests, the
semaphore ConfigMap, the Sensor's rate limit) plus a few measured or stated inputs, so that
``tests/test_workflows.py`` can check the numbers in ``manifests/overlays/prod`` and in
``docs/ORCHESTRATION.md`` ("Sizing a backfill") against the same arithmetic.

Inputs, with where they come from:

* per-step compute time of one full-size scene — ``docs/BENCHMARKS.md`` (real-format path, median of 3,
  2 cores): ingest 0.28 s, mask 11.50 s, ndvi 7.68 s, lai 9.38 s, cog + stac 0.53 s (measured together;
  split 0.40 / 0.13 here: stac as measured alone on 2026-12-01, the rest to cog);
* :data:`POD_OVERHEAD_S` — an **assumption**, not a measurement (no cluster here): scheduling, container start
  with a cached image, the ``raw2ready`` import, reading the previous step's outputs from the object store;
* the backfill — 25,000 scenes of the 98 Thai tiles over 48 months, one work order per tile × month
  (``steps.queue.orders.monthly_orders``), so 4,704 Workflows of ≈ 5.3 scenes on average;
* the reference cluster — :data:`REFERENCE_NODES` nodes of 16 vCPU / 64 GiB, 90 % allocatable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

STEP_SECONDS = {"ingest": 0.28, "mask": 11.50, "ndvi": 7.68, "lai": 9.38, "cog": 0.40, "stac": 0.13}
"""Compute time of each scene step on a full-size tile (s), docs/BENCHMARKS.md."""
POD_OVERHEAD_S = 8.0
"""Assumed fixed cost of one step pod (s): schedule, start, import, read inputs from S3. Not measured."""

BACKFILL_SCENES = 25_000
BACKFILL_TILES = 98
BACKFILL_MONTHS = 48
BACKFILL_ORDERS = BACKFILL_TILES * BACKFILL_MONTHS
MEAN_SCENES_PER_ORDER = BACKFILL_SCENES / BACKFILL_ORDERS

REFERENCE_NODES = 4
NODE_CPU = 16.0
NODE_MEMORY_GIB = 64.0
ALLOCATABLE = 0.9
"""Share of a node's CPU and memory left for pods after the kubelet, system daemons and eviction reserve."""

POD_BYTES_IN_STATUS = 1_500
"""Rough size of one pod node in a Workflow's ``status.nodes`` (name, phase, times, parameters, outputs)."""
ETCD_OBJECT_LIMIT = 1_048_576
"""The budget for one Workflow object: etcd refuses requests over 1.5 MiB by default (``--max-request-bytes``);
DESIGN.md keeps a Workflow under ~1 MiB."""


def cpu_cores(q: str) -> float:
    """A CPU quantity (``250m``, ``2``) in cores."""
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


def memory_gib(q: str) -> float:
    """A memory quantity (``512Mi``, ``4Gi``) in GiB."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi)", q)
    if m is None:
        raise ValueError(f"unsupported quantity {q!r}")
    return float(m.group(1)) / (1024 if m.group(2) == "Mi" else 1)


@dataclass(frozen=True)
class SceneProfile:
    """What one scene DAG costs, from the rendered ``raw2ready-scene`` template."""

    critical_path_s: float
    """Wall time of one scene: the longest dependency chain of (compute + pod overhead)."""
    core_seconds: float
    """CPU *requested* over the scene's pods' lifetimes (request × pod duration, summed)."""
    peak_cpu: float
    """Most CPU requested at once (tasks that run side by side, e.g. ndvi ‖ lai)."""
    peak_memory_gib: float
    """Most memory requested at once."""
    pods: int
    peak_pods: int

    @property
    def mean_cpu(self) -> float:
        """Average CPU requested while a scene is in flight (cores)."""
        return self.core_seconds / self.critical_path_s


def _pod_seconds(step: str) -> float:
    return STEP_SECONDS[step] + POD_OVERHEAD_S


def scene_profile(scene_wt: dict[str, Any]) -> SceneProfile:
    """Cost of one scene from the rendered ``raw2ready-scene`` WorkflowTemplate (DAG + container requests)."""
    templates = {t["name"]: t for t in scene_wt["spec"]["templates"]}
    dag = templates[scene_wt["spec"]["entrypoint"]]["dag"]["tasks"]
    tasks = {t["name"]: t for t in dag}
    deps = {n: re.findall(r"[\w-]+", t.get("depends", "")) for n, t in tasks.items()}
    requests = {n: templates[t["template"]]["container"]["resources"]["requests"] for n, t in tasks.items()}
    finish: dict[str, float] = {}
    start: dict[str, float] = {}
    for name in tasks:  # the DAG lists tasks in dependency order (registry order)
        start[name] = max((finish[d] for d in deps[name]), default=0.0)
        finish[name] = start[name] + _pod_seconds(tasks[name]["template"])
    # CPU/memory requested at each moment of the as-soon-as-possible schedule
    moments = sorted(set(start.values()))
    running = [[n for n in tasks if start[n] <= t < finish[n]] for t in moments]
    return SceneProfile(
        critical_path_s=max(finish.values()),
        core_seconds=sum(cpu_cores(requests[n]["cpu"]) * (finish[n] - start[n]) for n in tasks),
        peak_cpu=max(sum(cpu_cores(requests[n]["cpu"]) for n in r) for r in running),
        peak_memory_gib=max(sum(memory_gib(requests[n]["memory"]) for n in r) for r in running),
        pods=len(tasks),
        peak_pods=max(len(r) for r in running),
    )


@dataclass(frozen=True)
class BackfillPlan:
    """The backfill under given limits: what runs at once, how fast, how long."""

    scene: SceneProfile
    workflows: int
    """Semaphore ``workflows``: pipeline Workflows running at once."""
    scenes: int
    """Semaphore ``scenes``: scene DAGs running at once, across all Workflows."""
    parallelism: int
    """``spec.parallelism`` of the entry template: pods of one Workflow at once."""
    rate_per_minute: float
    """The Sensor's rate limit: Workflows submitted per minute."""

    @property
    def cluster_cpu(self) -> float:
        """Allocatable CPU of the reference cluster (cores)."""
        return REFERENCE_NODES * NODE_CPU * ALLOCATABLE

    @property
    def cluster_memory_gib(self) -> float:
        """Allocatable memory of the reference cluster (GiB)."""
        return REFERENCE_NODES * NODE_MEMORY_GIB * ALLOCATABLE

    @property
    def mean_cpu(self) -> float:
        """CPU requested on average by the scenes in flight (cores)."""
        return self.scenes * self.scene.mean_cpu

    @property
    def peak_memory_gib(self) -> float:
        """Memory requested if every scene in flight were at its peak at once (GiB)."""
        return self.scenes * self.scene.peak_memory_gib

    @property
    def peak_pods(self) -> int:
        """Pods at most: every scene at its widest, plus a scenes/catalog pod per Workflow."""
        return self.scenes * self.scene.peak_pods + self.workflows

    @property
    def scenes_per_minute(self) -> float:
        """Steady-state throughput when the scene semaphore is always full."""
        return self.scenes * 60 / self.scene.critical_path_s

    @property
    def workflows_per_minute(self) -> float:
        """Workflows finished per minute (the drain rate of the order queue)."""
        return self.scenes_per_minute / MEAN_SCENES_PER_ORDER

    @property
    def submit_ratio(self) -> float:
        """Rate limit ÷ drain rate: ≥ 1 keeps the semaphore fed, close to 1 keeps the backlog in RabbitMQ."""
        return self.rate_per_minute / self.workflows_per_minute

    @property
    def wall_hours(self) -> float:
        """Hours to process :data:`BACKFILL_SCENES` at :attr:`scenes_per_minute`."""
        return BACKFILL_SCENES / self.scenes_per_minute / 60

    @property
    def pending_at_end_of_submission(self) -> int:
        """Workflows waiting on the semaphore (in etcd) when the Sensor has submitted the last order."""
        minutes = BACKFILL_ORDERS / self.rate_per_minute
        return max(0, math.ceil((self.rate_per_minute - self.workflows_per_minute) * minutes))


def max_scenes_in_status(scene: SceneProfile, fan_out_nodes: int = 3) -> int:
    """Scenes one Workflow can hold before its node status nears etcd's limit (uncompressed estimate)."""
    per_scene = (scene.pods + 1) * POD_BYTES_IN_STATUS  # the pods + the scene's DAG node
    return (ETCD_OBJECT_LIMIT - fan_out_nodes * POD_BYTES_IN_STATUS) // per_scene
