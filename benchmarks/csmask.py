"""A real model against its own tool: ukis-csmask's cloud/shadow U-Net through ``geoseg
predict`` and through ukis-csmask's ``CSmask``, on the same threads.

The scene is real ground with synthetic clouds: xarray-spatial's Sentinel-2 subset
(blue, green, red, NIR at 10 m, digital numbers = reflectance × 10000), mirrored to
400 × 600 px, with six bright blobs over it (as in ``tests/test_model_formats.py``); then
the same scene mirrored to 8192² px. Each side runs in a process of its own, from the
GeoTIFF on disk to a mask on disk, and reports its time and peak resident memory:

* **geoseg**: ``geoseg predict`` with the model imported by ``geoseg models import
  model_4b_l1c.onnx --scale 0.0001`` (tiles of 256 px, its default overlap);
* **CSmask**: the whole image read into memory as float32 reflectance, ``CSmask(img,
  band_order, intra_op_num_threads=2)`` (256 px tiles, 20 % overlap, Tukey blending), the
  mask written with rasterio.

Agreement of the two masks is reported, and on the small scene also CSmask's agreement
with itself when only its overlap changes (25 % instead of 20 %).

    python -m benchmarks csmask                 # both sizes (~15 min on 2 cores)
    python -m benchmarks csmask --sizes 0       # only the 400 x 600 scene
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
from benchmarks.scaling import peak_rss_of

ROOT = Path(__file__).resolve().parents[1]
CSMASK_SCRIPT = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import rasterio
from benchmarks.csmask import csmask
src, dst, share = sys.argv[1], sys.argv[2], float(sys.argv[3])
with rasterio.open(src) as ds:
    image, profile = ds.read(), ds.profile
mask = csmask(image, share)
profile.update(count=1, dtype="uint8", nodata=None)
with rasterio.open(dst, "w", **profile) as ds:
    ds.write(mask, 1)
"""


def csmask(image: np.ndarray, share: float = 0.2) -> np.ndarray:
    """ukis-csmask's own mask (``CSmask``, 2 threads) of ``image`` (blue, green, red, NIR
    digital numbers; bands, rows, cols), with its tiles overlapping by ``share`` (CSmask
    fixes 0.2 inside: its tiling functions are given another share)."""
    import ukis_csmask.mask as module
    from ukis_csmask.mask import CSmask

    tile, untile = module.tile_array, module.untile_array
    module.tile_array = lambda a, xsize, ysize, overlap: tile(  # type: ignore[assignment]
        a, xsize=xsize, ysize=ysize, overlap=share)
    module.untile_array = lambda a, shape, overlap, smooth_blending: untile(  # type: ignore[assignment]
        a, shape, overlap=share, smooth_blending=smooth_blending)
    try:
        reflectance = np.moveaxis(image, 0, -1).astype(np.float32) / 10000
        return CSmask(reflectance, ["blue", "green", "red", "nir"], product_level="l1c",
                      intra_op_num_threads=2, inter_op_num_threads=1).csm[..., 0]
    finally:
        module.tile_array, module.untile_array = tile, untile


def scene(clouds: bool = True) -> tuple[np.ndarray, object, object]:
    """The real scene mirrored to 400 x 600 px, with clouds unless not ``clouds``: (bands,
    rows, cols) uint16 digital numbers, its CRS and transform."""
    import rasterio
    from affine import Affine

    sys.path.insert(0, str(ROOT / "tests"))
    from test_real_imagery import sentinel2_files

    files = sentinel2_files()
    bands = []
    for b in ("blue", "green", "red", "nir"):
        with rasterio.open(files[b]) as ds:
            bands.append(ds.read(1))
            tags = ds.tags()
    crs = tags["__xarray_dataarray_variable__#crs"].replace("+init=", "").upper()
    transform = Affine(*(float(v) for v in
                         tags["__xarray_dataarray_variable__#transform"].strip("{}").split(",")))
    dn = np.stack(bands).astype(np.uint16)
    row = np.concatenate([dn, dn[:, :, ::-1]], axis=2)
    dn = np.concatenate([row, row[:, ::-1]], axis=1)
    if not clouds:
        return dn, crs, transform
    h, w = dn.shape[1:]
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(1)
    blobs = np.zeros((h, w))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(8, 30)
        blobs = np.maximum(blobs, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)))
    dn = (dn * (1 - blobs) + 6500 * blobs).astype(np.uint16)
    return dn, crs, transform


def mirrored(dn: np.ndarray, size: int) -> np.ndarray:
    """``dn`` mirrored back and forth to ``size`` × ``size``."""
    h, w = dn.shape[1:]
    row = np.concatenate([dn, dn[:, :, ::-1]] * (-(-size // (2 * w))), axis=2)[:, :, :size]
    return np.concatenate([row, row[:, ::-1]] * (-(-size // (2 * h))), axis=1)[:, :size]


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks csmask")
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 8192],
                        help="0: the 400 x 600 scene; N: it mirrored to N x N")
    args = parser.parse_args(argv)
    import importlib.metadata

    import rasterio

    onnx = next(Path(str(f.locate())) for f in importlib.metadata.files("ukis-csmask") or []
                if str(f).endswith("model_4b_l1c.onnx"))
    geoseg = [sys.executable, "-m", "geoseg.cli"]
    base, crs, transform = scene()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp, "csmask")
        subprocess.run([*geoseg, "models", "import", str(onnx), "-o", str(model), "--classes",
                        "clear,cloud,shadow", "--scale", "0.0001"], check=True,
                       stdout=subprocess.DEVNULL)
        for size in args.sizes:
            data = base if size == 0 else mirrored(base, size)
            path = Path(tmp, f"scene_{size}.tif")
            with rasterio.open(path, "w", driver="GTiff", width=data.shape[2],
                               height=data.shape[1], count=4, dtype="uint16", crs=crs,
                               transform=transform, tiled=True, compress="deflate") as ds:
                ds.write(data)
            masks = {}
            row: dict[str, object] = {"scene": f"{data.shape[2]} x {data.shape[1]}",
                                      "megapixels": round(data.shape[1] * data.shape[2] / 1e6, 2)}
            runs = {"geoseg": [*geoseg, "predict", str(path), "-o", str(Path(tmp, "g.tif")),
                               "--model", str(model), "--overwrite", "--no-progress"],
                    "csmask": [sys.executable, "-c", CSMASK_SCRIPT, str(path),
                               str(Path(tmp, "c.tif")), "0.2"]}
            for name, cmd in runs.items():
                seconds, mib = peak_rss_of(cmd)
                row[f"{name}_seconds"], row[f"{name}_peak_rss_mib"] = round(seconds, 1), round(mib)
                with rasterio.open(Path(tmp, "g.tif" if name == "geoseg" else "c.tif")) as ds:
                    masks[name] = ds.read(1)
            row["agreement"] = round(float(np.mean(masks["geoseg"] == masks["csmask"])), 4)
            row["csmask_cloud_share"] = round(float(np.mean(masks["csmask"] == 1)), 4)
            if size == 0:
                subprocess.run([sys.executable, "-c", CSMASK_SCRIPT, str(path),
                                str(Path(tmp, "c25.tif")), "0.25"], check=True)
                with rasterio.open(Path(tmp, "c25.tif")) as ds:
                    row["csmask_20_vs_25_agreement"] = round(float(np.mean(ds.read(1) == masks["csmask"])), 4)
            row["speed_ratio"] = round(float(row["csmask_seconds"]) / float(row["geoseg_seconds"]), 2)
            rows.append(row)
    result = {"benchmark": "csmask", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "model": "ukis-csmask 1.0.0 model_4b_l1c.onnx", "runs": rows}
    print(f"ukis-csmask model_4b_l1c, {os.cpu_count()} CPUs, 2 threads each side")
    print(f"{'scene':<14} {'geoseg s':>9} {'MiB':>6} {'CSmask s':>9} {'MiB':>6} {'agree':>7}")
    for r in rows:
        print(f"{r['scene']:<14} {r['geoseg_seconds']:>9} {r['geoseg_peak_rss_mib']:>6} "
              f"{r['csmask_seconds']:>9} {r['csmask_peak_rss_mib']:>6} {r['agreement']:>7}")
    return save("csmask", result)


if __name__ == "__main__":
    main(sys.argv[1:])
