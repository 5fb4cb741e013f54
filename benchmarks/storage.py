"""Throughput of ``geoseg run`` to and from object storage against local disk.

The same generated scenes (4-band uint16, as ``benchmarks batch`` makes them) go through
the real CLI in a fresh process per configuration, side by side in one run, each with
``--probabilities`` (so each scene uploads a second, larger raster):

1. local scenes → a local folder (the baseline),
2. local scenes → ``s3://BUCKET/out-N`` (outputs staged in the temp folder, then uploaded),
3. bucket scenes (``'s3://BUCKET/scenes/*.tif'``, read through GDAL's /vsis3/) → the bucket,

each on the ``threads`` scheduler and on a 2-worker ``LocalCluster``. Reported: wall
seconds of the process (cluster start included), seconds of the run itself (its
summary.json), scenes/min, Mpx/s, and each configuration's speed relative to the
local-disk baseline of the same scheduler. The outputs are checked byte for byte against
the baseline's: every file for configuration 2, the masks and probabilities for
configuration 3 (geoseg stamps a GeoPackage with its source's modification time, so a
bucket source gives other GeoPackage bytes); never summary.json or the journal.

Limits: the bucket is moto's S3 server in a process on 127.0.0.1, so this measures
geoseg's own overhead of object storage (staging in the temp folder, uploads, HEAD/ETag
checks, the journal's objects, GDAL's range reads of the scenes) and moto's speed, not a
real network's bandwidth or latency: on a real bucket the uploads and reads take longer.

    python -m benchmarks storage                         # 8 scenes of 512² (~1-2 min)
    python -m benchmarks storage --scenes 16 --size 2048 # longer, closer to real scenes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import save

ROOT = Path(__file__).resolve().parents[1]

SCHEDULERS = {
    "threads": ["--scheduler", "threads"],
    "local, 2 workers": ["--scheduler", "local", "--workers", "2"],
}
ROUTES = ["local → local", "local → bucket", "bucket → bucket"]
BUCKET = "geoseg-bench"
# Written by every run with its own times and paths: never compared.
NOT_COMPARED = ("summary.json", "geoseg-journal.jsonl", "geoseg-journal/")
TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")  # last_change


def local_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def bucket_files(client: Any, prefix: str) -> dict[str, bytes]:
    files = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET,
                                                                 Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            files[key[len(prefix) + 1:]] = client.get_object(Bucket=BUCKET,
                                                             Key=key)["Body"].read()
    return files


def compare(ours: dict[str, bytes], baseline: dict[str, bytes], *,
            rasters_only: bool) -> dict[str, Any]:
    """Which of the baseline's outputs ``ours`` has byte for byte (``rasters_only``: the
    masks and probabilities only)."""
    def kept(name: str) -> bool:
        if name.startswith(NOT_COMPARED):
            return False
        return name.endswith((".mask.tif", ".prob.tif")) if rasters_only else True

    wanted = sorted(n for n in baseline if kept(n))
    extra = sorted(n for n in ours if kept(n) and n not in baseline)
    differ = [n for n in wanted if ours.get(n) != baseline[n]]
    others = sorted(n for n in baseline if not kept(n) and not n.startswith(NOT_COMPARED))
    # A GeoPackage's bytes differ in its last_change timestamps (the source's modification
    # time); the rest of them should not.
    stamped = [n for n in others if n.endswith(".gpkg") and ours.get(n) != baseline[n]]
    unstamped = [n for n in stamped
                 if TIMESTAMP.sub(b"", ours.get(n, b"")) != TIMESTAMP.sub(b"", baseline[n])]
    return {"compared": "masks and probabilities" if rasters_only else "all outputs",
            "files": len(wanted), "identical": not differ and not extra,
            "differing": differ, "extra": extra,
            # For information: the outputs left out of the comparison that differ.
            "uncompared_differing": [n for n in others if ours.get(n) != baseline[n]],
            "gpkg_differing_beyond_last_change": unstamped}


def run_geoseg(src: str, out: str, options: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "geoseg.cli", "run", src, "-o", out,
                           "--no-progress", "--probabilities", *options], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise RuntimeError(f"geoseg run {src} -o {out} {' '.join(options)} failed "
                           f"({done.returncode}):\n{done.stderr[-3000:]}")
    return wall


def main(argv: list[str] | None = None) -> dict[str, object]:
    import boto3

    from geoseg.synthetic import write_sample_data

    parser = argparse.ArgumentParser(prog="python -m benchmarks storage")
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args(argv)
    megapixels = args.scenes * args.size ** 2 / 1e6
    rows: list[dict[str, Any]] = []
    sys.path.insert(0, str(ROOT / "tests"))  # the tests' S3 server serves here too
    from s3server import aws_env, s3_server

    with tempfile.TemporaryDirectory() as tmp, s3_server() as endpoint:
        env = aws_env(endpoint)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        data = Path(tmp) / "scenes"
        for seed in range(args.scenes):
            write_sample_data(data, size=args.size, seed=seed, overwrite=True)
        for labels in data.glob("labels_*"):
            labels.unlink()
        scenes = sorted(data.glob("*.tif"))
        for scene in scenes:
            client.upload_file(str(scene), BUCKET, f"scenes/{scene.name}")
        scene_mb = sum(s.stat().st_size for s in scenes) / 1e6
        sources = {"local": str(data / "*.tif"), "bucket": f"s3://{BUCKET}/scenes/*.tif"}
        n = 0
        for scheduler, options in SCHEDULERS.items():
            baseline: dict[str, bytes] = {}
            for route in ROUTES:
                n += 1
                source, target = route.split(" → ")
                out = (str(Path(tmp) / f"out-{n}") if target == "local"
                       else f"s3://{BUCKET}/out-{n}")
                wall = run_geoseg(sources[source], out, options, env)
                if target == "local":
                    files = local_files(Path(out))
                    baseline = files
                    check: dict[str, Any] | None = None
                else:
                    files = bucket_files(client, f"out-{n}")
                    check = compare(files, baseline, rasters_only=source == "bucket")
                summary = json.loads(files["summary.json"])
                failed = [s["name"] for s in summary["scenes"] if s["status"] != "done"]
                if failed:
                    raise RuntimeError(f"{route} ({scheduler}): scenes not done: {failed}")
                run_s = summary["totals"]["seconds"]
                rows.append({"route": route, "scheduler": scheduler,
                             "output": out if target == "bucket" else f"TMP/out-{n}",
                             "wall_s": round(wall, 1), "run_s": round(run_s, 1),
                             "scenes_per_min": round(args.scenes / wall * 60, 1),
                             "mpx_per_s": round(megapixels / wall, 3),
                             "output_mb": round(sum(len(b) for name, b in files.items()
                                                    if not name.startswith(NOT_COMPARED))
                                                / 1e6, 2),
                             "same_as_local": check})
    for r in rows:
        base = next(b for b in rows if b["scheduler"] == r["scheduler"]
                    and b["route"] == ROUTES[0])
        r["speed_vs_local"] = round(base["wall_s"] / r["wall_s"], 2)
    result = {"benchmark": "storage", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "scenes": args.scenes, "size": args.size, "megapixels": megapixels,
              "scenes_mb": round(scene_mb, 2), "bucket": "moto server on 127.0.0.1",
              "runs": rows}
    print(f"{args.scenes} scenes of {args.size}² ({megapixels:.1f} Mpx, {scene_mb:.1f} MB), "
          f"{os.cpu_count()} CPUs, --probabilities; bucket: moto's S3 server on 127.0.0.1")
    print(f"{'route':<16} {'scheduler':<17} {'wall s':>7} {'run s':>6} {'scenes/min':>11} "
          f"{'Mpx/s':>7} {'vs local':>9}  same bytes as local")
    for r in rows:
        check = r["same_as_local"]
        same = ("(baseline)" if check is None else
                f"{'yes' if check['identical'] else 'NO'}, {check['files']} files "
                f"({check['compared']})")
        print(f"{r['route']:<16} {r['scheduler']:<17} {r['wall_s']:>7.1f} {r['run_s']:>6.1f} "
              f"{r['scenes_per_min']:>11.1f} {r['mpx_per_s']:>7.3f} "
              f"{r['speed_vs_local']:>9.2f}  {same}")
    for r in rows:
        check = r["same_as_local"]
        if check and not check["identical"]:
            print(f"{r['route']} ({r['scheduler']}) differs from local disk: "
                  f"{check['differing'] + check['extra']}")
        if check and check["uncompared_differing"]:
            beyond = check["gpkg_differing_beyond_last_change"]
            print(f"{r['route']} ({r['scheduler']}), not compared and different: "
                  f"{', '.join(check['uncompared_differing'])} (GeoPackages that differ in "
                  f"more than their last_change: {', '.join(beyond) or 'none'})")
    return save("storage", result)


if __name__ == "__main__":
    main(sys.argv[1:])
