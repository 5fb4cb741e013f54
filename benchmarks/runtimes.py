"""ONNX Runtime against torch on the CPU, for the bundled default model, end to end.

The same network runs three ways through ``geoseg.predict`` (in this process, warm,
writing the COG) on held-out synthetic scenes (seeds 1000-1002, as ``benchmarks model``):
torch (channels-last, oneDNN), ONNX Runtime on the float32 graph exported from it, and
ONNX Runtime on the int8 graph the model ships for CPUs (``geoseg models quantize``).
Rounds alternate and each side keeps its best, so a noisy machine hurts all alike.
Reports Mpx/s, held-out mIoU, and the share of pixels where each mask agrees with
torch's.

    python -m benchmarks runtimes                      # 3 scenes of 2048² (~2 min, 2 cores)
    python -m benchmarks runtimes --size 8192 --rounds 1
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import save
from benchmarks.model import SEEDS


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks runtimes")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    import rasterio

    import geoseg
    from geoseg import synthetic
    from geoseg.model import Model
    from geoseg.model_export import onnx_graph
    from geoseg.scores import confusion_matrix, scores

    base = geoseg.load_model("default")
    network = base.network if base.network is not None else geoseg.load_model(
        "default", runtime="torch").network
    float_spec = dataclasses.replace(base.spec, quantization={})
    float_graph = onnx_graph(Model(network, float_spec))  # exported from torch
    models = {"torch": Model(network, dataclasses.replace(float_spec, runtime="torch")),
              "onnxruntime": Model(network, float_spec, onnx=float_graph)}
    if base.spec.quantization and base.onnx is not None:
        models["onnxruntime int8"] = Model(network, base.spec, onnx=base.onnx)
    n = len(base.spec.classes)
    best: dict[str, float] = {}
    cms: dict[str, np.ndarray] = {}
    masks: dict[str, list[np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = [synthetic.write_sample_data(tmp, size=args.size, seed=s) for s in SEEDS]
        warm, _ = synthetic.write_sample_data(Path(tmp, "warm"), size=512, seed=4)
        for model in models.values():
            geoseg.predict(warm, Path(tmp, "warm.tif"), model, device="cpu", overwrite=True)
        for _ in range(args.rounds):
            for runtime, model in models.items():
                seconds, cm, found = 0.0, 0, []
                for scene, labels in pairs:
                    out = Path(tmp, "mask.tif")
                    started = time.perf_counter()
                    geoseg.predict(scene, out, model, device="cpu", overwrite=True)
                    seconds += time.perf_counter() - started
                    with rasterio.open(out) as ds, rasterio.open(labels) as ref:
                        mask = ds.read(1)
                        cm = cm + confusion_matrix(mask, ref.read(1), n)
                        found.append(mask)
                best[runtime] = min(best.get(runtime, float("inf")), seconds)
                cms[runtime], masks[runtime] = cm, found
    megapixels = len(SEEDS) * args.size ** 2 / 1e6
    def agree(runtime: str) -> float:
        return float(np.mean([np.mean(a == b) for a, b in zip(masks["torch"], masks[runtime],
                                                               strict=True)]))

    rows = [{"runtime": r, "seconds": round(best[r], 2),
             "mpx_per_s": round(megapixels / best[r], 3),
             "miou": round(float(scores(cms[r])["miou"]), 4),
             "agrees_with_torch": round(agree(r), 6)} for r in models]
    result = {"benchmark": "runtimes", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "model": f"{base.spec.architecture}/{base.spec.encoder}",
              "scenes": [f"seed {s}, {args.size}²" for s in SEEDS], "rounds": args.rounds,
              "runs": rows, "masks_agree": round(agree("onnxruntime"), 6),
              "speedup": round(best["torch"] / best["onnxruntime"], 3),
              "speedup_int8": (round(best["torch"] / best["onnxruntime int8"], 3)
                               if "onnxruntime int8" in best else None)}
    print(f"default model {result['model']}, CPU, {os.cpu_count()} CPUs, "
          f"{len(SEEDS)} held-out scenes of {args.size}², best of {args.rounds}")
    print(f"{'runtime':<18} {'seconds':>8} {'Mpx/s':>7} {'mIoU':>7} {'same as torch':>14}")
    for r in rows:
        print(f"{r['runtime']:<18} {r['seconds']:>8.2f} {r['mpx_per_s']:>7.2f} {r['miou']:>7.4f} "
              f"{r['agrees_with_torch']:>14.4%}")
    print(f"ONNX Runtime / torch speed: {result['speedup']}x (float), "
          f"{result['speedup_int8']}x (int8)")
    return save("runtimes", result)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
