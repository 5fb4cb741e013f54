"""Scaling of ``geoseg predict`` with raster size: peak memory and time.

Each size runs in a fresh process (the real CLI, process start and model load included)
on a generated 4-band uint16 scene; the peak resident set size of that process is read
from ``getrusage``. Claims checked: peak RSS of the largest scene ≤ 1.3 × that of the
smallest (memory is bounded by tiles, not pixels), and time linear in pixels: a straight
line ``seconds = start-up + Mpx / rate`` fits every size (the largest deviation from it
is printed) and the marginal rate between sizes stays the same.

    python -m benchmarks scaling                          # 2048², 8192², 16384² (~7 min)
    python -m benchmarks scaling --sizes 2048 8192        # ~1.5 min
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import save


def peak_rss_of(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` to completion; return (seconds, peak RSS in MiB) of that child alone."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True,
                         text=True)
    seconds, mib = out.stdout.split()
    return float(seconds), float(mib)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scaling")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--scheduler", default="threads")
    args = parser.parse_args(argv)
    geoseg = [sys.executable, "-m", "geoseg.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            subprocess.run([*geoseg, "sample-data", tmp, "--size", str(size), "--seed", "1",
                            "--overwrite"],
                           check=True, stdout=subprocess.DEVNULL)
            scene = Path(tmp) / "scene_1.tif"
            seconds, mib = peak_rss_of([*geoseg, "predict", str(scene), "-o",
                                        str(Path(tmp) / f"mask_{size}.tif"), "--no-progress",
                                        "--scheduler", args.scheduler])
            rows.append({"size": size, "megapixels": size * size / 1e6,
                         "seconds": round(seconds, 1), "peak_rss_mib": round(mib),
                         "mpx_per_s": round(size * size / 1e6 / seconds, 2)})
            scene.unlink()
    for prev, r in zip([None, *rows], rows, strict=False):
        r["rss_vs_smallest"] = round(r["peak_rss_mib"] / rows[0]["peak_rss_mib"], 3)
        if prev is not None:  # the rate of the extra pixels: start-up cancels out
            r["marginal_mpx_per_s"] = round((r["megapixels"] - prev["megapixels"])
                                            / (r["seconds"] - prev["seconds"]), 2)
    ratio = rows[-1]["rss_vs_smallest"]
    slope, start = np.polyfit([r["megapixels"] for r in rows], [r["seconds"] for r in rows], 1)
    worst = max(abs(r["seconds"] - (start + slope * r["megapixels"])) / r["seconds"]
                for r in rows)
    result = {"benchmark": "scaling", "date": time.strftime("%Y-%m-%d"),
              "cpus": os.cpu_count(), "scheduler": args.scheduler, "runs": rows,
              "rss_ratio_largest_to_smallest": round(ratio, 3), "target_ratio": 1.3,
              "linear_fit": {"start_up_s": round(start, 2), "mpx_per_s": round(1 / slope, 3),
                             "largest_deviation": round(worst, 3)}}
    print(f"{'size':>8} {'Mpx':>8} {'seconds':>8} {'Mpx/s':>7} {'marginal Mpx/s':>15} "
          f"{'peak RSS MiB':>13} {'RSS / smallest':>15}")
    for r in rows:
        marginal = f"{r['marginal_mpx_per_s']:.2f}" if "marginal_mpx_per_s" in r else "-"
        print(f"{r['size']:>8} {r['megapixels']:>8.1f} {r['seconds']:>8.1f} "
              f"{r['mpx_per_s']:>7.2f} {marginal:>15} {r['peak_rss_mib']:>13} "
              f"{r['rss_vs_smallest']:>15.2f}")
    print(f"peak RSS ratio {rows[-1]['size']}² / {rows[0]['size']}²: {ratio:.2f} "
          f"(target ≤ 1.3)")
    print(f"time = {start:.1f} s + Mpx / {1 / slope:.2f}; largest deviation from that line "
          f"{100 * worst:.1f} %")
    return save("scaling", result)


if __name__ == "__main__":
    main(sys.argv[1:])
