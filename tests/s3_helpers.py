"""Separate S3 servers for the two storage sides: moto server processes with IAM auth and a request log.

The session-wide ``s3_server`` fixture of ``conftest.py`` runs moto *inside* the test process, and every
moto server of one process shares the same in-memory state (and one global auth switch). To show that
source and output really are separate — different endpoints, different credentials — each
:class:`MotoProcess` is a ``python -m moto.server`` child process with its own state:

* :meth:`MotoProcess.add_user` creates an IAM user with a policy and returns its key pair; after
  :meth:`MotoProcess.enforce_auth` the server checks every request's SigV4 signature and the user's
  policy, so a key of the other server is refused (``InvalidAccessKeyId``, HTTP 403);
* moto's request recorder logs every request the server received, headers included
  (:meth:`MotoProcess.requests`), which proves which server was asked and with which headers
  (``x-amz-request-payer``, ``Authorization``).

Usage (see ``tests/test_storage_sides.py``)::

    from s3_helpers import TwoSides, two_servers_fixture, two_sides_fixture  # noqa: F401  (fixtures)

    def test_x(two_sides: TwoSides) -> None:
        two_sides.source.client().put_object(...)      # admin view of the source server
        ...                                            # code under test: RAW2READY_* env already set

The fixtures are registered under the names ``two_servers`` and ``two_sides`` (the ``*_fixture`` function
names only avoid ruff's F811 in the importing module). ``two_sides`` (module-scoped servers, a fresh
environment per test) sets ``RAW2READY_SOURCE_S3_*`` to a
read-only user of the *source* server and ``RAW2READY_S3_*`` to a read-write user of the *output*
server, and clears the settings cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from r2r_helpers import _free_port

ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def read_only_policy(*buckets: str) -> dict[str, Any]:
    """IAM policy: list and get objects of ``buckets`` only."""
    resources = [f"arn:aws:s3:::{b}" for b in buckets] + [f"arn:aws:s3:::{b}/*" for b in buckets]
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation"],
         "Resource": resources}]}


@dataclass
class MotoProcess:
    """One moto server in a child process (its own state, auth switch and request log)."""

    endpoint: str
    recording: Path
    proc: subprocess.Popen[bytes]
    admin: tuple[str, str] = ("testing", "testing")
    users: dict[str, tuple[str, str]] = field(default_factory=dict)

    def client(self, service: str = "s3", keys: tuple[str, str] | None = None) -> Any:
        """A boto3 client of this server (default: the admin user's keys; region us-east-1)."""
        import boto3
        from botocore.config import Config

        key_id, secret = keys or self.admin
        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=key_id,
            aws_secret_access_key=secret, config=Config(s3={"addressing_style": "path"}))

    def _post(self, path: str, data: bytes = b"") -> bytes:
        # text/plain: a form content type would make the server parse the body away (moto reads raw data)
        req = urllib.request.Request(self.endpoint + path, data=data, method="POST",
                                     headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return bytes(resp.read())

    def add_user(self, name: str, policy: dict[str, Any]) -> tuple[str, str]:
        """Create IAM user ``name`` with an inline ``policy``; returns its (access key id, secret)."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        self.users[name] = (key["AccessKeyId"], key["SecretAccessKey"])
        return self.users[name]

    def enforce_auth(self) -> None:
        """From now on check signatures and IAM policies of every request (call after :meth:`add_user`)."""
        if "admin" not in self.users:
            self.admin = self.add_user("admin", ADMIN_POLICY)
        self._post("/moto-api/reset-auth", b"0")

    def start_recording(self) -> None:
        """Empty the request log and record every request from now on."""
        self._post("/moto-api/recorder/reset-recording")
        self._post("/moto-api/recorder/start-recording")

    def requests(self) -> list[dict[str, Any]]:
        """Requests received since :meth:`start_recording`: ``method``, ``url``, ``headers`` (lower-cased)."""
        if not self.recording.exists():
            return []
        # moto's threaded server writes each entry and its newline in two calls, so under concurrent
        # requests two entries can share a line ("{A}{B}\n\n"): decode the log as a stream of objects
        text, pos, entries = self.recording.read_text(), 0, []
        decoder = json.JSONDecoder()
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                break
            obj, pos = decoder.raw_decode(text, pos)
            entries.append(obj)
        out = []
        for entry in entries:
            out.append({"method": entry["method"], "url": entry["url"],
                        "headers": {k.lower(): v for k, v in entry["headers"].items()}})
        return out

    def upload_tree(self, local: Path, bucket: str, prefix: str) -> None:
        """Copy a local folder into ``s3://bucket/prefix`` on this server (admin keys), e.g. a source archive."""
        client = self.client()
        for p in sorted(local.rglob("*")):
            if p.is_file():
                client.upload_file(str(p), bucket, f"{prefix.strip('/')}/{p.relative_to(local).as_posix()}")

    def stop(self) -> None:
        """Terminate the server process."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def launch_moto(workdir: Path, name: str) -> MotoProcess:
    """Start ``python -m moto.server`` on a free loopback port (call :func:`wait_ready` before use)."""
    port = _free_port()
    recording = workdir / f"{name}-requests.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RAW2READY_", "MOTO_"))}
    env["MOTO_RECORDER_FILEPATH"] = str(recording)
    with (workdir / f"{name}-server.log").open("wb") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    return MotoProcess(endpoint=f"http://127.0.0.1:{port}", recording=recording, proc=proc)


def wait_ready(server: MotoProcess, timeout: float = 60) -> MotoProcess:
    """Wait until ``server`` answers HTTP; stop it and raise if it exits or does not answer in time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{server.endpoint}/moto-api/data.json", timeout=2):
                return server
        except OSError:
            if server.proc.poll() is not None or time.monotonic() > deadline:
                server.stop()
                log = server.recording.parent / server.recording.name.replace("-requests.jsonl", "-server.log")
                raise RuntimeError(f"moto server at {server.endpoint} did not start (log: {log})") from None
            time.sleep(0.2)


def start_moto(workdir: Path, name: str) -> MotoProcess:
    """Start a moto server process and wait until it answers."""
    return wait_ready(launch_moto(workdir, name))


@dataclass
class TwoSides:
    """A source server and an output server, and the environment that points raw2ready at them."""

    source: MotoProcess
    output: MotoProcess
    source_keys: tuple[str, str]
    output_keys: tuple[str, str]
    env: dict[str, str]


Servers = tuple[MotoProcess, MotoProcess, tuple[str, str], tuple[str, str]]
"""(source server, output server, source reader keys, output writer keys)."""

SOURCE_BUCKET = "archive"
"""Bucket that exists only on the source server (the reader may read it)."""
LOCKED_BUCKET = "locked-archive"
"""Bucket on the source server that the reader's policy does not cover (access denied)."""
OUTPUT_BUCKET = "products"
"""Bucket that exists only on the output server."""


@pytest.fixture(scope="module", name="two_servers")
def two_servers_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """Two moto servers with IAM auth: source (buckets archive, locked-archive) and output (products)."""
    workdir = tmp_path_factory.mktemp("moto-sides")
    source, output = launch_moto(workdir, "source"), launch_moto(workdir, "output")  # start in parallel
    try:
        try:
            wait_ready(source)
            wait_ready(output)
            source.client().create_bucket(Bucket=SOURCE_BUCKET)
            source.client().create_bucket(Bucket=LOCKED_BUCKET)
            output.client().create_bucket(Bucket=OUTPUT_BUCKET)
            reader = source.add_user("reader", read_only_policy(SOURCE_BUCKET))
            writer = output.add_user("writer", ADMIN_POLICY)
            source.enforce_auth()
            output.enforce_auth()
            yield source, output, reader, writer
        finally:
            output.stop()
    finally:
        source.stop()


@pytest.fixture(name="two_sides")
def two_sides_fixture(two_servers: Servers, monkeypatch: pytest.MonkeyPatch) -> TwoSides:
    """Point raw2ready's source side at the source server and its output side at the output server."""
    from steps.settings import get_settings

    source, output, reader, writer = two_servers
    env = {
        "RAW2READY_S3_ENDPOINT_URL": output.endpoint,
        "RAW2READY_S3_ACCESS_KEY_ID": writer[0],
        "RAW2READY_S3_SECRET_ACCESS_KEY": writer[1],
        "RAW2READY_S3_REGION": "us-east-1",
        "RAW2READY_SOURCE_S3_ENDPOINT_URL": source.endpoint,
        "RAW2READY_SOURCE_S3_ACCESS_KEY_ID": reader[0],
        "RAW2READY_SOURCE_S3_SECRET_ACCESS_KEY": reader[1],
        "RAW2READY_SOURCE_S3_REGION": "us-east-1",
        "RAW2READY_RETRY_BACKOFF_S": "0.05",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    source.start_recording()
    output.start_recording()
    return TwoSides(source=source, output=output, source_keys=reader, output_keys=writer, env=env)
