"""``raw2ready synth`` and ``raw2ready demo``: plugin commands (entry-point group ``raw2ready.commands``).

Thin click wrappers over :func:`synthesizer.synthesize_archive` (and, for ``demo``, the pipeline's
``run_range``). They join the ``raw2ready`` command where the synthesizer is installed; the pipeline itself
never imports this package.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

import click

from steps.errors import UsageError


@click.command()
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the synthetic archive (a static STAC catalog).")
@click.option("--tiles", default=None, help="MGRS tiles, comma-separated (default: the demo scenes).")
@click.option("--start", default=None, help="First date YYYY-MM-DD (with --tiles).")
@click.option("--end", default=None, help="Last date YYYY-MM-DD (with --tiles).")
@click.option("--size", type=int, default=600, show_default=True,
              help="Scene side in 10 m pixels, multiple of 6, up to 10980 (a full tile).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same bytes).")
@click.option("--safe", "safe_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write every scene as ESA .SAFE products (L2A and L1C) into this folder.")
@click.option("--zip", "zipped", is_flag=True, help="With --safe: zip each product like a CDSE download.")
def synth(out: Path, tiles: str | None, start: str | None, end: str | None, size: int, seed: int,
          safe_dir: Path | None, zipped: bool) -> None:
    """Write a synthetic Sentinel-2 L2A + L1C archive in the real formats (Earth Search v1 items, ESA XML)."""
    from steps.cli import _validate_dates, _validate_tiles
    from synthesizer import demo_specs, render_scene, specs_for_range, synthesize_archive, write_safe

    if size % 6 or not 6 <= size <= 10980:
        raise UsageError(f"--size {size}: must be a multiple of 6 between 6 and 10980")
    if zipped and safe_dir is None:
        raise UsageError("--zip needs --safe DIR")
    if tiles:
        if not (start and end):
            raise UsageError("--tiles needs --start and --end")
        _validate_dates(start, end)
        specs = specs_for_range(_validate_tiles(tiles), date.fromisoformat(start), date.fromisoformat(end),
                                seed=seed)
    else:
        specs = demo_specs()
    click.echo(f"writing {len(specs)} scene(s) of {size}x{size} px to {out}", err=True)
    root = synthesize_archive(out, specs, size=size, seed=seed)
    if safe_dir is not None:
        safe_dir.mkdir(parents=True, exist_ok=True)
        for spec in specs:
            arrays = render_scene(spec, size, seed)
            for level in ("L2A", "L1C") if spec.has_l1c else ("L2A",):
                click.echo(str(write_safe(safe_dir, spec, arrays, level=level, zip=zipped)))
    click.echo(str(root))


@click.command()
@click.option("--dir", "workdir", type=click.Path(file_okay=False, path_type=Path), default=Path("raw2ready-demo"),
              show_default=True, help="Where to put the synthetic archive and the products.")
@click.option("--size", type=int, default=600, show_default=True, help="Scene side in 10 m pixels.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True)
def demo(workdir: Path, size: int, workers: int) -> None:
    """Synthesize a small archive (2 tiles, pre- and post-04.00 scenes, a fully clouded one) and process it."""
    from steps.cli import _print_summary, run_range
    from synthesizer import demo_specs, synthesize_archive

    archive = workdir / "archive"
    out = workdir / "products"
    specs = demo_specs()
    click.echo(f"1/2 synthesizing {len(specs)} scenes ({size}x{size} px) into {archive}", err=True)
    root = synthesize_archive(archive, specs, size=size, seed=0)
    tiles = sorted({s.tile for s in specs})
    start = min(s.datetime for s in specs).date().isoformat()
    end = max(s.datetime for s in specs).date().isoformat()
    click.echo(f"2/2 processing {','.join(tiles)} {start}..{end} into {out}", err=True)
    summary = run_range(str(root), tiles, start, end, str(out.resolve()), workers, False)
    _print_summary(summary)
    click.echo(
        "\nNext:\n"
        f"  browse the catalog:  {out.resolve() / 'catalog.json'}\n"
        f"  validate it:         raw2ready validate {out.resolve() / 'catalog.json'}\n"
        f"  run again (no work): raw2ready run --source {root} --tiles {','.join(tiles)} --start {start} "
        f"--end {end} --out {out.resolve()}"
    )
    _print_serve_hint(str(out.resolve()))
    sys.exit(summary.exit_code)


def _print_serve_hint(out: str) -> None:
    """Tell the user how to serve ``out`` over OGC API-EDR, with example queries (when pygeoapi is installed)."""
    try:
        from steps.edr.config import ServeOptions, example_urls
        from steps.edr.index import load_index
    except ImportError:  # a step image without the serve extra
        click.echo("  serve it over EDR:   pip install 'raw2ready[serve]', then raw2ready serve --catalog " + out)
        return
    try:
        index, _storage = load_index(out)
    except FileNotFoundError:
        return
    click.echo(f"  serve it over EDR:   raw2ready serve --catalog {out} --port 5000\n  then query, e.g.:")
    for url in example_urls(ServeOptions(catalog=out), index)[2:5]:
        click.echo(f"    curl '{url}'")
