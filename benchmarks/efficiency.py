"""Pipeline efficiency: end-to-end ``predict`` against the model's own forward time.

Side by side in one process, on one generated 4-band uint16 scene with data everywhere:

* **model only**: the network's forward pass alone (no reading, normalizing, softmax or
  copies back), in the runtime the pipeline runs it in (ONNX Runtime on a CPU for the
  default model, torch on a GPU), on exactly the batches the pipeline runs (same tile
  size, batch size, device and tiles, band-side repeats included), run two ways: from one
  thread, and from one thread per pool worker as the pipeline runs it. The faster way is
  the limit.
* **end to end**: ``geoseg.predict(scene, "mask.tif")``: reading, tiling, normalizing,
  inference, blending, the argmax, streaming blocks to disk, and the COG with overviews.

Both in input megapixels per second; efficiency = end to end / model only (targets: 0.85
on CPU, 0.8 on GPU). Rounds alternate (model, pipeline, model, …) and each side keeps its
best round, so a noisy shared machine hurts both alike. Each stage is then timed alone on
the same tiles, to show where the time beyond the model goes.

    python -m benchmarks efficiency                     # 4096² on the CPU (~2 min, 2 cores)
    python -m benchmarks efficiency --device cuda --size 16384 --batch-size 32
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import save


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks efficiency")
    parser.add_argument("--size", type=int, default=4096, help="scene side in pixels")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tile-size", type=int)
    parser.add_argument("--overlap", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--workers", type=int, help="threads of the pool (default: all cores)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scene", type=Path, help="an existing scene to use (default: "
                        "generate one of --size, 4-band uint16, data everywhere)")
    args = parser.parse_args(argv)
    from dask.system import CPU_COUNT

    import geoseg
    from geoseg import sources, synthetic
    from geoseg.inference import cached_predictor, model_reference
    from geoseg.prediction import prediction_options

    spec, handle = model_reference("default")
    options = prediction_options(spec, args.tile_size, args.overlap, args.batch_size,
                                 args.device, False, "threads", args.workers)
    predictor = cached_predictor(handle, options.device, False)
    pool = args.workers or CPU_COUNT  # the size of the pool dask's threads scheduler makes
    with tempfile.TemporaryDirectory() as tmp:
        scene = args.scene or synthetic.write_sample_data(tmp, size=args.size, seed=3,
                                                          nodata_corner=False)[0]
        warm, _ = synthetic.write_sample_data(Path(tmp, "warm"), size=512, seed=4)
        source = sources.open_source(scene)
        megapixels = source.grid.pixels / 1e6
        batches = _batches(source, handle, len(spec.classes), options)
        mask = Path(tmp, "mask.tif")

        def predict(path: Path, out: Path) -> float:
            started = time.perf_counter()
            geoseg.predict(path, out, tile_size=options.tile_size, overlap=options.overlap,
                           batch_size=options.batch_size, device=options.device,
                           workers=args.workers, overwrite=True)
            return time.perf_counter() - started

        predict(warm, Path(tmp, "warm.tif"))  # imports, thread pool, kernels chosen
        model_rounds, pipeline_rounds = [], []
        for k in range(args.rounds):
            model_rounds.append(_model_only(predictor, [len(b) for b in batches], options, pool))
            pipeline_rounds.append(predict(scene, mask))
            print(f"round {k + 1}: model only {min(model_rounds[-1].values()):.2f} s, "
                  f"end to end {pipeline_rounds[-1]:.2f} s", file=sys.stderr)
        stages = _stages(source, predictor, batches, options, pool, mask, Path(tmp))
    model_ways = {way: min(r[way] for r in model_rounds) for way in model_rounds[0]}
    limit_way = min(model_ways, key=model_ways.__getitem__)
    model_s, end_s = model_ways[limit_way], min(pipeline_rounds)
    efficiency = model_s / end_s
    target = 0.85 if options.device == "cpu" else 0.8
    result = {
        "benchmark": "efficiency", "date": time.strftime("%Y-%m-%d"), **_machine(options.device),
        "scene": f"{source.grid.width} × {source.grid.height}",
        "megapixels": round(megapixels, 2),
        "tile_size": options.tile_size, "overlap": options.overlap,
        "batch_size": options.batch_size, "device": options.device,
        "pool_threads": pool, "torch_threads_per_task": options.threads,
        "tiles": sum(len(b) for b in batches), "batches": len(batches),
        "model_only_s": {k: round(v, 3) for k, v in model_ways.items()},
        "model_only_best": limit_way, "model_only_mpx_per_s": round(megapixels / model_s, 3),
        "end_to_end_s": round(end_s, 3), "end_to_end_mpx_per_s": round(megapixels / end_s, 3),
        "rounds": {"model_only_s": [{k: round(v, 3) for k, v in r.items()}
                                    for r in model_rounds],
                   "end_to_end_s": [round(s, 3) for s in pipeline_rounds]},
        "efficiency": round(efficiency, 3), "target": target,
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
    }
    _print(result, megapixels)
    return save(f"efficiency-{options.device}", result)


def _batches(source: Any, handle: Any, n_classes: int, options: Any) -> list[list[Any]]:
    """The tile batches of the pipeline's write graph, read off the graph itself."""
    from geoseg import pipeline

    graph = pipeline.probabilities(source, handle, n_classes, options, sweep=True).dask
    return [task[3] for layer in graph.layers.values() for key, task in layer.items()
            if isinstance(key, tuple) and str(key[0]).startswith("geoseg-infer")]


def _in_pool(threads: int, work: Callable[[int], object], items: int) -> float:
    """Seconds to run ``work(k)`` for every k < ``items`` on a pool of ``threads``."""
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(items)))
    return time.perf_counter() - started


def _model_only(predictor: Any, sizes: list[int], options: Any, pool: int) -> dict[str, float]:
    """Seconds for the network alone over batches of ``sizes``, two ways."""
    import torch

    from geoseg.inference import torch_threads

    layout = torch.channels_last if predictor.runtime.channels_last else torch.contiguous_format
    inputs: dict[int, Any] = {
        n: torch.randn(n, len(predictor.spec.bands), options.tile_size, options.tile_size,
                       device=predictor.device).contiguous(memory_format=layout)
        for n in set(sizes)}
    if predictor.on_host:  # ONNX Runtime is fed numpy arrays
        inputs = {n: x.numpy() for n, x in inputs.items()}

    def forward(n: int, threads: int | None = None) -> None:  # in the pipeline's runtime
        with torch.inference_mode():
            predictor.runtime(inputs[n], threads)

    def from_pool(k: int) -> None:  # as a pipeline task: its torch threads, its CUDA stream
        with torch_threads(options.threads), predictor.stream():
            forward(sizes[k], options.threads)
            if predictor.cuda:
                torch.cuda.current_stream().synchronize()

    for n in inputs:
        forward(n)
    _in_pool(pool, from_pool, min(len(sizes), 2 * pool))  # warm the pool's threads too
    _sync(predictor)
    started = time.perf_counter()
    for n in sizes:
        forward(n)
    _sync(predictor)
    one = time.perf_counter() - started
    return {f"1 thread × {torch.get_num_threads()}": one,
            f"{pool} threads × {options.threads or 1}": _in_pool(pool, from_pool, len(sizes))}


def _sync(predictor: Any) -> None:
    if predictor.cuda:
        import torch

        torch.cuda.synchronize(predictor.device)


def _stages(source: Any, predictor: Any, batches: list[list[Any]], options: Any, pool: int,
            mask: Path, tmp: Path) -> dict[str, float]:
    """Each stage of the pipeline alone, on the same tiles and the same pool of threads."""
    from geoseg import cog, pipeline
    from geoseg.inference import FIXED_POINT, torch_threads
    from geoseg.tiling import TileGrid

    grid = TileGrid(*source.grid.shape, options.tile_size, options.overlap)

    def read(batch: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        return pipeline.read_tiles(source, grid, batch)

    sample = {len(b): read(b) for b in batches}
    weights = {n: np.stack([grid.blend_weights(grid.tile(1, 1))] * n) for n in sample}

    run = predictor.predict_proba
    if predictor.cuda:  # as the pipeline runs it there: through the device's one thread
        from geoseg.feeder import DeviceFeeder

        run = DeviceFeeder(predictor).predict_proba

    def infer(k: int) -> None:
        data, valid = sample[len(batches[k])]
        with torch_threads(options.threads):
            run(data, valid, weights[len(batches[k])], dtype=pipeline.TILE_DTYPE,
                threads=options.threads)

    # Blending reads ≤ 9 tiles' probabilities per block: one made-up batch serves them all.
    n_classes = len(predictor.spec.classes)
    probs = np.random.default_rng(0).random((9, n_classes, grid.size, grid.size), np.float32)
    probs = (probs * FIXED_POINT).astype(pipeline.TILE_DTYPE)  # as model tasks give them
    valid = np.ones((9, grid.size, grid.size), bool)
    blocks = [(i, j) for i in range(grid.shape[0]) for j in range(grid.shape[1])]

    def blend(k: int) -> None:
        i, j = blocks[k]
        lookup = {(t.row_index, t.col_index): (0, n)
                  for n, (t, _, _) in enumerate(grid.tiles_over_block(i, j))}
        pipeline._argmax_block(pipeline._blend_block(grid, i, j, lookup, [(probs, valid)]))

    started = time.perf_counter()
    cog.write_cog(mask, tmp / "again.tif")
    cog_s = time.perf_counter() - started
    return {"read tiles": _in_pool(pool, lambda k: read(batches[k]), len(batches)),
            "model + normalize + softmax + copies": _in_pool(pool, infer, len(batches)),
            "blend + argmax": _in_pool(pool, blend, len(blocks)),
            "COG with overviews (from the mask)": cog_s}


def _machine(device: str) -> dict[str, object]:
    import platform

    import torch

    out: dict[str, object] = {"cpus": os.cpu_count(), "cpu": platform.processor() or
                              platform.machine(), "torch": torch.__version__}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(device)
        out["gpus"] = torch.cuda.device_count()
    return out


def _print(r: dict[str, Any], megapixels: float) -> None:
    print(f"scene {r['scene']} ({megapixels:.1f} Mpx), tile {r['tile_size']}, "
          f"overlap {r['overlap']}, batch {r['batch_size']}, {r['device']}"
          f"{' (' + r['gpu'] + ')' if 'gpu' in r else ''}, {r['pool_threads']} pool threads; "
          f"{r['tiles']} tiles in {r['batches']} batches")
    print(f"{'':<44} {'seconds':>8} {'Mpx/s':>8}")
    for way, s in r["model_only_s"].items():
        best = " (limit)" if way == r["model_only_best"] else ""
        print(f"{'model only, ' + way + best:<44} {s:>8.2f} {megapixels / s:>8.2f}")
    print(f"{'end to end (geoseg.predict)':<44} {r['end_to_end_s']:>8.2f} "
          f"{r['end_to_end_mpx_per_s']:>8.2f}")
    print(f"efficiency {r['efficiency']:.2f} (target ≥ {r['target']})")
    print("each stage alone, same tiles and threads:")
    for stage, s in r["stages_s"].items():
        print(f"  {stage:<42} {s:>8.2f} {megapixels / s:>8.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
