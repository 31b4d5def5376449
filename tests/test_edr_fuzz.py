"""Schemathesis against the live EDR endpoints: no input may produce a 5xx (bounded examples, loopback)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import yaml
from edr_helpers import Server, edr_openapi_subset, index_items, serving
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error


@pytest.fixture(scope="module")
def fuzz_server(processed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(processed, tmp_path_factory.mktemp("edr-fuzz"), "--pixel-budget", "200000") as srv:
        yield srv


@pytest.fixture(scope="module")
def edr_schema(fuzz_server: Server, processed: Path) -> Any:
    doc = yaml.safe_load((fuzz_server.config_dir / "pygeoapi-openapi.yml").read_text())
    it = index_items(processed)[0]
    w, s, e, n = it["bbox"]
    lon, lat = (w + e) / 2, (s + n) / 2
    examples = {
        "coords": [f"POINT({lon} {lat})", f"POLYGON(({w} {s},{e} {s},{e} {n},{w} {n},{w} {s}))",
                   f"POINT({lon} {lat} 3)", "POINT(181 0)", "MULTIPOINT((1 2),(3 4))"],
        "datetime": ["../..", it["datetime"][:10], f"{it['datetime'][:10]}/..", "../2030-01-01", "2024-02-30"],
        "parameter-name": ["ndvi", "lai", "cloud_mask", "lai_flags", "ndvi,cloud_mask"],
        "within": ["25", "0", "1e9", "nan"], "within-units": ["m", "km", "mi", "furlong"],
        "z": ["1"], "crs": ["http://www.opengis.net/def/crs/OGC/1.3/CRS84"],
        "bbox": [f"{w},{s},{e},{n}", f"{lon},{lat},{lon + 1e-4},{lat + 1e-4}", "0,0,1,1", "-180,-90,180,90"],
    }
    return [schemathesis.openapi.from_dict(edr_openapi_subset(doc, fuzz_server.base, ex)) for ex in (examples, None)]


def test_edr_endpoints_never_answer_5xx(edr_schema: Any, fuzz_server: Server) -> None:
    # Each operation is driven by its own hypothesis strategy inside this test (schemathesis'
    # ``pytest.from_fixture`` plugin path does not work with pytest 9).
    ops = [r.ok() for sch in edr_schema for r in sch.get_all_operations()]
    from covjson_pydantic.coverage import Coverage, CoverageCollection
    from edr_pydantic.collections import Collection, Collections

    statuses: list[int] = []
    validated: list[str] = []
    # {examples, any string} × ({ndvi, lai} × {document, position, radius, area, cube} + /collections)
    assert len(ops) == 22
    for op in ops:

        @given(case=op.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case: Any) -> None:
            resp = case.call_and_validate(base_url=fuzz_server.base, checks=[not_a_server_error], timeout=60)
            statuses.append(resp.status_code)
            ctype = " ".join(resp.headers.get("content-type", []))  # lowercase names, list values
            if resp.status_code == 200 and "json" in ctype and "ld+json" not in ctype:  # not HTML or JSON-LD
                body = json.loads(resp.content)
                if body.get("type") in ("Coverage", "CoverageCollection"):
                    model = Coverage if body["type"] == "Coverage" else CoverageCollection
                    model.model_validate_json(resp.content)
                    validated.append(body["type"])
                elif "data_queries" in body:
                    Collection.model_validate_json(resp.content)
                    validated.append("Collection")
                elif "collections" in body:
                    Collections.model_validate_json(resp.content)
                    validated.append("Collections")

        check()
    # the fuzzer really exercised the server, with both answers and refusals
    assert len(statuses) >= len(ops) * 5
    assert 200 in statuses and 400 in statuses
    # every CoverageJSON answer validated with covjson-pydantic, every collection document with edr-pydantic
    assert {"Coverage", "CoverageCollection", "Collection", "Collections"} <= set(validated)
