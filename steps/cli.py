"""The ``raw2ready`` command: a thin click layer over the library.

Exit codes (one table, see :mod:`steps.errors`): 0 ok (incl. skipped), 1 unexpected failure,
2 bad arguments, 3 invalid input, 75 transient failure (retry later). Errors print one line on stderr.
Commands from other distributions (``workflows`` adds ``render`` and ``submit``) join through the
``raw2ready.commands`` entry-point group, so step images without Hera simply do not have them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, NoReturn

import click

import steps
from steps.errors import InvalidInputError, Raw2ReadyError, UsageError, exit_code_for

log = logging.getLogger("raw2ready")


def _setup_logging(verbose: int, quiet: bool) -> None:
    from steps.settings import get_settings

    # Every command reads (and so validates) the settings when the process starts: a misspelt choice is one
    # clear error (exit 3) here, not a failure of every scene later.
    settings = get_settings()
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    if verbose == 0 and not quiet:
        level = getattr(logging, settings.log_level.upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("botocore", "boto3", "urllib3", "rasterio", "rio_cogeo", "s3transfer", "stac_validator", "pika"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def fail(exc: BaseException) -> NoReturn:
    """Print one clear line for ``exc`` and exit with its documented code."""
    code = exit_code_for(exc)
    kind = {2: "usage error", 3: "invalid input", 75: "temporary failure (retry later)"}.get(code, "error")
    click.echo(f"raw2ready: {kind}: {exc}", err=True)
    sys.exit(code)


class Raw2ReadyGroup(click.Group):
    """Top-level group: loads plugin commands and turns library errors into exit codes."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-in commands plus entry-point plugins, sorted."""
        names = set(super().list_commands(ctx))
        names |= {n for n in _plugins() if self.get_command(ctx, n) is not None}
        return sorted(names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        """A built-in command or a plugin command."""
        cmd = super().get_command(ctx, name)
        if cmd is None and name in _plugins():
            try:
                loaded = _plugins()[name].load()
            except ImportError as exc:  # e.g. a step image without Hera: the plugin is simply absent
                log.debug("plugin command %s unavailable: %s", name, exc)
                return None
            cmd = loaded if isinstance(loaded, click.Command) else None
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; map raw2ready errors to exit codes with one line on stderr."""
        try:
            return super().invoke(ctx)
        except Raw2ReadyError as exc:
            fail(exc)


def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="raw2ready.commands")}


@click.group(cls=Raw2ReadyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(steps.__version__, prog_name="raw2ready")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def main(verbose: int, quiet: bool) -> None:
    """raw2ready: Sentinel-2 L2A/L1C archives to analysis-ready NDVI/LAI COGs and a STAC catalog.

    \b
    Start here:
      raw2ready demo                      synthesize a small archive and process it (offline)
      raw2ready run --source … --tiles 47PPR --start 2024-01-01 --end 2024-01-31 --out ./products
    Exit codes: 0 ok · 1 failure · 2 bad arguments · 3 invalid input · 4 audit: incomplete ·
    75 temporary failure (retry).
    Deployment settings come from RAW2READY_* environment variables (see README).
    """
    _setup_logging(verbose, quiet)


# ------------------------------------------------------------------------------------------- helpers
def _tiles_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--tiles", required=True, help="MGRS tiles, comma-separated (e.g. 47PPR,47PQR).")(f)


def _validate_tiles(tiles: str) -> list[str]:
    from steps.sentinel2.grid import tiles_argument

    return tiles_argument(tiles)


def _validate_dates(start: str, end: str) -> None:
    from steps.sentinel2.source import parse_date_range

    parse_date_range(start, end)


class _Progress:
    """Progress on stderr: a rich bar on a terminal, one log line per scene otherwise."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.done = total, 0
        self.bar: Any = None
        if sys.stderr.isatty() and total:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("{task.description}"), transient=False)
            self.task = self.bar.add_task("", total=total)
            self.bar.start()

    def __call__(self, result: Any) -> None:
        self.done += 1
        text = f"{result.scene_id} {result.status}" + (f" ({result.error})" if result.error else "")
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=text)
        else:
            log.info("[%d/%d] %s", self.done, self.total, text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _print_summary(summary: Any) -> None:
    counts = {k: summary.count(k) for k in ("done", "skipped", "complete", "failed")}
    click.echo(
        f"scenes: {counts['done']} done, {counts['skipped']} skipped, {counts['complete']} already complete, "
        f"{counts['failed']} failed"
    )
    for r in summary.results:
        if r.status == "failed":
            click.echo(f"  FAILED {r.scene_id} at step {r.step or '?'} (exit {r.exit_code}): {r.error}")
    click.echo(f"catalog: {summary.catalog}")


def run_range(source: str, tiles: list[str], start: str, end: str, out: str, workers: int, force: bool,
              resolution: int = 0) -> Any:
    """List and process scenes with progress; return the run summary."""
    from steps.pipeline.runner import run_scenes
    from steps.sentinel2.source import find_scenes
    from steps.settings import get_settings
    from steps.storage import open_storage

    open_storage(out)  # validates the output URI before any work
    scenes = find_scenes(source, tiles, start, end, resolution=resolution)
    click.echo(f"{len(scenes)} scene(s) for {','.join(tiles)} {start}..{end}", err=True)
    progress = _Progress(len(scenes), "processing")
    try:
        summary = run_scenes(scenes, out, workers=workers, force=force, settings=get_settings(), progress=progress)
    finally:
        progress.close()
    return summary


# ------------------------------------------------------------------------------------------- commands
@main.command()
@click.option("--source", required=True, envvar="RAW2READY_STAC_API_URL",
              help="Source: static STAC catalog (path, s3:// or https:// URL), STAC API URL, a .SAFE directory, "
                   "a .zip of one (as downloaded from the Copernicus Data Space), or a folder of them.")
@_tiles_option
@click.option("--start", required=True, help="First date, YYYY-MM-DD (inclusive).")
@click.option("--end", required=True, help="Last date, YYYY-MM-DD (inclusive).")
@click.option("--out", required=True, help="Output root: directory or s3://bucket/prefix.")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="Scenes processed in parallel (default RAW2READY_WORKERS or 2).")
@click.option("--force", is_flag=True, help="Reprocess scenes that are already complete.")
@click.option("--resolution", type=click.Choice(["10", "20", "60"]), default=None,
              help="Product resolution in metres (NDVI; LAI and cloud mask at 20 m or this if coarser). "
                   "Default: the finest the source has (10 m, or 60 m for a 60 m-only SAFE).")
@click.option("--cloud-mode", type=click.Choice(["fast", "exact"]), default=None,
              help="s2cloudless evaluator (same mask either way): 'fast' = compiled model, compiled once per "
                   "machine; 'exact' = LightGBM's predictor, 5-6x slower. Default RAW2READY_CLOUD_MODE or fast.")
@click.option("--cloud-resolution", type=click.Choice(["10", "20", "60"]), default=None,
              help="Pixel size (m) s2cloudless runs at. Default RAW2READY_CLOUD_RESOLUTION_M or 60.")
def run(source: str, tiles: str, start: str, end: str, out: str, workers: int | None, force: bool,
        resolution: str | None, cloud_mode: str | None, cloud_resolution: str | None) -> None:
    """Process every scene of TILES between START and END into OUT, then rebuild the catalog.

    Scenes already complete are skipped, so re-running converges without redoing work. Exits non-zero when
    any scene failed (1 unexpected, 75 transient, 3 invalid input).
    """
    from steps.settings import get_settings

    # the options are settings: set them for this process (and the worker processes it starts)
    for var, value in (("RAW2READY_CLOUD_MODE", cloud_mode), ("RAW2READY_CLOUD_RESOLUTION_M", cloud_resolution)):
        if value is not None:
            os.environ[var] = value
            get_settings.cache_clear()

    tl = _validate_tiles(tiles)
    _validate_dates(start, end)
    summary = run_range(source, tl, start, end, out, workers or get_settings().workers, force,
                        int(resolution or 0))
    _print_summary(summary)
    sys.exit(summary.exit_code)


@main.command()
@click.argument("catalog")
@click.option("--cogs/--no-cogs", default=True, show_default=True, help="Also validate every asset as a COG.")
def validate(catalog: str, cogs: bool) -> None:
    """Validate a STAC catalog recursively (offline schemas) and its COG assets; exit 3 if invalid.

    CATALOG is a ``catalog.json`` (path or URL) or an output root (a directory holding one).
    """
    from steps.products.validate import validate_products

    if Path(catalog).is_dir():
        catalog = str(Path(catalog) / "catalog.json")
        if not Path(catalog).is_file():
            raise InvalidInputError(f"no catalog.json in {Path(catalog).parent}: give an output root or a catalog")

    errors = validate_products(catalog, cogs=cogs)
    for e in errors:
        click.echo(f"  {e}", err=True)
    if errors:
        raise InvalidInputError(f"{len(errors)} problem(s) in {catalog}")
    click.echo(f"valid: {catalog}")


@main.command("cloud-model")
@click.option("--force", is_flag=True, help="Compile again even when a cached copy exists.")
def cloud_model(force: bool) -> None:
    """Compile the s2cloudless model for this machine's CPU (once, ~2 min) and check it against LightGBM.

    The pipeline does this on first use; run it ahead (setup, image build) so no scene waits for it.
    RAW2READY_LLVM_CPU picks another target CPU (e.g. x86-64-v2 for an image), RAW2READY_CACHE_DIR the cache.
    """
    from steps.science import _compiled
    from steps.science.cloudmask import load_s2cloudless_model

    model = load_s2cloudless_model()
    try:
        obj = _compiled.compile_model(model.path, model.trees, model.lightgbm_proba, force=force)
        forest = model.compiled()
    except _compiled.CompiledModelUnavailableError as exc:
        raise RuntimeError(f"compiled cloud model unavailable: {exc}") from exc
    click.echo(f"compiled s2cloudless model: {obj} (checked against LightGBM; proven relative bound "
               f"{forest.rel_bound:.3g})")


@main.group()
def catalog() -> None:
    """Catalog maintenance."""


@catalog.command("rebuild")
@click.option("--out", required=True, help="Output root holding the products (directory or s3://…).")
def catalog_rebuild(out: str) -> None:
    """Rebuild the whole catalog tree and index from the item sidecars in storage."""
    from steps.pipeline.stac import sync_cube
    from steps.products.catalog import rebuild_catalog
    from steps.settings import get_settings
    from steps.storage import open_storage

    storage = open_storage(out)
    res = rebuild_catalog(storage)
    click.echo(f"{res.items} items, {res.skipped} skipped scenes; {res.written} files written, "
               f"{res.unchanged} unchanged, {res.removed} stale removed")
    if get_settings().cube:
        sync_cube(storage)


@main.group()
def cube() -> None:
    """The time-series store (cube/<tile>: Zarr v3, chunks long in time) that EDR point and area series read.

    \b
    Derived from the COGs and the catalog index (the product of record); every catalog rebuild keeps it in
    step (RAW2READY_CUBE=false turns that off). One writer per tile (a lock file, or a lease object on S3).
    """


def _cube_storage(out: str) -> Any:
    from steps.storage import open_storage

    storage = open_storage(out)
    if not storage.exists("raw2ready-s2-vegetation/index.json"):
        raise InvalidInputError(f"no catalog index below {out} (run `raw2ready catalog rebuild` first)")
    return storage


_TILES = click.option("--tile", "tiles", multiple=True, help="Only this MGRS tile (repeatable; default: all).")


@cube.command("sync")
@click.option("--out", required=True, help="Output root holding the products and catalog (directory or s3://…).")
@_TILES
@click.option("--compact", is_flag=True, help="Also merge each tile's segments into one.")
def cube_sync(out: str, tiles: tuple[str, ...], compact: bool) -> None:
    """Add the catalog's dates the store lacks (a new segment per tile), merge segments, drop stale dates."""
    from steps.products.cube import sync

    for r in sync(_cube_storage(out), list(tiles) or None, compact=compact, progress=_cube_progress):
        _cube_line(r)


@cube.command("rebuild")
@click.option("--out", required=True, help="Output root holding the products and catalog (directory or s3://…).")
@_TILES
def cube_rebuild(out: str, tiles: tuple[str, ...]) -> None:
    """Delete each tile's store and write it again from the COGs and the catalog alone."""
    from steps.products.cube import rebuild

    for r in rebuild(_cube_storage(out), list(tiles) or None, progress=_cube_progress):
        _cube_line(r)


@cube.command("status")
@click.option("--out", required=True, help="Output root (directory or s3://…).")
def cube_status(out: str) -> None:
    """Per tile: dates held, segments, generation and time range."""
    from steps.products.cube import describe
    from steps.storage import open_storage

    rows = describe(open_storage(out))
    if not rows:
        click.echo("no time-series store (run `raw2ready cube sync`)")
    for d in rows:
        click.echo(f"{d['tile']}: {d['dates']} dates in {d['segments']} segment(s), generation {d['generation']}, "
                   f"{d['first']} .. {d['last']}")


@cube.command("audit")
@click.option("--out", required=True, help="Output root holding the products and catalog (directory or s3://…).")
@click.option("--deep", is_flag=True, help="Also decode every chunk (zstd + crc32c) and check none is missing.")
def cube_audit(out: str, deep: bool) -> None:
    """Compare the store with the catalog; exit 4 when it lacks dates, holds stale ones or is damaged."""
    from steps.ops.audit_cli import EXIT_INCOMPLETE
    from steps.products.cube import audit

    bad = 0
    for a in audit(_cube_storage(out), deep=deep):
        state = "ok" if a.ok else "NEEDS SYNC" if not a.broken else "BROKEN"
        click.echo(f"{a.tile}: {state}")
        for what in ("missing", "stale", "extra", "broken"):
            for v in getattr(a, what):
                click.echo(f"  {what}: {v}")
        bad += not a.ok
    if bad:
        click.echo(f"{bad} tile(s) need `raw2ready cube sync` (broken: `raw2ready cube rebuild --tile T`)", err=True)
        sys.exit(EXIT_INCOMPLETE)


def _cube_progress(msg: str) -> None:
    click.echo(msg, err=True)


def _cube_line(r: Any) -> None:
    extra = f"; COG-only (other grid or missing products): {', '.join(r.skipped_items)}" if r.skipped_items else ""
    click.echo(f"{r.tile}: +{r.added} dates, {r.merged} segments merged, {r.orphans_removed} unreferenced "
               f"removed; {r.dates} dates in {r.segments} segment(s){extra}")


# ------------------------------------------------------------------------------ generated step commands
@main.group()
def step() -> None:
    """Run one pipeline step (the container entrypoint); options are generated from the step contract."""


def _make_step_command(name: str) -> click.Command:
    from steps.pipeline.contract import write_outputs
    from steps.pipeline.registry import STEPS

    st = STEPS[name]
    params: list[click.Parameter] = []
    for fname, f in st.input_fields().items():
        types: dict[Any, click.ParamType] = {int: click.INT, float: click.FLOAT, bool: click.BOOL}
        ptype = types.get(f.annotation, click.STRING)
        required = f.is_required()
        params.append(click.Option([f"--{fname.replace('_', '-')}", fname], type=ptype, required=required,
                                   default=None if required else f.default, help=f.description,
                                   show_default=not required))
    params.append(click.Option(["--outputs-dir"], type=click.Path(file_okay=False, path_type=Path), default=None,
                               help="Write each output to <dir>/<field> (Argo output parameters)."))

    def callback(outputs_dir: Path | None, **kwargs: Any) -> None:
        from pydantic import ValidationError

        from steps.settings import get_settings

        try:
            inputs = st.Inputs(**kwargs)
        except ValidationError as exc:
            raise UsageError(str(exc).splitlines()[0]) from exc
        # Step.run records a per-scene failure (failures/<scene_id>.json) exactly as the local runner does
        result = st.run(inputs, get_settings())
        click.echo(write_outputs(result, outputs_dir))

    return click.Command(name, params=params, callback=callback, help=st.description)


# Command modules of other parts of the package (queue, serving, audit) add themselves here: each module
# that exists must define ``COMMANDS: list[click.Command]``. A module that is present but broken fails
# loudly; one that is absent (a trimmed image) is simply not offered.
EXTRA_COMMAND_MODULES = ("steps.queue.cli", "steps.edr.cli", "steps.ops.audit_cli")


def _register_extra_commands() -> None:
    import importlib
    import importlib.util

    for name in EXTRA_COMMAND_MODULES:
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        module = importlib.import_module(name)
        for cmd in module.COMMANDS:
            main.add_command(cmd)


def _register_steps() -> None:
    from steps.pipeline.registry import STEPS

    for name in STEPS:
        step.add_command(_make_step_command(name))


_register_steps()
_register_extra_commands()


def entrypoint() -> None:
    """Console-script entry with a last-resort handler (unexpected errors → exit 1, one line)."""
    try:
        main(standalone_mode=True)
    except SystemExit:
        raise
    except Exception as exc:
        logging.getLogger("raw2ready").debug("unexpected error", exc_info=True)
        fail(exc)


if __name__ == "__main__":  # pragma: no cover
    entrypoint()
