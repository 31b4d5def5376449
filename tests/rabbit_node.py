"""A second, independent RabbitMQ node for fault tests (stop, kill -9, start again on the same ports and data).

The node runs ``rabbitmq-server`` in the foreground as a child process with everything of its own: node name
``r2rtest-<port>@localhost``, AMQP port, Erlang distribution port, a temporary ``HOME`` (so the node and
``rabbitmqctl`` share the Erlang cookie the node creates there, and never touch the main broker's cookie),
mnesia and log directories, a config file that listens on loopback only, and an empty enabled-plugins file
(no management plugin, no extra ports). The main broker on 5672 is not disturbed: only the shared ``epmd``
name server is used by both.

``stop()`` stops the node gracefully (SIGTERM, as a service manager does: queues are flushed to disk); ``kill()`` sends
SIGKILL to the Erlang VM (power-loss-like: persistent messages already confirmed survive, since RabbitMQ
confirms a persistent message only after it is on disk). ``start()`` starts it again on the same ports and
data directory, so durable queues and persistent messages come back.

Also runnable by hand for experiments: ``python tests/rabbit_node.py`` starts a node, prints its URL and
stops it on Enter.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

# The Debian wrapper in /usr/sbin switches to the rabbitmq user; the scripts below it run as the caller.
_LIBBIN = Path("/usr/lib/rabbitmq/bin")


def rabbitmq_server_path() -> str | None:
    """The ``rabbitmq-server`` script to run (None when RabbitMQ is not installed)."""
    cand = _LIBBIN / "rabbitmq-server"
    if cand.is_file():
        return str(cand)
    return shutil.which("rabbitmq-server")


def _ctl_path(server: str) -> str:
    ctl = Path(server).with_name("rabbitmqctl")
    return str(ctl) if ctl.is_file() else (shutil.which("rabbitmqctl") or "rabbitmqctl")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class RabbitNode:
    """One throw-away RabbitMQ node on free loopback ports with its data in ``base`` (a temp dir by default).

    ``url`` is its AMQP URL (guest/guest, vhost ``/``). Use as a context manager or call :meth:`start` and
    :meth:`close` (which stops the node and removes the temp dir it created).
    """

    def __init__(self, base: Path | None = None, port: int | None = None) -> None:
        server = rabbitmq_server_path()
        if server is None:
            raise FileNotFoundError("rabbitmq-server is not installed")
        self.server = server
        self.ctl = _ctl_path(server)
        self._own_base = base is None
        self.base = Path(base or tempfile.mkdtemp(prefix="r2r-rabbit-"))
        self.port = port or _free_port()
        self.dist_port = _free_port()
        while self.dist_port == self.port:
            self.dist_port = _free_port()
        self.nodename = f"r2rtest-{self.port}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        for d in ("home", "mnesia", "log"):
            (self.base / d).mkdir(parents=True, exist_ok=True)
        # guest may log in from loopback only (the default); the node listens on loopback only.
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = info\n"
            # A restarted node must accept connections at once; the default disk alarm is 50 MB free.
            "disk_free_limit.absolute = 10MB\n"
        )
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")  # keep the system env file (NODENAME=rabbit) out

    @property
    def url(self) -> str:
        """AMQP URL of the node (default vhost)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        """Environment of ``rabbitmq-server`` and ``rabbitmqctl`` for this node."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(self.base / "home"),  # the Erlang cookie lives here, shared by node and rabbitmqctl
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
            "RABBITMQ_ALLOW_INPUT": "",
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # Erlang distribution on loopback only (as the main broker's env file sets it).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        })
        return env

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 90.0) -> RabbitNode:
        """Start the node (same ports, same data) and wait until an AMQP connection succeeds."""
        if self.proc is not None and self.proc.poll() is None:
            return self
        log = (self.base / "log" / "stdout.log").open("ab")
        self.proc = subprocess.Popen([self.server], env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.base, start_new_session=True)
        log.close()
        self.starts += 1
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Block until a pika connection to the node opens; raise with the log tail on failure."""
        import pika

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq node {self.nodename} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if _port_open(self.port):
                try:
                    params = pika.URLParameters(self.url)
                    params.connection_attempts = 1
                    params.socket_timeout = 2
                    pika.BlockingConnection(params).close()
                    return
                except Exception as exc:  # not ready yet (booting, auth backend starting, …)
                    last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.3)
        raise TimeoutError(f"rabbitmq node {self.nodename} not ready after {timeout:.0f}s ({last}):\n"
                           f"{self.log_tail()}")

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop, as a service manager does it: SIGTERM to the node, which closes every client
        connection (``ConnectionClosedByBroker``) and exits 0; wait until the VM has exited.

        Not ``rabbitmqctl stop``: that boots a second Erlang VM first, which on a loaded machine took seconds,
        so "stop the broker now" happened at an unpredictable later moment (an order meant to be cut
        mid-scene could finish first).
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._wait_port_closed()

    def kill(self) -> None:
        """``kill -9`` of the node's whole process group (the Erlang VM, its port programs)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._wait_port_closed()

    def _wait_port_closed(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while _port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self, *, hard: bool = False) -> None:
        """Stop (``kill -9`` if ``hard``) and start again on the same ports and data."""
        (self.kill if hard else self.stop)()
        self.start()

    def ctl_run(self, *args: str) -> str:
        """Run ``rabbitmqctl -n NODE args…`` and return its stdout (raises on failure)."""
        res = subprocess.run([self.ctl, "-n", self.nodename, "-q", *args], env=self.env(), capture_output=True,
                             text=True, timeout=60, check=True)
        return res.stdout

    def log_tail(self, n: int = 40) -> str:
        """The last lines of the node's logs (for failure messages)."""
        lines: list[str] = []
        for p in sorted((self.base / "log").glob("*.log")):
            lines += [f"{p.name}: {ln}" for ln in p.read_text(errors="replace").splitlines()[-n:]]
        return "\n".join(lines[-n:])

    def close(self) -> None:
        """Stop the node (hard if a graceful stop does not finish) and remove the temp dir if we made it."""
        try:
            self.stop(timeout=30)
        finally:
            self.kill()
            if self._own_base:
                shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> RabbitNode:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()


if __name__ == "__main__":
    with RabbitNode() as node:
        print(f"node {node.nodename} ready at {node.url} (data in {node.base}); Enter stops it")
        input()
