"""Throughput of ``geoseg run`` over many scenes: threads scheduler vs a LocalCluster.

The same generated scenes (4-band uint16) go through the real CLI in a fresh process per
configuration, side by side in one run: the default threads scheduler (scenes one after
another, tiles in parallel) and a 2-worker ``LocalCluster`` (whole scenes in parallel, one
per worker). Reported: scenes/min and Mpx/s from the process's wall time (cluster start
included) and from the run's own time, and each configuration's speed relative to threads.

    python -m benchmarks batch                          # 8 scenes of 1024² (~1 min)
    python -m benchmarks batch --scenes 16 --size 2048  # longer, closer to real scenes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import save

CONFIGS = {
    "threads": ["--scheduler", "threads"],
    "local, 2 workers": ["--scheduler", "local", "--workers", "2"],
}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks batch")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    geoseg = [sys.executable, "-m", "geoseg.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "scenes"
        for seed in range(args.scenes):
            subprocess.run([*geoseg, "sample-data", str(data), "--size", str(args.size),
                            "--seed", str(seed), "--overwrite"], check=True,
                           stdout=subprocess.DEVNULL)
        for labels in data.glob("labels_*"):
            labels.unlink()
        megapixels = args.scenes * args.size ** 2 / 1e6
        for name, options in CONFIGS.items():
            out = Path(tmp) / name.replace(" ", "").replace(",", "-")
            started = time.perf_counter()
            subprocess.run([*geoseg, "run", str(data / "*.tif"), "-o", str(out), "--no-progress",
                            *options], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            wall = time.perf_counter() - started
            run_seconds = json.loads((out / "summary.json").read_text())["totals"]["seconds"]
            rows.append({"config": name, "wall_s": round(wall, 1), "run_s": round(run_seconds, 1),
                         "scenes_per_min": round(args.scenes / wall * 60, 1),
                         "mpx_per_s": round(megapixels / wall, 3),
                         "mpx_per_s_run": round(megapixels / run_seconds, 3)})
    for r in rows:
        r["speed_vs_threads"] = round(rows[0]["wall_s"] / r["wall_s"], 2)
    result = {"benchmark": "batch", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "scenes": args.scenes, "size": args.size, "megapixels": megapixels, "runs": rows}
    print(f"{args.scenes} scenes of {args.size}² ({megapixels:.1f} Mpx), {os.cpu_count()} CPUs")
    print(f"{'scheduler':<18} {'wall s':>7} {'scenes/min':>11} {'Mpx/s':>7} "
          f"{'Mpx/s (run only)':>17} {'vs threads':>11}")
    for r in rows:
        print(f"{r['config']:<18} {r['wall_s']:>7.1f} {r['scenes_per_min']:>11.1f} "
              f"{r['mpx_per_s']:>7.3f} {r['mpx_per_s_run']:>17.3f} {r['speed_vs_threads']:>11.2f}")
    return save("batch", result)


if __name__ == "__main__":
    main(sys.argv[1:])
