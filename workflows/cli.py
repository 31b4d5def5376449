"""``raw2ready render`` and ``raw2ready submit``: plugin commands (entry-point group ``raw2ready.commands``).

Thin click wrappers over :mod:`workflows.render` and :mod:`workflows.submit`; they join the ``raw2ready``
command only where Hera is installed (not in the step images).
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("manifests/base"),
              show_default=True, help="kustomize base folder; files go to <out>/generated/.")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 if the files under <out>/generated differ from a fresh render.")
def render(out: Path, check: bool) -> None:
    """Render the WorkflowTemplates and Argo Events objects generated from the step contracts.

    Deterministic (only the code and the settings' defaults matter, not the environment); files are
    rewritten only when their bytes change.
    """
    from workflows.render import GENERATED_DIR, render_documents
    from workflows.render import render as do_render

    if check:
        target = out / GENERATED_DIR
        docs = render_documents()
        stale = [name for name, text in docs.items()
                 if not (target / name).exists() or (target / name).read_text(encoding="utf-8") != text]
        stale += sorted(p.name for p in target.glob("*.yaml") if p.name not in docs)
        if stale:
            raise click.ClickException(f"out of date in {target}: {', '.join(stale)} (run `raw2ready render`)")
        click.echo(f"{target}: {len(docs)} files up to date")
        return
    changed = do_render(out)
    click.echo(f"{out / GENERATED_DIR}: {len(changed)} file(s) changed")


@click.command()
@click.option("--tiles", required=True, help="MGRS tiles, comma-separated (e.g. 47PPR,47PQR).")
@click.option("--start", required=True, help="First acquisition date (inclusive), YYYY-MM-DD.")
@click.option("--end", required=True, help="Last acquisition date (inclusive), YYYY-MM-DD.")
@click.option("--source", default=None, help="STAC source; default: the deployment's RAW2READY_SOURCE.")
@click.option("--out", default=None, help="Output root; default: the deployment's RAW2READY_OUT.")
@click.option("--force", is_flag=True, help="Reprocess scenes whose products are already complete.")
@click.option("--resolution", type=click.Choice(["0", "10", "20", "60"]), default="0", show_default=True,
              help="Product resolution in metres (0 = the finest the source has).")
def submit(tiles: str, start: str, end: str, source: str | None, out: str | None, force: bool,
           resolution: str) -> None:
    """Run the deployed `raw2ready` WorkflowTemplate through the Argo Server API.

    Uses RAW2READY_ARGO_SERVER_URL, RAW2READY_ARGO_TOKEN and RAW2READY_ARGO_NAMESPACE. Prints the name
    of the created Workflow and its URL in the Argo UI.
    """
    from steps.settings import get_settings
    from workflows.submit import order_values
    from workflows.submit import submit as do_submit

    result = do_submit(order_values(tiles, start, end, source, out, force, int(resolution)), get_settings())
    click.echo(f"{result.namespace}/{result.name}  {result.url}")
