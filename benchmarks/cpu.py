"""The CPU goals: ``geoseg predict`` end to end at 8192², start-up included, and start-up.

Every run is the real command in a fresh process, as a user waits for it: Python's
imports, loading the model, ONNX Runtime's session, reading, the network, blending,
writing the COG with overviews. The scene is a held-out synthetic one (seed 1000, 4-band
uint16, nodata corner; never trained or calibrated on), and each mask is scored against
its true labels. The rows are the shipped default and one lever changed at a time:

* **default**: the bundled model as shipped (int8 CPU graph, the card's 16 px overlap),
  the CLI's defaults;
* **float graph**: the same network's float32 ONNX graph (what quantization gains);
* **overlap 32** (the default before), **tile 1024**: the tiling trade-off, int8.

Rounds alternate the rows; each keeps its best round. Start-up is ``geoseg --help`` and
``geoseg predict`` of a 64² scene (median of 5 runs each). Goals (issue 19): ≥ 3 Mpx/s
at 8192² on 2 cores with mIoU ≥ 0.98; start-up ≤ 2 s.

    python -m benchmarks cpu                       # ~6 min on 2 cores
    python -m benchmarks cpu --size 4096 --rounds 1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import save

GOAL_MPX_S = 3.0
GOAL_MIOU = 0.98
GOAL_STARTUP_S = 2.0


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks cpu")
    parser.add_argument("--size", type=int, default=8192, help="scene side in pixels")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1000, help="a held-out scene's seed")
    parser.add_argument("--startup-runs", type=int, default=5, help="runs per start-up median")
    parser.add_argument("--record", action="store_true", help="write the default row's speed "
                        "into the bundled model's card (metrics.speed_cpu)")
    args = parser.parse_args(argv)
    import geoseg
    from geoseg import synthetic

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scene, labels = synthetic.write_sample_data(folder / "scene", size=args.size,
                                                    seed=args.seed)
        small, _ = synthetic.write_sample_data(folder / "small", size=64, seed=3)
        float_model = _float_model(geoseg.load_model("default"), folder / "float")
        rows: dict[str, list[str]] = {
            "default (int8, overlap 16)": ["--model", "default"],
            "float graph": ["--model", str(float_model)],
            "int8, overlap 32": ["--model", "default", "--overlap", "32"],
            "int8, tile 1024": ["--model", "default", "--tile-size", "1024"],
        }
        best: dict[str, float] = {}
        masks = {name: folder / f"mask-{k}.tif" for k, name in enumerate(rows)}
        for _ in range(args.rounds):
            for name, extra in rows.items():
                seconds = _timed("predict", str(scene), "-o", str(masks[name]), "--overwrite",
                                 "--no-progress", "--device", "cpu", *extra)
                best[name] = min(best.get(name, seconds), seconds)
        megapixels = args.size ** 2 / 1e6
        n_classes = len(geoseg.load_model("default").spec.classes)
        runs = [{"setting": name, "seconds": round(best[name], 2),
                 "mpx_per_s": round(megapixels / best[name], 3),
                 "miou": round(_miou(masks[name], labels, n_classes), 4)} for name in rows]
        startup = {"geoseg --help": _median(args.startup_runs, "--help"),
                   "geoseg predict 64²": _median(args.startup_runs, "predict", str(small), "-o",
                                                 str(folder / "small.tif"), "--overwrite",
                                                 "--no-progress", "--model", "default")}
    default = runs[0]
    result = {"benchmark": "cpu", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "scene": f"seed {args.seed}, {args.size}²", "megapixels": round(megapixels, 2),
              "runs": runs, "startup_s": {k: round(v, 2) for k, v in startup.items()},
              "goal_mpx_per_s": GOAL_MPX_S, "goal_miou": GOAL_MIOU,
              "goal_startup_s": GOAL_STARTUP_S,
              "default_meets_goal": default["mpx_per_s"] >= GOAL_MPX_S
              and default["miou"] >= GOAL_MIOU,
              "startup_meets_goal": max(startup.values()) <= GOAL_STARTUP_S}
    print(f"geoseg predict, fresh process, {args.size}² held-out scene, {os.cpu_count()} CPUs")
    print(f"{'setting':<28} {'seconds':>8} {'Mpx/s':>7} {'mIoU':>7}")
    for r in runs:
        print(f"{r['setting']:<28} {r['seconds']:>8.2f} {r['mpx_per_s']:>7.2f} {r['miou']:>7.4f}")
    print(f"goal: ≥ {GOAL_MPX_S} Mpx/s at mIoU ≥ {GOAL_MIOU}: default "
          f"{default['mpx_per_s']:.2f} Mpx/s, mIoU {default['miou']:.4f} "
          f"({'met' if result['default_meets_goal'] else 'NOT met'})")
    for name, seconds in startup.items():
        print(f"start-up, {name:<20} {seconds:>6.2f} s (goal ≤ {GOAL_STARTUP_S} s: "
              f"{'met' if seconds <= GOAL_STARTUP_S else 'NOT met'})")
    if args.record:
        _record(default, result)
    return save("cpu", result)


def _record(row: dict[str, Any], result: dict[str, Any]) -> None:
    """The speed the bundled model was measured at, in its card: a card says how fast its
    model runs, and where."""
    import dataclasses
    import json
    import platform

    from geoseg.model import read_spec, resolve_model_path

    card = resolve_model_path("default")  # its model.json
    spec = read_spec(card)
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines()
             if line.startswith("model name")]
    flags = info
    speed = {"mpx_per_s": row["mpx_per_s"], "miou": row["miou"], "scene": result["scene"],
             "cpus": result["cpus"], "cpu": names[0] if names else platform.machine(),
             "vnni": "avx512_vnni" in flags or "avx_vnni" in flags, "date": result["date"],
             "measured_by": "python -m benchmarks cpu (geoseg predict, start-up included)"}
    spec = dataclasses.replace(spec, metrics={**spec.metrics, "speed_cpu": speed})
    card.write_text(json.dumps(spec.to_dict(), indent=2) + "\n")
    print(f"recorded in {card}: {speed['mpx_per_s']} Mpx/s")


def _float_model(model: Any, folder: Path) -> Path:
    """The default network with a float32 ONNX graph exported from it, saved in ``folder``."""
    from geoseg.model import Model
    from geoseg.model_export import onnx_graph

    spec = dataclasses.replace(model.spec, quantization={})
    graph = onnx_graph(Model(model.network, spec))  # from torch, not the int8 graph
    return Model(model.network, spec, onnx=graph).save(folder)


def _timed(*args: str) -> float:
    """Seconds for ``geoseg ARGS`` in a fresh process (which must succeed)."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "geoseg.cli", *args], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _median(n: int, *args: str) -> float:
    _timed(*args)  # the page cache warm, as for any command after the first
    return statistics.median(_timed(*args) for _ in range(n))


def _miou(mask: Path, labels: Path, n_classes: int) -> float:
    import rasterio

    from geoseg.scores import confusion_matrix, scores

    with rasterio.open(mask) as m, rasterio.open(labels) as ref:
        return float(scores(confusion_matrix(m.read(1), ref.read(1), n_classes))["miou"])


if __name__ == "__main__":
    main(sys.argv[1:])
