"""A many-scene batch run on a Dask LocalCluster, resumable, from Python.

    python workflows/batch_local_cluster.py                    # 12 generated scenes
    python workflows/batch_local_cluster.py 'archive/*.tif' --out maps --workers 4
    python workflows/batch_local_cluster.py --scheduler tcp://10.0.0.5:8786 'nfs/*.tif'

Without scene arguments it first writes 12 sample scenes into ``batch-data/``. Each scene
runs whole on one worker (predict, then vectorize); the journal in the output folder lets
a rerun skip what finished, so the script can simply be started again after a crash or a
reboot. ``--scheduler`` connects to an existing cluster instead (see
``workflows/CLUSTER.md``); its workers must see the same paths.

The same run from the shell: ``geoseg run 'batch-data/*.tif' -o batch-output --scheduler
local --workers 2 --resume``, or ``geoseg run --config workflows/batch.yaml``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import geoseg
from geoseg.batch import format_summary
from geoseg.errors import GeoSegError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenes", nargs="*", help="scenes, quoted globs or text lists")
    parser.add_argument("--out", type=Path, default=Path("batch-output"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads-per-worker", type=int, default=1)
    parser.add_argument("--scheduler", default="local", help="local, or tcp://HOST:PORT")
    parser.add_argument("--sample-scenes", type=int, default=12)
    parser.add_argument("--sample-size", type=int, default=1024)
    parser.add_argument("--min-area", type=float, default=100.0)
    parser.add_argument("--overwrite", action="store_true",
                        help="start again (e.g. with other options) instead of resuming")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("geoseg").setLevel(logging.INFO)  # e.g. the Dask dashboard's address

    scenes = args.scenes
    if not scenes:
        data = Path("batch-data")
        for seed in range(args.sample_scenes):
            if not (data / f"scene_{seed}.tif").exists():
                geoseg.write_sample_data(data, size=args.sample_size, seed=seed)
        scenes = [str(data / "scene_*.tif")]

    try:
        summary = geoseg.run(scenes, args.out, probabilities=True, min_area=args.min_area,
                             scheduler=args.scheduler, workers=args.workers,
                             threads_per_worker=args.threads_per_worker, resume=True,
                             overwrite=args.overwrite, report=print)
    except GeoSegError as exc:  # e.g. other options than the run being resumed
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    print(f"outputs: {args.out}/ (summary: {args.out / 'summary.json'})")
    failed = summary["totals"]["failed"]
    if failed:
        print(json.dumps([s for s in summary["scenes"] if s["status"] == "failed"], indent=2),
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
