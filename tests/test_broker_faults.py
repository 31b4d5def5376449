"""Broker faults against a second, real RabbitMQ node (``tests/rabbit_node.py``): stopped gracefully or killed
with SIGKILL while a worker is mid-scene and while ``enqueue`` is publishing, then started again on the same
ports and data. Nothing is lost, nothing takes effect twice, and the worker and publisher say in their logs
that they reconnected with back-off.

Each test prints one line of counts (``-s`` shows it): sent, acked, redelivered, lost (must be 0), duplicates.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest
from rabbit_node import RabbitNode, rabbitmq_server_path

from steps.queue.bookkeeping import done_key
from steps.queue.transport import Topology, connect, declare_topology, queue_depths

from r2r_helpers import COUNTS_PROPERTY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(rabbitmq_server_path() is None, reason="rabbitmq-server is not installed (apt-get install "
                       "rabbitmq-server): the fault tests need a second, real node"),
]

SCENE_SIZE = 600  # px at 10 m: ~1-3 s per scene on the 2-core machine, so a broker stop lands mid-scene


@pytest.fixture(scope="module")
def node() -> Iterator[RabbitNode]:
    """A second RabbitMQ node on free ports, stopped and removed after the module."""
    with RabbitNode() as n:
        yield n


@pytest.fixture
def queue(node: RabbitNode) -> Iterator[str]:
    """A unique queue name on the second node; its topology is deleted afterwards."""
    from steps.queue.transport import delete_topology

    name = f"r2r-fault-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        node.start()  # a failed test may have left it stopped
        delete_topology(node.url, name)
    except Exception as exc:  # cleanup only: the node is thrown away with the module anyway
        print(f"cleanup of {name} failed: {exc}")


@pytest.fixture(scope="module")
def slow_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo scenes of 47PPR at 600 px (slow enough to stop the broker mid-scene)."""
    from synthesizer import demo_specs, synthesize_archive

    specs = [s for s in demo_specs() if s.tile == "47PPR" and s.datetime.year >= 2022]
    root = tmp_path_factory.mktemp("slow-archive")
    synthesize_archive(root, [replace(s) for s in specs], size=SCENE_SIZE, seed=0)
    return root


RECONNECT_ATTEMPTS = 40
"""Reconnect attempts given to the worker and enqueue under test (delays capped at 2 s)."""


def _env(node: RabbitNode, queue: str) -> dict[str, str]:
    return {**os.environ, "RAW2READY_BROKER_URL": node.url, "RAW2READY_QUEUE_NAME": queue,
            "RAW2READY_RETRY_BACKOFF_S": "0.05"}


def _exe() -> str:
    return str(Path(sys.executable).parent / "raw2ready")


def _wait_for(pred: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _outage(node: RabbitNode, how: str, down_s: float) -> None:
    """Take the node away (``stop``: graceful, ``kill``: SIGKILL), keep it down ``down_s`` s, start it again."""
    (node.kill if how == "kill" else node.stop)()
    time.sleep(down_s)
    node.start()


def _reap(proc: subprocess.Popen[str]) -> None:
    """Kill a child the test left running (a failed assertion must not leave a worker or enqueue behind)."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _drain_ids(url: str, queue: str) -> list[str]:
    """Take every message off ``queue`` (acknowledged) and return their message ids in order."""
    conn = connect(url)
    ids: list[str] = []
    try:
        ch = conn.channel()
        while True:
            method, props, _ = ch.basic_get(queue, auto_ack=True)
            if method is None:
                break
            ids.append(props.message_id)
    finally:
        conn.close()
    return ids


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_broker_stopped_mid_scene_worker_reconnects_and_every_order_is_done_once(
        how: str, node: RabbitNode, queue: str, slow_archive: Path, tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    from steps.queue.orders import monthly_orders

    out = tmp_path / "out"
    orders = monthly_orders(["47PPR"], date(2022, 1, 1), date(2024, 1, 31), str(slow_archive), str(out))
    env = _env(node, queue)
    res = subprocess.run([_exe(), "enqueue", "--tiles", "47PPR", "--start", "2022-01-01", "--end", "2024-01-31",
                          "--source", str(slow_archive), "--out", str(out)], env=env, capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    sent = len(orders)
    assert f"enqueued {sent} order(s)" in res.stdout

    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_f:
        proc = subprocess.Popen([_exe(), "worker", "--idle-exit", "8", "--reconnect-max-delay", "2",
                                 # ≈ 80 s of retries: a loaded machine took longer than 10 × 2 s to restart the node
                                 "--reconnect-attempts", str(RECONNECT_ATTEMPTS)], env=env,
                                stdout=log_f, stderr=subprocess.STDOUT, text=True)
    try:
        # Mid-scene: the first scene of an order with scenes has started (its progress line is not out yet).
        _wait_for(lambda: "order " in log_path.read_text() and " scene(s)" in log_path.read_text()
                  and re.search(r": [1-9]\d* scene\(s\)", log_path.read_text()) is not None, 180,
                  "an order with scenes to start")
        before = log_path.read_text()
        running = re.findall(r"order (wo-[0-9a-f]+) \S+ \S+: [1-9]\d* scene\(s\)", before)[-1]
        assert f"order {running} done in" not in before
        stopped_at = len(log_path.read_text())
        _outage(node, how, 1.5)  # the worker sees the loss and backs off at least once
        rc = proc.wait(timeout=300)
    finally:
        _reap(proc)
    log = log_path.read_text()
    assert rc == 0, log[-3000:]
    assert re.search(r"connection lost to RabbitMQ at 127\.0\.0\.1:\d+ .*: reconnecting in \d+\.\d s "
                     rf"\(attempt 1/{RECONNECT_ATTEMPTS}\)", log), log[-3000:]
    assert "reconnected to RabbitMQ" in log
    # The order that was running when the broker went away finished after the stop, on the new connection.
    assert f"order {running} done in" in log[stopped_at:] or f"order {running} done in" in log[len(before):]

    done_lines = Counter(re.findall(r"order (wo-[0-9a-f]+) done in", log))
    already = Counter(re.findall(r"order (wo-[0-9a-f]+) already done", log))
    scene_done = Counter(re.findall(r"\] (\S+) (?:done|skipped)\b", log))
    lost = [o.message_id for o in orders if not (out / done_key(o.message_id)).is_file()]
    duplicates = sum(n - 1 for n in done_lines.values() if n > 1) + sum(n - 1 for n in scene_done.values() if n > 1)
    summary = re.search(r"orders: (\d+) done, (\d+) already done, (\d+) retried, (\d+) dead-lettered, "
                        r"(\d+) requeued, (\d+) redelivered, (\d+) reconnect", log)
    assert summary, log[-2000:]
    acked = int(summary.group(1)) + int(summary.group(2))
    redelivered = int(summary.group(6))
    record_property(COUNTS_PROPERTY, (
        f"broker {how} mid-scene: sent {sent}, acked {acked}, redelivered {redelivered}, lost {len(lost)}, "
        f"duplicates {duplicates} (orders done {sum(done_lines.values())}, already done {sum(already.values())}, "
        f"scenes processed {len(scene_done)}, reconnects {summary.group(7)})"))
    assert lost == []
    assert duplicates == 0, (done_lines, scene_done)
    assert set(done_lines) == {o.message_id for o in orders}  # every order's work ran to its record once
    assert int(summary.group(7)) == 1 and int(summary.group(4)) == 0
    assert redelivered >= 1  # the running order's message came back after the restart
    assert len(scene_done) >= 3
    depths = queue_depths(url=node.url, queue=queue)
    assert depths == {queue: 0, f"{queue}.retry": 0, f"{queue}.dead": 0}


@pytest.mark.parametrize("how", ["kill", "stop"])
def test_broker_stopped_while_enqueue_publishes_loses_nothing_and_counts_republished(
        how: str, node: RabbitNode, queue: str, tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    from steps.queue.orders import monthly_orders
    from steps.sentinel2.tiles import aoi_tiles

    tiles = aoi_tiles("thailand", "all")
    # 98 tiles × 48 months = 4,704 orders: publishing takes 5-20 s here, room to stop the broker midway.
    start, end = date(2022, 1, 1), date(2025, 12, 31)
    src, out = str(tmp_path / "src"), str(tmp_path / "out")
    intended = {o.message_id for o in monthly_orders(tiles, start, end, src, out)}
    sent = len(intended)
    assert sent == 4704
    # Declare first, so that the depth can be watched from the start.
    conn = connect(node.url)
    declare_topology(conn.channel(), Topology(queue))
    conn.close()

    log_path = tmp_path / "enqueue.log"
    with log_path.open("w") as log_f:
        proc = subprocess.Popen([_exe(), "enqueue", "--aoi", "thailand", "--start", start.isoformat(), "--end",
                                 end.isoformat(), "--source", src, "--out", out, "--reconnect-max-delay", "2",
                                 "--reconnect-attempts", str(RECONNECT_ATTEMPTS)],
                                env=_env(node, queue), stdout=log_f, stderr=subprocess.STDOUT, text=True)
    stop_after = 400
    try:
        def depth() -> int:
            try:
                return queue_depths(url=node.url, queue=queue)[queue]
            except Exception:
                return 0
        _wait_for(lambda: depth() >= stop_after or proc.poll() is not None, 120, f"{stop_after} confirmed orders")
        assert proc.poll() is None, "enqueue finished before the broker could be stopped: " + log_path.read_text()
        at_stop = depth()
        _outage(node, how, 1.0)
        rc = proc.wait(timeout=300)
    finally:
        _reap(proc)
    log = log_path.read_text()
    assert rc == 0, log[-3000:]
    assert re.search(rf"connection lost to RabbitMQ at 127\.0\.0\.1:\d+ after \d+ of {sent} confirmed orders "
                     rf"\(\w+\): reconnecting in \d+\.\d s \(attempt 1/{RECONNECT_ATTEMPTS}\)", log), log[-3000:]
    m = re.search(r"publish: (\d+) sent, (\d+) confirmed, (\d+) republished after (\d+) reconnect", log)
    assert m, log[-2000:]
    n_sent, confirmed, republished = int(m.group(1)), int(m.group(2)), int(m.group(3))
    assert confirmed == sent and n_sent == confirmed + republished and republished <= 1

    got = _drain_ids(node.url, queue)
    counts = Counter(got)
    lost = intended - set(counts)
    duplicates = sum(n - 1 for n in counts.values())
    record_property(COUNTS_PROPERTY, (
        f"broker {how} while publishing (after {at_stop} in the queue): sent {n_sent}, acked {confirmed}, "
        f"redelivered {republished} (republished), lost {len(lost)}, duplicates {duplicates} in the queue"))
    assert not lost
    assert set(counts) == intended  # nothing foreign, nothing missing
    assert duplicates <= republished  # a duplicate exists only where a confirm was lost with the connection


def test_a_duplicate_order_in_the_queue_takes_effect_once(node: RabbitNode, queue: str, tmp_path: Path) -> None:
    """The harmlessness the publisher relies on: an order republished after a lost confirm runs once."""
    import json

    from steps.queue.orders import WorkOrder
    from steps.queue.transport import publish_orders

    src = tmp_path / "src"
    src.mkdir()
    (src / "catalog.json").write_text(json.dumps({"type": "Catalog", "stac_version": "1.0.0", "id": "empty",
                                                  "description": "no scenes", "links": []}))
    out = tmp_path / "out"
    order = WorkOrder.model_validate({"tiles": "47PPR", "start": "2024-01-01", "end": "2024-01-31",
                                      "source": str(src), "out": str(out)})
    publish_orders([order, order], url=node.url, queue=queue)
    res = subprocess.run([_exe(), "worker", "--idle-exit", "1"], env=_env(node, queue), capture_output=True,
                         text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stderr.count(f"order {order.message_id} done in") == 1
    assert res.stderr.count(f"order {order.message_id} already done") == 1
    assert "orders: 1 done, 1 already done" in res.stdout
    assert (out / done_key(order.message_id)).is_file()


def test_worker_gives_up_with_exit_75_when_the_broker_stays_away(node: RabbitNode, queue: str,
                                                                  tmp_path: Path) -> None:
    env = _env(node, queue)
    log_path = tmp_path / "worker.log"
    with log_path.open("w") as log_f:
        proc = subprocess.Popen([_exe(), "worker", "--reconnect-attempts", "2", "--reconnect-max-delay", "0.5"],
                                env=env, stdout=log_f, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: "worker consuming" in log_path.read_text(), 60, "the worker to consume")
        node.stop()
        rc = proc.wait(timeout=60)
    finally:
        _reap(proc)
        node.start()
    log = log_path.read_text()
    assert rc == 75, log[-2000:]
    assert "(attempt 1/2)" in log and "(attempt 2/2)" in log
    assert log.strip().splitlines()[-1].startswith("raw2ready: temporary failure (retry later): lost the connection "
                                                   "to RabbitMQ")
