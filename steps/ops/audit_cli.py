"""``raw2ready audit`` and ``raw2ready status``: find loss, re-drive it, and watch a backfill."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from steps.errors import UsageError

EXIT_INCOMPLETE = 4  # audit: something is missing, corrupt, failed or unlisted


def _print_table(rows: list[tuple[str, dict[str, int]]]) -> None:
    cols = list(rows[0][1]) if rows else []
    click.echo(f"{'period':<10} " + " ".join(f"{c:>9}" for c in cols))
    for label, counts in rows:
        click.echo(f"{label:<10} " + " ".join(f"{counts[c]:>9}" for c in cols))


def _scenes(storage: Any, source: str, tiles: str | None, start: str | None, end: str | None) -> list[Any]:
    """What the archive has for the range; tiles/dates not given default to what the store has seen."""
    from steps.ops.audit import coverage
    from steps.sentinel2.grid import normalize_tiles
    from steps.sentinel2.source import find_scenes

    if not (tiles and start and end):
        seen = coverage(storage)
        if seen is None:
            raise UsageError("the output store holds no products, failure or order records to infer the "
                             "range from: give --tiles, --start and --end")
        tiles = tiles or ",".join(seen[0])
        start = start or seen[1].isoformat()
        end = end or seen[2].isoformat()
        click.echo(f"auditing tiles {tiles} from {start} to {end} (defaults from the output store)", err=True)
    return find_scenes(source, normalize_tiles(tiles), start, end)


@click.command("audit")
@click.option("--source", required=True, help="The source archive (static catalog or STAC API).")
@click.option("--out", required=True, help="Output root holding the products (directory or s3://…).")
@click.option("--tiles", default=None,
              help="MGRS tiles, comma-separated (default: every tile the output store has records of).")
@click.option("--start", default=None, help="First date YYYY-MM-DD (default: the store's first month).")
@click.option("--end", default=None, help="Last date YYYY-MM-DD (default: the store's last month).")
@click.option("--by", type=click.Choice(["month", "tile"]), default="month", show_default=True,
              help="Group the table by year/quarter/month or by tile.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Also write the full report (every scene and its problems) as JSON to this file ('-' = stdout).")
@click.option("--quick", is_flag=True, help="Compare sizes only, do not re-read assets to verify checksums.")
@click.option("--requeue", is_flag=True,
              help="Quarantine corrupt scenes and publish work orders for every incomplete tile × month.")
def audit_cmd(source: str, out: str, tiles: str | None, start: str | None, end: str | None, by: str,
              json_path: str | None, quick: bool, requeue: bool) -> None:
    """Compare the source archive, the catalog and the assets in storage (checksums); exit 4 if incomplete.

    States: ok, skipped (nothing to do), missing, corrupt (asset missing or checksum mismatch), unlisted
    (fine but not in the catalog: run `raw2ready catalog rebuild`), failed (last run failed).
    Without --tiles/--start/--end the range is every tile and month the output store has records of.
    """
    from steps.ops.audit import audit, requeue_plan, table
    from steps.storage import open_storage

    storage = open_storage(out)
    scenes = _scenes(storage, source, tiles, start, end)
    report = audit(storage, scenes, verify_checksums=not quick)
    _print_table(table(report, by))
    for s in report.scenes:
        if s.state not in ("ok", "skipped"):
            click.echo(f"  {s.state.upper():<8} {s.scene_id}: {'; '.join(s.problems)}")
    for o in report.orphans:
        click.echo(f"  ORPHAN   {o} (not in the source for this range)")
    if json_path:
        text = json.dumps(report.to_json(), indent=2)
        if json_path == "-":
            click.echo(text)
        else:
            with click.open_file(json_path, "w") as f:
                f.write(text + "\n")
    if requeue and not report.complete:
        from steps.queue.transport import publish_orders

        orders = requeue_plan(storage, report, source, out)
        n = publish_orders(orders, recheck=True)  # re-check orders already marked done
        click.echo(f"requeued {n} work order(s) for {len(orders)} tile-month(s)")
    click.echo("complete" if report.complete else "INCOMPLETE")
    sys.exit(0 if report.complete else EXIT_INCOMPLETE)


@click.command("status")
@click.option("--out", required=True, help="Output root holding the products (directory or s3://…).")
@click.option("--source", default=None,
              help="Also count scenes the source has but the store lacks (missing) for --tiles/--start/--end.")
@click.option("--tiles", default=None, help="MGRS tiles, comma-separated.")
@click.option("--start", default=None, help="First date YYYY-MM-DD.")
@click.option("--end", default=None, help="Last date YYYY-MM-DD.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def status_cmd(out: str, source: str | None, tiles: str | None, start: str | None, end: str | None,
               as_json: bool) -> None:
    """Backfill progress: done / skipped / failed (/ missing) per year, quarter and month."""
    from steps.ops.audit import status_rows
    from steps.storage import open_storage

    storage = open_storage(out)
    scenes = _scenes(storage, source, tiles, start, end) if source else None
    rows = status_rows(storage, scenes)
    if as_json:
        click.echo(json.dumps(dict(rows), indent=2))
    elif rows:
        _print_table(rows)
    else:
        click.echo("no products yet")


COMMANDS = [audit_cmd, status_cmd]
