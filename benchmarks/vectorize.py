"""``geoseg vectorize`` against ``gdal_polygonize.py``, side by side on the same masks.

Each mask is a synthetic land-cover label raster (6 classes, thousands of polygons, a
nodata corner) written as a tiled GeoTIFF. Both tools run as real commands in fresh
processes writing a GeoPackage; wall time and peak RSS are measured per run (median of
``--repeats``). The outputs are compared: polygon count and area per class must agree.
The claims checked: geoseg is at least 3× faster than gdal_polygonize.py on the 8192²
mask, and its peak memory grows far less than the pixel count. For reference, it also
times ``rasterio.features.shapes`` alone over the whole mask in memory (rasterio's GDAL,
whose polygonizer was rewritten in GDAL 3.7; no file written).

    python -m benchmarks vectorize                       # 2048² and 8192² (~2 min)
    python -m benchmarks vectorize --sizes 2048 8192 16384 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import save
from benchmarks.scaling import peak_rss_of


def write_mask(path: Path, size: int, seed: int = 1) -> None:
    """The exact labels of a synthetic scene, written strip by strip."""
    import rasterio

    from geoseg.synthetic import sample_scene

    scene = sample_scene(size, seed=seed)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=1,
                       dtype="uint8", nodata=255, crs=scene.crs, transform=scene.transform,
                       tiled=True, blockxsize=512, blockysize=512, compress="deflate") as ds:
        for row in range(0, size, 512):
            h = min(512, size - row)
            ds.write(scene.labels(row, 0, h, size), 1, window=((row, row + h), (0, size)))


def class_areas(gpkg: Path, layer: str, field: str) -> tuple[int, dict[int, float]]:
    """Polygon count and planar area per class of a GeoPackage layer."""
    import pyogrio
    import shapely

    df = pyogrio.read_dataframe(gpkg, layer=layer)
    areas = shapely.area(df.geometry.values)
    return len(df), {int(k): float(areas[df[field].values == k].sum())
                     for k in np.unique(df[field].values)}


def shapes_seconds(mask: Path) -> float:
    """``rasterio.features.shapes`` over the whole mask (rasterio's own GDAL, in memory, no
    output file): what a recent GDAL polygonizer costs alone."""
    code = ("import sys, time, rasterio; from rasterio import features; "
            "ds = rasterio.open(sys.argv[1]); a = ds.read(1); t = time.perf_counter(); "
            "n = sum(1 for _ in features.shapes(a, mask=a != 255, transform=ds.transform)); "
            "print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code, str(mask)], check=True,
                         capture_output=True, text=True)
    return float(out.stdout)


def gdal_version() -> str | None:
    try:
        return subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def timed(cmd: list[str], repeats: int, cleanup: Path) -> tuple[float, float]:
    runs = []
    for _ in range(repeats):
        for p in cleanup.parent.glob(cleanup.stem + ".*"):
            p.unlink()
        runs.append(peak_rss_of(cmd))
    return statistics.median(s for s, _ in runs), max(m for _, m in runs)


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks vectorize")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=2048)
    args = parser.parse_args(argv)
    gdal = shutil.which("gdal_polygonize.py")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            mask = Path(tmp) / f"mask_{size}.tif"
            write_mask(mask, size)
            ours_gpkg = Path(tmp) / f"ours_{size}.gpkg"
            ours_s, ours_mib = timed(
                [sys.executable, "-m", "geoseg.cli", "vectorize", str(mask), "-o",
                 str(ours_gpkg), "--no-progress", "--chunk-size", str(args.chunk_size)],
                args.repeats, ours_gpkg)
            n_ours, area_ours = class_areas(ours_gpkg, ours_gpkg.stem, "class_id")
            row: dict[str, object] = {
                "size": size, "megapixels": size * size / 1e6, "polygons": n_ours,
                "geoseg_seconds": round(ours_s, 2), "geoseg_peak_rss_mib": round(ours_mib)}
            if gdal:
                gdal_gpkg = Path(tmp) / f"gdal_{size}.gpkg"
                gdal_s, gdal_mib = timed([gdal, "-q", str(mask), "-f", "GPKG", str(gdal_gpkg),
                                          "out", "class_id"], args.repeats, gdal_gpkg)
                n_gdal, area_gdal = class_areas(gdal_gpkg, "out", "class_id")
                same_area = area_ours.keys() == area_gdal.keys() and all(
                    abs(area_ours[k] - area_gdal[k]) <= 1e-9 * area_gdal[k] for k in area_gdal)
                row.update(gdal_seconds=round(gdal_s, 2), gdal_peak_rss_mib=round(gdal_mib),
                           gdal_polygons=n_gdal, speedup=round(gdal_s / ours_s, 2),
                           same_polygon_count=n_gdal == n_ours, same_class_areas=same_area)
            row["rasterio_shapes_seconds"] = round(shapes_seconds(mask), 2)
            rows.append(row)
            mask.unlink()
    largest = max(rows, key=lambda r: r["size"])  # type: ignore[arg-type, return-value]
    smallest = min(rows, key=lambda r: r["size"])  # type: ignore[arg-type, return-value]
    import rasterio

    result = {"benchmark": "vectorize", "date": time.strftime("%Y-%m-%d"),
              "cpus": os.cpu_count(), "gdal_polygonize": gdal_version() if gdal else None,
              "rasterio_gdal": rasterio.__gdal_version__,
              "chunk_size": args.chunk_size, "repeats": args.repeats, "runs": rows,
              "target_speedup": 3.0,
              "rss_ratio_largest_to_smallest": round(
                  largest["geoseg_peak_rss_mib"] / smallest["geoseg_peak_rss_mib"], 2)}  # type: ignore[operator]
    print(f"{'size':>7} {'polygons':>9} {'geoseg s':>9} {'gdal s':>8} {'speedup':>8} "
          f"{'geoseg MiB':>11} {'gdal MiB':>9} {'same areas':>11} {'shapes() s':>11}")
    for r in rows:
        print(f"{r['size']:>7} {r['polygons']:>9} {r['geoseg_seconds']:>9.2f} "
              f"{r.get('gdal_seconds', float('nan')):>8.2f} {r.get('speedup', float('nan')):>8.2f} "
              f"{r['geoseg_peak_rss_mib']:>11} {r.get('gdal_peak_rss_mib', '-'):>9} "
              f"{r.get('same_class_areas', '-')!s:>11} {r['rasterio_shapes_seconds']:>11.2f}")
    if not gdal:
        print("gdal_polygonize.py not found (apt-get install -y gdal-bin python3-gdal): "
              "geoseg timed alone")
    return save("vectorize", result)


if __name__ == "__main__":
    main(sys.argv[1:])
