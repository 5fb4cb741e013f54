"""Peak memory of ``geoseg predict`` against raster size (bounded by tiles, not by pixels).

Each size runs in a fresh process (the real CLI) on a generated 4-band uint16 scene; the
peak resident set size of that process is read from ``getrusage``. The claim checked:
peak RSS for the largest scene stays within 1.5 × that of the smallest.

    python -m benchmarks memory                              # 2048² and 8192² (~2 min)
    python -m benchmarks memory --sizes 2048 8192 16384      # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    parser = argparse.ArgumentParser(prog="python -m benchmarks memory")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
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
    for r in rows:
        r["rss_vs_smallest"] = round(r["peak_rss_mib"] / rows[0]["peak_rss_mib"], 3)
    ratio = rows[-1]["rss_vs_smallest"]
    result = {"benchmark": "memory", "date": time.strftime("%Y-%m-%d"),
              "cpus": os.cpu_count(), "scheduler": args.scheduler, "runs": rows,
              "rss_ratio_largest_to_smallest": round(ratio, 3), "target_ratio": 1.5}
    print(f"{'size':>8} {'Mpx':>8} {'seconds':>8} {'Mpx/s':>7} {'peak RSS MiB':>13} "
          f"{'RSS / smallest':>15}")
    for r in rows:
        print(f"{r['size']:>8} {r['megapixels']:>8.1f} {r['seconds']:>8.1f} "
              f"{r['mpx_per_s']:>7.2f} {r['peak_rss_mib']:>13} {r['rss_vs_smallest']:>15.2f}")
    print(f"peak RSS ratio {rows[-1]['size']}² / {rows[0]['size']}²: {ratio:.2f} "
          f"(target ≤ 1.5)")
    return save("memory", result)


if __name__ == "__main__":
    main(sys.argv[1:])
