"""Training from pretrained encoder weights against training from scratch, on a small
labelled set, in the same number of steps.

The weights: the encoder of a model geoseg trains first on another scene's RGB bands
(3-band weights, so the first layer is adapted to 4 bands as with ImageNet's), saved as
the model hub saves timm encoders. (ImageNet weights themselves need a download this
benchmark does not make; ``--encoder-weights imagenet`` fetches them the same way.) The
small set: one 384² corner of a new scene labelled; both runs are scored on the whole
scene (mIoU of its six classes).

    python -m benchmarks pretrained              # ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import save


def main(argv: list[str] | None = None) -> dict[str, object]:
    import rasterio
    from safetensors.torch import save_file

    import geoseg
    from geoseg.maskfile import NODATA

    parser = argparse.ArgumentParser(prog="python -m benchmarks pretrained")
    parser.add_argument("--size", type=int, default=1536)
    parser.add_argument("--corner", type=int, default=384)
    parser.add_argument("--pretrain-steps", type=int, default=240)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--chip-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3, help="of the two runs compared")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source, source_labels = geoseg.write_sample_data(folder / "a", size=args.size, seed=21)
        started = time.perf_counter()
        donor = geoseg.train([source], [source_labels], folder / "donor", bands=[1, 2, 3],
                             chip_size=args.chip_size, epochs=4,
                             steps_per_epoch=args.pretrain_steps // 4, batch_size=8, patience=4)
        pretrain_s = time.perf_counter() - started
        weights = folder / "encoder.safetensors"
        encoder = donor.network.encoder.model.state_dict()  # type: ignore[union-attr]
        save_file({k: v.contiguous() for k, v in encoder.items()}, str(weights))

        image, truth_path = geoseg.write_sample_data(folder / "b", size=args.size, seed=22)
        with rasterio.open(truth_path) as ds:
            truth, profile = ds.read(1), ds.profile
        small = np.full_like(truth, NODATA)
        small[:args.corner, :args.corner] = truth[:args.corner, :args.corner]
        with rasterio.open(folder / "small.tif", "w", **profile) as ds:
            ds.write(small, 1)
            ds.update_tags(CLASS_NAMES=rasterio.open(truth_path).tags()["CLASS_NAMES"])
        rows = []
        for name, extra in (("from scratch", {}), ("from pretrained encoder",
                                                   {"encoder_weights": weights})):
            model = geoseg.train([image], [folder / "small.tif"], folder / name.replace(" ", "_"),
                                 chip_size=args.chip_size, epochs=2,
                                 steps_per_epoch=args.steps // 2, batch_size=8, patience=2,
                                 seed=1, lr=args.lr, **extra)  # type: ignore[arg-type]
            mask = folder / f"{name.replace(' ', '_')}.tif"
            geoseg.predict(image, mask, model=model)
            scores = geoseg.evaluate(mask, truth_path).metrics
            rows.append({"run": name, "miou": round(scores["miou"], 4),
                         "overall_accuracy": round(scores["overall_accuracy"], 4)})
            print(f"{name:26} mIoU {scores['miou']:.3f}  accuracy "
                  f"{scores['overall_accuracy']:.3f}", flush=True)
    result = {"benchmark": "pretrained", "date": time.strftime("%Y-%m-%d"),
              "cpus": os.cpu_count(), "scene": f"{args.size}²",
              "labelled": f"{args.corner}² corner", "steps": args.steps,
              "pretrain_steps": args.pretrain_steps, "pretrain_seconds": round(pretrain_s, 1),
              "chip_size": args.chip_size, "lr": args.lr, "runs": rows,
              "gain_miou": round(rows[1]["miou"] - rows[0]["miou"], 4)}
    print(f"{'run':26} {'mIoU':>6} {'accuracy':>9}   (whole scene; {args.corner}² labelled, "
          f"{args.steps} steps)")
    for r in rows:
        print(f"{r['run']:26} {r['miou']:>6.3f} {r['overall_accuracy']:>9.3f}")
    return save("pretrained", result)


if __name__ == "__main__":
    main(sys.argv[1:])
