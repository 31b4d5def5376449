"""Soak of the queue path at Thailand scale: every Thai tile × every acquisition date of 2022-2025 as work orders,
several ``raw2ready worker`` processes killed with SIGKILL at random every few seconds (and respawned), one
restart of the broker in the middle, then an audit.

What an order is here: one tile × one acquisition date (``start = end = date``; Sentinel-2 revisits a tile
every 5 days with two satellites, so 98 tiles × 293 dates = 28,714 orders for 2022-01-01..2025-12-31). The
source is a static STAC archive written by the synthesizer: a spread sample of the orders carry a real, tiny
synthetic scene (12 × 12 px; L2A + L1C, processed by the real steps into COGs and a STAC item), a few of those
are corrupted on purpose (a band file replaced by garbage: bad input, exit 3, dead letter), and the other orders
find no scene for their tile and date in the archive (an empty acquisition: the order is listed, found empty
and its done record written). Every order goes through the worker's real path (``find_scenes`` →
``run_scenes`` → done record → ack; the catalog is rebuilt once per batch of orders, see ``docs/QUEUE.md``).
Writing 28,714 real scenes would take hours on the 2-core machine (~0.4 s to synthesize and ~0.5 s to process
even a 12 px scene), which is why most are empty.
Each order's source is its tile's own static catalog (``by-tile/<tile>/catalog.json``, linking the archive's
items of that tile): that is what a STAC API search costs a worker (one small answer), where one catalog of the
whole archive would make every order walk every item link.

Faults: every ``--kill-every MIN MAX`` seconds (random) one worker that has been consuming for at least 2 s
gets SIGKILL and is respawned at once (a worker still starting is spared: on a loaded 2-core machine start-up
alone can outlast the interval; so is a worker whose current order two kills have already interrupted, or a
slow order could never finish); when half the orders are done, the broker (a second RabbitMQ node started
for the soak with ``tests/rabbit_node.py``, never the main one) is killed with SIGKILL (``--broker-restart
kill``; ``stop`` for a graceful stop) and started again on the same ports and data. The workers run with
``--max-redeliveries 50``: the soak kills far more often than real failures, and a slow real scene at the head
of the queue may be hit several times in a row.

Audit: every order that should succeed has its done record, and its work ran to completion once (one
``order … done in`` line in all worker logs together; a second would be a duplicate effect); every real
scene was processed to its item/skip record once; the dead-letter queue holds exactly the orders designed to
fail; the work and retry queues are empty. Loss = orders with neither a done record nor a dead letter.

    python bench/soak_queue.py            # reduced: 6 tiles × Jan-Jun 2022 (222 orders, 8 real scenes),
                                          # 2 workers, a kill every 4-10 s
    python bench/soak_queue.py --full     # 98 tiles × 2022-2025 (28,714 orders, 40 real scenes),
                                          # 3 workers, a kill every 5-15 s
    python bench/soak_queue.py --full --workdir /tmp/soak --json /tmp/soak.json

Exit status 0 when the audit passes, 1 when it does not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # rabbit_node.py

from rabbit_node import RabbitNode  # noqa: E402

from steps.queue.orders import WorkOrder  # noqa: E402


@dataclass
class SoakConfig:
    """Parameters of one soak run (see ``--help``)."""

    tiles: int = 6  # first N Thai tiles (0 = all 98)
    start: date = date(2022, 1, 1)
    end: date = date(2022, 6, 30)
    revisit_days: int = 5
    workers: int = 2
    real_scenes: int = 8
    fail_scenes: int = 2
    size: int = 12
    kill_min_s: float = 4.0
    kill_max_s: float = 10.0
    broker_restart: str = "kill"  # kill | stop | none
    restart_at: float = 0.5  # fraction of orders done when the broker is restarted
    idle_exit_s: float = 8.0
    min_ready_s: float = 2.0  # a worker is killed only after consuming for this long
    # Besides the timer, one worker is killed as the run passes each of these fractions of orders done, so
    # that a run finishing faster than the kill interval (a quiet machine, a short reduced run) still has
    # its kills spread over the whole backlog.
    kill_at: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    stall_s: float = 300.0  # give up when no order finishes for this long
    seed: int = 0
    timeout_s: float = 3600.0


@dataclass
class SoakResult:
    """What the soak measured and what its audit found."""

    orders: int = 0
    expected_ok: int = 0
    designed_to_fail: int = 0
    real_scenes: int = 0
    workers: int = 0
    kills: int = 0
    spawns: int = 0
    broker_restarts: int = 0
    duration_s: float = 0.0
    orders_per_s: float = 0.0
    enqueue_s: float = 0.0
    enqueue_orders_per_s: float = 0.0
    published_sent: int = 0
    published_republished: int = 0
    redeliveries: int = 0
    already_done_acks: int = 0
    peak_queue_depth: int = 0
    done_records: int = 0
    loss: int = 0
    duplicates: int = 0
    scene_duplicates: int = 0
    dead_letters: int = 0
    dead_letter_copies: int = 0
    unexpected_dead_letters: int = 0
    leftover_in_queues: int = 0
    worker_cpu_s: float = 0.0
    broker_cpu_s: float = 0.0
    cpu_ms_per_order: float = 0.0
    mean_order_seconds: float = 0.0
    worker_startup_s: float = 0.0
    audit_ok: bool = False
    problems: list[str] = field(default_factory=list)
    machine: str = ""
    finished: str = ""


def tile_source(archive: Path, tile: str) -> str:
    """The order's source: the static catalog of ``tile`` in the soak archive (see :func:`write_tile_catalogs`)."""
    return str(archive / "by-tile" / tile)


def acquisition_orders(tiles: list[str], start: date, end: date, revisit: int, archive: Path,
                       out: str) -> list[WorkOrder]:
    """One order per tile × acquisition date (every ``revisit`` days from ``start``), sorted by (date, tile)."""
    days = [start + timedelta(days=k) for k in range(0, (end - start).days + 1, revisit)]
    return [WorkOrder.model_validate({"tiles": t, "start": d, "end": d, "source": tile_source(archive, t),
                                      "out": out}) for d in days for t in tiles]


def write_tile_catalogs(root: Path, tiles: list[str]) -> None:
    """One static catalog per tile (``by-tile/<tile>/catalog.json``) linking that tile's L2A and L1C items.

    A STAC API answers a tile + date search on the server; a single static catalog would make every order
    read every item link of the archive (measured: ~40 ms of CPU per order for 200 links, the largest cost of
    an empty order). Per-tile catalogs keep the listing what a search costs the worker: one small read.
    """
    by_tile: dict[str, list[str]] = {t: [] for t in tiles}
    for item_path in sorted(root.glob("sentinel-2-*/*/*.json")):
        item = json.loads(item_path.read_text())
        if item.get("type") != "Feature":
            continue
        tile = next((t for t in tiles if f"_{t}_" in item["id"]), None)
        if tile is not None:
            by_tile[tile].append(str(item_path.resolve()))
    for tile, hrefs in by_tile.items():
        d = root / "by-tile" / tile
        d.mkdir(parents=True, exist_ok=True)
        cat = {"type": "Catalog", "stac_version": "1.0.0", "id": f"soak-{tile}", "description": f"soak archive, {tile}",
               "links": [{"rel": "item", "href": h, "type": "application/json"} for h in hrefs]}
        (d / "catalog.json").write_text(json.dumps(cat, indent=1))


def build_archive(root: Path, orders: list[WorkOrder], n_real: int, n_fail: int, size: int,
                  seed: int) -> tuple[list[str], list[str]]:
    """Synthesize real scenes for ``n_real`` orders spread over the list; corrupt a band of ``n_fail`` of them.

    Returns (message ids of orders with a good scene, message ids of orders designed to fail).
    """
    from synthesizer import synthesize_archive
    from synthesizer.specs import specs_for_range

    step = max(1, len(orders) // max(1, n_real))
    picked = orders[step // 2::step][:n_real]
    specs = []
    for o in picked:
        s = specs_for_range([o.tiles], o.start, o.start, revisit_days=1, seed=seed)
        specs += s[:1]
    if not (root / "catalog.json").exists():  # deterministic: a kept workdir's archive is the same bytes
        synthesize_archive(root, specs, size=size, seed=seed)
    rng = random.Random(seed)
    failing = rng.sample(range(len(picked)), min(n_fail, len(picked)))
    bad_ids = []
    for i in failing:
        o = picked[i]
        _corrupt_scene(root, o.tiles, o.start)
        bad_ids.append(o.message_id)
    good = [o.message_id for i, o in enumerate(picked) if i not in failing]
    write_tile_catalogs(root, sorted({o.tiles for o in orders}))
    return good, bad_ids


def _corrupt_scene(root: Path, tile: str, day: date) -> None:
    """Replace the red band of the L2A item of ``tile`` on ``day`` with bytes that are no TIFF (bad input)."""
    for item_path in root.rglob("*.json"):
        name = item_path.name
        if tile not in name or day.strftime("%Y%m%d") not in name:
            continue
        item = json.loads(item_path.read_text())
        if item.get("type") != "Feature" or "L2A" not in item.get("id", ""):
            continue
        for key in ("red", "B04"):
            if key in item.get("assets", {}):
                href = item["assets"][key]["href"]
                target = (item_path.parent / href).resolve() if "://" not in href else Path(href[7:])
                target.write_bytes(b"this is not a GeoTIFF: the soak's designed-to-fail scene\n")
                return
    raise RuntimeError(f"no L2A item found for {tile} {day} to corrupt")


class Fleet:
    """The worker processes: spawn, SIGKILL at random, respawn; logs appended per slot."""

    def __init__(self, n: int, env: dict[str, str], logdir: Path, idle_exit: float) -> None:
        self.env, self.logdir, self.idle_exit = env, logdir, idle_exit
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self.log_offsets = [0] * n  # log size at each slot's last spawn
        self.ready_since: list[float | None] = [None] * n
        self.hits: Counter[str] = Counter()  # order id → times a kill interrupted it
        self.max_hits = 2
        self.spawns = 0
        self.kills = 0
        self.lock = threading.Lock()
        self.exe = str(Path(sys.executable).parent / "raw2ready")

    def spawn(self, slot: int) -> None:
        path = self.logdir / f"worker-{slot}.log"
        self.log_offsets[slot] = path.stat().st_size if path.exists() else 0
        self.ready_since[slot] = None
        with path.open("ab") as f:
            self.procs[slot] = subprocess.Popen(
                [self.exe, "worker", "--idle-exit", str(self.idle_exit), "--reconnect-max-delay", "4",
                 "--reconnect-attempts", "12",
                 # The soak kills far more often than any real failure: a slow real scene at the head of the
                 # queue may be hit several times in a row; the poison-message guard must not fire for that.
                 "--max-redeliveries", "50"],
                env=self.env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.spawns += 1

    def _ready_for(self, slot: int) -> float:
        """Seconds since the worker in ``slot`` logged "worker consuming" (0 if not yet)."""
        if self.ready_since[slot] is None:
            with (self.logdir / f"worker-{slot}.log").open("rb") as f:
                f.seek(self.log_offsets[slot])
                if b"worker consuming" in f.read():
                    self.ready_since[slot] = time.monotonic()
        since = self.ready_since[slot]
        return 0.0 if since is None else time.monotonic() - since

    def _current_order(self, slot: int) -> str | None:
        """The order the worker in ``slot`` holds now (received, not yet settled), from its log."""
        with (self.logdir / f"worker-{slot}.log").open("rb") as f:
            f.seek(self.log_offsets[slot])
            text = f.read().decode(errors="replace")
        last = None
        for m in re.finditer(r"received order (\S+)|progress: ", text):
            last = m.group(1)
        return last

    def kill_one(self, rng: random.Random, min_ready_s: float) -> bool:
        """SIGKILL a random worker that has been consuming for ``min_ready_s`` and respawn it; False if none
        qualifies yet (a worker still starting up is not killed: on a loaded machine start-up alone can take
        longer than the kill interval, and the soak would only measure process start-up)."""
        with self.lock:
            alive = [i for i, p in enumerate(self.procs) if p is not None and p.poll() is None
                     and self._ready_for(i) >= min_ready_s]
            holding = {i: self._current_order(i) for i in alive}
            # An order already interrupted max_hits times is left to finish: otherwise an order that takes longer
            # than the kill interval (a first real scene in a fresh worker on a loaded machine) never does.
            alive = [i for i in alive if holding[i] is None or self.hits[holding[i] or ""] < self.max_hits]
            if not alive:
                return False
            slot = rng.choice(alive)
            if holding[slot] is not None:
                self.hits[holding[slot] or ""] += 1
            p = self.procs[slot]
            assert p is not None
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            self.kills += 1
            self.spawn(slot)
        return True

    def respawn_exited(self) -> int:
        """Respawn workers that exited (idle, or gave up on the broker): returns how many."""
        n = 0
        with self.lock:
            for i, p in enumerate(self.procs):
                if p is None or p.poll() is not None:
                    self.spawn(i)
                    n += 1
        return n

    def all_exited(self) -> bool:
        return all(p is None or p.poll() is not None for p in self.procs)

    def stop(self) -> None:
        with self.lock:
            for p in self.procs:
                if p is not None and p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in self.procs:
                if p is not None:
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()


def _group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of the live processes in process group ``pgid`` (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after ')' start at state; pgrp is the 3rd
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _count_done(orders_dir: Path) -> int:
    try:
        return sum(1 for e in os.scandir(orders_dir) if not e.name.endswith(".redeliveries.json"))
    except FileNotFoundError:
        return 0


def run_soak(cfg: SoakConfig, workdir: Path) -> SoakResult:
    """Run the soak in ``workdir`` and return its measured result with the audit verdict."""
    from steps.sentinel2.tiles import aoi_tiles

    res = SoakResult(workers=cfg.workers, machine=f"{platform.node()} {os.cpu_count()} cores {platform.machine()}")
    rng = random.Random(cfg.seed)
    tiles = aoi_tiles("thailand", "all")
    tiles = tiles[:cfg.tiles] if cfg.tiles else tiles
    archive, out, logdir = workdir / "archive", workdir / "out", workdir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    orders = acquisition_orders(tiles, cfg.start, cfg.end, cfg.revisit_days, archive, str(out))
    res.orders = len(orders)
    t = time.monotonic()
    good_real, bad = build_archive(archive, orders, cfg.real_scenes, cfg.fail_scenes, cfg.size, cfg.seed)
    print(f"soak: {len(orders)} orders ({len(tiles)} tiles × {len(orders) // len(tiles)} dates), "
          f"{len(good_real) + len(bad)} real scenes ({len(bad)} designed to fail) synthesized in "
          f"{time.monotonic() - t:.0f}s", flush=True)
    res.real_scenes, res.designed_to_fail = len(good_real) + len(bad), len(bad)
    res.expected_ok = len(orders) - len(bad)
    node = RabbitNode(base=workdir / "rabbit")
    node.start()
    try:
        return _soak_on(node, cfg, res, rng, orders, good_real, bad, out, logdir)
    finally:
        node.close()


def _soak_on(node: RabbitNode, cfg: SoakConfig, res: SoakResult, rng: random.Random, orders: list[WorkOrder],
             good_real: list[str], bad: list[str], out: Path, logdir: Path) -> SoakResult:
    from steps.queue.transport import publish_report, queue_depths

    queue = "soak.orders"
    env = {**os.environ, "RAW2READY_BROKER_URL": node.url, "RAW2READY_QUEUE_NAME": queue, "RAW2READY_RETRIES": "3",
           "RAW2READY_RETRY_BACKOFF_S": "0.5"}
    broker_cpu = 0.0
    # Fixed cost of a worker process (interpreter, imports, connect, declare): one probe on an empty queue.
    t = time.monotonic()
    subprocess.run([str(Path(sys.executable).parent / "raw2ready"), "-q", "worker", "--idle-exit", "0", "--queue",
                    "soak.probe"], env=env, capture_output=True, check=False)
    res.worker_startup_s = round(time.monotonic() - t, 2)
    fleet = Fleet(cfg.workers, env, logdir, cfg.idle_exit_s)
    stop = threading.Event()
    peak = [0]
    pub: dict[str, Any] = {}

    def monitor() -> None:
        while not stop.is_set():
            with contextlib.suppress(Exception):  # the broker may be restarting
                d = queue_depths(url=node.url, queue=queue)
                peak[0] = max(peak[0], d[queue] + d[f"{queue}.retry"])
            stop.wait(0.5)

    def killer() -> None:
        while not stop.wait(rng.uniform(cfg.kill_min_s, cfg.kill_max_s)):
            while not stop.is_set() and not fleet.kill_one(rng, cfg.min_ready_s):
                stop.wait(0.25)

    def enqueue() -> None:
        try:
            pub["report"] = publish_report(orders, url=node.url, queue=queue, reconnect_max_s=4)
        except Exception as exc:  # reported in the audit
            pub["error"] = f"{type(exc).__name__}: {exc}"

    t0 = time.monotonic()
    try:
        for i in range(cfg.workers):
            fleet.spawn(i)
        threads = [threading.Thread(target=f, daemon=True, name=f.__name__) for f in (monitor, enqueue, killer)]
        for th in threads:
            th.start()
        restarted = cfg.broker_restart == "none"
        marks = sorted(cfg.kill_at)
        last_print = 0.0
        last_done, last_change = -1, time.monotonic()
        while time.monotonic() - t0 < cfg.timeout_s:
            time.sleep(0.5)
            done = _count_done(out / "orders")
            if done != last_done:
                last_done, last_change = done, time.monotonic()
            elif time.monotonic() - last_change > cfg.stall_s:
                res.problems.append(f"no order finished for {cfg.stall_s:.0f}s (at {done} done): stalled")
                break
            if marks and done >= marks[0] * res.expected_ok and fleet.kill_one(rng, cfg.min_ready_s):
                marks.pop(0)
            if not restarted and done >= cfg.restart_at * res.expected_ok:
                broker_cpu += _group_cpu_s(node.proc.pid) if node.proc else 0.0
                print(f"soak: {done} orders done: restarting the broker ({cfg.broker_restart})", flush=True)
                node.restart(hard=cfg.broker_restart == "kill")
                res.broker_restarts += 1
                restarted = True
            if time.monotonic() - last_print > 30:
                last_print = time.monotonic()
                print(f"soak: {time.monotonic() - t0:.0f}s {done}/{res.expected_ok} done, {fleet.kills} kills, "
                      f"peak depth {peak[0]}", flush=True)
            if done >= res.expected_ok and restarted and ("report" in pub or "error" in pub):
                break
            if fleet.all_exited() or any(p is not None and p.poll() is not None for p in fleet.procs):
                fleet.respawn_exited()  # a worker that idled out early or gave up on the broker
        # Everything that should succeed is recorded: no more kills; let the workers settle the rest.
        stop.set()
        settle_deadline = time.monotonic() + 120
        while time.monotonic() < settle_deadline:
            d = queue_depths(url=node.url, queue=queue)
            if d[queue] == 0 and d[f"{queue}.retry"] == 0 and fleet.all_exited():
                break
            if fleet.all_exited():
                fleet.respawn_exited()
            time.sleep(0.5)
        res.duration_s = time.monotonic() - t0
    finally:
        stop.set()
        fleet.stop()
        broker_cpu += _group_cpu_s(node.proc.pid) if node.proc and node.proc.poll() is None else 0.0
    _audit(res, orders, bad, good_real, out, logdir, node.url, queue, pub)
    res.kills, res.spawns = fleet.kills, fleet.spawns
    res.peak_queue_depth = peak[0]
    res.orders_per_s = round(res.orders / res.duration_s, 1) if res.duration_s else 0.0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)  # every reaped worker (and the synthesizer: none, in-process)
    res.worker_cpu_s = round(ru.ru_utime + ru.ru_stime, 1)
    res.broker_cpu_s = round(broker_cpu, 1)
    res.cpu_ms_per_order = round(1000 * res.worker_cpu_s / max(1, res.orders), 1)
    res.duration_s = round(res.duration_s, 1)
    res.finished = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return res


def _audit(res: SoakResult, orders: list[WorkOrder], bad: list[str], good_real: list[str], out: Path,
           logdir: Path, url: str, queue: str, pub: dict[str, Any]) -> None:
    from steps.queue.bookkeeping import done_key
    from steps.queue.transport import connect, queue_depths

    problems = res.problems
    if "error" in pub:
        problems.append(f"enqueue failed: {pub['error']}")
    else:
        rep = pub["report"]
        res.enqueue_s = round(rep.seconds, 1)
        res.enqueue_orders_per_s = round(rep.confirmed / rep.seconds, 0) if rep.seconds else 0.0
        res.published_sent, res.published_republished = rep.sent, rep.republished
    logs = "".join(p.read_text(errors="replace") for p in sorted(logdir.glob("worker-*.log")))
    done_lines = Counter(re.findall(r"order (wo-[0-9a-f]+) done in", logs))
    scene_lines = Counter(re.findall(r"\] (\S+) (?:done|skipped)\b", logs))
    res.redeliveries = len(re.findall(r"\(redelivered\)", logs))
    res.already_done_acks = len(re.findall(r"already done \(", logs))
    bad_set = set(bad)
    seconds = []
    for o in orders:
        mid = o.message_id
        rec = out / done_key(mid)
        if mid in bad_set:
            if rec.exists():
                problems.append(f"designed-to-fail order {mid} has a done record")
            continue
        if rec.exists():
            res.done_records += 1
            seconds.append(json.loads(rec.read_text())["seconds"])
    res.mean_order_seconds = round(sum(seconds) / len(seconds), 4) if seconds else 0.0
    res.duplicates = sum(n - 1 for n in done_lines.values() if n > 1)
    res.scene_duplicates = sum(n - 1 for n in scene_lines.values() if n > 1)
    # The dead-letter queue: take everything (acknowledged: the soak's broker is thrown away afterwards).
    conn = connect(url)
    dead: Counter[str] = Counter()
    try:
        ch = conn.channel()
        while True:
            method, props, _ = ch.basic_get(f"{queue}.dead", auto_ack=True)
            if method is None:
                break
            dead[props.message_id] += 1
    finally:
        conn.close()
    res.dead_letters, res.dead_letter_copies = len(dead), sum(dead.values())
    res.unexpected_dead_letters = len(set(dead) - bad_set)
    depths = queue_depths(url=url, queue=queue)
    res.leftover_in_queues = depths[queue] + depths[f"{queue}.retry"]
    ok_ids = {o.message_id for o in orders} - bad_set
    missing = [m for m in ok_ids if not (out / done_key(m)).exists() and m not in dead]
    res.loss = len(missing) + len(bad_set - set(dead))
    if res.loss:
        problems.append(f"{res.loss} order(s) lost, e.g. {(missing or sorted(bad_set - set(dead)))[:3]}")
    if res.done_records != res.expected_ok:
        problems.append(f"{res.done_records} done records for {res.expected_ok} orders that should succeed")
    if res.duplicates or res.scene_duplicates:
        problems.append(f"duplicate effects: {res.duplicates} orders and {res.scene_duplicates} scenes ran to "
                        "completion twice")
    if set(dead) != bad_set:
        problems.append(f"dead letters {sorted(dead)} are not exactly the designed-to-fail orders {sorted(bad_set)}")
    if res.leftover_in_queues:
        problems.append(f"{res.leftover_in_queues} message(s) left in the work/retry queues")
    never = [m for m in good_real if scene_lines and m not in done_lines and (out / done_key(m)).exists()]
    if len(never) > 1:  # a kill between the record and its log line hides at most a few such lines
        problems.append(f"{len(never)} real-scene orders have a record but no 'done in' log line")
    res.audit_ok = not problems


def main(argv: list[str] | None = None) -> int:
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="98 tiles × 2022-01-01..2025-12-31 (28,714 orders)")
    ap.add_argument("--tiles", type=int, default=None, help="first N Thai tiles (0 = all)")
    ap.add_argument("--start", type=date.fromisoformat, default=None)
    ap.add_argument("--end", type=date.fromisoformat, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--real-scenes", type=int, default=None)
    ap.add_argument("--fail-scenes", type=int, default=None)
    ap.add_argument("--kill-every", type=float, nargs=2, default=None, metavar=("MIN_S", "MAX_S"))
    ap.add_argument("--broker-restart", choices=["kill", "stop", "none"], default="kill")
    ap.add_argument("--workdir", type=Path, default=None, help="kept afterwards (default: a temp dir, removed)")
    ap.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    cfg = SoakConfig()
    if a.full:
        cfg = SoakConfig(tiles=0, start=date(2022, 1, 1), end=date(2025, 12, 31), workers=3, real_scenes=40,
                         fail_scenes=5, kill_min_s=5.0, kill_max_s=15.0, timeout_s=5400.0)
    for name in ("tiles", "start", "end", "workers", "real_scenes", "fail_scenes", "seed"):
        if getattr(a, name) is not None:
            setattr(cfg, name, getattr(a, name))
    if a.kill_every:
        cfg.kill_min_s, cfg.kill_max_s = a.kill_every
    cfg.broker_restart = a.broker_restart
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pika").setLevel(logging.CRITICAL)  # the broker restart makes pika noisy by design
    if a.workdir:
        a.workdir.mkdir(parents=True, exist_ok=True)
        res = run_soak(cfg, a.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="r2r-soak-") as tmp:
            res = run_soak(cfg, Path(tmp))
    out = {"config": {k: (v.isoformat() if isinstance(v, date) else v) for k, v in asdict(cfg).items()},
           "result": asdict(res)}
    text = json.dumps(out, indent=1)
    if a.json:
        a.json.write_text(text + "\n")
    print(text)
    print(f"soak {'PASSED' if res.audit_ok else 'FAILED'}: {res.orders} orders in {res.duration_s:.0f}s "
          f"({res.orders_per_s} orders/s), {res.kills} worker kills, {res.broker_restarts} broker restart(s), "
          f"{res.redeliveries} redeliveries, peak depth {res.peak_queue_depth}, loss {res.loss}, duplicates "
          f"{res.duplicates}, dead letters {res.dead_letters} (designed {res.designed_to_fail})", flush=True)
    return 0 if res.audit_ok else 1


if __name__ == "__main__":
    sys.exit(main())
