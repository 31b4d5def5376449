"""Offline STAC validation with vendored JSON schemas.

``stac-validator`` (distribution ``stac_valid``/``stac-validator``, module ``stac_validator``)
normally downloads the STAC core schemas from ``schemas.stacspec.org`` and the extension
schemas from ``stac-extensions.github.io``.  CI and the processing machines have no internet,
so this module points it at the copies vendored in ``steps/data/stac-schemas`` (see
``PROVENANCE.md`` there) and makes sure it never falls back to the network:

* every schema URL is looked up in ``index.json``; a URL that is not vendored (an extension we
  do not ship, another STAC version, or a ``$ref`` to an unknown document) is reported as an
  error string naming it, it is never fetched;
* each STAC object is validated against its core schema and, separately, against every
  extension schema listed in its ``stac_extensions`` (catalogs included), so one failing
  extension does not hide the others;
* the catalog walk (``child`` and ``item`` links) is done here rather than with
  stac-validator's recursive mode, which stops at the first invalid object, overwrites each
  child's ``stac_version`` with the root's and would fetch remote hrefs.  Remote (http/https)
  hrefs are reported, not followed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import warnings
from collections import deque
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

with warnings.catch_warnings():
    # Both ``stac_validator`` 4.1.2 (deprecated name) and ``stac_valid`` 4.2.x ship a package
    # ``__init__`` that emits a DeprecationWarning on import; pytest here turns warnings into errors.
    warnings.simplefilter("ignore", DeprecationWarning)
    from stac_validator.validate import StacValidate

__all__ = ["UnvendoredSchemaError", "schema_map", "validate_stac"]

_SCHEMA_PACKAGE = "steps"
_SCHEMA_SUBDIR = ("data", "stac-schemas")
_INDEX_NAME = "index.json"
_CORE_URL = "https://schemas.stacspec.org/v{version}/{kind}-spec/json-schema/{kind}.json"
_FOLLOWED_RELS = ("child", "item")
_MAX_DETAILS = 3
_MAX_MESSAGE = 300

# Keeps a temporary extraction alive if the package is ever imported from a zip.
_RESOURCE_STACK = contextlib.ExitStack()


class UnvendoredSchemaError(LookupError):
    """A schema URL was requested that is not vendored in ``steps/data/stac-schemas``."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"schema {url} is not vendored in steps/data/stac-schemas (offline validation; not fetched)"
        )
        self.url = url


class _OfflineSchemaMap(dict[str, str]):
    """URL → local path mapping that claims every http(s) URL, so nothing is downloaded.

    stac-validator only consults its ``schema_map`` with ``url in schema_map`` followed by
    ``schema_map[url]``; any URL not in the map would otherwise go to ``requests.get``.  Here
    such a URL raises :class:`UnvendoredSchemaError` instead, which stac-validator reports as
    a failed validation naming the URL.
    """

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and urlparse(key).scheme in ("http", "https"):
            return True
        return super().__contains__(key)

    def __getitem__(self, key: str) -> str:
        try:
            return super().__getitem__(key)
        except KeyError:
            raise UnvendoredSchemaError(key) from None


def _schema_root() -> Path:
    root = resources.files(_SCHEMA_PACKAGE).joinpath(*_SCHEMA_SUBDIR)
    if isinstance(root, Path):
        return root
    return Path(_RESOURCE_STACK.enter_context(resources.as_file(root)))


@functools.cache
def _load_schema_map() -> dict[str, str]:
    root = _schema_root()
    index = json.loads((root / _INDEX_NAME).read_text(encoding="utf-8"))
    mapping: dict[str, str] = {}
    for url, rel in index.items():
        path = (root / rel).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{_INDEX_NAME} maps {url} to {rel}, which does not exist")
        mapping[url] = str(path)
    return mapping


def schema_map() -> dict[str, str]:
    """Return the vendored schemas as a mapping of schema URL to absolute local file path.

    The mapping is read from ``steps/data/stac-schemas/index.json`` (package data); a new dict
    is returned on each call so callers may modify it.
    """
    return dict(_load_schema_map())


def _local_path(path_or_href: str | os.PathLike[str]) -> Path | None:
    """Turn a path or ``file://`` href into a Path; None for remote (http/https) hrefs."""
    if isinstance(path_or_href, os.PathLike):
        return Path(path_or_href)
    parsed = urlparse(path_or_href)
    if parsed.scheme in ("http", "https"):
        return None
    if parsed.scheme == "file":
        return Path(url2pathname(unquote(parsed.path)))
    return Path(path_or_href)


def _stac_kind(obj: dict[str, Any]) -> str | None:
    kind = obj.get("type")
    if kind == "Feature":
        return "item"
    if kind in ("Catalog", "Collection"):
        return str(kind).lower()
    return None


def _run_stac_validator(path: Path, offline_map: _OfflineSchemaMap, **kwargs: Any) -> list[dict[str, Any]]:
    """Run one non-recursive StacValidate pass; return its messages for invalid results."""
    validator = StacValidate(str(path), schema_map=dict(offline_map), **kwargs)
    # The constructor copies the map into a plain dict; put the guarding map back so an
    # unknown URL raises instead of being downloaded.
    validator.schema_map = offline_map
    validator.run()
    return [m for m in validator.message if isinstance(m, dict) and not m.get("valid_stac", False)]


def _leaf_errors(error: ValidationError) -> Iterator[ValidationError]:
    if not error.context:
        yield error
        return
    for sub in error.context:
        yield from _leaf_errors(sub)


def _explain(instance: dict[str, Any], schema_url: str, offline_map: _OfflineSchemaMap) -> list[str]:
    """Find the specific reasons behind a failure stac-validator reported.

    stac-validator reports the top-level ``oneOf``/``anyOf`` failure (``<whole object> is not valid
    under any of the given schemas``), which hides the cause.  Re-run the same schema with plain
    jsonschema on the same offline map and report the deepest leaf errors, dropping those that only
    say the object is of another STAC type (the other ``oneOf`` branches).
    """

    def retrieve(uri: str) -> Resource[Any]:
        return Resource.from_contents(json.loads(Path(offline_map[uri]).read_text(encoding="utf-8")))

    try:
        schema = json.loads(Path(offline_map[schema_url]).read_text(encoding="utf-8"))
        resource = Resource.from_contents(schema, default_specification=DRAFT202012)
        registry: Registry[Any] = Registry(retrieve=retrieve).with_resource(schema_url, resource)  # type: ignore[call-arg]
        cls = validators.validator_for(schema, default=Draft202012Validator)
        leaves = [
            leaf for err in cls(schema, registry=registry).iter_errors(instance) for leaf in _leaf_errors(err)
        ]
    except Exception:  # only an aid to the message; stac-validator's verdict stands
        return []

    def other_stac_type(err: ValidationError) -> bool:
        return list(err.absolute_path) == ["type"] and err.validator in ("const", "enum")

    leaves = [e for e in leaves if not other_stac_type(e)] or leaves
    leaves.sort(key=lambda e: -len(e.absolute_path))
    details: list[str] = []
    for err in leaves:
        where = " -> ".join(str(p) for p in err.absolute_path) or "document root"
        message = err.message if len(err.message) <= _MAX_MESSAGE else err.message[:_MAX_MESSAGE] + "..."
        detail = f"{message} (at {where})"
        if detail not in details:
            details.append(detail)
        if len(details) == _MAX_DETAILS:
            break
    return details


def _format(
    path: Path,
    label: str,
    message: dict[str, Any],
    obj: dict[str, Any],
    schema_url: str,
    offline_map: _OfflineSchemaMap,
) -> str:
    error_type = message.get("error_type", "error")
    detail = str(message.get("error_message", "")).strip() or "invalid"
    if error_type == "JSONSchemaValidationError":
        reasons = _explain(obj, schema_url, offline_map)
        if reasons:
            detail = "; ".join(reasons)
    if len(detail) > 2 * _MAX_MESSAGE:
        detail = detail[: 2 * _MAX_MESSAGE] + "..."
    return f"{path}: [{label}] {error_type}: {detail}"


def _validate_object(path: Path, obj: dict[str, Any], offline_map: _OfflineSchemaMap) -> list[str]:
    errors: list[str] = []
    version = obj.get("stac_version")
    kind = _stac_kind(obj)
    if kind is None:
        errors.append(f"{path}: not a STAC Catalog, Collection or Item (type={obj.get('type')!r})")
    elif not isinstance(version, str) or not version:
        errors.append(f"{path}: missing or invalid stac_version {version!r}")
    else:
        core_url = _CORE_URL.format(version=version, kind=kind)
        if dict.__contains__(offline_map, core_url):
            label = f"core {kind} v{version}"
            errors.extend(
                _format(path, label, m, obj, core_url, offline_map)
                for m in _run_stac_validator(path, offline_map, core=True)
            )
        else:
            errors.append(
                f"{path}: [core {kind} v{version}] no vendored schema for STAC {version} ({core_url}); "
                "not validated offline"
            )

    extensions = obj.get("stac_extensions", [])
    if not isinstance(extensions, list):
        errors.append(f"{path}: stac_extensions must be a list, got {type(extensions).__name__}")
        return errors
    for ext in extensions:
        if not isinstance(ext, str) or not dict.__contains__(offline_map, ext):
            errors.append(
                f"{path}: [extension {ext}] unknown extension schema: not vendored in "
                "steps/data/stac-schemas, refusing to fetch it"
            )
            continue
        errors.extend(
            _format(path, f"extension {ext}", m, obj, ext, offline_map)
            for m in _run_stac_validator(path, offline_map, custom=ext)
        )
    return errors


def _linked_paths(path: Path, obj: dict[str, Any], errors: list[str]) -> list[Path]:
    found: list[Path] = []
    links = obj.get("links", [])
    if not isinstance(links, list):
        return found
    for link in links:
        if not isinstance(link, dict) or link.get("rel") not in _FOLLOWED_RELS:
            continue
        href = link.get("href")
        if not isinstance(href, str) or not href:
            errors.append(f"{path}: {link.get('rel')} link without an href")
            continue
        target = _local_path(href)
        if target is None:
            errors.append(f"{path}: {link['rel']} link {href} is remote; not followed (offline validation)")
            continue
        if not target.is_absolute():
            target = path.parent / target
        found.append(target)
    return found


def validate_stac(path_or_href: str | os.PathLike[str], *, recursive: bool = True) -> list[str]:
    """Validate a local STAC Catalog, Collection or Item against the vendored schemas.

    Uses stac-validator's ``StacValidate`` with :func:`schema_map`, never the network.  Each
    object is checked against its core STAC schema and against every schema in its
    ``stac_extensions``; with ``recursive`` the ``child`` and ``item`` links are followed
    (local files only).

    Args:
        path_or_href: Path or ``file://`` href of the root STAC JSON document.
        recursive: Follow ``child``/``item`` links and validate every object reached.

    Returns:
        Human-readable error strings, each starting with the offending file; empty if valid.
        An extension or STAC version without a vendored schema is an error, not a pass.
    """
    start = _local_path(path_or_href)
    if start is None:
        return [f"{path_or_href}: remote href; only local files are validated (offline validation)"]

    offline_map = _OfflineSchemaMap(_load_schema_map())
    errors: list[str] = []
    queue: deque[Path] = deque([start])
    seen: set[Path] = set()
    while queue:
        path = queue.popleft()
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            errors.append(f"{path}: file not found")
            continue
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            errors.append(f"{path}: cannot read STAC JSON: {exc}")
            continue
        if not isinstance(obj, dict):
            errors.append(f"{path}: top-level JSON value is not an object")
            continue
        errors.extend(_validate_object(path, obj, offline_map))
        if recursive:
            queue.extend(_linked_paths(path, obj, errors))
    return errors
