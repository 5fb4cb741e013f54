"""Weak supervision measured: a 4-band U-Net taught by Dynamic World, then run alone.

For each real Sentinel-2 L1C product folder (band files at 10 and 20 m; by default the two
of ``tests/data/sentinel2-l1c``) the right ``--holdout`` share of its columns is kept
apart. On the rest:

* **teacher**: Dynamic World reads all nine bands of the training part
  (``--teacher-image``), and its pixels of top probability ≥ ``--min-confidence`` are the
  labels;
* **student**: ``geoseg train B02+B03+B04+B08 --labels-from dynamic-world`` trains a U-Net
  (geoseg's default encoder, from random weights, defaults otherwise) on the four 10 m
  bands alone, one image per product, in a fresh process (time and peak RSS).

Then the student runs alone on each whole product's four bands (``geoseg predict``, fresh
process), and the teacher on its nine. On the held-out columns (more than 16 px from the
product's edge) the student is scored against the teacher's confident pixels there:
agreement (the share of them the student gives the teacher's class) and mIoU over the
classes the teacher labels there; and the agreement on all held-out pixels.

    python -m benchmarks student --products DIR DIR        # 600² products: ~15 min
    python -m benchmarks student --min-confidence 0.4 0.5  # one student per threshold
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import save
from benchmarks.scaling import peak_rss_of

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "sentinel2-l1c"
EDGE = 16
STUDENT_BANDS = ("B02", "B03", "B04", "B08")


def band_files(product: Path) -> dict[str, Path]:
    """The product folder's band files by band id (``T33UUB_…_B02_10m.tif`` → B02)."""
    return {p.name.split("_")[2]: p for p in sorted(product.glob("*_B*_*m.tif"))}


def training_part(product: Path, folder: Path, columns: int) -> Path:
    """The product's band files cut to their first ``columns`` 10 m columns (a 20 m band
    to half as many), in a product folder of the same name under ``folder``."""
    import rasterio
    from rasterio.windows import Window

    out = folder / product.name
    out.mkdir(parents=True)
    for path in band_files(product).values():
        with rasterio.open(path) as src:
            keep = columns * 10 // round(src.res[0])
            window = Window(0, 0, keep, src.height)
            profile = {**src.profile, "width": keep,
                       "transform": src.window_transform(window)}
            with rasterio.open(out / path.name, "w", **profile) as dst:
                dst.write(src.read(window=window))
    return out


def four(product: Path) -> str:
    files = band_files(product)
    return "+".join(str(files[b]) for b in STUDENT_BANDS)


def score(student: np.ndarray, teacher: np.ndarray, top: np.ndarray, inside: np.ndarray,
          threshold: float, names: list[str]) -> dict[str, object]:
    from geoseg.scores import confusion_matrix, scores

    sure = inside & (top >= threshold)
    cm = confusion_matrix(student[sure], teacher[sure], len(names))
    result = scores(cm, names)
    present = [n for n, v in result["per_class"].items() if v["pixels"]]
    ious = [result["per_class"][n]["iou"] for n in present]
    return {"confident_pixels": int(sure.sum()),
            "confident_share": round(float(sure.sum() / inside.sum()), 4),
            "agreement_confident": round(float((student == teacher)[sure].mean()), 4),
            "miou_confident": round(float(np.mean([i or 0.0 for i in ious])), 4),
            "iou": {n: round(float(result["per_class"][n]["iou"] or 0.0), 4) for n in present},
            "agreement_all": round(float((student == teacher)[inside].mean()), 4)}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks student")
    parser.add_argument("--products", type=Path, nargs="+",
                        default=sorted(p for p in DATA.glob("S2*") if p.is_dir()))
    parser.add_argument("--holdout", type=float, default=1 / 3,
                        help="share of each product's columns kept apart, on its right")
    parser.add_argument("--min-confidence", type=float, nargs="+", default=[0.5])
    parser.add_argument("--train-options", default="",
                        help="further geoseg train options, e.g. '--epochs 5'")
    args = parser.parse_args(argv)
    import rasterio

    geoseg = [sys.executable, "-m", "geoseg.cli"]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        products = []
        for product in args.products:
            with rasterio.open(band_files(product)["B02"]) as ds:
                width = ds.width
            columns = int(width * (1 - args.holdout)) // 2 * 2  # whole 20 m pixels
            part = training_part(product, Path(tmp, "train"), columns)
            teacher = Path(tmp, f"{product.name}.teacher.tif")
            subprocess_run([*geoseg, "predict", str(product), "--model", "dynamic-world",
                            "-o", str(teacher), "--probabilities",
                            str(teacher.with_suffix(".prob.tif")), "--no-progress"])
            with rasterio.open(teacher) as ds:
                classes = ds.read(1)
                names = json.loads(ds.tags()["CLASS_NAMES"])
            with rasterio.open(teacher.with_suffix(".prob.tif")) as ds:
                top = ds.read().max(axis=0) / 254
            inside = np.zeros(classes.shape, bool)
            inside[EDGE:-EDGE, columns:-EDGE] = True
            products.append((product, part, classes, top, inside, names))
        for threshold in args.min_confidence:
            out = Path(tmp, f"student-{threshold}")
            cmd = [*geoseg, "train", *(four(part) for _, part, *_ in products),
                   *(a for _, part, *_ in products for a in ("--teacher-image", str(part))),
                   "--labels-from", "dynamic-world", "--min-confidence", str(threshold),
                   "-o", str(out), "--no-progress", *args.train_options.split()]
            seconds, mib = peak_rss_of(cmd)
            card = json.loads((out / "model.json").read_text())
            run: dict[str, object] = {
                "min_confidence": threshold, "train_seconds": round(seconds, 1),
                "train_peak_rss_mib": round(mib), "epochs": card["metrics"]["best_epoch"],
                "val_miou_on_teacher_labels": round(card["metrics"]["val_miou"], 4),
                "labelled_share": [s["labelled_share"] for s in
                                   card["metrics"]["training"]["teacher"]["scenes"]],
                "products": []}
            for product, _, classes, top, inside, names in products:
                mask = Path(tmp, f"{product.name}.student.tif")
                predict_seconds, _ = peak_rss_of([*geoseg, "predict", four(product), "--model",
                                                  str(out), "-o", str(mask), "--overwrite",
                                                  "--no-progress"])
                with rasterio.open(mask) as ds:
                    student = ds.read(1)
                row = {"product": product.name.split("_")[5],
                       "size": f"{classes.shape[1]} x {classes.shape[0]}",
                       "held_out_columns": f"{inside.any(axis=0).argmax()}..",
                       "student_predict_seconds": round(predict_seconds, 1),
                       **score(student, classes, top, inside, threshold, names)}
                run["products"].append(row)  # type: ignore[attr-defined]
                print(row, flush=True)
            runs.append(run)
    result = {"benchmark": "student", "date": time.strftime("%Y-%m-%d"),
              "cpus": os.cpu_count(), "teacher": "dynamic-world",
              "student": f"U-Net, geoseg train defaults, bands {' '.join(STUDENT_BANDS)}",
              "holdout": round(args.holdout, 3), "train_options": args.train_options,
              "runs": runs}
    print(f"Student (4 bands) taught by Dynamic World, {os.cpu_count()} CPUs; held-out "
          f"right {args.holdout:.0%} of each product")
    print(f"{'P':>5} {'product':<8} {'labelled':>9} {'agree':>7} {'mIoU':>6} {'all':>6} "
          f"{'train s':>8}")
    for run in runs:
        for row in run["products"]:  # type: ignore[attr-defined]
            print(f"{run['min_confidence']:>5} {row['product']:<8} "
                  f"{row['confident_share']:>9} {row['agreement_confident']:>7} "
                  f"{row['miou_confident']:>6} {row['agreement_all']:>6} "
                  f"{run['train_seconds']:>8}")
    return save("student", result)


def subprocess_run(cmd: list[str]) -> None:
    import subprocess

    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main(sys.argv[1:])
