"""The WSGI application ``raw2ready serve`` runs under gunicorn: pygeoapi's Flask app plus EDR fix-ups.

``PYGEOAPI_CONFIG`` and ``PYGEOAPI_OPENAPI`` must point at the files written by :mod:`steps.edr.config`
before this module is imported (``raw2ready serve`` sets them). gunicorn target: ``steps.edr.app:application``.

The wrapper rewrites only the JSON collection documents (``/collections`` and ``/collections/<id>``) of
the raw2ready EDR collections, so that they are valid OGC API-EDR collection descriptions:

* ``extent.temporal`` (interval, values, trs) and ``extent.spatial.bbox`` come from the *live* catalog
  index, so new acquisitions appear without regenerating the configuration;
* ``parameter_names``: the i18n objects pygeoapi's HTML templates need (``{"en": …}``) become the plain
  strings the EDR collection schema requires (``label``, ``description``, ``unit.label``);
* ``storageCrs`` (an OGC API-Features Part 2 member that pygeoapi adds to every EDR collection) is dropped:
  the EDR collection schema does not define it and strict EDR clients reject unknown members.

It also answers ``/collections/<id>/instances[/…]`` of those collections with 404: they have no instances
(none is advertised), and pygeoapi 0.24 would fail there with 500 (its base provider's ``instances()``
returns an exception object) or accept any instance identifier. Defining ``instances`` on the provider
instead would advertise an ``instances`` query.

EDR query responses are written by orjson instead of ``json.dumps`` (:func:`install_coverage_json`);
everything else (HTML, OpenAPI) passes through untouched. In front of all this sits the web viewer
(:mod:`steps.edr.viewer`: ``/viewer…``, and a link to it on the landing page).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from steps.edr.config import PROVIDER_NAME
from steps.edr.index import load_index
from steps.edr.wsgi import StartResponse, WSGIApp, buffered
from steps.settings import get_settings
from steps.times import format_datetime

log = logging.getLogger(__name__)

_COLLECTION_PATH = re.compile(r"^/collections(?:/([^/]+))?/?$")
_INSTANCE_PATH = re.compile(r"^/collections/([^/]+)/instances(?:/|$)")
TRS = "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"



def _text(v: Any) -> Any:
    if isinstance(v, dict):
        return v.get("en") or next(iter(v.values()), None)
    return v


def _fix_parameter(p: dict[str, Any]) -> dict[str, Any]:
    p = dict(p)
    for k in ("label", "description"):
        if k in p:
            p[k] = _text(p[k])
    op = dict(p.get("observedProperty") or {})
    for k in ("label", "description"):
        if k in op:
            op[k] = _text(op[k])
    p["observedProperty"] = op
    if isinstance(p.get("unit"), dict) and "label" in p["unit"]:
        p["unit"] = {**p["unit"], "label": _text(p["unit"]["label"])}
    return p


class EDRDocumentFixups:
    """WSGI middleware completing pygeoapi's EDR collection documents from the live catalog index."""

    def __init__(self, app: WSGIApp, catalogs: dict[str, str]) -> None:
        self.app = app
        self.catalogs = catalogs  # collection id -> catalog root URI

    def fix_collection(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Complete one collection document in place (no-op for collections not served by raw2ready)."""
        catalog = self.catalogs.get(str(doc.get("id")))
        if catalog is None:
            return doc
        doc.pop("storageCrs", None)
        if isinstance(doc.get("parameter_names"), dict):
            doc["parameter_names"] = {k: _fix_parameter(v) for k, v in doc["parameter_names"].items()}
        try:
            index, _ = load_index(catalog)
        except Exception:  # the document is still useful without live extents
            log.warning("catalog index of %s unavailable for the collection document", catalog, exc_info=True)
            return doc
        bbox, first, last = index.extent()
        extent = doc.setdefault("extent", {})
        extent.setdefault("spatial", {})["bbox"] = [bbox]
        extent["spatial"].setdefault("crs", "http://www.opengis.net/def/crs/OGC/1.3/CRS84")
        if first is not None and last is not None:
            a, b = format_datetime(first), format_datetime(last)
            extent["temporal"] = {"interval": [[a, b]], "values": [f"{a}/{b}"], "trs": TRS}
        return doc

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """Pass requests through; buffer and rewrite JSON collection documents."""
        path = environ.get("PATH_INFO", "")
        inst = _INSTANCE_PATH.match(path)
        if inst is not None and inst.group(1) in self.catalogs:
            body = json.dumps({"code": "NotFound", "type": "NotFound",
                               "description": f"collection {inst.group(1)!r} has no instances"}).encode()
            start_response("404 NOT FOUND", [("Content-Type", "application/json"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        m = _COLLECTION_PATH.match(path)
        if environ.get("REQUEST_METHOD") != "GET" or m is None:
            return self.app(environ, start_response)
        resp = buffered(self.app, environ)
        body = resp.body
        ctype = resp.header("content-type")
        if resp.status.startswith("200") and "json" in ctype and "ld+json" not in ctype:
            try:
                doc = json.loads(body)
                if m.group(1) is None and isinstance(doc.get("collections"), list):
                    doc["collections"] = [self.fix_collection(c) for c in doc["collections"]]
                elif m.group(1) is not None:
                    doc = self.fix_collection(doc)
                body = json.dumps(doc).encode()
            except (ValueError, AttributeError, TypeError):
                log.warning("could not complete the collection document at %s", environ.get("PATH_INFO"))
        return resp.send(start_response, body)


def coverage_json(doc: dict[str, Any], pretty: bool = False) -> str:
    """pygeoapi's ``to_json`` (same output as JSON: compact, ``<``/``>`` escaped), written by orjson.

    A 1-ha area series over 290 dates carries 58,000 values; ``json.dumps`` spends ≈ 13 ms on them (the
    float reprs), orjson ≈ 1 ms. Anything orjson refuses (pretty printing, integers beyond 64 bits, keys
    that are not strings, types it does not know) goes to pygeoapi's own ``to_json``. Floats are written
    as the shortest string that reads back the same double, as ``json.dumps`` does (``1e-05`` may appear
    as ``1e-5``); the providers never produce NaN.
    """
    from pygeoapi.util import to_json

    if pretty:
        return str(to_json(doc, pretty))
    try:
        import orjson

        text = orjson.dumps(doc).decode()
    except (TypeError, ImportError):
        return str(to_json(doc, pretty))
    return text.replace("<", "&lt;").replace(">", "&gt;")


def install_coverage_json() -> None:
    """Make pygeoapi's EDR API module serialise its responses with :func:`coverage_json` (pygeoapi offers
    no hook for this; the module looks ``to_json`` up in its own namespace on every response)."""
    import pygeoapi.api.environmental_data_retrieval as edr_api

    edr_api.to_json = coverage_json


def create_app() -> WSGIApp:
    """pygeoapi's Flask app (configured from ``PYGEOAPI_CONFIG``/``PYGEOAPI_OPENAPI``) with the fix-ups and viewer."""
    from pygeoapi.flask_app import APP, CONFIG

    install_coverage_json()
    catalogs = {}
    for cid, res in (CONFIG.get("resources") or {}).items():
        for prov in res.get("providers") or []:
            if prov.get("name") == PROVIDER_NAME:
                catalogs[cid] = str(prov["data"])
    from steps.edr.viewer import mount_viewer

    return mount_viewer(EDRDocumentFixups(APP.wsgi_app, catalogs), catalogs, CONFIG)


# built at import only when pygeoapi has a configuration to load (gunicorn under `raw2ready serve`)
application: WSGIApp = create_app() if get_settings().pygeoapi_config else None  # type: ignore[assignment]
