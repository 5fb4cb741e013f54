"""``geoseg vectorize`` against its peers, side by side on the same masks.

Each mask is a synthetic land-cover label raster (6 classes, thousands of polygons, a
nodata corner) written as a tiled GeoTIFF. Three commands turn it into a GeoPackage, each
in a fresh process: ``geoseg vectorize``, ``gdal_polygonize.py`` (the system GDAL) and the
script a user would write with rasterio and geopandas (:data:`RASTERIO_SCRIPT`:
``rasterio.features.shapes`` into a GeoDataFrame, ``to_file(driver="GPKG")``). Every
repeat runs the three in turn (their order rotating, so none always goes first); wall
time and peak RSS are measured per run, and the median and best of ``--repeats`` kept.
The outputs are compared: polygon count and area per class must agree with each peer.

The goal checked at every size: geoseg at least as fast as the fastest peer (≥ 1×). For
scale, the "import floor" is a Python process that only imports numpy, shapely and
rasterio, which geoseg cannot go below.
Python tools run as installed, with their bytecode cached: the environment's
``PYTHONDONTWRITEBYTECODE`` is lifted for the children (caching in a temp folder), and
each tool runs once untimed first.

    python -m benchmarks vectorize                       # 1024², 2048², 3000², 8192²
    python -m benchmarks vectorize --sizes 16384 --repeats 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks import save
from benchmarks.scaling import peak_rss_of

GOAL = 1.0  # geoseg's speed over the fastest peer's, at every size

# The peer: what a user writes to vectorize a mask with rasterio and geopandas.
RASTERIO_SCRIPT = '''\
import sys

import geopandas as gpd
import rasterio
from rasterio.features import shapes
from shapely.geometry import shape

src, dst = sys.argv[1], sys.argv[2]
with rasterio.open(src) as ds:
    mask = ds.read(1)
    found = list(shapes(mask, mask=mask != ds.nodata, transform=ds.transform))
    gdf = gpd.GeoDataFrame({"class_id": [int(v) for _, v in found]},
                           geometry=[shape(g) for g, _ in found], crs=ds.crs)
gdf.to_file(dst, layer="out", driver="GPKG")
'''


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


def same_areas(ours: dict[int, float], theirs: dict[int, float]) -> bool:
    return ours.keys() == theirs.keys() and all(
        abs(ours[k] - theirs[k]) <= 1e-9 * theirs[k] for k in theirs)


def gdal_version() -> str | None:
    try:
        return subprocess.run(["gdalinfo", "--version"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


@contextlib.contextmanager
def cached_bytecode(folder: Path) -> Iterator[None]:
    """Children run as installed Python tools do: with their bytecode cached (in
    ``folder``), whatever ``PYTHONDONTWRITEBYTECODE`` this shell has."""
    before = dict(os.environ)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(folder)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


def commands(mask: Path, out: Path, chunk_size: int, gdal: str | None, script: Path
             ) -> dict[str, tuple[list[str], Path, str]]:
    """Each tool's command line, the GeoPackage it writes and that layer's name."""
    tools = {"geoseg": ([sys.executable, "-m", "geoseg.cli", "vectorize", str(mask), "-o",
                         str(out / "geoseg.gpkg"), "--no-progress", "--chunk-size",
                         str(chunk_size)], out / "geoseg.gpkg", "geoseg")}
    if gdal:
        tools["gdal"] = ([gdal, "-q", str(mask), "-f", "GPKG", str(out / "gdal.gpkg"), "out",
                          "class_id"], out / "gdal.gpkg", "out")
    tools["rasterio"] = ([sys.executable, str(script), str(mask), str(out / "rasterio.gpkg")],
                         out / "rasterio.gpkg", "out")
    return tools


def import_floor(repeats: int) -> float:
    """Median seconds of a Python process that only imports numpy, shapely and rasterio:
    what geoseg (and the rasterio script) pay before reading a pixel."""
    cmd = [sys.executable, "-c", "import numpy, shapely, rasterio"]
    return statistics.median(peak_rss_of(cmd)[0] for _ in range(repeats))


def run_once(cmd: list[str], gpkg: Path) -> tuple[float, float]:
    """(seconds, peak MiB) of one run writing ``gpkg`` afresh."""
    for p in gpkg.parent.glob(gpkg.stem + ".*"):
        p.unlink()
    return peak_rss_of(cmd)


def race(tools: dict[str, tuple[list[str], Path, str]], repeats: int
         ) -> dict[str, list[tuple[float, float]]]:
    """Every tool once per repeat, in an order that rotates from repeat to repeat."""
    names = list(tools)
    runs: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for i in range(repeats):
        for name in names[i % len(names):] + names[:i % len(names)]:
            cmd, gpkg, _ = tools[name]
            runs[name].append(run_once(cmd, gpkg))
    return runs


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks vectorize")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 3000, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-size", type=int, default=2048)
    args = parser.parse_args(argv)
    gdal = shutil.which("gdal_polygonize.py")
    rows = []
    with tempfile.TemporaryDirectory() as tmp, cached_bytecode(Path(tmp) / "pycache"):
        script = Path(tmp) / "rasterio_peer.py"
        script.write_text(RASTERIO_SCRIPT)
        small = Path(tmp) / "warm_up.tif"
        write_mask(small, 256)
        # Each tool once on a small mask first: bytecode compiled, libraries read from disk.
        race(commands(small, Path(tmp), args.chunk_size, gdal, script), 1)
        for size in args.sizes:
            mask = Path(tmp) / f"mask_{size}.tif"
            write_mask(mask, size)
            tools = commands(mask, Path(tmp), args.chunk_size, gdal, script)
            runs = race(tools, args.repeats)
            found = {n: class_areas(gpkg, layer, "class_id")
                     for n, (_, gpkg, layer) in tools.items()}
            n_ours, area_ours = found["geoseg"]
            row: dict[str, object] = {"size": size, "megapixels": size * size / 1e6,
                                      "polygons": n_ours}
            for name, timed in runs.items():
                row[f"{name}_seconds"] = round(statistics.median(s for s, _ in timed), 3)
                row[f"{name}_best_seconds"] = round(min(s for s, _ in timed), 3)
                row[f"{name}_peak_rss_mib"] = round(max(m for _, m in timed))
                if name != "geoseg":
                    n, areas = found[name]
                    row[f"{name}_polygons"] = n
                    row[f"{name}_same_count_and_areas"] = n == n_ours and same_areas(
                        area_ours, areas)
            row["import_floor_seconds"] = round(import_floor(args.repeats), 3)
            peers = [n for n in runs if n != "geoseg"]
            fastest = min(peers, key=lambda n: row[f"{n}_seconds"])  # type: ignore[arg-type, return-value]
            row["fastest_peer"] = fastest
            row["vs_fastest_peer"] = round(row[f"{fastest}_seconds"]  # type: ignore[operator]
                                           / row["geoseg_seconds"], 2)  # type: ignore[operator]
            row["meets_goal"] = row["vs_fastest_peer"] >= GOAL  # type: ignore[operator]
            row["same_as_peers"] = all(row[f"{n}_same_count_and_areas"] for n in peers)
            rows.append(row)
            mask.unlink()
    import pyogrio
    import rasterio

    result = {"benchmark": "vectorize", "date": time.strftime("%Y-%m-%d"),
              "cpus": os.cpu_count(), "gdal_polygonize": gdal_version() if gdal else None,
              "rasterio": rasterio.__version__, "rasterio_gdal": rasterio.__gdal_version__,
              "pyogrio_gdal": pyogrio.__gdal_version_string__,
              "chunk_size": args.chunk_size, "repeats": args.repeats, "goal": GOAL,
              "runs": rows, "meets_goal_everywhere": all(r["meets_goal"] for r in rows)}
    print(f"{'size':>7} {'polygons':>9} {'geoseg s':>9} {'gdal s':>8} {'rasterio s':>11} "
          f"{'vs fastest peer':>16} {'goal ≥ 1×':>10} {'geoseg MiB':>11} {'same as peers':>14} "
          f"{'import floor s':>15}")
    for r in rows:
        print(f"{r['size']:>7} {r['polygons']:>9} {r['geoseg_seconds']:>9.2f} "
              f"{r.get('gdal_seconds', float('nan')):>8.2f} {r['rasterio_seconds']:>11.2f} "
              f"{r['vs_fastest_peer']:>15.2f}× {'met' if r['meets_goal'] else 'MISSED':>10} "
              f"{r['geoseg_peak_rss_mib']:>11} {r['same_as_peers']!s:>14} "
              f"{r['import_floor_seconds']:>15.2f}")
    if not gdal:
        print("gdal_polygonize.py not found (apt-get install -y gdal-bin python3-gdal): "
              "geoseg raced the rasterio script alone")
    return save("vectorize", result)


if __name__ == "__main__":
    main(sys.argv[1:])
