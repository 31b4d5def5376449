"""Scene lists for the synthetic archive: the demo archive and regular revisits over a date range."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from steps.sentinel2.grid import parse_tile
from synthesizer.render import SceneSpec, _rng

_BASELINES = (  # (first operational date, baseline)
    (date(2015, 6, 23), "02.01"),
    (date(2021, 3, 30), "03.00"),
    (date(2021, 6, 30), "03.01"),
    (date(2022, 1, 25), "04.00"),
    (date(2022, 12, 6), "05.09"),
    (date(2023, 12, 13), "05.10"),
    (date(2024, 7, 23), "05.11"),
)


def baseline_for_date(d: date) -> str:
    """The operational processing baseline on a date (synthetic bookkeeping only; readers use metadata)."""
    out = _BASELINES[0][1]
    for start, b in _BASELINES:
        if d >= start:
            out = b
    return out


def _overpass(tile: str, d: date) -> datetime:
    """Synthetic overpass time: ≈ 03:47 UTC over Thailand, shifted by the tile's longitude offset."""
    t = parse_tile(tile)
    secs = (t.zone - 47) * -1440 + 3 * 3600 + 47 * 60 + (ord(t.square[1]) % 7) * 4
    return datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(seconds=secs, milliseconds=24)


def demo_specs() -> list[SceneSpec]:
    """A small, varied archive: 47PPR (Bangkok) and its east neighbour 47PQR, dates spanning the 04.00 switch.

    Contains pre-04.00 scenes (no offsets), post-04.00 scenes, one duplicate (same tile and datetime,
    sequence 1, reprocessed at baseline 05.00, so it needs offsets although it is from 2021), one fully
    clouded scene, one scene with a swath edge, one L2A without L1C, platforms S2A/S2B mixed.
    """
    rows = [  # date, platform, baseline, cloud, cirrus, swath edge
        (date(2021, 12, 4), "sentinel-2a", "03.01", 0.10, 0.05, False),
        (date(2021, 12, 9), "sentinel-2b", "03.01", 0.35, 0.10, True),
        (date(2022, 1, 23), "sentinel-2b", "03.01", 1.00, 0.00, False),
        (date(2022, 2, 2), "sentinel-2a", "04.00", 0.05, 0.02, False),
        (date(2023, 1, 18), "sentinel-2b", "05.09", 0.25, 0.15, False),
        (date(2024, 1, 13), "sentinel-2a", "05.10", 0.15, 0.05, True),
    ]
    specs: list[SceneSpec] = []
    for tile in ("47PPR", "47PQR"):
        for d, plat, base, cc, ci, edge in rows:
            specs.append(SceneSpec(tile=tile, datetime=_overpass(tile, d), platform=plat,
                                   processing_baseline=base, cloud_cover=cc, cirrus=ci, swath_edge=edge,
                                   has_l1c=not (tile == "47PQR" and d.year == 2023)))
    first = specs[0]
    specs.append(replace(first, sequence=1, processing_baseline="05.00"))  # Collection-1 reprocessing
    return specs


def specs_for_range(tiles: list[str], start: date, end: date, revisit_days: int = 5,
                    seed: int = 0) -> list[SceneSpec]:
    """Scenes every ``revisit_days`` from ``start`` to ``end`` (inclusive) for each tile.

    Platforms alternate (S2A/S2B; S2C replaces S2A from 2025-01-21); the baseline is the operational one
    of the date; cloud cover and cirrus are drawn from ``seed`` with a tropical season (wetter May–Oct).
    """
    if revisit_days < 1:
        raise ValueError("revisit_days must be ≥ 1")
    specs: list[SceneSpec] = []
    n_steps = (end - start).days // revisit_days + 1
    for tile in sorted({parse_tile(t).id for t in tiles}):
        for k in range(max(0, n_steps)):
            d = start + timedelta(days=k * revisit_days)
            rng = _rng("spec", seed, tile, d.isoformat())
            first = "sentinel-2c" if d >= date(2025, 1, 21) else "sentinel-2a"
            plat = first if k % 2 == 0 else "sentinel-2b"
            wet = 5 <= d.month <= 10
            cc = float(rng.beta(2.0, 2.0) if wet else rng.beta(0.7, 4.0))
            if rng.random() < (0.12 if wet else 0.03):
                cc = 1.0
            specs.append(SceneSpec(tile=tile, datetime=_overpass(tile, d), platform=plat,
                                   processing_baseline=baseline_for_date(d), cloud_cover=round(cc, 3),
                                   cirrus=round(float(rng.uniform(0.0, 0.2)), 3)))
    return specs
