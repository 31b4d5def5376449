"""pystac glue for the derived products: the processing extension pystac lacks, and the fixed JSON key order.

Items, collections and catalogs are built as pystac objects with pystac's extension classes
(:mod:`pystac.extensions.projection`, ``raster``, ``file``, ``grid``), which declare the extension schema
URLs. pystac ships no class for the processing extension, so :class:`ProcessingExtension` adds one in
pystac's own pattern, pinned to v1.1.0: the version vendored for offline validation
(``steps/data/stac-schemas/PROVENANCE.md``; v1.2.0 is not available offline).

:func:`stac_dict` serialises an object with pystac's ``to_dict`` and puts the keys in the order the
products have always been written in (pystac's ``to_dict`` orders some keys differently, e.g. an asset's
``roles`` after its extension fields, a catalog's ``id`` before ``stac_version``), so the bytes written
by :func:`steps.products.catalog.dumps` are deterministic and unchanged by the move to pystac.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import pystac
from pystac.extensions.base import ExtensionManagementMixin, PropertiesExtension

PROCESSING_SCHEMA_URI = "https://stac-extensions.github.io/processing/v1.1.0/schema.json"

# Key order of the written JSON, per object (keys not named keep pystac's order, after these).
_TOP_ORDER: dict[str, tuple[str, ...]] = {
    "Feature": ("type", "stac_version", "stac_extensions", "id", "geometry", "bbox", "properties", "links",
                "assets", "collection"),
    "Collection": ("type", "stac_version", "stac_extensions", "id", "title", "description", "keywords", "license",
                   "providers", "extent", "item_assets", "assets", "links"),
    "Catalog": ("type", "stac_version", "stac_extensions", "id", "title", "description", "links"),
}
_ITEM_ASSET_ORDER = ("href", "type", "title", "description", "roles")
_COLLECTION_ASSET_ORDER = ("href", "type", "roles", "title", "description")
_PROPERTIES_ORDER = ("datetime",)


def _ordered(d: dict[str, Any], first: Iterable[str]) -> dict[str, Any]:
    """``d`` with the keys of ``first`` (those present) first, in that order, then the rest as they were."""
    out = {k: d[k] for k in first if k in d}
    out.update((k, v) for k, v in d.items() if k not in out)
    return out


def stac_dict(obj: pystac.Item | pystac.Catalog) -> dict[str, Any]:
    """The JSON object of a pystac Item, Collection or Catalog in the products' fixed key order.

    Hrefs are written as given (``transform_hrefs=False``: the products' relative links are set explicitly
    from the layout, no self link is written).
    """
    d = obj.to_dict(include_self_link=False, transform_hrefs=False)
    kind = d["type"]
    if kind == "Feature":
        d["properties"] = _ordered(d["properties"], _PROPERTIES_ORDER)
        d["assets"] = {k: _ordered(a, _ITEM_ASSET_ORDER) for k, a in d["assets"].items()}
    elif kind == "Collection" and "assets" in d:
        d["assets"] = {k: _ordered(a, _COLLECTION_ASSET_ORDER) for k, a in d["assets"].items()}
    return _ordered(d, _TOP_ORDER[kind])


class ProcessingExtension(PropertiesExtension, ExtensionManagementMixin[pystac.Item]):
    """The :stac-ext:`processing` extension (v1.1.0) on an Item, in the shape of pystac's extension classes.

    Use :meth:`ext`: ``ProcessingExtension.ext(item, add_if_missing=True).apply(...)``.
    """

    name: Literal["processing"] = "processing"

    def __init__(self, item: pystac.Item) -> None:
        self.item = item
        self.properties = item.properties

    def __repr__(self) -> str:
        return f"<ItemProcessingExtension Item id={self.item.id}>"

    @classmethod
    def get_schema_uri(cls) -> str:
        """The processing extension schema URL (v1.1.0)."""
        return PROCESSING_SCHEMA_URI

    @classmethod
    def ext(cls, obj: pystac.Item, add_if_missing: bool = False) -> ProcessingExtension:
        """The extension view of ``obj`` (adds the schema URL to ``stac_extensions`` with ``add_if_missing``)."""
        if not isinstance(obj, pystac.Item):
            raise pystac.ExtensionTypeError(f"ProcessingExtension does not apply to {type(obj).__name__}")
        cls.ensure_has_extension(obj, add_if_missing)
        return cls(obj)

    def apply(self, *, level: str | None = None, facility: str | None = None,
              software: dict[str, str] | None = None, lineage: str | None = None,
              expression: dict[str, Any] | None = None) -> None:
        """Set the ``processing:*`` fields, in this order (``None`` leaves a field out)."""
        fields = {"level": level, "facility": facility, "software": software, "lineage": lineage,
                  "expression": expression}
        for name, value in fields.items():
            self._set_property(f"processing:{name}", value)
