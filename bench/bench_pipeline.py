"""End-to-end benchmark: the real per-scene pipeline vs the naive baseline on full-size synthetic tiles.

Run: ``.venv/bin/python bench/bench_pipeline.py [--size 10980] [--runs 3] [--workdir $TMPDIR/raw2ready-bench]
[--archive DIR] [--mask auto|scl|s2cloudless]``.

* The synthetic archive (one tile 47PPR scene, L2A + L1C COGs, 25 % cloud, 8 % cirrus, a swath edge) is
  generated once and cached under ``<workdir>/archive-<size>`` (``--archive`` reuses an existing one).
* Every measured pipeline runs in a fresh subprocess; its CPU time comes from ``os.wait4`` on that very
  child, its peak RSS from the child's own ``VmHWM`` (``ru_maxrss`` would include the parent's size at
  fork). The two pipelines alternate (ours, naive, naive, ours, …) so that load from other processes on a
  shared machine hits both alike; the load average is printed.
* ``scene wall`` is ``run_scene`` from the first step to the published item (interpreter start-up and
  imports excluded; they are listed separately as ``process wall``); ``core-s`` is the child's user + system
  CPU time; ``scenes/h/core`` = 3600 / (scene wall × cores used), cores used = 2.
* After the runs the products of both pipelines are decoded and compared (pixels differing, max
  difference in stored units).

Prints a markdown table (medians over the runs) and writes it, with the raw runs, to
``<workdir>/bench_pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

STEPS = ("ingest", "mask", "ndvi", "lai", "cog", "stac")
PRODUCTS = ("ndvi", "lai", "lai_flags", "cloud_mask")
CORES = 2


def ensure_archive(workdir: Path, size: int, archive: Path | None) -> Path:
    """``catalog.json`` of the cached synthetic archive (generated on first use)."""
    if archive is not None:
        cat = archive / "catalog.json"
        if not cat.is_file():
            raise SystemExit(f"--archive {archive}: no catalog.json")
        return cat
    root = workdir / f"archive-{size}"
    cat = root / "catalog.json"
    if cat.is_file():
        return cat
    from synthesizer import SceneSpec, synthesize_archive

    spec = SceneSpec(tile="47PPR", datetime=datetime(2024, 1, 13, 3, 47, 20, tzinfo=UTC), platform="sentinel-2a",
                     processing_baseline="05.10", cloud_cover=0.25, cirrus=0.08, swath_edge=True)
    t0 = time.monotonic()
    print(f"synthesizing a {size}x{size} scene into {root} (once) …", flush=True)
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    synthesize_archive(tmp, [spec], size=size, seed=1)
    tmp.rename(root)
    print(f"  done in {time.monotonic() - t0:.0f} s", flush=True)
    return cat


# ----------------------------------------------------------------------------------------------- child
def child(which: str, source: str, out: Path, mask: str) -> None:
    """Run one pipeline for the archive's scene; print one JSON line."""
    t_start = time.monotonic()
    from steps.sentinel2.source import find_scenes

    scene = find_scenes(source, ["47PPR"], "2015-01-01", "2030-12-31")[0]
    t_ready = time.monotonic()
    if which == "ours":
        from steps.pipeline.runner import run_scene
        from steps.settings import get_settings

        r = run_scene(scene, str(out), get_settings())
        if r.status != "done":
            raise SystemExit(f"pipeline {r.status}: {r.error}")
        res: dict[str, Any] = {"timings": r.timings, "scene_wall": r.seconds,
                               "mask_method": r.outputs.get("mask", {}).get("method", "?")}
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from naive_pipeline import run_naive

        t0 = time.monotonic()
        res = run_naive(scene.l2a_href, scene.l1c_href, scene.scene_id, out, mask)
        res["scene_wall"] = time.monotonic() - t0
    res["startup"] = t_ready - t_start
    res["vm_hwm_mb"] = _vm_hwm_mb()
    print("RESULT " + json.dumps(res), flush=True)


def _vm_hwm_mb() -> float:
    """Peak RSS of this process since its exec (``VmHWM``), in MiB.

    ``ru_maxrss`` from ``wait4`` is not used for the table: Linux carries the parent's resident size at fork
    over ``exec``, so a child of a parent that just synthesized a full tile reported the parent's ~4 GiB.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def run_child(which: str, source: str, out: Path, mask: str) -> dict[str, Any]:
    """One measured pipeline in a fresh subprocess; its own peak RSS and CPU time from ``os.wait4``."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", which, "--source", source,
           "--out", str(out), "--mask", mask]
    logs = out.with_suffix(".log")
    t0 = time.monotonic()
    with logs.open("w") as err, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True) as proc:
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        _, status, ru = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    line = next((ln for ln in stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None or proc.returncode != 0:
        raise RuntimeError(f"{which} failed (exit {proc.returncode}):\n{stdout[-2000:]}\n"
                           f"{logs.read_text()[-4000:]}")
    res = json.loads(line[len("RESULT "):])
    res.update(process_wall=wall, cpu_s=ru.ru_utime + ru.ru_stime, peak_rss_mb=res.pop("vm_hwm_mb"),
               ru_maxrss_mb=ru.ru_maxrss / 1024.0)
    return res


# ---------------------------------------------------------------------------------------------- compare
def compare_products(ours_out: Path, naive_out: Path) -> dict[str, dict[str, Any]]:
    """Stored-value differences between the two pipelines' products (pixels differing, max |diff|)."""
    import numpy as np
    import rasterio

    res = {}
    for key in PRODUCTS:
        a = next(ours_out.glob(f"raw2ready-s2-vegetation/*/*/*/*/{key}.tif"))
        b = next(naive_out.glob(f"naive/*/{key}.tif"))
        with rasterio.open(a) as x, rasterio.open(b) as y:
            u, v = x.read(1).astype(np.int64), y.read(1).astype(np.int64)
        d = u != v
        res[key] = {"pixels": int(u.size), "differing": int(d.sum()),
                    "max_abs_diff": int(np.abs(u - v)[d].max()) if d.any() else 0,
                    "size_mb_ours": a.stat().st_size / 1e6, "size_mb_naive": b.stat().st_size / 1e6}
    return res


def _med(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _med_step(runs: list[dict[str, Any]], step: str) -> float:
    return statistics.median(r["timings"].get(step, 0.0) for r in runs)


def table(ours: list[dict[str, Any]], naive: list[dict[str, Any]], size: int) -> str:
    """Markdown table of medians, ours vs naive."""
    rows = [f"| metric (median of {len(ours)} runs, {size}² px tile) | naive | raw2ready | speed-up |",
            "|---|---:|---:|---:|"]
    for step in STEPS:
        n, o = _med_step(naive, step), _med_step(ours, step)
        rows.append(f"| step `{step}` (s) | {n:.2f} | {o:.2f} | {n / o if o else float('nan'):.1f}× |")
    for key, label in (("scene_wall", "**scene wall (s)**"), ("process_wall", "process wall incl. start-up (s)"),
                       ("cpu_s", "CPU time, user+sys (core-s)")):
        n, o = _med(naive, key), _med(ours, key)
        rows.append(f"| {label} | {n:.1f} | {o:.1f} | {n / o:.1f}× |")
    n, o = _med(naive, "peak_rss_mb"), _med(ours, "peak_rss_mb")
    rows.append(f"| peak RSS (MiB) | {n:.0f} | {o:.0f} | |")
    n, o = 3600 / (_med(naive, "scene_wall") * CORES), 3600 / (_med(ours, "scene_wall") * CORES)
    rows.append(f"| scenes/hour/core (wall × {CORES} cores) | {n:.0f} | {o:.0f} | |")
    n, o = 3600 / _med(naive, "cpu_s"), 3600 / _med(ours, "cpu_s")
    rows.append(f"| scenes/hour/core (CPU-bound) | {n:.0f} | {o:.0f} | |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=10980, help="tile side in 10 m pixels (multiple of 6)")
    ap.add_argument("--runs", type=int, default=3, help="measured runs of each pipeline")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "raw2ready-bench")
    ap.add_argument("--archive", type=Path, default=None, help="reuse an existing synthetic archive folder")
    ap.add_argument("--mask", default="auto", choices=("auto", "scl", "s2cloudless"),
                    help="naive cloud-mask method; auto = the method the real mask step reports")
    ap.add_argument("--skip-naive", action="store_true", help="measure only the real pipeline")
    ap.add_argument("--child", choices=("ours", "naive"), help=argparse.SUPPRESS)
    ap.add_argument("--source", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.source, args.out, args.mask)
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    source = str(ensure_archive(args.workdir, args.size, args.archive))
    load0 = os.getloadavg()
    print(f"# bench_pipeline: {args.runs} runs, source {source}, load average {load0[0]:.2f} {load0[1]:.2f} "
          f"{load0[2]:.2f}", flush=True)
    ours: list[dict[str, Any]] = []
    naive: list[dict[str, Any]] = []
    mask = args.mask
    out_o, out_n = args.workdir / "out-ours", args.workdir / "out-naive"
    for i in range(args.runs):
        order = ("ours", "naive") if i % 2 == 0 else ("naive", "ours")
        for which in order:
            if which == "naive" and args.skip_naive:
                continue
            if which == "naive" and mask == "auto":
                probe = ours[0]["mask_method"] if ours else "scl"
                mask = "s2cloudless" if "s2cloudless" in probe else "scl"
            res = run_child(which, source, out_o if which == "ours" else out_n,
                                   mask if mask != "auto" else "scl")
            (ours if which == "ours" else naive).append(res)
            steps_s = " ".join(f"{k}={v:.2f}" for k, v in res["timings"].items())
            print(f"run {i + 1} {which:5s}: scene {res['scene_wall']:.2f} s, cpu {res['cpu_s']:.1f} s, "
                  f"rss {res['peak_rss_mb']:.0f} MiB, load {os.getloadavg()[0]:.2f} | {steps_s}", flush=True)
    load1 = os.getloadavg()
    report: dict[str, Any] = {"size": args.size, "runs": args.runs, "load_start": load0, "load_end": load1,
                              "ours": ours, "naive": naive, "naive_mask": mask,
                              "ours_mask": ours[0]["mask_method"] if ours else "?"}
    if naive:
        report["products"] = compare_products(out_o, out_n)
        print()
        print(table(ours, naive, args.size))
        print()
        print(f"cloud mask: raw2ready `{report['ours_mask']}`, naive `{mask}`; load average start "
              f"{load0[0]:.2f}, end {load1[0]:.2f} (on {os.cpu_count()} cores)")
        print()
        print("| product | pixels | differing (stored units) | max abs diff | COG MB raw2ready | COG MB naive |")
        print("|---|---:|---:|---:|---:|---:|")
        for key, c in report["products"].items():
            print(f"| {key} | {c['pixels']} | {c['differing']} | {c['max_abs_diff']} | {c['size_mb_ours']:.1f} | "
                  f"{c['size_mb_naive']:.1f} |")
    else:
        print(f"raw2ready median scene wall {_med(ours, 'scene_wall'):.2f} s, cpu {_med(ours, 'cpu_s'):.1f} s, "
              f"peak RSS {_med(ours, 'peak_rss_mb'):.0f} MiB")
    (args.workdir / "bench_pipeline.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
