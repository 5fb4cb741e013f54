"""The bundled default model: end-to-end speed and accuracy on held-out scenes.

Held-out synthetic scenes (seeds 1000-1002, never trained on; 4-band uint16 with a
nodata corner) go through ``geoseg.predict`` in this process, warm, writing the COG;
the mask is scored against the scene's true labels. Each tiling setting runs on the same
scenes; the first row is the default. Targets: ≥ 1 Mpx/s on 2 CPU cores at mIoU ≥ 0.90.

    python -m benchmarks model                         # 3 scenes of 2048² (~1 min)
    python -m benchmarks model --device cuda --size 4096
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks import save

SEEDS = (1000, 1001, 1002)
SETTINGS = {"default (tile 512, the card's overlap 16)": {},
            "tile 512, overlap 32 (default before)": {"overlap": 32},
            "tile 256, overlap 32": {"tile_size": 256, "overlap": 32}}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks model")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    import rasterio

    import geoseg
    from geoseg import synthetic
    from geoseg.devices import select_device
    from geoseg.scores import confusion_matrix, scores

    device = select_device(args.device)
    model = geoseg.load_model("default")
    n = len(model.spec.classes)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pairs = [synthetic.write_sample_data(tmp, size=args.size, seed=s) for s in SEEDS]
        warm, _ = synthetic.write_sample_data(Path(tmp, "warm"), size=512, seed=4)
        geoseg.predict(warm, Path(tmp, "warm.tif"), device=device)
        for name, options in SETTINGS.items():
            seconds, cm = 0.0, 0
            for scene, labels in pairs:
                out = Path(tmp, "mask.tif")
                started = time.perf_counter()
                geoseg.predict(scene, out, device=device, overwrite=True, **options)
                seconds += time.perf_counter() - started
                with rasterio.open(out) as ds, rasterio.open(labels) as ref:
                    cm = cm + confusion_matrix(ds.read(1), ref.read(1), n)
            megapixels = len(pairs) * args.size ** 2 / 1e6
            rows.append({"setting": name, **options, "seconds": round(seconds, 2),
                         "mpx_per_s": round(megapixels / seconds, 3),
                         "miou": round(float(scores(cm)["miou"]), 4)})
    result = {"benchmark": "model", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "device": device, "model": f"{model.spec.architecture}/{model.spec.encoder}",
              "scenes": [f"seed {s}, {args.size}²" for s in SEEDS], "runs": rows,
              "target_mpx_per_s": 1.0, "target_miou": 0.90}
    print(f"default model {result['model']}, {device}, {os.cpu_count()} CPUs, "
          f"{len(SEEDS)} held-out scenes of {args.size}²")
    print(f"{'setting':<40} {'seconds':>8} {'Mpx/s':>7} {'mIoU':>7}")
    for r in rows:
        print(f"{r['setting']:<40} {r['seconds']:>8.2f} {r['mpx_per_s']:>7.2f} {r['miou']:>7.4f}")
    return save(f"model-{device}", result)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
