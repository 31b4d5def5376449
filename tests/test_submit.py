"""``raw2ready submit`` sends the right request to the Argo Server API (a loopback HTTP server checks it)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from click.testing import CliRunner

TOKEN = "test-token-not-a-secret"
NAMESPACE = "raw2ready-test"


@dataclass
class FakeArgoServer:
    """Records requests; answers like the Argo Server's ``POST /api/v1/workflows/{namespace}``."""

    url: str = ""
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def argo(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeArgoServer]:
    state = FakeArgoServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the name http.server dispatches to
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append({"method": "POST", "path": self.path, "headers": dict(self.headers),
                                   "body": json.loads(body)})
            if state.status == 200:
                wf = json.loads(body)["workflow"]
                wf["metadata"] |= {"name": "raw2ready-x7k2p", "namespace": self.path.rsplit("/", 1)[-1]}
                payload = json.dumps(wf).encode()
            else:
                payload = json.dumps({"code": 7, "message": "nope"}).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("RAW2READY_ARGO_SERVER_URL", state.url)
    monkeypatch.setenv("RAW2READY_ARGO_TOKEN", TOKEN)
    monkeypatch.setenv("RAW2READY_ARGO_NAMESPACE", NAMESPACE)
    from steps.settings import get_settings

    get_settings.cache_clear()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _submit(*args: str) -> Any:
    from steps.cli import main

    return CliRunner().invoke(main, ["submit", *args])


def test_submit_creates_a_workflow_from_the_deployed_template(argo: FakeArgoServer) -> None:
    res = _submit("--tiles", "47ppr", "--start", "2024-01-01", "--end", "2024-01-31")
    assert res.exit_code == 0, res.output
    (req,) = argo.requests
    assert req["method"] == "POST" and req["path"] == f"/api/v1/workflows/{NAMESPACE}"
    assert req["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert req["headers"]["Content-Type"] == "application/json"
    wf = req["body"]["workflow"]
    assert wf["spec"]["workflowTemplateRef"] == {"name": "raw2ready"}
    # named and labelled after the order, as an operator sees it in the Argo UI (prefix raw2ready- kept)
    assert wf["metadata"]["generateName"].startswith("raw2ready-")
    assert wf["metadata"]["generateName"] == "raw2ready-47ppr-20240101-20240131-"
    assert wf["metadata"]["labels"] == {
        "app.kubernetes.io/part-of": "raw2ready", "raw2ready/submitted-by": "cli",
        "raw2ready/tiles": "47PPR", "raw2ready/start": "2024-01-01", "raw2ready/end": "2024-01-31"}
    # normalised like a work order; source/out left to the deployment's settings
    assert wf["spec"]["arguments"]["parameters"] == [
        {"name": "tiles", "value": "47PPR"}, {"name": "start", "value": "2024-01-01"},
        {"name": "end", "value": "2024-01-31"}]
    assert f"{NAMESPACE}/raw2ready-x7k2p" in res.output
    assert f"{argo.url}/workflows/{NAMESPACE}/raw2ready-x7k2p" in res.output


def test_submit_sends_source_and_out_when_given(argo: FakeArgoServer) -> None:
    res = _submit("--tiles", "47PPR,47PQR", "--start", "2024-02-01", "--end", "2024-02-29",
                  "--source", "https://earth-search.aws.element84.com/v1", "--out", "s3://bucket/products")
    assert res.exit_code == 0, res.output
    params = {p["name"]: p["value"] for p in argo.requests[0]["body"]["workflow"]["spec"]["arguments"]["parameters"]}
    assert params == {"tiles": "47PPR,47PQR", "start": "2024-02-01", "end": "2024-02-29",
                      "source": "https://earth-search.aws.element84.com/v1", "out": "s3://bucket/products"}


def test_submit_force_sends_the_option(argo: FakeArgoServer) -> None:
    res = _submit("--tiles", "47PPR", "--start", "2024-02-01", "--end", "2024-02-29", "--force")
    assert res.exit_code == 0, res.output
    params = {p["name"]: p["value"] for p in argo.requests[0]["body"]["workflow"]["spec"]["arguments"]["parameters"]}
    assert params == {"tiles": "47PPR", "start": "2024-02-01", "end": "2024-02-29", "force": "true"}


def test_submit_resolution_sends_the_option(argo: FakeArgoServer) -> None:
    res = _submit("--tiles", "47PPR", "--start", "2024-02-01", "--end", "2024-02-29", "--resolution", "60")
    assert res.exit_code == 0, res.output
    params = {p["name"]: p["value"] for p in argo.requests[0]["body"]["workflow"]["spec"]["arguments"]["parameters"]}
    assert params == {"tiles": "47PPR", "start": "2024-02-01", "end": "2024-02-29", "resolution": "60"}
    bad = _submit("--tiles", "47PPR", "--start", "2024-02-01", "--end", "2024-02-29", "--resolution", "30")
    assert bad.exit_code == 2 and len(argo.requests) == 1


def test_submit_sends_the_parameters_the_template_declares() -> None:
    from workflows.events import workflow_resource
    from workflows.pipeline import entry_template

    declared = {p.name for p in entry_template().arguments}
    sent = {p["name"] for p in workflow_resource({"tiles": "47PPR", "start": "a", "end": "b"})["spec"]["arguments"]
            ["parameters"]}
    assert sent <= declared
    with pytest.raises(ValueError, match="not parameters"):
        workflow_resource({"tile": "47PPR"})


@pytest.mark.parametrize(("status", "exit_code"), [(503, 75), (500, 75), (403, 1), (400, 1)])
def test_submit_maps_server_errors_to_exit_codes(argo: FakeArgoServer, status: int, exit_code: int) -> None:
    argo.status = status
    res = _submit("--tiles", "47PPR", "--start", "2024-01-01", "--end", "2024-01-31")
    assert res.exit_code == exit_code, res.output
    assert len(argo.requests) == 1


@pytest.mark.parametrize("args", [
    ("--tiles", "47PPA", "--start", "2024-01-01", "--end", "2024-01-31"),   # no such tile
    ("--tiles", "47PPR", "--start", "2024-02-01", "--end", "2024-01-01"),   # end before start
    ("--tiles", "47PPR", "--start", "2024-13-01", "--end", "2024-12-31"),   # not a date
])
def test_submit_rejects_bad_requests_without_calling_the_server(argo: FakeArgoServer, args: tuple[str, ...]) -> None:
    res = _submit(*args)
    assert res.exit_code == 2, res.output
    assert argo.requests == []


def test_submit_without_a_server_url_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from steps.settings import get_settings

    monkeypatch.delenv("RAW2READY_ARGO_SERVER_URL", raising=False)
    get_settings.cache_clear()
    res = _submit("--tiles", "47PPR", "--start", "2024-01-01", "--end", "2024-01-31")
    assert res.exit_code == 2 and "RAW2READY_ARGO_SERVER_URL" in res.output


def test_submit_to_an_unreachable_server_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from steps.settings import get_settings

    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("RAW2READY_ARGO_SERVER_URL", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    res = _submit("--tiles", "47PPR", "--start", "2024-01-01", "--end", "2024-01-31")
    assert res.exit_code == 75, res.output


THAI_LISTS = {
    "one": ("47PPR",),
    "bangkok": ("47PPQ", "47PPR", "47PQQ", "47PQR"),
    "ten": ("47NMH", "47NMJ", "47NNH", "47NNJ", "47NPG", "47NPH", "47NPJ", "47NQG", "47NQH", "47NRG"),
    "eleven": ("47NMH", "47NMJ", "47NNH", "47NNJ", "47NPG", "47NPH", "47NPJ", "47NQG", "47NQH", "47NRG", "47NRH"),
}


@pytest.mark.parametrize("which", [*THAI_LISTS, "thailand"])
def test_submit_names_and_labels_are_valid_for_real_thai_tile_lists(argo: FakeArgoServer, which: str) -> None:
    """Workflow name ≤ 63 with its random suffix, label values valid, for 1 … all 98 Thai tiles."""
    from steps.sentinel2.tiles import thailand_tiles
    from workflows.labels import is_valid_label_value

    tiles = thailand_tiles() if which == "thailand" else THAI_LISTS[which]
    assert set(tiles) <= set(thailand_tiles())  # real Thai tiles, not made-up ids
    res = _submit("--tiles", ",".join(tiles), "--start", "2022-01-01", "--end", "2025-12-31")
    assert res.exit_code == 0, res.output
    md = argo.requests[0]["body"]["workflow"]["metadata"]
    name = md["generateName"] + "x7k2p"  # what the API server makes of it
    assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert name.startswith(f"raw2ready-{tiles[0].lower()}-") and md["generateName"].endswith("-20220101-20251231-")
    for key, value in md["labels"].items():
        assert is_valid_label_value(value), f"{key}={value!r}"
    label = md["labels"]["raw2ready/tiles"]
    if len(tiles) <= 10:  # 10 × 6 − 1 = 59 characters: the whole list, filterable tile by tile
        assert label.split("_") == sorted(tiles)
    else:
        assert label == "_".join(sorted(tiles)[:8]) + f"_and{len(tiles) - 8}more"
