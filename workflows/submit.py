"""Submit a pipeline run: create a Workflow from the deployed ``raw2ready`` WorkflowTemplate.

Talks to the Argo Server REST API through Hera's :class:`~hera.workflows.WorkflowsService`
(``POST /api/v1/workflows/<namespace>`` with ``Authorization: Bearer <token>``). Server URL, token and
namespace come from the settings (``RAW2READY_ARGO_SERVER_URL``, ``…_ARGO_TOKEN``, ``…_ARGO_NAMESPACE``).
The Workflow is the same object the Sensor submits for a queue message (:func:`workflows.events.
workflow_resource`), so both paths run the template with the same arguments.
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass
from datetime import date

from hera.exceptions import HeraException
from hera.workflows import WorkflowsService
from hera.workflows.models import Workflow, WorkflowCreateRequest
from pydantic import PydanticDeprecatedSince20, ValidationError

from steps.errors import InvalidInputError, Raw2ReadyError, TransientError, UsageError
from steps.queue.orders import WorkOrder
from steps.settings import Settings
from workflows.events import workflow_resource
from workflows.labels import LABEL_END, LABEL_START, LABEL_TILES, label_value, tiles_label, workflow_name_prefix
from workflows.pipeline import ENTRY_TEMPLATE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submitted:
    """What the Argo Server created."""

    name: str
    namespace: str
    url: str


def order_values(tiles: str, start: str, end: str, source: str | None, out: str | None,
                 force: bool = False, resolution: int = 0) -> dict[str, str]:
    """Validate the request like a work order; return the parameter values to send.

    ``source``/``out`` left out (``None``) are not sent, so the template falls back on the deployment's
    settings. Invalid tiles or dates raise :class:`steps.errors.UsageError` (exit 2).
    """
    try:  # the one message schema; absent source/out are probed with placeholders
        order = WorkOrder.model_validate({"tiles": tiles, "start": start, "end": end,
                                          "source": source or "-", "out": out or "-", "force": force,
                                          "resolution": resolution})
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "order"
        raise UsageError(f"invalid submission: {loc}: {first['msg']}") from exc
    except InvalidInputError as exc:  # an unknown tile, raised inside a validator
        raise UsageError(f"invalid submission: {exc}") from exc
    values = {"tiles": order.tiles, "start": order.start.isoformat(), "end": order.end.isoformat()}
    if source:
        values["source"] = source
    if out:
        values["out"] = out
    if order.force:  # the template's default is false
        values["force"] = "true"
    if order.resolution:  # the template's default is 0 (the finest the source has)
        values["resolution"] = str(order.resolution)
    return values


def workflow_name(values: dict[str, str]) -> str:
    """``generateName`` of a submission: the order in the name, e.g. ``raw2ready-47ppr-20240101-20240131-``."""
    return workflow_name_prefix(values["tiles"], date.fromisoformat(values["start"]),
                                date.fromisoformat(values["end"]), base=ENTRY_TEMPLATE)


def workflow_labels(values: dict[str, str]) -> dict[str, str]:
    """The tile/date labels, encoded as the template's ``labelsFrom`` does (:mod:`workflows.labels`)."""
    return {LABEL_TILES: tiles_label(values["tiles"]), LABEL_START: label_value(values["start"]),
            LABEL_END: label_value(values["end"])}


def submit(values: dict[str, str], settings: Settings) -> Submitted:
    """Create the Workflow on the Argo Server named by ``settings``; return its name.

    A missing server URL is a usage error (2); an unreachable server or a 5xx answer is transient (75).
    """
    if not settings.argo_server_url:
        raise UsageError("RAW2READY_ARGO_SERVER_URL is not set (the Argo Server to submit to)")
    token = settings.argo_token.get_secret_value() if settings.argo_token else None
    service = WorkflowsService(host=settings.argo_server_url, token=token, namespace=settings.argo_namespace)
    req = WorkflowCreateRequest(workflow=Workflow.model_validate(workflow_resource(
        values, submitted_by="cli", generate_name=workflow_name(values), labels=workflow_labels(values))))
    try:
        with warnings.catch_warnings():
            # hera 7.1 serialises requests with pydantic's deprecated `.json()`; not ours to fix, and
            # harmless — but it must not turn into an error where warnings are errors (tests)
            warnings.filterwarnings("ignore", category=PydanticDeprecatedSince20)
            created = service.create_workflow(req)
    except HeraException as exc:
        # hera maps only some statuses to subclasses; the others carry the code in the message
        found = re.search(r"status code (\d{3})", str(exc))
        status = int(getattr(exc, "status_code", 0) or (found.group(1) if found else 0))
        if status >= 500 or status in (408, 429):
            raise TransientError(f"Argo Server failed the submission (HTTP {status}): {exc}") from exc
        raise Raw2ReadyError(f"Argo Server refused the submission (HTTP {status}): {exc}") from exc
    except OSError as exc:  # requests' ConnectionError/Timeout derive from OSError
        raise TransientError(f"Argo Server {settings.argo_server_url} unreachable: {exc}") from exc
    name = created.metadata.name or "?"
    namespace = created.metadata.namespace or settings.argo_namespace
    url = f"{settings.argo_server_url.rstrip('/')}/workflows/{namespace}/{name}"
    log.info("submitted workflow %s/%s", namespace, name)
    return Submitted(name=name, namespace=namespace, url=url)
