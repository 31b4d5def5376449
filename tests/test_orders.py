"""The work-order message: canonical body, deterministic id, parse errors, monthly split."""

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
