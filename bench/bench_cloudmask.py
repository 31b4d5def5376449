"""Benchmark: s2cloudless ``get_cloud_masks`` vs ``cloud_mask_fast`` on a full 60 m tile (1830 x 1830).

Run: ``.venv/bin/python bench/bench_cloudmask.py [--size 1830] [--runs 3]``. Prints a markdown table:
median wall time of each path, peak RSS (each path measured in its own subprocess), agreement of the
masks on valid pixels, and share of valid pixels evaluated by the full model.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _scene_module():
    spec = importlib.util.spec_from_file_location("_cm_scene", ROOT / "tests" / "test_science_cloudmask.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def make_scene(size: int, seed: int, cache: Path, kind: str = "own") -> tuple[np.ndarray, np.ndarray]:
    """Build (or load from the .npz cache, so both subprocesses read the same array) the 60 m scene.

    ``own``: the test module's generator - clear land, cumulus fields and decks gathered in weather
    systems, cirrus, shadows, a swath edge. ``synth``: ``synthesizer.render_scene`` (tile 47PPR, 10/20 m
    bands block-averaged to 60 m, no-data from its swath edge); ``size`` is then in 60 m pixels.
    """
    if cache.exists():
        d = np.load(cache)
        return d["toa"], d["valid"]
    mod = _scene_module()
    if kind == "synth":
        toa, valid, _ = mod._synth_scene_60m(size * 6, seed=seed, cloud_cover=0.3)
    else:
        toa, valid = mod.make_toa_scene(
            (size, size), seed=seed, cloud_cover=0.3, cloud_sigma=6.0, cirrus_cover=0.15, cloud_regions=size / 6
        )
    np.savez(cache, toa=toa, valid=valid)
    return toa, valid


def _peak_rss_mb() -> float:
    """Peak RSS of this process (VmHWM: unlike ru_maxrss it does not carry the parent's peak over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(which: str, cache: Path, runs: int, out: Path) -> None:
    """Child process: time one path ``runs`` times, save its last mask and stats."""
    toa, valid = make_scene(0, 0, cache)
    from steps.science import cloudmask as cm

    params = cm.params_for_resolution(60)
    times: list[float] = []
    cpu: list[float] = []
    extra: dict = {}
    if which == "s2cloudless":
        from s2cloudless import S2PixelCloudDetector

        det = S2PixelCloudDetector(
            threshold=params.threshold, average_over=params.average_over, dilation_size=params.dilation_size
        )
        _ = det.classifier  # both paths load the model file before the timing starts
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            prob = det.get_cloud_probability_maps(toa[None])[0]
            # same array, same post-processing; no-data enters the average as 0 (module convention)
            mask = det.get_mask_from_prob(np.where(valid, prob, 0.0).astype(np.float32)[None])[0]
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        mask = mask.astype(bool) & valid
        extra["evaluated"] = 1.0
        # also: what plain get_cloud_masks (no-data fed as zeros) would flag in valid pixels
        raw = det.get_mask_from_prob(prob[None])[0].astype(bool)
        extra["plain_extra_cloud_px"] = int((raw & valid & ~mask).sum())
    else:
        model = cm.load_s2cloudless_model()
        model.booster()  # load the model file outside the timing (as for S2PixelCloudDetector above)
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.process_time()
            res = cm.cloud_mask_fast(model, toa, valid, params)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        mask = res.mask
        extra["evaluated"] = res.evaluated_fraction
        extra["timings"] = {k: round(v, 3) for k, v in res.timings.items()}
    np.save(out.with_suffix(".npy"), mask)
    out.write_text(json.dumps({"times": times, "cpu": cpu, "rss_mb": _peak_rss_mb(), **extra}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=1830)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "raw2ready_bench_cloudmask")
    ap.add_argument("--scene", choices=["own", "synth"], default="own")
    ap.add_argument("--child", choices=["s2cloudless", "fast"])
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cache = args.workdir / f"scene_{args.scene}_{args.size}_{args.seed}.npz"
    if args.child:
        run_one(args.child, cache, args.runs, args.workdir / f"{args.child}.json")
        return
    t0 = time.perf_counter()
    _toa, valid = make_scene(args.size, args.seed, cache, args.scene)
    print(f"scene {args.size}x{args.size} built in {time.perf_counter() - t0:.1f} s, valid {valid.mean():.1%}")
    # Interleave the two paths run by run (one subprocess each) so that load from other processes on
    # the machine hits both alike; wall and CPU (all threads) time are both reported.
    stats: dict[str, dict] = {k: {"times": [], "cpu": [], "rss_mb": 0.0} for k in ("s2cloudless", "fast")}
    for _ in range(args.runs):
        for which in ("s2cloudless", "fast"):
            cmd = [sys.executable, __file__, "--child", which, "--size", str(args.size), "--runs", "1"]
            cmd += ["--seed", str(args.seed), "--scene", args.scene, "--workdir", str(args.workdir)]
            subprocess.run(cmd, check=True)
            one = json.loads((args.workdir / f"{which}.json").read_text())
            st = stats[which]
            st["times"] += one["times"]
            st["cpu"] += one["cpu"]
            st["rss_mb"] = max(st["rss_mb"], one["rss_mb"])
            st.update({k: v for k, v in one.items() if k not in ("times", "cpu", "rss_mb")})
            st["mask"] = np.load(args.workdir / f"{which}.npy")
    ref, fast = stats["s2cloudless"]["mask"], stats["fast"]["mask"]
    agree = float((ref == fast)[valid].mean())
    med = {k: statistics.median(v["times"]) for k, v in stats.items()}
    med_cpu = {k: statistics.median(v["cpu"]) for k, v in stats.items()}
    print()
    print(
        f"60 m tile {args.size}x{args.size} ({args.scene} scene), valid {valid.mean():.1%}, "
        f"s2cloudless cloud {ref[valid].mean():.1%}"
    )
    print()
    print(
        "| path | median wall s (runs) | median CPU s | peak RSS MB | agreement (valid px) | evaluated "
        "| speed-up wall / CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    for k, label in (("s2cloudless", "S2PixelCloudDetector"), ("fast", "cloud_mask_fast")):
        s = stats[k]
        print(
            f"| {label} | {med[k]:.2f} ({len(s['times'])}) | {med_cpu[k]:.1f} | {s['rss_mb']:.0f} | "
            f"{100 if k == 's2cloudless' else 100 * agree:.3f} % | {100 * s['evaluated']:.1f} % | "
            f"{med['s2cloudless'] / med[k]:.1f}x / {med_cpu['s2cloudless'] / med_cpu[k]:.1f}x |"
        )
    print()
    print("fast-path phases (last run, s):", stats["fast"]["timings"])
    print(
        "plain get_cloud_masks on zero-filled no-data would add",
        stats["s2cloudless"]["plain_extra_cloud_px"],
        "cloud px in valid pixels",
    )


if __name__ == "__main__":
    main()
