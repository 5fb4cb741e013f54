"""Dynamic World through geoseg against the original, run as its notebook runs it.

Each side runs in a fresh process of its own, from a 10 m 9-band GeoTIFF of digital
numbers on disk to a class mask on disk, with the machine's cores, and reports its time
and peak resident memory:

* **geoseg**: ``geoseg predict SCENE --model dynamic-world`` (ONNX Runtime on CPUs, 512 px
  tiles, memory bounded by the tiles);
* **original**: google/dynamicworld's forward SavedModel in TensorFlow, as
  ``single_image_runner.ipynb`` runs it: the whole image read into memory, normalized in
  numpy, one call of the model on all of it, a softmax, the mask written with rasterio.
  TensorFlow is not a geoseg dependency: the original runs in the conversion's environment
  (``--tensorflow``, by default ``.venv-convert/bin/python``, made by ``make
  dynamic-world``); without one, only geoseg runs.

The scenes: each real L1C product folder given (by default the two of
``tests/data/sentinel2-l1c``) as geoseg reads it onto the 10 m grid, and the first of them
mirrored to N × N px for each size N in ``--sizes`` (10980: one Sentinel-2 granule). The
original runs up to ``--original-max`` px a side (its memory grows with the image).
The masks' agreement is reported on the pixels more than 16 px from the edge (the
original pads the image with zeros, geoseg mirrors it) and on that edge strip; for the real
products also the probabilities' mean absolute difference, from a second, untimed run of
each side that writes them.

    python -m benchmarks dynamic_world                    # real crops, 2048², 10980²
    python -m benchmarks dynamic_world --products DIR ... --sizes 0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import save
from benchmarks.csmask import mirrored
from benchmarks.scaling import peak_rss_of

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "sentinel2-l1c"
EDGE = 16
ORIGINAL_SCRIPT = f"""
import sys
sys.path.insert(0, {str(ROOT / "workflows")!r})
import numpy as np, rasterio
from convert_dynamic_world import original
src, dst, saved, probs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with rasterio.open(src) as ds:
    image, profile = ds.read().transpose(1, 2, 0), ds.profile
prob = original(image, saved)
profile.update(count=1, dtype="uint8", nodata=None)
with rasterio.open(dst, "w", **profile) as ds:
    ds.write(prob.argmax(-1).astype(np.uint8), 1)
if probs:
    np.save(probs[0], prob.transpose(2, 0, 1).astype(np.float32))
"""


def stack_of(product: Path) -> tuple[np.ndarray, object, object]:
    """A product folder's nine bands on its 10 m grid, as geoseg reads them."""
    from geoseg.model import read_spec, resolve_model_path
    from geoseg.sources import open_source

    source = open_source(product, want=read_spec(resolve_model_path("dynamic-world")).bands)
    with source.open() as ds:
        dn = ds.read(list(source.bands))
    return dn, source.grid.crs, source.grid.transform


def write(path: Path, data: np.ndarray, crs: object, transform: object) -> None:
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs=crs, transform=transform,
                       tiled=True, compress="deflate", BIGTIFF="IF_SAFER") as ds:
        ds.write(data)
        ds.descriptions = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")


def probability_differences(runs: dict[str, list[str]], scene: Path, inner: np.ndarray,
                            tmp: str) -> dict[str, float]:
    """Each side run again writing its probabilities: their mean absolute difference."""
    import rasterio

    ours, theirs = Path(tmp, "g.prob.tif"), Path(tmp, "o.prob.npy")
    subprocess.run([*runs["geoseg"], "--probabilities", str(ours)], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*runs["original"], str(theirs)], check=True, stdout=subprocess.DEVNULL)
    with rasterio.open(ours) as ds:
        geoseg_probs = ds.read().astype(np.float32) * ds.scales[0]
    diff = np.abs(geoseg_probs - np.load(theirs)).mean(axis=0)
    return {"probability_mad_interior": round(float(diff[inner].mean()), 4),
            "probability_mad_edge_strip": round(float(diff[~inner].mean()), 4)}


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks dynamic_world")
    parser.add_argument("--products", type=Path, nargs="+",
                        default=sorted(p for p in DATA.glob("S2*") if p.is_dir()))
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 2048, 10980],
                        help="0: the products as they are; N: the first mirrored to N x N")
    parser.add_argument("--tensorflow", default=str(ROOT / ".venv-convert" / "bin" / "python"),
                        help="a Python with TensorFlow, for the original")
    parser.add_argument("--checkout", type=Path, default=None,
                        help="a clone of google/dynamicworld [default: fetched by make "
                             "dynamic-world's DW, ../dynamicworld]")
    parser.add_argument("--original-max", type=int, default=2048,
                        help="largest side the original runs at (its memory grows with it)")
    args = parser.parse_args(argv)
    import rasterio

    checkout = args.checkout or ROOT.parent / "dynamicworld"
    saved = checkout / "model" / "forward"
    original = Path(args.tensorflow).exists() and saved.is_dir()
    geoseg = [sys.executable, "-m", "geoseg.cli"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scenes: list[tuple[str, Path]] = []
        first = None
        for product in args.products:
            dn, crs, transform = stack_of(product)
            first = first or (dn, crs, transform)
            if 0 in args.sizes:
                path = Path(tmp, f"{product.name}.tif")
                write(path, dn, crs, transform)
                scenes.append((product.name.split("_")[5], path))
        assert first is not None
        for size in (s for s in args.sizes if s):
            path = Path(tmp, f"mirrored_{size}.tif")
            write(path, mirrored(first[0], size), first[1], first[2])
            scenes.append((f"mirrored {size}²", path))
        for name, path in scenes:
            with rasterio.open(path) as ds:
                height, width = ds.shape
            row: dict[str, object] = {"scene": name, "size": f"{width} x {height}",
                                      "megapixels": round(width * height / 1e6, 2)}
            out = {"geoseg": Path(tmp, "g.tif"), "original": Path(tmp, "o.tif")}
            runs = {"geoseg": [*geoseg, "predict", str(path), "-o", str(out["geoseg"]),
                               "--model", "dynamic-world", "--overwrite", "--no-progress"]}
            if original and max(width, height) <= args.original_max:
                runs["original"] = [args.tensorflow, "-c", ORIGINAL_SCRIPT, str(path),
                                    str(out["original"]), str(saved)]
            masks = {}
            for side, cmd in runs.items():
                seconds, mib = peak_rss_of(cmd)
                row[f"{side}_seconds"], row[f"{side}_peak_rss_mib"] = round(seconds, 1), round(mib)
                with rasterio.open(out[side]) as ds:
                    masks[side] = ds.read(1)
            if len(masks) == 2:
                inner = np.zeros(masks["geoseg"].shape, bool)
                inner[EDGE:-EDGE, EDGE:-EDGE] = True
                same = masks["geoseg"] == masks["original"]
                row["agreement_interior"] = round(float(same[inner].mean()), 5)
                row["agreement_edge_strip"] = round(float(same[~inner].mean()), 4)
                if not name.startswith("mirrored"):
                    row.update(probability_differences(runs, path, inner, tmp))
                row["speed_ratio"] = round(float(row["original_seconds"])
                                           / float(row["geoseg_seconds"]), 2)
            rows.append(row)
            print(row, flush=True)
    result = {"benchmark": "dynamic_world", "date": time.strftime("%Y-%m-%d"),
              "cpus": os.cpu_count(), "model": "dynamic-world (google/dynamicworld forward)",
              "original": "TensorFlow SavedModel, whole image, as single_image_runner.ipynb"
              if original else "not run (no TensorFlow environment or checkout)",
              "runs": rows}
    print(f"Dynamic World, {os.cpu_count()} CPUs")
    print(f"{'scene':<18} {'geoseg s':>9} {'MiB':>6} {'original s':>11} {'MiB':>7} {'agree':>8}")
    for r in rows:
        print(f"{r['scene']:<18} {r['geoseg_seconds']:>9} {r['geoseg_peak_rss_mib']:>6} "
              f"{r.get('original_seconds', '-'):>11} {r.get('original_peak_rss_mib', '-'):>7} "
              f"{r.get('agreement_interior', '-'):>8}")
    return save("dynamic_world", result)


if __name__ == "__main__":
    main(sys.argv[1:])
