"""Ingest from a STAC API (pystac-client item search) whose assets live on an S3 API server.

Earth Search is an item-search API whose items point at absolute asset URLs; this test stands up the same
shape on loopback: a minimal STAC API (landing page, conformance, collections, items, ``POST``/``GET``
``/search`` with the ``query`` extension) serving the synthetic archive's items, with every asset href
rewritten to ``s3://`` on the moto server. The pipeline must find the same scenes as from the static catalog,
send a search that is really filtered (collection, datetime, ``grid:code``), and produce the same products.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from steps.times import parse_datetime

from r2r_helpers import make_bucket, run_cli, upload_tree

pytestmark = pytest.mark.s3

CONFORMS = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]


class MiniStacApi:
    """A read-only STAC API over a static archive; records every search it answers."""

    def __init__(self, archive_root: Path, asset_base: str) -> None:
        self.collections: dict[str, dict[str, Any]] = {}
        self.items: dict[str, dict[str, dict[str, Any]]] = {}
        self.searches: list[dict[str, Any]] = []
        for coll_file in sorted(archive_root.glob("*/collection.json")):
            coll = json.loads(coll_file.read_text())
            cid = coll["id"]
            self.collections[cid] = coll
            self.items[cid] = {}
            for item_file in sorted(coll_file.parent.glob("*/*.json")):
                if item_file.stem != item_file.parent.name:  # tileinfo_metadata.json etc. next to the item
                    continue
                item = json.loads(item_file.read_text())
                folder = item_file.parent.relative_to(archive_root).as_posix()
                for asset in item["assets"].values():  # absolute, like Earth Search's asset URLs
                    asset["href"] = f"{asset_base}/{folder}/{asset['href'].removeprefix('./')}"
                self.items[cid][item["id"]] = item
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    # ----------------------------------------------------------------------------------------- documents
    def _link(self, rel: str, path: str, mtype: str = "application/json", **extra: str) -> dict[str, str]:
        return {"rel": rel, "href": f"{self.url}{path}", "type": mtype, **extra}

    def _links(self, path: str) -> list[dict[str, str]]:
        return [self._link("self", path), self._link("root", "/")]

    def landing(self) -> dict[str, Any]:
        geojson = "application/geo+json"
        links = [*self._links("/"), self._link("conformance", "/conformance"), self._link("data", "/collections"),
                 self._link("search", "/search", geojson, method="GET"),
                 self._link("search", "/search", geojson, method="POST")]
        return {"type": "Catalog", "stac_version": "1.0.0", "id": "mini-earth-search",
                "description": "test STAC API", "conformsTo": CONFORMS, "links": links}

    def collection(self, cid: str) -> dict[str, Any]:
        coll = {k: v for k, v in self.collections[cid].items() if k != "links"}
        coll["links"] = [*self._links(f"/collections/{cid}"),
                         self._link("items", f"/collections/{cid}/items", "application/geo+json")]
        return coll

    def item(self, cid: str, iid: str) -> dict[str, Any]:
        item = dict(self.items[cid][iid])
        item["collection"] = cid
        item["links"] = [*self._links(f"/collections/{cid}/items/{iid}"),
                         self._link("collection", f"/collections/{cid}"), self._link("parent", f"/collections/{cid}")]
        return item

    def search(self, params: dict[str, Any]) -> dict[str, Any]:
        self.searches.append(params)
        colls = params.get("collections") or list(self.items)
        if isinstance(colls, str):
            colls = colls.split(",")
        lo, hi = None, None
        if params.get("datetime"):
            a, _, b = str(params["datetime"]).partition("/")
            lo = None if a in ("", "..") else parse_datetime(a)
            hi = None if b in ("", "..") else parse_datetime(b)
        query = params.get("query") or {}
        if isinstance(query, str):
            query = json.loads(query)
        feats = []
        for cid in colls:
            for iid, it in self.items.get(cid, {}).items():
                dt = parse_datetime(it["properties"]["datetime"])
                if (lo and dt < lo) or (hi and dt > hi):
                    continue
                if any(not _matches(it["properties"].get(k), cond) for k, cond in query.items()):
                    continue
                feats.append(self.item(cid, iid))
        return {"type": "FeatureCollection", "features": feats, "numberReturned": len(feats), "links": []}

    # ----------------------------------------------------------------------------------------- HTTP
    def route(self, method: str, raw_path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        u = urlparse(raw_path)
        parts = [p for p in u.path.split("/") if p]
        if method == "POST" and parts == ["search"]:
            return 200, self.search(json.loads(body or b"{}"))
        if method != "GET":
            return 405, {"code": "MethodNotAllowed"}
        if not parts:
            return 200, self.landing()
        if parts == ["conformance"]:
            return 200, {"conformsTo": CONFORMS}
        if parts == ["search"]:
            q = {k: v[0] for k, v in parse_qs(u.query).items()}
            return 200, self.search(q)
        if parts == ["collections"]:
            return 200, {"collections": [self.collection(c) for c in self.collections], "links": self._links(
                "/collections")}
        if len(parts) == 2 and parts[0] == "collections" and parts[1] in self.collections:
            return 200, self.collection(parts[1])
        if len(parts) == 4 and parts[0] == "collections" and parts[2] == "items" and \
                parts[3] in self.items.get(parts[1], {}):
            return 200, self.item(parts[1], parts[3])
        return 404, {"code": "NotFound", "description": u.path}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, doc = api.route(method, self.path, body)
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


def _matches(value: Any, cond: dict[str, Any]) -> bool:
    """The STAC API ``query`` extension operators this test needs (eq, in)."""
    for op, ref in cond.items():
        if op == "eq" and value != ref:
            return False
        if op == "in" and value not in ref:
            return False
        if op not in ("eq", "in"):
            raise AssertionError(f"unexpected query operator {op}")
    return True


@pytest.fixture
def stac_api(s3_env: dict[str, str], demo_archive: Path) -> Iterator[MiniStacApi]:
    make_bucket("earth-search")
    upload_tree(demo_archive.parent, "earth-search", "archive")
    api = MiniStacApi(demo_archive.parent, "s3://earth-search/archive")
    thread = threading.Thread(target=api.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.server.shutdown()
        api.server.server_close()


def test_stac_api_source_finds_the_same_scenes_as_the_static_catalog(stac_api: MiniStacApi, demo_archive: Path,
                                                                     demo_range: tuple[list[str], str, str]) -> None:
    from steps.sentinel2.source import find_scenes

    tiles, start, end = demo_range
    from_api = find_scenes(stac_api.url, tiles, start, end)
    from_static = find_scenes(str(demo_archive), tiles, start, end)
    assert [(s.scene_id, s.l2a_id, s.l1c_id, s.processing_baseline) for s in from_api] == \
           [(s.scene_id, s.l2a_id, s.l1c_id, s.processing_baseline) for s in from_static]
    assert all(s.l2a_href.startswith(f"{stac_api.url}/collections/sentinel-2-c1-l2a/items/") for s in from_api)
    # the duplicate (a reprocessing of the same scene) resolved to the newer baseline here too
    dup = [s for s in from_api if s.scene_id == "S2A_47PPR_20211204T034720"]
    assert len(dup) == 1 and dup[0].l2a_id.endswith("_1_L2A") and dup[0].processing_baseline == "05.00"
    # the searches were filtered on the server, not client-side only
    assert {tuple(s["collections"]) for s in stac_api.searches} == {("sentinel-2-c1-l2a",), ("sentinel-2-l1c",)}
    for s in stac_api.searches:
        assert s["query"] == {"grid:code": {"in": ["MGRS-47PPR", "MGRS-47PQR"]}}
        assert s["datetime"].startswith(start) and "/" in s["datetime"]


def test_stac_api_search_is_narrowed_to_the_tile_and_dates(stac_api: MiniStacApi) -> None:
    from steps.sentinel2.source import find_scenes

    scenes = find_scenes(stac_api.url, ["47PQR"], "2022-02-01", "2022-02-28")
    assert [s.scene_id for s in scenes] == ["S2A_47PQR_20220202T034720"]
    assert scenes[0].l1c_href.startswith(f"{stac_api.url}/collections/sentinel-2-l1c/items/")
    assert all(s["query"] == {"grid:code": {"in": ["MGRS-47PQR"]}} for s in stac_api.searches)


def test_run_from_a_stac_api_with_assets_on_s3_equals_the_local_products(
        stac_api: MiniStacApi, s3_env: dict[str, str], processed: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run_cli("-q", "run", "--source", stac_api.url, "--tiles", "47PPR", "--start", "2023-01-01",
                  "--end", "2024-12-31", "--out", str(out), env=s3_env)
    assert res.returncode == 0, res.stdout + res.stderr
    # the same scenes are done or skipped as in the run from the local static catalog
    def published(root: Path, suffix: str) -> set[str]:
        return {p.name for p in (root / "raw2ready-s2-vegetation").rglob(f"S2?_47PPR_202[34]*{suffix}")}

    assert published(out, ".skipped.json") == published(processed, ".skipped.json")
    names = published(processed, "T??????.json")
    assert names and published(out, "T??????.json") == names
    assert f"{len(names)} done" in res.stdout
    items = {n: json.loads(next((out / "raw2ready-s2-vegetation").rglob(n)).read_text()) for n in names}
    for name, item in items.items():
        local = json.loads(next((processed / "raw2ready-s2-vegetation").rglob(name)).read_text())
        assert {k: a["file:checksum"] for k, a in item["assets"].items()} == \
               {k: a["file:checksum"] for k, a in local["assets"].items()}
        sources = [lk["href"] for lk in item["links"] if lk["rel"] == "derived_from"]
        assert sources and all(h.startswith(f"{stac_api.url}/collections/") for h in sources)


def test_stac_api_that_refuses_the_search_is_invalid_input(stac_api: MiniStacApi, tmp_path: Path,
                                                           s3_env: dict[str, str]) -> None:
    original = stac_api.route

    def refuse(method: str, raw_path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if urlparse(raw_path).path == "/search":
            return 400, {"code": "BadRequest", "description": "query extension not supported"}
        return original(method, raw_path, body)

    stac_api.route = refuse  # type: ignore[method-assign]
    res = run_cli("run", "--source", stac_api.url, "--tiles", "47PPR", "--start", "2023-01-01",
                  "--end", "2023-01-31", "--out", str(tmp_path / "out"), env=s3_env)
    assert res.returncode == 3, res.stdout + res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("raw2ready:")]
    assert len(lines) == 1 and "refused the search" in lines[0], res.stderr


def test_planetary_computer_is_searched_by_its_own_tile_property(tmp_path: Path) -> None:
    """A STAC API serving Planetary Computer's real collection and items (35MNM, June-July 2020): the tile goes
    in ``s2:mgrs_tile`` (PC has no ``grid:code``), recognised from the collection's ``msft:*`` fields."""
    from steps.sentinel2.source import find_scenes

    real = Path(__file__).parent / "data" / "real"
    coll_dir = tmp_path / "pc" / "sentinel-2-l2a"
    coll_dir.mkdir(parents=True)
    (coll_dir / "collection.json").write_bytes(
        (real / "stac-collections" / "opendatacube+odc-stac" / "sentinel-2-l2a.collection.json").read_bytes())
    feats = json.loads((real / "stac-items" / "opendatacube+odc-stac" / "site2-2020_jun_jul-35MNM.geojson")
                       .read_text())["features"]
    for f in feats:
        (coll_dir / f["id"]).mkdir()
        (coll_dir / f["id"] / f"{f['id']}.json").write_text(json.dumps(f))
    api = MiniStacApi(tmp_path / "pc", "s3://unused")
    thread = threading.Thread(target=api.server.serve_forever, daemon=True)
    thread.start()
    try:
        scenes = find_scenes(api.url, ["35MNM"], "2020-06-01", "2020-06-30")
    finally:
        api.server.shutdown()
        api.server.server_close()
    assert len(scenes) == 6  # 2020-06-01 … 06-26, every 5 days
    assert {s.tile for s in scenes} == {"35MNM"} and all(s.processing_baseline == "02.12" for s in scenes)
    assert [s["query"] for s in api.searches] == [{"s2:mgrs_tile": {"in": ["35MNM"]}}]
