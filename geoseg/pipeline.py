"""The Dask graph from a raster to a blended class mask, and the ``predict`` API.

Graph: ``infer`` tasks read a batch of overlapping tiles, run the model and return
weight-multiplied probabilities; ``blend`` tasks build each output block (one stride of the
:class:`~geoseg.tiling.TileGrid`) from the ≤ 9 tiles that cover it. Writing streams each
block into a scratch GeoTIFF from the worker that computed it, so memory is bounded by
tile size × batch size × workers, never by the raster, on every scheduler.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg import atomic, raster, styles
from geoseg.errors import GeoSegError, InputError, warn
from geoseg.inference import (
    ModelHandle,
    cached_predictor,
    check_weights,
    model_reference,
    torch_threads,
)
from geoseg.model import Model, ModelSpec
from geoseg.tiling import TileGrid

if TYPE_CHECKING:
    import dask.array as da
    import xarray as xr

NODATA = styles.NODATA_CLASS
PROB_NODATA = 255
PROB_SCALE = 254  # probability p is stored as round(p * 254); 255 is nodata
IN_PROCESS = ("threads", "sync")  # schedulers whose tasks run in the calling process
BAND_PIXELS = 8192  # width of a band of the sweep (bounds memory for wide rasters)
BAND_MIN_TILES = 8  # but never under 8 tiles: each band predicts 2 side tiles again
LOOKAHEAD_ROWS = 2  # tile (r, c) waits for blocks (r - 2, c ± 1) (block row i needs tile row i + 1)
CONTEXT_STRIDES = 4  # default overlap: this many strides of the network's coarsest level
TILE_DTYPE = np.float16  # tile results between tasks: half the memory, blended in float32


@dataclass(frozen=True)
class PredictOptions:
    """How to tile and run the model (sizes in pixels)."""

    tile_size: int
    overlap: int
    batch_size: int = 1
    device: str = "cpu"
    tta: bool = False
    threads: int | None = None  # torch intra-op threads per task (None: leave torch's own)


def _infer_batch(source: raster.Source, grid: TileGrid, ids: Sequence[tuple[int, int]],
                 handle: ModelHandle, options: PredictOptions,
                 after: object = None) -> tuple[np.ndarray, np.ndarray]:
    """Read, normalize and predict a batch of tiles; returns (weighted probs as
    :data:`TILE_DTYPE`, valid masks).

    ``after`` only orders the task behind the blocks it waits for; its value is unused.
    """
    predictor = cached_predictor(handle, options.device, options.tta)
    data, valid = read_tiles(source, grid, ids)
    if not valid.any():  # all nodata (e.g. outside a scene's footprint): nothing to predict
        n_classes = len(predictor.spec.classes)
        return np.zeros((len(ids), n_classes, grid.size, grid.size), TILE_DTYPE), valid
    weights = np.stack([grid.blend_weights(grid.tile(i, j)) for i, j in ids])
    with torch_threads(options.threads):
        probs = predictor.predict_proba(data, valid, weights, dtype=TILE_DTYPE)
    return probs, valid


def read_tiles(source: raster.Source, grid: TileGrid,
               ids: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """A batch of tiles in the source's own integer dtype (float32 otherwise):
    ``(B, bands, size, size)`` data and ``(B, size, size)`` valid masks."""
    tiles = [grid.tile(i, j) for i, j in ids]
    with source.open() as ds:
        reads = [raster.read_window(ds, source, t.row, t.col, t.size, t.size, native=True)
                 for t in tiles]
    return np.stack([d for d, _ in reads]), np.stack([v for _, v in reads])


def _blend_task(grid: TileGrid, i: int, j: int,
                batch_of: dict[tuple[int, int], tuple[Any, int]]) -> tuple[Any, ...]:
    """The task for output block (i, j), fed by the batches that hold its covering tiles."""
    covering = [(t.row_index, t.col_index) for t, _, _ in grid.tiles_over_block(i, j)]
    needed = sorted({batch_of[tid][0] for tid in covering})
    # Where each covering tile sits among the batches this block receives.
    lookup = {tid: (needed.index(batch_of[tid][0]), batch_of[tid][1]) for tid in covering}
    return (_blend_block, grid, i, j, lookup, needed)


def _done(_: object) -> None:
    """A marker: finishes when its block exists, and lets go of the block's data."""
    return None


def _waits_for(done_name: str, row_done: str, r: int, batch: Sequence[tuple[int, int]],
               block_cols: range, band_done: list[Any] | None) -> list[Any] | None:
    """The blocks a batch of tile row ``r`` waits for: those :data:`LOOKAHEAD_ROWS` rows
    above it and one column either side, and the whole row of blocks one row further up.
    So the next row starts beside the last tiles of this one (no idle cores at the end of
    each row), yet no part of the band runs more than a row ahead of the rest: a few rows
    of tile results are alive at any time. A band's first rows wait for the band before."""
    back = r - LOOKAHEAD_ROWS
    if back < 0:
        return band_done
    lo, hi = batch[0][1] - 1, batch[-1][1] + 1
    near = [(done_name, back, j) for j in block_cols if lo <= j <= hi]
    return near + ([(row_done, block_cols.start, back - 1)] if back >= 1 else band_done or [])


def _blend_block(grid: TileGrid, i: int, j: int, lookup: dict[tuple[int, int], tuple[int, int]],
                 batches: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Output block (i, j): blended class probabilities ``(C, h, w)``, NaN where nodata."""
    h, w = grid.chunks[0][i], grid.chunks[1][j]
    n_classes = batches[0][0].shape[1]
    total = np.zeros((n_classes, h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    valid = None
    for tile, (ts_r, ts_c), (bs_r, bs_c) in grid.tiles_over_block(i, j):
        b, k = lookup[tile.row_index, tile.col_index]
        probs, tile_valid = batches[b]
        total[:, bs_r, bs_c] += probs[k][:, ts_r, ts_c]
        weight[bs_r, bs_c] += grid.blend_weights(tile)[ts_r, ts_c]
        if (tile.row_index, tile.col_index) == (i, j):
            valid = tile_valid[k][ts_r, ts_c]
    total /= weight
    total[:, ~valid] = np.nan
    return total


def probabilities(source: raster.Source, handle: ModelHandle, n_classes: int,
                  options: PredictOptions, *, sweep: bool = False) -> da.Array:
    """Lazy blended class probabilities ``(classes, height, width)`` float32 (NaN = nodata).

    With ``sweep`` (for writing the whole raster) the graph sweeps it in bands about
    :data:`BAND_PIXELS` wide, row by row: tiles at a band's sides are predicted again by
    the next band (2 tiles per band of 17 at 512 px tiles, none for rasters narrower than
    one band) and each batch of tiles waits for the blocks :data:`LOOKAHEAD_ROWS` rows
    above it (see :func:`_waits_for`). So the tile results alive at any time are a few
    rows of one band, whatever the raster's size. Without it every block depends only on
    its neighbouring tiles, so a window of the lazy array computes only the tiles it needs.
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    grid = TileGrid(source.height, source.width, options.tile_size, options.overlap)
    token = tokenize(source, grid, handle, options, sweep)
    infer_name, blend_name = f"geoseg-infer-{token}", f"geoseg-blend-{token}"
    done_name, row_done = f"geoseg-done-{token}", f"geoseg-rowdone-{token}"
    # The handle is one graph key, so a distributed worker receives an in-memory model once.
    model_key = f"geoseg-model-{token}"
    dsk: dict[Any, Any] = {model_key: handle}
    rows, cols = grid.shape
    band = max(BAND_MIN_TILES, BAND_PIXELS // grid.stride) if sweep else cols
    band_done: list[Any] | None = None  # the marker of the previous band's last block row
    for first in range(0, cols, band):
        block_cols = range(first, min(first + band, cols))
        tile_cols = range(max(first - 1, 0), min(first + band + 1, cols))
        batch_of: dict[tuple[int, int], tuple[Any, int]] = {}
        for r in range(rows + 1):
            if r < rows:
                ids = [(r, c) for c in tile_cols]
                for k in range(0, len(ids), options.batch_size):
                    key = (infer_name, first, r, k)
                    batch = ids[k:k + options.batch_size]
                    batch_of.update({tid: (key, n) for n, tid in enumerate(batch)})
                    after = (_waits_for(done_name, row_done, r, batch, block_cols, band_done)
                             if sweep else None)
                    dsk[key] = (_infer_batch, source, grid, batch, model_key, options, after)
            if r >= 1:  # blend block row r - 1: its tiles (rows r-2 .. r) are all there now
                i = r - 1
                for j in block_cols:
                    dsk[(blend_name, 0, i, j)] = _blend_task(grid, i, j, batch_of)
                    if sweep:  # a marker that the block is made (it holds no data)
                        dsk[(done_name, i, j)] = (_done, (blend_name, 0, i, j))
                if sweep:  # and one that the band's whole row of blocks is
                    dsk[(row_done, first, i)] = (_done, [(done_name, i, j) for j in block_cols])
        band_done = [(row_done, first, rows - 1)]
    graph = HighLevelGraph.from_collections(blend_name, dsk, dependencies=())
    return da.Array(graph, blend_name, chunks=((n_classes,), *grid.chunks), dtype=np.float32)


def class_mask(probs: da.Array) -> da.Array:
    """Most probable class per pixel as uint8; 255 where the probabilities are NaN (nodata)."""
    return probs.map_blocks(_argmax_block, drop_axis=0, dtype=np.uint8)


def _argmax_block(p: np.ndarray) -> np.ndarray:
    # A running maximum over the few class planes: ~1.5x faster than np.argmax(axis=0) on
    # (C, h, w), and the first class wins ties as there. NaN (nodata) never compares larger.
    out = np.zeros(p.shape[1:], np.uint8)
    best = p[0].copy()
    larger = np.empty(p.shape[1:], bool)
    for c in range(1, len(p)):
        np.greater(p[c], best, out=larger)
        np.copyto(out, np.uint8(c), where=larger)
        np.fmax(best, p[c], out=best)
    out[np.isnan(p[0])] = NODATA
    return out


def scaled_probabilities(probs: da.Array) -> da.Array:
    """Probabilities as uint8 ``round(p * 254)``, 255 for nodata (GDAL scale = 1/254)."""
    return probs.map_blocks(_scale_block, dtype=np.uint8)


def _scale_block(p: np.ndarray) -> np.ndarray:
    out = np.rint(np.nan_to_num(p, nan=0.0) * PROB_SCALE).astype(np.uint8)
    out[:, np.isnan(p[0])] = PROB_NODATA
    return out


def as_dataarray(array: da.Array, source: raster.Source, *, name: str, nodata: int,
                 band_dim: str | None = None) -> xr.DataArray:
    """Wrap a lazy array with the source's georeferencing (pixel-centre x/y coordinates)."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    t = source.transform
    xs = t.c + t.a * (np.arange(source.width) + 0.5)
    ys = t.f + t.e * (np.arange(source.height) + 0.5)
    dims = ("y", "x") if band_dim is None else (band_dim, "y", "x")
    coords = {"y": ys, "x": xs}
    out = xr.DataArray(array, dims=dims, coords=coords, name=name)
    if source.crs is not None:
        out = out.rio.write_crs(source.crs)
    return out.rio.write_transform(t).rio.write_nodata(nodata, encoded=False)


def predict(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    dst: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | Model = "default",
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    bands: Sequence[int] | None = None,
    tta: bool = False,
    probabilities_path: str | os.PathLike[str] | None = None,
    quicklook: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    scheduler: str = "threads",
    workers: int | None = None,
    allow_no_crs: bool = False,
    progress: bool = False,
) -> xr.DataArray:
    """Predict a land-cover class mask for a raster (a file, a VRT or a mosaic of tiles).

    Returns a lazy, dask-backed ``xarray.DataArray`` (uint8, nodata 255) with the source's
    CRS and transform. With ``dst`` the mask is written as a Cloud-Optimized GeoTIFF (plus a
    ``.qml`` style beside it, and optionally per-class probabilities and a PNG quicklook) and
    the returned array reads that file lazily.
    """
    from geoseg.cluster import check_scheduler

    check_scheduler(scheduler)
    if dst is None and (probabilities_path or quicklook):
        raise InputError("probabilities and quicklook outputs need a mask path (dst)")
    targets = [] if dst is None else [dst, qml_path(dst), probabilities_path, quicklook]
    with atomic.outputs(targets, overwrite=overwrite):  # a failure leaves no new folder
        source = raster.open_source(src, bands=bands, allow_no_crs=allow_no_crs)
        spec, handle = model_reference(model)
        options = _options(spec, tile_size, overlap, batch_size, device, tta, scheduler, workers,
                           scene=(source.height, source.width))
        if dst is None:  # computed later by any scheduler: leave torch's threads as they are
            options = dataclasses.replace(options, threads=None)
        check_bands(source, spec)
        check_weights(handle, options.device, options.tta, in_process=scheduler in IN_PROCESS)
        probs = probabilities(source, handle, len(spec.classes), options, sweep=dst is not None)
        mask = class_mask(probs)
        if dst is None:
            out = as_dataarray(mask, source, name="class", nodata=NODATA)
        else:
            write_outputs(source, spec, mask, probs, Path(dst), overwrite=overwrite,
                          probabilities_path=probabilities_path, quicklook=quicklook,
                          scheduler=scheduler, workers=workers, progress=progress)
            out = open_mask(dst)
    # What geoseg.vectorize (and a reader of the array) needs to name and colour classes.
    out.attrs.update(class_names=list(spec.class_names),
                     class_colors=[list(c) for c in spec.colors])
    return out


def _options(spec: ModelSpec, tile_size: int | None, overlap: int | None, batch_size: int | None,
             device: str, tta: bool, scheduler: str = "threads",
             workers: int | None = None, scene: tuple[int, int] | None = None) -> PredictOptions:
    """The prediction settings; ``scene`` (height, width) lets a scene smaller than a tile
    be one tile of its own size (rounded up to the model's stride) instead of a padded one."""
    from geoseg.inference import select_device, task_threads

    device = select_device(device)
    if batch_size is None:  # CPUs are fastest on one tile at a time; GPUs want full batches
        batch_size = 1 if device == "cpu" else 16
    size = tile_size or spec.tile_size
    if size % spec.size_multiple:
        raise InputError(f"tile size {size} must be a multiple of {spec.size_multiple} "
                         f"for this model")
    if size > 8192:
        raise InputError(f"tile size {size} is too large (at most 8192 pixels)")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    # Tile borders are poor for a few strides of the coarsest level, whatever the tile size.
    context = CONTEXT_STRIDES * spec.size_multiple
    ov = min(size // 4, max(32, context)) if overlap is None else overlap
    if scene is not None and max(scene) <= size - ov:  # one tile covers it all anyway
        size = -(-max(scene) // spec.size_multiple) * spec.size_multiple
        ov = 0
    TileGrid(1, 1, size, ov)  # validates tile size and overlap
    threads = task_threads(scheduler, workers)
    return PredictOptions(size, ov, batch_size, device, tta, threads)


def check_bands(source: raster.Source, spec: ModelSpec) -> None:
    want = len(spec.bands)
    if len(source.bands) != want:
        raise InputError(
            f"has {len(source.bands)} band{'s' * (len(source.bands) != 1)} but the model needs {want} "
            f"({', '.join(spec.bands)}); choose them with --bands", source.name)


def qml_path(mask_path: str | os.PathLike[str]) -> Path:
    return Path(mask_path).with_suffix(".qml")


def write_outputs(source: raster.Source, spec: ModelSpec, mask: da.Array, probs: da.Array,
                  dst: Path, *, overwrite: bool, probabilities_path: str | os.PathLike[str] | None,
                  quicklook: str | os.PathLike[str] | None, scheduler: str,
                  workers: int | None, progress: bool) -> None:
    """Compute the graph into scratch GeoTIFFs, then turn them into COGs atomically."""
    import dask.array as da

    from geoseg.cluster import compute

    pixels = source.width * source.height  # a scratch file holds a byte per pixel and band
    needs = {dst.parent: (pixels, dst)}
    if probabilities_path:
        folder = Path(probabilities_path).parent
        before = needs.get(folder, (0, probabilities_path))[0]
        needs[folder] = (before + pixels * len(spec.classes), probabilities_path)
    raster.check_free_space(needs)
    scratch_mask = atomic.temp_sibling(dst, ".scratch.tif")
    scratch_probs = (atomic.temp_sibling(probabilities_path, ".scratch.tif")
                     if probabilities_path else None)
    try:
        raster.create_scratch(scratch_mask, source, count=1, dtype="uint8", nodata=NODATA,
                              name=dst)
        arrays, targets = [mask], [raster.WindowWriter(scratch_mask, dst)]
        if scratch_probs is not None and probabilities_path is not None:
            raster.create_scratch(scratch_probs, source, count=len(spec.classes),
                                  dtype="uint8", nodata=PROB_NODATA, name=probabilities_path)
            arrays.append(scaled_probabilities(probs))
            targets.append(raster.WindowWriter(scratch_probs, probabilities_path))
        stored = da.store(arrays, targets, lock=False, compute=False)
        compute(stored, scheduler=scheduler, workers=workers, progress=progress)
        if not raster.has_data(scratch_mask, name=dst):
            warn("has no valid pixels (all nodata): the mask is all nodata", source.name)
        with raster.write_errors(dst):
            _describe_mask(scratch_mask, spec, source)
        if scratch_probs is not None and probabilities_path is not None:
            with raster.write_errors(probabilities_path):
                _describe_probabilities(scratch_probs, spec)
        # All outputs are finished as temp files first and replaced together at the end.
        with atomic.together(overwrite=overwrite) as outputs:
            tmp_mask = outputs.path(dst)
            raster.write_cog(scratch_mask, tmp_mask)
            outputs.path(qml_path(dst)).write_text(styles.paletted_qml(spec.class_names,
                                                                       spec.colors))
            if scratch_probs is not None and probabilities_path is not None:
                raster.write_cog(scratch_probs, outputs.path(probabilities_path),
                                 overview_resampling="average")
            if quicklook:
                write_quicklook(tmp_mask, outputs.path(quicklook))
    finally:
        for p in (scratch_mask, scratch_probs):
            if p is not None:
                atomic.remove_with_sidecars(p)


def _describe_mask(path: Path, spec: ModelSpec, source: raster.Source) -> None:
    import rasterio

    with rasterio.Env(**raster.gdal_env()), rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, styles.colormap(spec.colors))
        ds.set_band_description(1, "class")
        ds.update_tags(CLASS_NAMES=json.dumps(spec.class_names), MODEL=spec.name,
                       SOURCE=os.path.basename(source.name))
        ds.update_tags(1, **{f"CLASS_{i}": n for i, n in enumerate(spec.class_names)})


def _describe_probabilities(path: Path, spec: ModelSpec) -> None:
    import rasterio

    with rasterio.Env(**raster.gdal_env()), rasterio.open(path, "r+") as ds:
        for b, name in enumerate(spec.class_names, start=1):
            ds.set_band_description(b, f"p({name})")
        ds.scales = [1.0 / PROB_SCALE] * ds.count
        ds.update_tags(CLASS_NAMES=json.dumps(spec.class_names),
                       SCALE=f"probability = value / {PROB_SCALE}; {PROB_NODATA} = nodata")


def write_quicklook(mask_path: str | os.PathLike[str], png: str | os.PathLike[str], *,
                    max_size: int = 1024) -> None:
    """An RGBA PNG of the mask in its class colors, at most ``max_size`` pixels a side."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning

    with rasterio.Env(**raster.gdal_env()), rasterio.open(mask_path) as ds:
        scale = max(ds.width / max_size, ds.height / max_size, 1.0)
        shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        classes = ds.read(1, out_shape=shape, resampling=Resampling.nearest)
        table = ds.colormap(1)
    lut = np.zeros((256, 4), np.uint8)
    for value, rgba in table.items():
        lut[value] = rgba
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a picture, on purpose
        with rasterio.open(png, "w", driver="PNG", width=shape[1], height=shape[0], count=4,
                           dtype="uint8") as out:
            out.write(np.moveaxis(lut[classes], -1, 0))


def open_mask(path: str | os.PathLike[str]) -> xr.DataArray:
    """A written mask COG as a lazy DataArray (chunked by its internal tiles)."""
    import rioxarray

    try:
        arr = rioxarray.open_rasterio(path, chunks={"band": 1, "y": 512, "x": 512},
                                     mask_and_scale=False).squeeze("band", drop=True)
    except Exception as exc:  # rasterio raises several unrelated types here
        raise GeoSegError(f"cannot open the written mask ({exc})", path) from None
    return arr.rename("class")
