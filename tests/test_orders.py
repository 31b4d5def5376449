"""The work-order message (canonical body, deterministic id, parse errors, monthly split) and the queue's
bookkeeping that needs no broker: retry back-off delays, settling an outcome, the catalog batch rule."""

from __future__ import annotations

import json
from datetime import date

import pytest

from steps.errors import InvalidInputError
from steps.queue.orders import WorkOrder, month_ranges, monthly_orders


def _order(**kw: object) -> WorkOrder:
    base: dict[str, object] = {"tiles": "47PPR", "start": "2024-01-01", "end": "2024-01-31",
                               "source": "/a/catalog.json", "out": "s3://b/p"}
    base.update(kw)
    return WorkOrder.model_validate(base)


def test_same_order_has_the_same_message_id_and_body() -> None:
    a = _order()
    b = WorkOrder.parse(json.dumps({"out": "s3://b/p", "source": "/a/catalog.json", "end": "2024-01-31",
                                    "start": "2024-01-01", "tiles": "t47ppr", "schema_version": 1}))
    assert a.canonical() == b.canonical()
    assert a.message_id == b.message_id
    assert a.message_id.startswith("wo-") and len(a.message_id) == 35
    assert WorkOrder.parse(a.canonical()) == a


def test_different_orders_have_different_ids() -> None:
    assert _order().message_id != _order(tiles="47PQR").message_id
    assert _order().message_id != _order(end="2024-01-30").message_id
    assert _order().message_id != _order(out="s3://b/q").message_id


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (json.dumps({"tiles": "47PPA", "start": "2024-01-01", "end": "2024-01-31", "source": "s", "out": "o"}),
     "47PPA"),
    (json.dumps({"tiles": "47PPR", "start": "2024-02-01", "end": "2024-01-31", "source": "s", "out": "o"}),
     "before start"),
    (json.dumps({"tiles": "47PPR", "start": "2024-01-01", "end": "2024-01-31", "source": "s"}), "out"),
    (json.dumps({"tiles": "47PPR", "start": "2024-01-01", "end": "2024-01-31", "source": "s", "out": "o",
                 "schema_version": 2}), "schema_version"),
])
def test_invalid_bodies_raise_invalid_input_with_reason(body: bytes | str, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment):
        WorkOrder.parse(body)


def test_monthly_orders_split_by_tile_and_calendar_month() -> None:
    orders = monthly_orders(["47PQR", "47PPR"], date(2023, 12, 15), date(2024, 2, 10), "src", "out")
    assert [(o.tiles, o.start.isoformat(), o.end.isoformat()) for o in orders] == [
        ("47PPR", "2023-12-15", "2023-12-31"), ("47PQR", "2023-12-15", "2023-12-31"),
        ("47PPR", "2024-01-01", "2024-01-31"), ("47PQR", "2024-01-01", "2024-01-31"),
        ("47PPR", "2024-02-01", "2024-02-10"), ("47PQR", "2024-02-01", "2024-02-10"),
    ]
    assert len({o.message_id for o in orders}) == 6
    assert month_ranges(date(2024, 2, 1), date(2024, 2, 29)) == [(date(2024, 2, 1), date(2024, 2, 29))]


def test_enqueue_dry_run_prints_one_order_per_tile_and_month() -> None:
    from click.testing import CliRunner

    from steps.cli import main
    from steps.sentinel2.tiles import thailand_tiles

    res = CliRunner().invoke(main, ["enqueue", "--aoi", "thailand", "--start", "2024-01-15", "--end", "2024-03-31",
                                    "--source", "/src/catalog.json", "--out", "s3://b/p", "--dry-run"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert len(lines) == 3 * len(thailand_tiles())
    mid, body = lines[0].split(" ", 1)
    order = WorkOrder.parse(body)
    assert order.message_id == mid and order.start == date(2024, 1, 15) and order.end == date(2024, 1, 31)


@pytest.mark.parametrize(("args", "fragment"), [
    (["--tiles", "47PPA"], "47PPA"),
    (["--tiles", "47PPR", "--aoi", "thailand"], "exactly one"),
    (["--tiles", "47PPR", "--start", "2024-02-01"], "before --start"),
    (["--tiles", "47PPR", "--out", ""], "--out is required"),
])
def test_enqueue_bad_arguments_exit_2(args: list[str], fragment: str) -> None:
    from click.testing import CliRunner

    from steps.cli import main

    base = {"--start": "2024-01-01", "--end": "2024-01-31", "--source": "s", "--out": "o"}
    for i in range(0, len(args), 2):
        base.pop(args[i], None)
    argv = ["enqueue", *args, *[x for kv in base.items() for x in kv], "--dry-run"]
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 2, res.output
    assert fragment in res.stderr


# ------------------------------------------------------------------ back-off, settlement, catalog batch (no broker)
def test_every_backoff_caller_keeps_its_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    """One formula (steps.errors.backoff_delay), three behaviours: the delays each caller had before."""
    import random

    from steps.errors import backoff_delay
    from steps.pipeline import runner
    from steps.queue.bookkeeping import retry_expiration_ms
    from steps.queue.transport import Reconnect
    from steps.settings import Settings

    # the runner's step retries: retry_backoff_s doubling, no cap, no jitter
    slept: list[float] = []
    monkeypatch.setattr(runner.time, "sleep", slept.append)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) <= 3:
            raise runner.TransientError("S3 SlowDown (simulated)")
        return "ok"

    assert runner.call_with_retries(flaky, "x", Settings(retries=3, retry_backoff_s=0.5)) == "ok"
    assert slept == [0.5, 1.0, 2.0]
    with pytest.raises(runner.TransientError):
        runner.call_with_retries(lambda: (_ for _ in ()).throw(runner.TransientError("down")), "x",
                                 Settings(retries=2, retry_backoff_s=2.0))
    assert slept[3:] == [2.0, 4.0]

    # the retry queue's expiration: the same doubling in ms, as int(1000·b·2^n) was
    for b in (0.05, 0.5, 2.0, 0.3, 1e-4, 0.0):
        assert [retry_expiration_ms(n, b) for n in range(6)] == [max(int(1000 * b * 2 ** n), 1) for n in range(6)]
    assert [retry_expiration_ms(n, 0.05) for n in range(3)] == [50, 100, 200]

    # the broker reconnect: 1 s doubling to the cap, equal jitter (upper half of each step), as before
    def old(attempt: int, first: float, cap: float, rng: random.Random) -> float:
        d = min(cap, first * 2 ** max(0, attempt - 1))
        return d / 2 + rng.uniform(0, d / 2)

    a, b_ = random.Random(7), random.Random(7)
    assert [backoff_delay(n, 1.0, 30.0, jitter=True, rng=a) for n in range(1, 12)] == [
        old(n, 1.0, 30.0, b_) for n in range(1, 12)]
    assert all(15.0 <= backoff_delay(9, 1.0, 30.0, jitter=True) <= 30.0 for _ in range(50))
    monkeypatch.setattr("steps.errors.random.uniform", lambda lo, hi: hi)  # the top of each step
    rc = Reconnect("amqp://u:p@h:5672/", attempts=3, first_s=1.0, max_s=3.0)
    assert [rc.lost(OSError("gone")) for _ in range(3)] == [1.0, 2.0, 3.0]
    assert rc.reconnects == 1
    with pytest.raises(runner.TransientError, match=r"at h:5672 and 3 reconnect attempts failed"):
        rc.lost(OSError("gone"))


def test_settling_an_outcome_counts_retries_and_keeps_the_reason() -> None:
    from steps.errors import EXIT_INVALID_INPUT, EXIT_TRANSIENT
    from steps.queue.bookkeeping import (
        HDR_EXIT,
        HDR_QUEUE,
        HDR_REASON,
        HDR_REDRIVEN,
        HDR_RETRIES,
        DeadLetter,
        Outcome,
        redrive_headers,
        settle,
    )

    transient = Outcome("retry", "S3 SlowDown", EXIT_TRANSIENT)
    first = settle(transient, {"other": 1}, max_retries=2, backoff_s=0.5, queue="q")
    assert (first.action, first.retries, first.expiration_ms) == ("retry", 0, 500)
    assert first.headers == {"other": 1, HDR_RETRIES: 1, HDR_REASON: "S3 SlowDown", HDR_EXIT: 75}
    second = settle(transient, first.headers, max_retries=2, backoff_s=0.5, queue="q")
    assert (second.action, second.headers[HDR_RETRIES], second.expiration_ms) == ("retry", 2, 1000)
    last = settle(transient, second.headers, max_retries=2, backoff_s=0.5, queue="q")
    assert last.action == "dead" and last.outcome.reason == "gave up after 2 retries: S3 SlowDown"
    assert last.headers[HDR_QUEUE] == "q" and last.headers[HDR_EXIT] == 75 and last.headers[HDR_RETRIES] == 2

    bad = settle(Outcome("dead", "x" * 5000, EXIT_INVALID_INPUT), None, max_retries=2, backoff_s=0.5, queue="q")
    assert bad.action == "dead" and len(bad.headers[HDR_REASON]) == 1000 and HDR_RETRIES not in bad.headers
    ok = settle(Outcome("ack", "done"), {"h": 1}, max_retries=2, backoff_s=0.5, queue="q")
    assert (ok.action, ok.headers) == ("ack", {"h": 1})

    dl = DeadLetter.from_message(None, {HDR_REASON: b"why", HDR_EXIT: 3, HDR_RETRIES: 2}, b"{}")
    assert (dl.message_id[:4], dl.reason, dl.exit_code, dl.retries) == ("raw-", "why", 3, 2)
    assert redrive_headers({**last.headers, "x-death": [], HDR_REDRIVEN: 1}) == {"other": 1, HDR_REDRIVEN: 2}


def test_the_catalog_is_rebuilt_once_per_batch() -> None:
    """Due when the queue is idle, after N orders or T seconds (whichever first); a failed rebuild stays due."""
    from steps.queue.catalog_batch import BATCH_IDLE_S, BATCH_ORDERS, BATCH_SECONDS, CatalogBatch

    assert (BATCH_ORDERS, BATCH_SECONDS, BATCH_IDLE_S) == (100, 30.0, 0.5)  # the documented defaults
    now = [0.0]
    built: list[str] = []
    batch = CatalogBatch(built.append, max_orders=3, max_seconds=10.0, idle_s=0.5, clock=lambda: now[0])
    assert batch.due(idle_for=60) == ""  # nothing noted: nothing to rebuild, however idle
    batch.note("/out/a")
    batch.note("/out/a")
    assert batch.due(idle_for=0.0) == ""  # busy, 2 orders, 0 s
    assert batch.due(idle_for=0.5) == "queue idle"
    batch.note("/out/b")
    assert batch.due(idle_for=0.0) == "3 orders"
    batch.flush()
    assert built == ["/out/a", "/out/b"] and batch.pending == [] and batch.rebuilds == 2

    batch.note("/out/a")
    now[0] = 9.9
    assert batch.due(idle_for=0.0) == ""
    now[0] = 10.0
    assert batch.due(idle_for=0.0) == "10s since the oldest order"
    assert batch.start("test")
    batch.flush()  # waits for the background rebuild
    assert built == ["/out/a", "/out/b", "/out/a"]

    def broken(root: str) -> None:
        raise OSError("S3 is down")

    failing = CatalogBatch(broken, clock=lambda: now[0])
    failing.note("/out/c")
    failing.flush()
    assert failing.pending == ["/out/c"] and failing.rebuilds == 0  # the next batch tries again
