"""The queue soak in its reduced form (``bench/soak_queue.py`` without ``--full``): 6 Thai tiles × the
acquisition dates of Jan-Jun 2022 (222 orders, 8 of them with a real tiny scene, 2 of those designed to fail),
2 ``raw2ready worker`` processes, one of them killed with SIGKILL every 4-10 s and respawned, and one
``kill -9`` restart of a second RabbitMQ node in the middle. The full run and its last result: ``docs/SOAK.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from rabbit_node import rabbitmq_server_path

from r2r_helpers import COUNTS_PROPERTY

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(rabbitmq_server_path() is None, reason="rabbitmq-server is not installed (apt-get install "
                       "rabbitmq-server): the soak runs its own broker node"),
]

ROOT = Path(__file__).resolve().parents[1]


def test_reduced_soak_does_every_order_once_with_workers_and_the_broker_killed(
        tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    out = tmp_path / "soak.json"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "soak_queue.py"), "--workdir", str(tmp_path / "w"),
                          "--json", str(out)], capture_output=True, text=True, timeout=1200, check=False)
    assert out.is_file(), res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads(out.read_text())["result"]
    record_property(COUNTS_PROPERTY, res.stdout.strip().splitlines()[-1])
    assert r["problems"] == [], r["problems"]
    assert r["audit_ok"] and res.returncode == 0
    assert r["orders"] == 222 and r["expected_ok"] == 220 and r["designed_to_fail"] == 2
    assert r["done_records"] == 220
    assert r["loss"] == 0 and r["duplicates"] == 0 and r["scene_duplicates"] == 0
    assert r["dead_letters"] == 2 and r["unexpected_dead_letters"] == 0
    assert r["leftover_in_queues"] == 0
    assert r["broker_restarts"] == 1
    assert r["kills"] >= 3  # workers really were killed while orders were in flight
    assert r["redeliveries"] >= 1
    assert r["peak_queue_depth"] >= 100  # the backlog was queued, not trickled
