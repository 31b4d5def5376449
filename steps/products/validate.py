"""Validate a product catalog: STAC (offline schemas, recursive) and every COG asset (rio-cogeo)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from urllib.parse import urlparse

from steps.storage import gdal_env, read_uri

log = logging.getLogger(__name__)


def _walk_items(catalog_href: str) -> list[str]:
    """Item hrefs reachable from a local catalog (children and items links, recursively)."""
    out: list[str] = []
    stack = [catalog_href]
    while stack:
        href = stack.pop()
        obj = json.loads(read_uri(href, side="output"))
        base = Path(href).parent
        for link in obj.get("links", []):
            target = str((base / link["href"]).resolve())
            if link["rel"] == "child":
                stack.append(target)
            elif link["rel"] == "item":
                out.append(target)
    return sorted(out)


def validate_products(catalog: str, *, cogs: bool = True) -> list[str]:
    """Problems found in a local product catalog (empty list = valid)."""
    from rio_cogeo.cogeo import cog_validate

    from steps.products.stacvalidate import validate_stac

    if urlparse(catalog).scheme not in ("", "file"):
        return [f"{catalog}: only local catalogs can be validated here"]
    errors = list(validate_stac(catalog, recursive=True))
    if cogs:
        for item_href in _walk_items(catalog):
            item = json.loads(read_uri(item_href, side="output"))
            for key, asset in sorted(item.get("assets", {}).items()):
                if "cloud-optimized" not in asset.get("type", ""):
                    continue
                path = str((Path(item_href).parent / asset["href"]).resolve())
                with gdal_env(side="output"):
                    ok, errs, _warns = cog_validate(path, quiet=True)
                if not ok:
                    errors.append(f"{item['id']}/{key}: not a valid COG: {errs}")
    return errors
