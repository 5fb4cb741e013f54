"""Training on sparse labels: one small class digitised in one corner of a scene.

A synthetic scene whose ``built_up`` class is labelled only in its top-left corner, as
polygons (the user's few dozen buildings), with everything else unlabelled or, as
``geoseg train`` reads polygons without a class field, background. Each run trains the
same network for the same steps with the same seed and is scored on the *held-out* part
of the scene (everything outside the corner, against the scene's exact labels): the
foreground IoU, precision and recall of ``built_up``.

- ``uniform, unweighted (before)``: chips drawn around any labelled pixel
  (``--background-ratio 1``), over the whole scene as random chips were before, so the
  class is rarely in a batch, and an unweighted loss (``--class-weights none``).
- ``around labels``: the defaults (``--background-ratio 0.25``, ``--class-weights auto``).
- ``around labels + labelled area``: and ``--labelled-area`` the corner, so the rest of
  the scene is unlabelled rather than background.
- ``labelled area, unweighted``: as the last, with ``--class-weights none``.

    python -m benchmarks sparse                  # 2048² scene, ~10 min on 2 cores
    python -m benchmarks sparse --runs 'around labels'   # one of them
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import save

CLASS = 4  # built_up in geoseg.synthetic.CLASSES


def scene(folder: Path, size: int, corner: int, seed: int) -> dict[str, Any]:
    """The scene, its exact labels, the corner's built-up polygons and the corner."""
    import geopandas as gpd
    import rasterio
    import shapely

    import geoseg

    image, truth_path = geoseg.write_sample_data(folder, size=size, seed=seed,
                                                 nodata_corner=False)
    with rasterio.open(truth_path) as ds:
        truth, transform, crs = ds.read(1), ds.transform, ds.crs
    corner_mask = np.zeros_like(truth, bool)
    corner_mask[:corner, :corner] = True
    binary = np.where(corner_mask & (truth == CLASS), 1, 0).astype(np.uint8)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 1, "dtype": "uint8",
               "crs": crs, "transform": transform}
    with rasterio.open(folder / "corner.tif", "w", **profile) as ds:
        ds.write(binary, 1)
    polygons = geoseg.vectorize(folder / "corner.tif", min_area=0)
    polygons = polygons[polygons["class_id"] == 1][["geometry"]]
    polygons.to_file(folder / "buildings.gpkg")
    x0, y0 = transform * (0, 0)
    x1, y1 = transform * (corner, corner)
    gpd.GeoDataFrame(geometry=[shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))],
                     crs=crs).to_file(folder / "area.gpkg")
    return {"image": image, "truth": truth, "corner": corner_mask,
            "labelled_share": float(binary.sum() / binary.size), "polygons": len(polygons)}


def score(predicted: np.ndarray, truth: np.ndarray, held_out: np.ndarray) -> dict[str, float]:
    """Foreground (built-up) IoU, precision and recall where ``held_out``."""
    p, t = (predicted == 1) & held_out, (truth == CLASS) & held_out
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    return {"iou": round(tp / max(tp + fp + fn, 1), 4),
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / max(tp + fn, 1), 4)}


def _shown(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main(argv: list[str] | None = None) -> dict[str, object]:
    import geoseg

    parser = argparse.ArgumentParser(prog="python -m benchmarks sparse")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--corner", type=int, default=752)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--chip-size", type=int, default=128)
    parser.add_argument("--runs", nargs="+", default=None, help="only these runs (by name)")
    args = parser.parse_args(argv)
    runs = {"uniform, unweighted (before)": {"background_ratio": 1.0, "class_weights": "none"},
            "around labels": {},
            "around labels + labelled area": {"labelled_area": "area.gpkg"},
            "labelled area, unweighted": {"labelled_area": "area.gpkg", "class_weights": "none"}}
    runs = {k: v for k, v in runs.items() if args.runs is None or k in args.runs}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = scene(folder, args.size, args.corner, args.seed)
        held_out = ~data["corner"]
        for name, extra in runs.items():
            if "labelled_area" in extra:
                extra = {**extra, "labelled_area": folder / extra["labelled_area"]}
            started = time.perf_counter()
            model = geoseg.train([data["image"]], [folder / "buildings.gpkg"],
                                 folder / name.replace(" ", "_"), chip_size=args.chip_size,
                                 epochs=args.epochs, steps_per_epoch=args.steps,
                                 batch_size=args.batch_size, patience=args.epochs,
                                 seed=args.seed, **extra)
            seconds = time.perf_counter() - started
            predicted = geoseg.predict(data["image"], model=model).values
            row = {"run": name, **score(predicted, data["truth"], held_out),
                   "train_seconds": round(seconds, 1),
                   "val_miou": model.spec.metrics.get("val_miou")}
            rows.append(row)
            print(f"{name:32} IoU {row['iou']:.3f}  precision {_shown(row['precision'])}  "
                  f"recall {row['recall']:.3f}  ({seconds:.0f} s)", flush=True)
    result = {"benchmark": "sparse", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "scene": f"{args.size}²", "corner": f"{args.corner}²",
              "labelled_share": round(data["labelled_share"], 5),
              "polygons": data["polygons"], "epochs": args.epochs, "steps": args.steps,
              "batch_size": args.batch_size, "chip_size": args.chip_size, "runs": rows,
              "goal_iou": 0.5}
    print(f"built-up labelled on {100 * data['labelled_share']:.3f} % of the pixels "
          f"({data['polygons']} polygons in the {args.corner}² corner); held-out IoU:")
    print(f"{'run':32} {'IoU':>6} {'precision':>9} {'recall':>7} {'train s':>8}")
    for r in rows:
        print(f"{r['run']:32} {r['iou']:>6.3f} {_shown(r['precision']):>9} {r['recall']:>7.3f} "
              f"{r['train_seconds']:>8.1f}")
    return save("sparse", result)


if __name__ == "__main__":
    main(sys.argv[1:])
