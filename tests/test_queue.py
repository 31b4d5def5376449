"""Queue-driven processing against the real RabbitMQ broker (127.0.0.1:5672, started by CI).

Each test uses its own queue names (uuid suffix) and deletes them afterwards. Workers run in-process
(``Worker.run``) except where a real process is needed (``kill -9``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from steps.errors import TransientError
from steps.queue.bookkeeping import HDR_EXIT, HDR_REASON, Outcome, done_key
from steps.queue.orders import WorkOrder
from steps.queue.transport import (
    Topology,
    connect,
    declare_topology,
    delete_topology,
    peek_dead,
    publish_orders,
    queue_depths,
    redrive_dead,
)
from steps.queue.worker import Worker

from r2r_helpers import run_cli, tree_bytes

pytestmark = pytest.mark.broker

BROKER = "amqp://guest:guest@127.0.0.1:5672/%2F"
# The demo months that have scenes: 2021-12, 2022-01 (clouded → skipped), 2022-02, 2023-01, 2024-01.
SCENE_MONTHS = [(2021, 12), (2022, 1), (2022, 2), (2023, 1), (2024, 1)]


@pytest.fixture(scope="module")
def broker() -> str:
    """The broker URL; fail loudly (not skip) when RabbitMQ does not answer."""
    try:
        conn = connect(BROKER)
    except TransientError as exc:
        pytest.fail(f"RabbitMQ is not answering on 127.0.0.1:5672 ({exc}); start it with "
                    "`rabbitmq-server -detached` (CI starts it in .ci/run)")
    conn.close()
    return BROKER


@pytest.fixture
def queue(broker: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A unique work-order queue (and its .dlx/.dead/.retry), deleted afterwards; also RAW2READY_QUEUE_NAME."""
    from steps.settings import get_settings

    name = f"r2r-test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("RAW2READY_QUEUE_NAME", name)
    monkeypatch.setenv("RAW2READY_BROKER_URL", broker)
    get_settings.cache_clear()
    yield name
    delete_topology(broker, name)


def _orders(source: Path, out: Path, months: list[tuple[int, int]], tiles: tuple[str, ...] = ("47PPR", "47PQR"),
            ) -> list[WorkOrder]:
    from steps.queue.orders import monthly_orders

    orders: list[WorkOrder] = []
    for y, m in months:
        end = date(y + (m == 12), m % 12 + 1, 1).toordinal() - 1
        orders += monthly_orders(list(tiles), date(y, m, 1), date.fromordinal(end), str(source), str(out))
    return orders


def _publish_raw(queue: str, bodies: list[bytes]) -> None:
    import pika

    conn = connect(BROKER)
    try:
        ch = conn.channel()
        declare_topology(ch, Topology(queue))
        ch.confirm_delivery()
        for b in bodies:
            ch.basic_publish("", queue, b, pika.BasicProperties(delivery_mode=2), mandatory=True)
    finally:
        conn.close()


def _products(root: Path) -> dict[str, bytes]:
    """Catalog files, items and assets (no order records, no intermediate work files, and no in-flight
    temporary files: ``.<name>.tmp-<id>`` is invisible to every reader, and one a killed writer left behind
    stays as garbage; see the README's fault table)."""
    return {k: v for k, v in tree_bytes(root).items()
            if not k.startswith(("orders/", "work/")) and ".tmp-" not in k.rsplit("/", 1)[-1]}


def _assert_no_partial_products(root: Path) -> int:
    """Every visible item has all its assets, with the recorded checksums. Returns the number of items."""
    from steps.storage import sha256_multihash

    n = 0
    for path in root.glob("raw2ready-s2-vegetation/*/Q*/*/*/*.json"):
        if path.stem != path.parent.name:
            continue
        item = json.loads(path.read_text())
        for key, asset in item["assets"].items():
            f = path.parent / asset["href"]
            assert f.is_file(), f"{path.name}: asset {key} missing while the item is visible"
            assert sha256_multihash(f.read_bytes()) == asset["file:checksum"], f"{path.name}: {key} checksum"
        n += 1
    return n


# ------------------------------------------------------------------------------------------------ tests
def test_enqueue_then_worker_publishes_the_orders_items(queue: str, demo_archive: Path, processed: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "products"
    res = run_cli("-q", "enqueue", "--tiles", "47PPR,47PQR", "--start", "2022-01-01", "--end", "2022-02-28",
                  "--source", str(demo_archive), "--out", str(out), "--queue", queue)
    assert res.returncode == 0, res.stderr
    assert "enqueued 4 order(s) (2 tile(s) × 2 month(s))" in res.stdout
    assert queue_depths(queue=queue)[queue] == 4

    stats = Worker(queue=queue, idle_exit=0.5).run(install_signals=False)
    assert (stats.done, stats.dead, stats.retried) == (4, 0, 0)
    got = _products(out)
    want = _products(processed)

    def scene_files(tree: dict[str, bytes]) -> dict[str, bytes]:
        # raw2ready-s2-vegetation/2022/Q1/<01|02>/<scene_id>/<file>: items, assets and skip records
        return {k: v for k, v in tree.items() if k.count("/") == 5 and "/2022/Q1/0" in k}

    assert scene_files(got) == scene_files(want)
    assert sum(k.endswith(".tif") for k in scene_files(got)) >= 4  # at least one scene with its 4 COGs
    assert sum(k.endswith(".skipped.json") for k in scene_files(got)) >= 2  # 2022-01-23 is fully clouded
    for o in _orders(demo_archive, out, [(2022, 1), (2022, 2)]):
        record = json.loads((out / done_key(o.message_id)).read_text())
        assert record["order"]["tiles"] == o.tiles and record["message_id"] == o.message_id
    # the catalog lists exactly the orders' items (root → collection → year → quarter → month → item)
    from steps.ops.audit import _listed_items
    from steps.storage import open_storage

    items = {k for k in scene_files(got) if k.endswith(".json") and not k.endswith(".skipped.json")}
    assert items and _listed_items(open_storage(str(out))) == items
    root = json.loads((out / "catalog.json").read_text())
    assert any(link["href"] == "./raw2ready-s2-vegetation/collection.json" for link in root["links"])
    assert queue_depths(queue=queue) == {queue: 0, f"{queue}.retry": 0, f"{queue}.dead": 0}


def test_a_worker_killed_before_its_batch_rebuild_leaves_nothing_out_of_the_next_catalog(
        queue: str, demo_archive: Path, tmp_path: Path) -> None:
    """Orders are acked once their sidecars are written; the catalog is rebuilt per batch. A worker that dies
    after acking two orders and before its rebuild leaves their scenes out of the catalog only until the next
    batch rebuild of that root by any worker, which lists every sidecar."""
    from steps.ops.audit import _listed_items
    from steps.storage import open_storage

    out = tmp_path / "products"
    first = _orders(demo_archive, out, [(2023, 1), (2024, 1)], tiles=("47PQR",))  # an item each
    publish_orders(first, queue=queue)
    dying = Worker(queue=queue, max_orders=2)
    dying.catalog.start = lambda reason: False  # type: ignore[method-assign]  # it dies before any rebuild:
    dying.catalog.flush = lambda reason="": None  # type: ignore[method-assign]  # no batch, no final rebuild
    assert dying.run(install_signals=False).done == 2
    assert queue_depths(queue=queue)[queue] == 0  # both acked
    assert dying.catalog.pending == [str(out)]

    def sidecars(orders: list[WorkOrder]) -> set[str]:
        keys = set()
        for o in orders:
            for sc in json.loads((out / done_key(o.message_id)).read_text())["scenes"]:
                keys |= {str(p.relative_to(out)) for p in out.glob(f"raw2ready-s2-vegetation/*/*/*/{sc['scene_id']}/"
                                                                      f"{sc['scene_id']}.json")}
        return keys

    assert len(sidecars(first)) == 2  # committed: the item sidecars are written
    assert not (out / "catalog.json").exists()  # ... but no catalog lists them yet

    later = _orders(demo_archive, out, [(2023, 1)], tiles=("47PPR",))  # its scene is clouded: a skip record
    publish_orders(later, queue=queue)
    stats = Worker(queue=queue, max_orders=1).run(install_signals=False)  # another worker, another order
    assert stats.done == 1
    assert _listed_items(open_storage(str(out))) == sidecars(first) | sidecars(later) == sidecars(first)


def test_enqueued_messages_are_persistent_with_the_order_id(queue: str, tmp_path: Path) -> None:
    orders = _orders(tmp_path / "src", tmp_path / "out", [(2024, 1), (2024, 2)], tiles=("47PPR",))
    publish_orders(orders, queue=queue)
    conn = connect(BROKER)
    try:
        ch = conn.channel()
        got = []
        for _ in orders:
            method, props, body = ch.basic_get(queue, auto_ack=False)
            assert method is not None
            got.append((props.delivery_mode, props.message_id, body))
        q = ch.queue_declare(queue, passive=True)
        assert q.method.message_count == 0
    finally:
        conn.close()  # unacked → requeued; the fixture deletes the queue
    assert got == [(2, o.message_id, o.canonical()) for o in orders]


def test_kill_9_mid_order_redelivers_and_converges_to_the_uninterrupted_catalog(
        queue: str, demo_archive: Path, processed: Path, tmp_path: Path) -> None:
    out = tmp_path / "products"
    orders = _orders(demo_archive, out, SCENE_MONTHS)
    publish_orders(orders, queue=queue)

    exe = Path(sys.executable).parent / "raw2ready"
    env = {**os.environ, "RAW2READY_QUEUE_NAME": queue, "RAW2READY_BROKER_URL": BROKER,
           "RAW2READY_RETRY_BACKOFF_S": "0.05"}
    proc = subprocess.Popen([str(exe), "worker", "--idle-exit", "30"], stderr=subprocess.PIPE, text=True, env=env)
    seen = threading.Event()
    log: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if "published ndvi" in line:  # an asset of the first scene is written; its item is not yet
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert seen.wait(60), "worker never started a scene:\n" + "".join(log[-30:])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    reader.join(5)
    assert proc.stderr is not None
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    first = orders[0]
    assert not (out / done_key(first.message_id)).exists()
    visible_before = _assert_no_partial_products(out)
    want = _products(processed)
    for key, data in _products(out).items():
        if key.count("/") == 5 and "/." not in key:  # items, assets, skip records under their final names
            assert data == want[key], f"{key} is visible but differs from the uninterrupted run"

    # the in-flight order went back to the queue (unacked delivery of a dead connection)
    stats = Worker(queue=queue, idle_exit=0.5).run(install_signals=False)
    assert stats.received == len(orders) and stats.dead == 0 and stats.retried == 0
    assert stats.redelivered == 1  # the order that was running when the worker died
    assert (out / done_key(first.message_id)).exists()
    assert not list((out / "orders").glob("*.redeliveries.json"))  # counted once, cleared when done
    assert _assert_no_partial_products(out) == _assert_no_partial_products(processed) >= visible_before
    assert _products(out) == _products(processed)
    assert queue_depths(queue=queue) == {queue: 0, f"{queue}.retry": 0, f"{queue}.dead": 0}


def test_sigterm_lets_the_running_order_finish_or_requeues_it(queue: str, demo_archive: Path, tmp_path: Path,
                                                              ) -> None:
    """A real worker process gets SIGTERM mid-order: with grace it finishes and acks; without, it requeues."""
    exe = Path(sys.executable).parent / "raw2ready"
    env = {**os.environ, "RAW2READY_QUEUE_NAME": queue, "RAW2READY_BROKER_URL": BROKER}

    def term_mid_order(grace: str, out: Path) -> tuple[int, str, WorkOrder]:
        order = _orders(demo_archive, out, [(2024, 1)], tiles=("47PQR",))[0]
        publish_orders([order], queue=queue)
        proc = subprocess.Popen([str(exe), "worker", "--grace", grace, "--idle-exit", "30"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "received order" in line:
                proc.send_signal(signal.SIGTERM)
                break
        summary, rest = proc.communicate(timeout=60)
        return proc.returncode, "".join(lines) + rest + summary, order

    out = tmp_path / "graceful"
    code, log, order = term_mid_order("60", out)
    assert code == 0, log[-3000:]
    assert "stop requested: finishing 1 running order(s)" in log
    assert "orders: 1 done, 0 already done, 0 retried, 0 dead-lettered, 0 requeued" in log
    assert queue_depths(queue=queue) == {queue: 0, f"{queue}.retry": 0, f"{queue}.dead": 0}
    assert (out / done_key(order.message_id)).exists()

    out = tmp_path / "impatient"
    code, log, order = term_mid_order("0", out)
    assert code == 0, log[-3000:]  # not SIGABRT from tearing down the abandoned order's thread
    assert "orders: 0 done, 0 already done, 0 retried, 0 dead-lettered, 1 requeued" in log
    assert queue_depths(queue=queue)[queue] == 1  # back in the queue for the next worker
    assert not (out / done_key(order.message_id)).exists()
    stats = Worker(queue=queue, idle_exit=0.5).run(install_signals=False)
    assert stats.done == 1 and stats.redelivered == 1


def test_topology_is_durable_and_the_broker_dead_letters_into_the_dead_queue(queue: str) -> None:
    """The work queue is durable with a dead-letter exchange: a message rejected by any consumer lands in .dead."""
    import pika
    import pika.exceptions

    publish_orders(_orders(Path("/src"), Path("/out"), [(2024, 1)], tiles=("47PPR",)), queue=queue)
    conn = connect(BROKER)
    try:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="durable"):
            ch.queue_declare(queue, durable=False, arguments=Topology(queue).queue_arguments())
        ch = conn.channel()
        method, _, body = ch.basic_get(queue, auto_ack=False)
        assert method is not None
        ch.basic_reject(method.delivery_tag, requeue=False)  # e.g. a consumer that is not our worker
        for _ in range(50):
            if ch.queue_declare(f"{queue}.dead", passive=True).method.message_count == 1:
                break
            time.sleep(0.05)
        method, props, dead_body = ch.basic_get(f"{queue}.dead", auto_ack=True)
        assert method is not None and dead_body == body
        assert props.headers["x-death"][0]["reason"] == b"rejected" or props.headers["x-death"][0]["reason"] == \
            "rejected"
    finally:
        conn.close()


def test_publisher_confirms_turn_a_refused_message_into_a_transient_error(queue: str, tmp_path: Path) -> None:
    """A broker-side nack (queue full, overflow=reject-publish) must surface: enqueue exits 75, nothing silent."""
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl is needed to set a queue-length policy on the test broker")
    name = f"{queue}-limit"
    subprocess.run(["rabbitmqctl", "-q", "set_policy", "--apply-to", "queues", name, f"^{queue}$",
                    '{"max-length": 1, "overflow": "reject-publish"}'], check=True, timeout=60)
    try:
        for _ in range(100):  # the policy applies asynchronously
            publish_orders(_orders(tmp_path, tmp_path, [(2024, 1)], tiles=("47PPR",)), queue=queue)
            try:
                publish_orders(_orders(tmp_path, tmp_path, [(2024, 2)], tiles=("47PPR",)), queue=queue)
            except TransientError as exc:
                assert "did not accept" in str(exc)
                break
            time.sleep(0.1)
        else:
            pytest.fail("the broker never refused a message beyond max-length")
        res = run_cli("enqueue", "--tiles", "47PPR", "--start", "2024-03-01", "--end", "2024-03-31", "--source", "s",
                      "--out", str(tmp_path), "--queue", queue)
        assert res.returncode == 75, res.stdout + res.stderr
    finally:
        subprocess.run(["rabbitmqctl", "-q", "clear_policy", name], check=True, timeout=60)


def test_invalid_messages_are_dead_lettered_with_a_reason_and_the_worker_keeps_serving(
        queue: str, demo_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "products"
    good = _orders(demo_archive, out, [(2023, 1)], tiles=("47PPR",))[0]
    bad_tile = {"tiles": "47PPA", "start": "2023-01-01", "end": "2023-01-31", "source": "s", "out": "o"}
    backwards = {"tiles": "47PPR", "start": "2023-02-01", "end": "2023-01-31", "source": "s", "out": "o"}
    _publish_raw(queue, [b"{this is not json", json.dumps(bad_tile).encode(), json.dumps(backwards).encode()])
    publish_orders([good], queue=queue)

    stats = Worker(queue=queue, max_orders=4).run(install_signals=False)
    assert (stats.dead, stats.done) == (3, 1)
    assert (out / done_key(good.message_id)).exists()
    dead = peek_dead(queue=queue)
    assert [d.exit_code for d in dead] == [3, 3, 3]
    assert "not JSON" in dead[0].reason
    assert "47PPA" in dead[1].reason
    assert "before start" in dead[2].reason
    assert dead[0].body == b"{this is not json"

    # the reason is in the AMQP headers of the dead letter
    conn = connect(BROKER)
    try:
        method, props, _ = conn.channel().basic_get(f"{queue}.dead", auto_ack=False)
        assert method is not None
        assert props.headers[HDR_EXIT] == 3 and "not JSON" in str(props.headers[HDR_REASON])
    finally:
        conn.close()


def test_the_same_order_published_twice_is_done_once(queue: str, demo_archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "products"
    order = _orders(demo_archive, out, [(2024, 1)], tiles=("47PQR",))[0]
    publish_orders([order], queue=queue)
    publish_orders([order], queue=queue)  # e.g. enqueue run twice
    calls: list[str] = []
    worker = Worker(queue=queue, max_orders=2)
    real = worker.run_order

    def counting(o: WorkOrder) -> Outcome:
        out_ = real(o)
        if not out_.detail.get("already_done"):
            calls.append(o.message_id)
        return out_

    worker.runner = counting
    stats = worker.run(install_signals=False)
    assert calls == [order.message_id]
    assert (stats.done, stats.already_done) == (1, 1)
    record = (out / done_key(order.message_id)).read_bytes()
    # and once more, later: acknowledged without work, the record untouched
    publish_orders([order], queue=queue)
    stats = Worker(queue=queue, max_orders=1).run(install_signals=False)
    assert (stats.done, stats.already_done) == (0, 1)
    assert (out / done_key(order.message_id)).read_bytes() == record


def test_a_forced_order_reprocesses_complete_scenes_and_is_a_different_order(queue: str, demo_archive: Path,
                                                                            tmp_path: Path) -> None:
    """The ``force`` option: the same tile × month with force=true is its own order and redoes the scenes."""
    out = tmp_path / "products"
    plain = _orders(demo_archive, out, [(2024, 1)], tiles=("47PQR",))[0]
    forced = plain.model_copy(update={"force": True})
    assert forced.message_id != plain.message_id and b'"force":true' in forced.canonical()
    publish_orders([plain], queue=queue)
    assert Worker(queue=queue, max_orders=1).run(install_signals=False).done == 1
    item = next(out.glob("raw2ready-s2-vegetation/2024/Q1/01/S2A_47PQR_*/S2A_47PQR_*T??????.json"))
    before = tree_bytes(item.parent)
    item.write_bytes(b"{}")  # a stale sidecar that only a reprocessing replaces

    publish_orders([plain], queue=queue)  # without force: complete, nothing redone
    assert Worker(queue=queue, max_orders=1).run(install_signals=False).already_done == 1
    assert item.read_bytes() == b"{}"
    publish_orders([forced], queue=queue)
    stats = Worker(queue=queue, max_orders=1).run(install_signals=False)
    assert (stats.done, stats.already_done) == (1, 0)
    assert tree_bytes(item.parent) == before  # reprocessed: the same bytes as the first run


def test_a_done_order_runs_again_when_one_of_its_scenes_was_removed(queue: str, demo_archive: Path,
                                                                   tmp_path: Path) -> None:
    """`audit --requeue` quarantines a corrupt scene and re-publishes the same order: it must not be deduped."""
    out = tmp_path / "products"
    order = _orders(demo_archive, out, [(2024, 1)], tiles=("47PQR",))[0]
    publish_orders([order], queue=queue)
    assert Worker(queue=queue, max_orders=1).run(install_signals=False).done == 1
    scene_dir = next(out.glob("raw2ready-s2-vegetation/2024/Q1/01/S2A_47PQR_*"))
    before = tree_bytes(scene_dir)
    shutil.rmtree(scene_dir)  # what a quarantine does to a corrupt scene

    publish_orders([order], queue=queue)
    stats = Worker(queue=queue, max_orders=1).run(install_signals=False)
    assert (stats.done, stats.already_done) == (1, 0)
    assert tree_bytes(scene_dir) == before


def test_recheck_lists_the_source_again_for_a_done_order(queue: str, demo_archive: Path, tmp_path: Path) -> None:
    """A scene that appeared in the source after the order was done is picked up by a recheck re-drive."""
    out = tmp_path / "products"
    order = _orders(demo_archive, out, [(2024, 1)], tiles=("47PQR",))[0]
    publish_orders([order], queue=queue)
    assert Worker(queue=queue, max_orders=1).run(install_signals=False).done == 1
    record = json.loads((out / done_key(order.message_id)).read_text())
    # pretend the order ran when the source did not have the scene yet
    record["scenes"] = []
    (out / done_key(order.message_id)).write_text(json.dumps(record))
    scene_dir = next(out.glob("raw2ready-s2-vegetation/2024/Q1/01/S2A_47PQR_*"))
    shutil.rmtree(scene_dir)

    publish_orders([order], queue=queue)  # a plain duplicate: deduplicated
    assert Worker(queue=queue, max_orders=1).run(install_signals=False).already_done == 1
    assert not scene_dir.exists()
    publish_orders([order], queue=queue, recheck=True)
    assert Worker(queue=queue, max_orders=1).run(install_signals=False).done == 1
    assert scene_dir.is_dir()
    assert [s["scene_id"] for s in json.loads((out / done_key(order.message_id)).read_text())["scenes"]] == [
        scene_dir.name]


def test_twin_deliveries_running_concurrently_do_the_work_once(queue: str, tmp_path: Path) -> None:
    order = _orders(tmp_path, tmp_path / "out", [(2024, 1)], tiles=("47PQR",))[0]
    publish_orders([order, order], queue=queue)
    gate = threading.Event()
    calls: list[str] = []

    def slow(o: WorkOrder) -> Outcome:
        calls.append(o.message_id)
        gate.wait(5)
        return Outcome("ack", "done")

    threading.Timer(1.0, gate.set).start()
    stats = Worker(queue=queue, concurrency=2, max_orders=2, runner=slow).run(install_signals=False)
    assert calls == [order.message_id]
    assert (stats.done, stats.already_done) == (1, 1)


def test_transient_failures_are_retried_then_dead_lettered(queue: str, tmp_path: Path) -> None:
    flaky = _orders(tmp_path, tmp_path / "out", [(2024, 1)], tiles=("47PPR",))[0]
    broken = _orders(tmp_path, tmp_path / "out", [(2024, 1)], tiles=("47PQR",))[0]
    publish_orders([flaky, broken], queue=queue)
    attempts: dict[str, int] = {}

    def runner(o: WorkOrder) -> Outcome:
        attempts[o.tiles] = attempts.get(o.tiles, 0) + 1
        if o.tiles == "47PPR" and attempts[o.tiles] > 2:
            return Outcome("ack", "done")
        raise TransientError("S3 SlowDown (simulated)")

    stats = Worker(queue=queue, idle_exit=1.0, max_retries=2, retry_backoff_s=0.05, runner=runner).run(
        install_signals=False)
    assert attempts == {"47PPR": 3, "47PQR": 3}
    assert (stats.done, stats.dead, stats.retried) == (1, 1, 4)
    dead = peek_dead(queue=queue)
    assert len(dead) == 1 and dead[0].message_id == broken.message_id
    assert dead[0].exit_code == 75 and dead[0].retries == 2 and "SlowDown" in dead[0].reason

    # after the cause is fixed, the operator re-drives the dead letter and it is processed
    assert redrive_dead(queue=queue) == 1
    stats = Worker(queue=queue, max_orders=1, runner=lambda o: Outcome("ack", "done")).run(install_signals=False)
    assert stats.done == 1
    assert queue_depths(queue=queue) == {queue: 0, f"{queue}.retry": 0, f"{queue}.dead": 0}


def test_stop_requeues_an_order_that_cannot_finish_within_grace(queue: str, tmp_path: Path) -> None:
    order = _orders(tmp_path, tmp_path / "out", [(2024, 1)], tiles=("47PPR",))[0]
    publish_orders([order], queue=queue)
    started = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    def stuck(o: WorkOrder) -> Outcome:
        started.set()
        release.wait(60)
        finished.set()
        return Outcome("ack", "done")

    worker = Worker(queue=queue, grace=0.3, runner=stuck)
    threading.Thread(target=lambda: (started.wait(10), worker.request_stop()), daemon=True).start()
    stats = worker.run(install_signals=False)
    # the worker gave up on the order after its grace, while the order was still running (no clock needed)
    assert not finished.is_set()
    release.set()
    assert (stats.requeued, stats.done) == (1, 0)
    assert queue_depths(queue=queue)[queue] == 1  # back in the queue for another worker


def test_stop_lets_a_quick_order_finish(queue: str, tmp_path: Path) -> None:
    order = _orders(tmp_path, tmp_path / "out", [(2024, 1)], tiles=("47PPR",))[0]
    publish_orders([order], queue=queue)
    started = threading.Event()

    def quick(o: WorkOrder) -> Outcome:
        started.set()
        time.sleep(0.3)
        return Outcome("ack", "done")

    worker = Worker(queue=queue, grace=5, runner=quick)
    threading.Thread(target=lambda: (started.wait(10), worker.request_stop()), daemon=True).start()
    stats = worker.run(install_signals=False)
    assert (stats.done, stats.requeued) == (1, 0)
    assert queue_depths(queue=queue)[queue] == 0


def test_unreachable_broker_exits_75_with_one_line(tmp_path: Path) -> None:
    from r2r_helpers import _free_port

    res = run_cli("enqueue", "--tiles", "47PPR", "--start", "2024-01-01", "--end", "2024-01-31", "--source", "s",
                  "--out", str(tmp_path), env={"RAW2READY_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{_free_port()}/"})
    assert res.returncode == 75, res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("raw2ready: temporary failure (retry later): RabbitMQ at 127.0.0.1:")
    assert "guest" not in res.stderr


def test_heartbeats_keep_flowing_while_a_long_order_runs(queue: str, tmp_path: Path) -> None:
    """A 1 s heartbeat and a 3.5 s order: the broker would drop a connection that stopped heartbeating."""
    order = _orders(tmp_path, tmp_path / "out", [(2024, 1)], tiles=("47PPR",))[0]
    publish_orders([order], queue=queue)

    def long(o: WorkOrder) -> Outcome:
        time.sleep(3.5)
        return Outcome("ack", "done")

    stats = Worker(queue=queue, max_orders=1, heartbeat=1, runner=long).run(install_signals=False)
    assert stats.done == 1
    assert queue_depths(queue=queue)[queue] == 0


@pytest.mark.s3
def test_worker_writes_products_and_done_records_to_s3(queue: str, s3_env: dict[str, str], demo_archive: Path,
                                                       ) -> None:
    from steps.storage import open_storage

    from r2r_helpers import make_bucket

    bucket = f"q-{uuid.uuid4().hex[:8]}"
    make_bucket(bucket)
    out = f"s3://{bucket}/products"
    order = WorkOrder(tiles="47PQR", start=date(2024, 1, 1), end=date(2024, 1, 31), source=str(demo_archive),
                      out=out)
    publish_orders([order, order], queue=queue)
    stats = Worker(queue=queue, max_orders=2).run(install_signals=False)
    assert (stats.done, stats.already_done, stats.dead) == (1, 1, 0)
    store = open_storage(out)
    record = json.loads(store.read_bytes(done_key(order.message_id)))
    [scene] = record["scenes"]
    key = f"raw2ready-s2-vegetation/2024/Q1/01/{scene['scene_id']}/{scene['scene_id']}.json"
    assert store.exists(key) and store.exists("catalog.json")


def test_an_order_whose_worker_keeps_dying_is_dead_lettered(queue: str, tmp_path: Path) -> None:
    order = _orders(tmp_path, tmp_path / "out", [(2024, 1)], tiles=("47PPR",))[0]
    publish_orders([order], queue=queue)
    conn = connect(BROKER)  # a worker that takes the order and dies: the broker redelivers it
    assert conn.channel().basic_get(queue, auto_ack=False)[0] is not None
    conn.close()
    called: list[str] = []

    def runner(o: WorkOrder) -> Outcome:
        called.append(o.message_id)
        return Outcome("ack", "done")

    stats = Worker(queue=queue, max_orders=1, max_redeliveries=0, runner=runner).run(install_signals=False)
    assert (stats.dead, stats.redelivered, called) == (1, 1, [])
    [dead] = peek_dead(queue=queue)
    assert dead.exit_code == 1 and "redelivered 1 times" in dead.reason
