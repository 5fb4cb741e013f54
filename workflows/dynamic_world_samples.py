"""Real Sentinel-2 L1C samples for Dynamic World's tests, and the original model's answers.

    # 1. band files as a product delivers them, from DSen2's public L1C crops (needs h5py)
    python workflows/dynamic_world_samples.py bands DSEN2/data/S2A_MSIL1C_20170527_T33UUB.mat \\
        S2A_MSIL1C_20170527T102031_N0205_R065_T33UUB_20170527T102301 OUT --size 256
    # 2. the original SavedModel's answer on geoseg's 10 m reading of them, run whole-image
    #    as single_image_runner.ipynb runs it (TensorFlow: requirements/convert.txt)
    python workflows/dynamic_world_samples.py stack FOLDER STACK.tif        # geoseg
    python workflows/dynamic_world_samples.py reference STACK.tif OUT DW_CHECKOUT
    # 3. README's picture: each product folder's true colour beside geoseg's map of it
    python workflows/dynamic_world_samples.py picture FOLDER... docs/images/dynamic-world.png

The samples are crops of two L1C products (processing baseline 02.05, so no offset) that
``lanha/DSen2`` (github.com/lanha/DSen2, ``data/*.mat``) publishes under CC BY 4.0
(contains modified Copernicus Sentinel data 2017): 10 m bands B02 B03 B04 B08 and 20 m
bands B05 B06 B07 B11 B12, the nine Dynamic World reads, each written at its own
resolution as a GeoTIFF named as in the product. DSen2 does not record where in its
100 km tile a crop lies: the CRS is the tile's UTM zone, the origin a placeholder (what
the tests measure does not depend on it; areas and shapes are true, places are not).

``stack`` reads the band files through geoseg (20 m bands bilinear onto the 10 m grid,
as Dynamic World's notebook resamples them) into a 10 m stack, and ``reference`` writes
the SavedModel's softmax run on the whole image at once (``OUT.probabilities.tif``:
nine uint8 bands, probability × 250; and ``OUT.mask.tif``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

TEN_M = ("B02", "B03", "B04", "B08")
TWENTY_M = ("B05", "B06", "B07", "B8A", "B11", "B12")  # DSen2's im20 order
DW_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B11", "B12")
UTM = {"T33UUB": (32633, 300000, 6100020), "T49JGM": (32749, 699960, 7100020)}
PROBABILITY_SCALE = 250


def bands(mat: Path, product: str, out: Path, size: int) -> None:
    import h5py
    import rasterio
    from rasterio.transform import from_origin

    tile = product.split("_")[5]
    epsg, x0, y0 = UTM[tile]
    with h5py.File(mat, "r") as h:  # MATLAB v7.3 stores arrays transposed
        im10 = h["im10"][()].transpose(0, 2, 1)
        im20 = h["im20"][()].transpose(0, 2, 1)
    folder = out / product
    folder.mkdir(parents=True, exist_ok=True)
    stamp = product.split("_")[2]
    y_top = y0 - 100000 + size * 10  # a placeholder: where the crop lies is unknown
    for names, data, res in ((TEN_M, im10, 10), (TWENTY_M, im20, 20)):
        n = size * 10 // res
        for name, band in zip(names, data, strict=True):
            if name not in DW_BANDS:
                continue
            path = folder / f"{tile}_{stamp}_{name}_{res}m.tif"
            with rasterio.open(path, "w", driver="GTiff", width=n, height=n, count=1,
                               dtype="uint16", crs=f"EPSG:{epsg}", nodata=0,
                               transform=from_origin(x0, y_top, res, res),
                               compress="deflate", predictor=2) as ds:
                ds.write(np.rint(band[:n, :n]).astype(np.uint16), 1)
    print(f"{folder}: {len(DW_BANDS)} band files, {size} x {size} px at 10 m")


def reference(stack: Path, out: Path, checkout: Path) -> None:
    import rasterio
    from convert_dynamic_world import original

    if not stack.exists():
        sys.exit(f"{stack}: missing; write it with geoseg first: python "
                 f"workflows/dynamic_world_samples.py stack FOLDER {stack}")
    with rasterio.open(stack) as ds:
        dn = ds.read().astype(np.float64)
        profile = ds.profile
    prob = original(dn.transpose(1, 2, 0), checkout / "model" / "forward").transpose(2, 0, 1)
    profile.update(count=9, dtype="uint8", nodata=None, compress="deflate")
    out.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(f"{out}.probabilities.tif", "w", **profile) as ds:
        ds.write(np.rint(prob * PROBABILITY_SCALE).astype(np.uint8))
    profile.update(count=1)
    with rasterio.open(f"{out}.mask.tif", "w", **profile) as ds:
        ds.write(prob.argmax(0).astype(np.uint8), 1)
    print(f"{out}: the SavedModel's answer, whole image ({dn.shape[1]} x {dn.shape[2]})")


def stack(folder: Path, out: Path) -> None:
    """geoseg's 10 m reading of the band files (the nine bands, in the model's order)."""
    import rasterio

    from geoseg.model import read_spec, resolve_model_path
    from geoseg.sources import open_source

    source = open_source(folder, want=read_spec(resolve_model_path("dynamic-world")).bands)
    with source.open() as ds:
        dn = ds.read(list(source.bands), out_dtype="float32")
    profile = {"driver": "GTiff", "width": dn.shape[2], "height": dn.shape[1], "count": 9,
               "dtype": "float32", "crs": source.grid.crs, "transform": source.grid.transform,
               "compress": "deflate", "predictor": 3}
    with rasterio.open(out, "w", **profile) as ds:
        ds.write(dn)
        ds.descriptions = DW_BANDS
    print(f"{out}: written")


def picture(folders: list[Path], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import rasterio
    from matplotlib.patches import Patch
    from PIL import Image

    import geoseg

    spec = geoseg.load_model("dynamic-world").spec
    colors = np.array(spec.colors + [(0, 0, 0)] * (256 - len(spec.colors)), np.uint8)
    fig, axes = plt.subplots(len(folders), 2, figsize=(9, 4.8 * len(folders)), squeeze=False)
    for row, product in enumerate(folders):
        tile, date = product.name.split("_")[5], product.name.split("_")[2][:8]
        mask = geoseg.predict(product).values
        rgb = []
        for band in ("B04", "B03", "B02"):
            with rasterio.open(next(product.glob(f"*_{band}_10m.tif"))) as ds:
                rgb.append(ds.read(1).astype(float))
        image = np.stack(rgb, -1)
        lo, hi = np.percentile(image, (1, 99))
        axes[row, 0].imshow(np.clip((image - lo) / (hi - lo), 0, 1) ** 0.8)
        axes[row, 1].imshow(colors[mask])
        axes[row, 0].set_title(f"{product.name[:10]} {tile} {date[:4]}-{date[4:6]}-{date[6:]}, "
                               f"true colour", fontsize=9)
        axes[row, 1].set_title("geoseg predict (no --model): Dynamic World", fontsize=9)
        for a in axes[row]:
            a.set_axis_off()
    fig.legend(handles=[Patch(color=np.array(c) / 255, label=n)
                        for n, c in zip(spec.class_names, spec.colors, strict=True)],
               loc="lower center", ncol=5, fontsize=9, frameon=False)
    fig.text(0.5, 0.005, "Contains modified Copernicus Sentinel data 2017. Dynamic World "
             "model: Google, National Geographic, WRI (Apache-2.0).", ha="center", fontsize=7)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, dpi=80)
    plt.close(fig)
    quantized = Image.open(out).convert("RGB").quantize(
        colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    quantized.save(out, optimize=True)
    print(f"{out}: written")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    b = sub.add_parser("bands")
    b.add_argument("mat", type=Path)
    b.add_argument("product")
    b.add_argument("out", type=Path)
    b.add_argument("--size", type=int, default=256)
    s = sub.add_parser("stack")
    s.add_argument("folder", type=Path)
    s.add_argument("stack", type=Path)
    r = sub.add_parser("reference")
    r.add_argument("stack", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("checkout", type=Path)
    p = sub.add_parser("picture")
    p.add_argument("folders", type=Path, nargs="+")
    p.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.step == "picture":
        picture(args.folders, args.out)
    elif args.step == "bands":
        bands(args.mat, args.product, args.out, args.size)
    elif args.step == "stack":
        stack(args.folder, args.stack)
    else:
        reference(args.stack, args.out, args.checkout)


if __name__ == "__main__":
    main()
