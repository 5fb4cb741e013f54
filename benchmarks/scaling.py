"""Scaling of ``geoseg predict`` with raster size: peak memory and time.

Each size runs in a fresh process (the real CLI, process start and model load included)
on a generated 4-band uint16 scene; the peak resident set size of that process is read
from ``getrusage``. Claims checked: peak RSS of the largest scene ≤ 1.3 × that of the
smallest (memory is bounded by tiles, not pixels), and time linear in pixels: a straight
line ``seconds = start-up + Mpx / rate`` fits every size (the largest deviation from it
is printed) and the marginal rate between sizes stays the same.

``--forms stack`` (in the default) also predicts each scene as a product comes: one file
per band, blue, green and red at the scene's pixel size ("10 m") and nir at twice it
("20 m", resampled by GDAL while windows are read). Its peak RSS must stay as bounded.

    python -m benchmarks scaling                          # 2048², 8192², 16384² (~12 min)
    python -m benchmarks scaling --sizes 2048 8192        # ~3 min
    python -m benchmarks scaling --forms file             # the single GeoTIFF only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import save


def peak_rss_of(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd`` to completion; return (seconds, peak RSS in MiB) of that child alone."""
    code = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
            "print(time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], check=True, capture_output=True,
                         text=True)
    seconds, mib = out.stdout.split()
    return float(seconds), float(mib)


def split_bands(scene: Path, folder: Path, strip: int = 1024) -> list[str]:
    """``scene``'s bands as Sentinel-2-like band files: B02, B03, B04 on its grid, B8A at
    twice its pixel size (each 2 × 2 block averaged), written strip by strip."""
    import rasterio
    from rasterio.windows import Window

    folder.mkdir(exist_ok=True)
    with rasterio.open(scene) as src:
        size, profile = src.width, {**src.profile, "count": 1, "compress": "deflate"}
        coarse = {**profile, "width": size // 2, "height": size // 2,
                  "transform": src.transform * src.transform.scale(2)}
        paths = [folder / f"T33UUP_{b}_10m.tif" for b in ("B02", "B03", "B04")]
        paths.append(folder / "T33UUP_B8A_20m.tif")
        outs = [rasterio.open(p, "w", **profile) for p in paths[:3]]
        outs.append(rasterio.open(paths[3], "w", **coarse))
        try:
            for row in range(0, size, strip):
                h = min(strip, size - row)
                data = src.read(window=Window(0, row, size, h))
                for k in range(3):
                    outs[k].write(data[k], 1, window=Window(0, row, size, h))
                nir = data[3].reshape(h // 2, 2, size // 2, 2).mean(axis=(1, 3))
                outs[3].write(nir.round().astype(data.dtype), 1,
                              window=Window(0, row // 2, size // 2, h // 2))
        finally:
            for out in outs:
                out.close()
    return [str(p) for p in paths]


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scaling")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192, 16384])
    parser.add_argument("--scheduler", default="threads")
    parser.add_argument("--forms", nargs="+", choices=["file", "stack"], default=["file", "stack"],
                        help="a 4-band GeoTIFF; band files at 10 and 20 m")
    args = parser.parse_args(argv)
    geoseg = [sys.executable, "-m", "geoseg.cli"]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            subprocess.run([*geoseg, "sample-data", tmp, "--size", str(size), "--seed", "1",
                            "--overwrite"],
                           check=True, stdout=subprocess.DEVNULL)
            scene = Path(tmp) / "scene_1.tif"
            inputs = {"file": [str(scene)]}
            if "stack" in args.forms:
                inputs["stack"] = split_bands(scene, Path(tmp) / f"bands_{size}")
            for form in args.forms:
                seconds, mib = peak_rss_of([*geoseg, "predict", *inputs[form], "-o",
                                            str(Path(tmp) / f"mask_{form}_{size}.tif"),
                                            "--no-progress", "--scheduler", args.scheduler,
                                            "--model", "default"])
                runs.append({"form": form, "size": size, "megapixels": size * size / 1e6,
                             "seconds": round(seconds, 1), "peak_rss_mib": round(mib),
                             "mpx_per_s": round(size * size / 1e6 / seconds, 2)})
            for path in [scene, *inputs.get("stack", [])]:
                Path(path).unlink()
    result: dict[str, object] = {"benchmark": "scaling", "date": time.strftime("%Y-%m-%d"),
                                 "cpus": os.cpu_count(), "scheduler": args.scheduler,
                                 "runs": runs, "target_ratio": 1.3}
    print(f"{'form':>6} {'size':>8} {'Mpx':>8} {'seconds':>8} {'Mpx/s':>7} "
          f"{'marginal Mpx/s':>15} {'peak RSS MiB':>13} {'RSS / smallest':>15}")
    fits: dict[str, tuple[float, dict[str, float]]] = {}
    for form in args.forms:
        rows = [r for r in runs if r["form"] == form]
        fits[form] = fit(rows)
        key = "" if form == "file" else f"{form}_"
        result[f"{key}rss_ratio_largest_to_smallest"], result[f"{key}linear_fit"] = fits[form]
        for r in rows:
            marginal = f"{r['marginal_mpx_per_s']:.2f}" if "marginal_mpx_per_s" in r else "-"
            print(f"{form:>6} {r['size']:>8} {r['megapixels']:>8.1f} {r['seconds']:>8.1f} "
                  f"{r['mpx_per_s']:>7.2f} {marginal:>15} {r['peak_rss_mib']:>13} "
                  f"{r['rss_vs_smallest']:>15.2f}")
    if "stack" in args.forms and "file" in args.forms:
        pairs = [(f, s) for f in runs for s in runs
                 if f["form"] == "file" and s["form"] == "stack" and f["size"] == s["size"]]
        versus = [{"size": f["size"], "rss": round(s["peak_rss_mib"] / f["peak_rss_mib"], 3),
                   "seconds": round(s["seconds"] / f["seconds"], 3)} for f, s in pairs]
        result["stack_vs_file"] = versus
        for row in versus:
            print(f"band files / one GeoTIFF at {row['size']}²: peak RSS {row['rss']:.2f}×, "
                  f"time {row['seconds']:.2f}×")
    for form, (ratio, line) in fits.items():
        print(f"{form}: peak RSS ratio {args.sizes[-1]}² / {args.sizes[0]}²: {ratio:.2f} "
              f"(target ≤ 1.3); time = {line['start_up_s']:.1f} s + Mpx / "
              f"{line['mpx_per_s']:.2f}, largest deviation from that line "
              f"{100 * line['largest_deviation']:.1f} %")
    return save("scaling", result)


def fit(rows: list[dict[str, Any]]) -> tuple[float, dict[str, float]]:
    """Each row's RSS against the smallest and marginal rate (in place); the largest
    size's RSS ratio; the line ``seconds = start-up + Mpx / rate``."""
    for prev, r in zip([None, *rows], rows, strict=False):
        r["rss_vs_smallest"] = round(r["peak_rss_mib"] / rows[0]["peak_rss_mib"], 3)
        if prev is not None:  # the rate of the extra pixels: start-up cancels out
            r["marginal_mpx_per_s"] = round((r["megapixels"] - prev["megapixels"])
                                            / (r["seconds"] - prev["seconds"]), 2)
    if len(rows) < 2:
        return 1.0, {"start_up_s": 0.0, "mpx_per_s": rows[0]["mpx_per_s"],
                     "largest_deviation": 0.0}
    slope, start = np.polyfit([r["megapixels"] for r in rows], [r["seconds"] for r in rows], 1)
    worst = max(abs(r["seconds"] - (start + slope * r["megapixels"])) / r["seconds"]
                for r in rows)
    return round(rows[-1]["rss_vs_smallest"], 3), {
        "start_up_s": round(start, 2), "mpx_per_s": round(1 / slope, 3),
        "largest_deviation": round(worst, 3)}


if __name__ == "__main__":
    main(sys.argv[1:])
