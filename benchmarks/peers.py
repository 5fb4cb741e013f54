"""Tiled inference against the loops users write instead: speed, seams and accuracy.

Side by side in one process, with the same network (the bundled default model, in the
same memory format) on the same device and one generated held-out scene:

* **geoseg**: ``geoseg.predict(scene, "mask.tif")`` (overlapping tiles, blended, COG).
* **geoseg, no overlap**: the same with ``overlap=0``: the naive loop's tiles, to compare
  the pipelines on equal model work.
* **naive loop**: what a user writes first: rasterio windows of one tile size *without*
  overlap, one tile at a time, normalize, forward, argmax, write the window.
* **TorchGeo**: TorchGeo's own ``RasterDataset`` + ``GridGeoSampler`` (overlapping
  windows, ``DataLoader`` batches), each prediction written over its window, the later
  one winning (TorchGeo leaves stitching to the user). Only when ``torchgeo`` imports
  (``pip install torchgeo``); skipped otherwise.

Speed is input Mpx/s, the best of ``--rounds`` rounds that alternate the methods.
Quality: mIoU against the scene's true labels, and agreement with one forward pass over
the whole image (no tiles, so no seams), overall and within 8 px of the method's own
tile edges, where seams would be.

    python -m benchmarks peers                          # 4096² on the CPU (~2 min)
    python -m benchmarks peers --size 4096 --device cuda
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import save

EDGE = 8  # pixels on each side of a tile edge counted as "at a seam"


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks peers")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tile-size", type=int, help="default: the model's")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    import rasterio
    import torch

    import geoseg
    from geoseg import synthetic
    from geoseg.devices import select_device
    from geoseg.prediction import prediction_options

    device = select_device(args.device)
    model = geoseg.load_model("default")
    tile = args.tile_size or model.spec.tile_size
    options = prediction_options(model.spec, tile, None, None, device, False)  # its defaults
    overlap = options.overlap
    network = model.network.to(device).eval().to(memory_format=torch.channels_last)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        scene, labels = synthetic.write_sample_data(tmp, size=args.size, seed=1001,
                                                    nodata_corner=False)
        warm, _ = synthetic.write_sample_data(Path(tmp, "warm"), size=512, seed=4)
        with rasterio.open(labels) as ds:
            truth = ds.read(1)
        whole = _whole_image(network, model.spec, scene, device)
        runs = {
            "geoseg": lambda src, dst: geoseg.predict(src, dst, device=device, tile_size=tile,
                                                      overwrite=True),
            # The same tiles as the naive loop: the pipeline's own speed, seams and all.
            "geoseg, no overlap": lambda src, dst: geoseg.predict(
                src, dst, device=device, tile_size=tile, overlap=0, overwrite=True),
            "naive loop": lambda src, dst: _naive_loop(network, model.spec, src, dst, tile,
                                                       device),
        }
        if _torchgeo_available():
            runs["TorchGeo"] = lambda src, dst: _torchgeo(network, model.spec, src, dst,
                                                          options)
        seconds: dict[str, float] = {}
        for name, run in runs.items():
            run(warm, Path(tmp, f"warm-{name}.tif"))
        for _ in range(args.rounds):  # rounds alternate the methods; each keeps its best
            for name, run in runs.items():
                started = time.perf_counter()
                run(scene, Path(tmp, f"{name}.tif"))
                seconds[name] = min(seconds.get(name, np.inf), time.perf_counter() - started)
        for name in runs:
            with rasterio.open(Path(tmp, f"{name}.tif")) as ds:
                mask = ds.read(1)
            rows.append({"method": name, "seconds": round(seconds[name], 2),
                         "mpx_per_s": round(args.size ** 2 / 1e6 / seconds[name], 3),
                         **_quality(mask, truth, whole, _edges(name, args.size, tile,
                                                               overlap), model.spec)})
    naive = next(r for r in rows if r["method"] == "naive loop")
    for r in rows:
        r["speed_vs_naive"] = round(naive["seconds"] / r["seconds"], 2)
    result = {"benchmark": "peers", "date": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count(),
              "device": device, "size": args.size, "tile_size": tile, "edge_px": EDGE,
              "torchgeo": _torchgeo_available(), "runs": rows}
    print(f"scene {args.size}² (held-out seed 1001), tile {tile}, {device}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'method':<18} {'seconds':>8} {'Mpx/s':>7} {'vs naive':>9} {'mIoU':>7} "
          f"{'= whole pass':>13} {'= at its tile edges':>20}")
    for r in rows:
        print(f"{r['method']:<18} {r['seconds']:>8.2f} {r['mpx_per_s']:>7.2f} "
              f"{r['speed_vs_naive']:>9.2f} {r['miou']:>7.4f} {r['agree_whole']:>13.4f} "
              f"{r['agree_at_own_edges']:>20.4f}")
    if not result["torchgeo"]:
        print("TorchGeo: not installed (pip install torchgeo), skipped")
    return save(f"peers-{device}", result)


def _normalize(spec: Any, data: np.ndarray) -> np.ndarray:
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    return (data.astype(np.float32) - mean) / std


def _forward(network: Any, x: np.ndarray, device: str, multiple: int) -> np.ndarray:
    """Classes of a normalized ``(bands, h, w)`` array (padded by reflection to ``multiple``)."""
    import torch

    h, w = x.shape[1:]
    x = np.pad(x, ((0, 0), (0, -h % multiple), (0, -w % multiple)), mode="reflect")
    with torch.inference_mode(), torch.autocast(device.split(":")[0],
                                                enabled=device.startswith("cuda")):
        t = torch.from_numpy(x[None]).to(device).contiguous(memory_format=torch.channels_last)
        return network(t)[0, :, :h, :w].argmax(0).to(torch.uint8).cpu().numpy()


def _whole_image(network: Any, spec: Any, path: Path, device: str) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as ds:
        return _forward(network, _normalize(spec, ds.read()), device, spec.size_multiple)


def _naive_loop(network: Any, spec: Any, src: Path, dst: Path, tile: int, device: str) -> None:
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(src) as ds:
        profile = ds.profile | {"count": 1, "dtype": "uint8", "nodata": 255,
                                "compress": "deflate"}
        with rasterio.open(dst, "w", **profile) as out:
            for row in range(0, ds.height, tile):
                for col in range(0, ds.width, tile):
                    window = Window(col, row, min(tile, ds.width - col),
                                    min(tile, ds.height - row))
                    x = _normalize(spec, ds.read(window=window))
                    out.write(_forward(network, x, device, spec.size_multiple)[None],
                              window=window)


def _torchgeo_available() -> bool:
    try:
        import torchgeo  # noqa: F401
    except Exception:  # not installed, or broken beside this torch
        return False
    return True


def _torchgeo(network: Any, spec: Any, src: Path, dst: Path, options: Any) -> None:
    """TorchGeo's tiling: GridGeoSampler windows with overlap, batched by a DataLoader."""
    import rasterio
    import torch
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    # geoseg's tile size, overlap and batch size, so both do the same model work
    tile, device = options.tile_size, options.device
    dataset = RasterDataset(paths=str(src))
    dataset.is_image = True
    sampler = GridGeoSampler(dataset, size=tile, stride=tile - options.overlap)
    loader = DataLoader(dataset, sampler=sampler, batch_size=options.batch_size,
                        collate_fn=stack_samples)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    with rasterio.open(src) as ds:
        profile = ds.profile | {"count": 1, "dtype": "uint8", "nodata": 255,
                                "compress": "deflate"}
        transform = ds.transform
        out = np.full((ds.height, ds.width), 255, np.uint8)
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        for batch in loader:
            x = ((batch["image"].float() - mean) / std).to(device)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.split(":")[0], enabled=device.startswith("cuda")):
                classes = network(x).argmax(1).to(torch.uint8).cpu().numpy()
            for k, bounds in enumerate(_bounds(batch)):
                window = rasterio.windows.from_bounds(*bounds, transform=transform)
                r, c = round(window.row_off), round(window.col_off)  # may lie outside
                r0, c0 = max(r, 0), max(c, 0)
                r1, c1 = min(r + tile, out.shape[0]), min(c + tile, out.shape[1])
                out[r0:r1, c0:c1] = classes[k, r0 - r:r1 - r, c0 - c:c1 - c]
    with rasterio.open(dst, "w", **profile) as ds:
        ds.write(out, 1)


def _bounds(batch: dict[str, Any]) -> list[tuple[float, float, float, float]]:
    """(left, bottom, right, top) of each sample, across TorchGeo's API versions."""
    out = []
    for b in batch["bounds"]:
        if hasattr(b, "minx"):  # before 0.8: a BoundingBox
            out.append((b.minx, b.miny, b.maxx, b.maxy))
        else:  # 0.8: the query, (x slice, y slice, t slice)
            x, y = b[0], b[1]
            out.append((x.start, y.start, x.stop, y.stop))
    return out


def _edges(method: str, size: int, tile: int, overlap: int) -> tuple[list[int], list[int]]:
    """Where each method's tiles end, as (row, column) pixel positions inside the scene."""
    if method in ("naive loop", "geoseg, no overlap"):
        cuts = list(range(tile, size, tile))
        return cuts, cuts
    stride = tile - overlap
    if method == "geoseg":  # tile k spans [k * stride - overlap // 2, ... + tile)
        starts = [k * stride - overlap // 2 for k in range(-(-size // stride))]
        cuts = sorted({e for s in starts for e in (s, s + tile) if 0 < e < size})
        return cuts, cuts
    # TorchGeo: windows every stride from the left and from the bottom, past the far edges
    starts = list(range(0, size - tile + stride, stride))
    cols = sorted({e for s in starts for e in (s, s + tile) if 0 < e < size})
    return sorted(size - e for e in cols), cols


def _quality(mask: np.ndarray, truth: np.ndarray, whole: np.ndarray,
             edges: tuple[list[int], list[int]], spec: Any) -> dict[str, float]:
    from geoseg.scores import confusion_matrix, scores

    miou = scores(confusion_matrix(mask, truth, len(spec.classes)))["miou"]
    near = np.zeros(mask.shape, bool)  # within EDGE px of one of the method's tile edges
    for edge in edges[0]:
        near[max(edge - EDGE, 0):edge + EDGE, :] = True
    for edge in edges[1]:
        near[:, max(edge - EDGE, 0):edge + EDGE] = True
    same = mask == whole
    return {"miou": round(float(miou), 4), "agree_whole": round(float(same.mean()), 4),
            "agree_at_own_edges": round(float(same[near].mean()), 4)}


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
