"""The Dask graph from a raster to blended class probabilities and a class mask.

Graph: ``infer`` tasks read a batch of overlapping tiles, run the model and return
weight-multiplied probabilities; ``blend`` tasks build each output block (one stride of the
:class:`~geoseg.tiling.TileGrid`) from the ≤ 9 tiles that cover it. For writing, the graph
sweeps the raster in bands, row by row, and each batch of tiles waits until the batches
a fixed window before it are used up: so the tile results alive at once are at most
:func:`tile_results_bound` batches, by the graph's construction, on every scheduler.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg import maskfile, sources
from geoseg.inference import FIXED_POINT, ModelHandle, cached_predictor, torch_threads
from geoseg.tiling import TileGrid

if TYPE_CHECKING:
    import dask.array as da
    import xarray as xr

    from geoseg.grid import Grid

BAND_PIXELS = 8192  # width of a band of the sweep (bounds memory for wide rasters)
BAND_MIN_TILES = 8  # but never under 8 tiles: each band predicts 2 side tiles again
REACH_ROWS = 2  # a batch is used up once the batches two rows (and two tiles) on are done
TILE_DTYPE = np.uint16  # tile results between tasks: fixed point (inference.FIXED_POINT is 1)


@dataclass(frozen=True)
class MaskWith:
    """A second model run on the same tiles (``--mask-with``), its probabilities blended
    as the model's are: where its most probable of ``planes`` classes is one of
    ``classes`` (ids), the outputs are nodata. It reads the bands ``start:stop`` of the
    tiles read for all."""

    handle: ModelHandle
    classes: tuple[int, ...]
    planes: int
    start: int
    stop: int
    context: int = 0  # its own card's (its tiles blend as they would alone)


@dataclass(frozen=True)
class PredictOptions:
    """How to tile and run the model (sizes in pixels)."""

    tile_size: int
    overlap: int
    batch_size: int = 1
    device: str = "cpu"
    tta: bool = False
    threads: int | None = None  # torch intra-op threads per task (None: leave torch's own)
    at_once: int | None = None  # tasks the scheduler runs at once (None: unknown, a cluster)
    feeder: bool | None = None  # one thread owns the device (None: on CUDA only)
    context: int = 0  # the network's reach in from a tile's edge, kept out of the blend
    masks: tuple[MaskWith, ...] = ()  # mask models, reading the bands after the model's
    bands: int | None = None  # the model's bands, the first of those read (None: all)


def _infer_batch(source: sources.Source, grid: TileGrid, ids: Sequence[tuple[int, int]],
                 handle: ModelHandle, options: PredictOptions,
                 after: object = None, row_batch: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Read, normalize and predict a batch of tiles; returns (weighted probs as
    :data:`TILE_DTYPE`, valid masks).

    ``after`` only orders the task behind the marker that the batches a window before it
    are used up (see :func:`probabilities`); its value is unused. ``row_batch``: the size
    of the other batches of its row, which a device feeder pads a shorter one to.
    """
    predictor = cached_predictor(handle, options.device, options.tta)
    tiles, valid = read_tiles(source, grid, ids)
    if not valid.any():  # all nodata (e.g. outside a scene's footprint): nothing to predict
        n_planes = len(predictor.spec.classes) + sum(m.planes for m in options.masks)
        return np.zeros((len(ids), n_planes, grid.size, grid.size), TILE_DTYPE), valid
    n = options.bands or tiles.shape[1]
    data, scale, offset = tiles[:, :n], source.scale[:n], source.offset[:n]
    weights = np.stack([grid.blend_weights(grid.tile(i, j)) for i, j in ids])
    if options.feeder if options.feeder is not None else predictor.cuda:
        from geoseg.feeder import feeder_for

        probs = feeder_for(handle, predictor.device, options.tta).predict_proba(
            data, valid, weights, dtype=TILE_DTYPE, threads=options.threads,
            scale=scale, offset=offset, pad_to=row_batch)
    else:
        with torch_threads(options.threads):
            probs = predictor.predict_proba(data, valid, weights, dtype=TILE_DTYPE,
                                            threads=options.threads, scale=scale, offset=offset)
    if options.masks:  # their weighted probabilities, after the model's (see _blend_block)
        probs = np.concatenate([probs, *mask_probabilities(source, tiles, valid, grid, ids,
                                                           options)], axis=1)
    return probs, valid


def mask_probabilities(source: sources.Source, tiles: np.ndarray, valid: np.ndarray,
                       grid: TileGrid, ids: Sequence[tuple[int, int]],
                       options: PredictOptions) -> list[np.ndarray]:
    """Each mask model's weighted probabilities on the tiles (as :data:`TILE_DTYPE`), from
    its own bands, blended as they would be alone (its own context); the model's own
    input is left as it was, so the pixels beside a cloud are mapped as without the mask."""
    out = []
    for mask in options.masks:
        own = dataclasses.replace(grid, context=mask.context)
        weights = np.stack([own.blend_weights(own.tile(i, j)) for i, j in ids])
        predictor = cached_predictor(mask.handle, options.device, False)
        part = slice(mask.start, mask.stop)
        with torch_threads(options.threads):
            out.append(predictor.predict_proba(
                tiles[:, part], valid, weights, dtype=TILE_DTYPE, threads=options.threads,
                scale=source.scale[part], offset=source.offset[part]))
    return out


def row_batches(tiles: int, batch_size: int) -> int:
    """The size of the batches a row of ``tiles`` tiles is split into: as many batches as
    ``batch_size`` needs, of equal size (the last shorter by less than their number), so
    that a GPU sees one batch shape per row instead of a full one and a remainder."""
    return -(-tiles // -(-tiles // batch_size))


def read_tiles(source: sources.Source, grid: TileGrid,
               ids: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """A batch of tiles in the source's own integer dtype (float32 otherwise):
    ``(B, bands, size, size)`` data and ``(B, size, size)`` valid masks. Past the raster's
    edge a tile holds the scene mirrored, valid where what it mirrors is (no block uses
    those pixels; the network sees the scene go on instead of a flat edge)."""
    tiles = [grid.tile(i, j) for i, j in ids]
    with source.open() as ds:
        reads = [sources.read_window(ds, source, t.row, t.col, t.size, t.size, native=True,
                                     outside_valid=True)
                 for t in tiles]
    return np.stack([d for d, _ in reads]), np.stack([v for _, v in reads])


def _blend_task(grid: TileGrid, i: int, j: int, batch_of: dict[tuple[int, int], tuple[Any, int]],
                masks: tuple[tuple[int, tuple[int, ...]], ...] = ()
                ) -> tuple[tuple[Any, ...], list[Any]]:
    """The task for output block (i, j), and the batches that hold its covering tiles."""
    covering = [(t.row_index, t.col_index) for t, _, _ in grid.tiles_over_block(i, j)]
    needed = sorted({batch_of[tid][0] for tid in covering})
    # Where each covering tile sits among the batches this block receives.
    lookup = {tid: (needed.index(batch_of[tid][0]), batch_of[tid][1]) for tid in covering}
    return (_blend_block, grid, i, j, lookup, needed, masks), needed


def _done(_: object) -> None:
    """A marker: finishes when the tasks it is given have (it holds no data)."""
    return None


def _blend_block(grid: TileGrid, i: int, j: int, lookup: dict[tuple[int, int], tuple[int, int]],
                 batches: list[tuple[np.ndarray, np.ndarray]],
                 masks: tuple[tuple[int, tuple[int, ...]], ...] = ()) -> np.ndarray:
    """Output block (i, j): blended class probabilities ``(C, h, w)``, NaN where nodata.

    With ``masks`` ((planes, class ids) of each mask model, whose probabilities follow the
    model's in the tiles): nodata too where a mask model's most probable class is one of
    its ids, and a last plane, 1 at those pixels, for counting them."""
    h, w = grid.chunks[0][i], grid.chunks[1][j]
    n_planes = batches[0][0].shape[1]
    total = np.zeros((n_planes, h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    valid = None  # from the block's own tile, which covers the whole block
    for tile, (ts_r, ts_c), (bs_r, bs_c) in grid.tiles_over_block(i, j):
        b, k = lookup[tile.row_index, tile.col_index]
        probs, tile_valid = batches[b]
        total[:, bs_r, bs_c] += probs[k][:, ts_r, ts_c]
        weight[bs_r, bs_c] += grid.blend_weights(tile)[ts_r, ts_c]
        if (tile.row_index, tile.col_index) == (i, j):
            valid = tile_valid[k][ts_r, ts_c]
    assert valid is not None, (i, j)
    weight *= FIXED_POINT
    total /= weight
    if not masks:
        total[:, ~valid] = np.nan
        return total
    n_classes = n_planes - sum(planes for planes, _ in masks)
    masked = np.zeros((h, w), bool)
    start = n_classes
    for planes, ids in masks:
        masked |= np.isin(total[start:start + planes].argmax(axis=0), ids)
        start += planes
    masked &= valid
    out = total[:n_classes + 1]  # the first mask plane becomes the count's
    out[:n_classes, ~(valid & ~masked)] = np.nan
    out[n_classes] = masked
    return out


@dataclass(frozen=True)
class TaskResources:
    """A layer annotation: ``resources`` for the tasks whose name starts with ``prefix``,
    none for the others (the scheduler skips a None)."""

    prefix: str
    resources: tuple[tuple[str, float], ...]

    def __call__(self, key: Any) -> dict[str, float] | None:
        name = key[0] if isinstance(key, tuple) else key
        return dict(self.resources) if str(name).startswith(self.prefix) else None


def probabilities(source: sources.Source, handle: ModelHandle, n_classes: int,
                  options: PredictOptions, *, sweep: bool = False,
                  resources: dict[str, float] | None = None) -> da.Array:
    """Lazy blended class probabilities ``(classes, height, width)`` float32 (NaN = nodata;
    with ``options.masks``, one plane more, last: 1 where a mask model made a pixel nodata).

    With ``sweep`` (for writing the whole raster) the graph sweeps it in bands about
    :data:`BAND_PIXELS` wide, row by row (tiles at a band's sides are predicted again by
    the next band: 2 tiles per band of 17 at 512 px tiles, none for rasters narrower than
    one band), and a batch of tiles starts only once every batch a window of
    :func:`tile_results_bound` batches before it in that order has been used by all its
    blocks: so at most that many tile results are alive, whatever the raster's size and
    whenever the scheduler lets them go. Without it every block depends only on its
    neighbouring tiles, so a window of the lazy array computes only the tiles it needs.
    ``resources`` (e.g. ``{"GPU": 1}``): what the model tasks need of a distributed
    worker (an annotation: it holds when the graph is not fused, see
    :func:`geoseg.cluster.compute`).
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

    grid = TileGrid(source.grid.height, source.grid.width, options.tile_size, options.overlap,
                    options.context)
    token = tokenize(source, grid, handle, options, sweep)
    infer_name, blend_name = f"geoseg-infer-{token}", f"geoseg-blend-{token}"
    done_name, used_name = f"geoseg-done-{token}", f"geoseg-used-{token}"
    # The handle is one graph key, so a distributed worker receives an in-memory model once.
    model_key = f"geoseg-model-{token}"
    dsk: dict[Any, Any] = {model_key: handle}
    rows, cols = grid.shape
    band = sweep_band(grid) if sweep else cols
    window = tile_results_bound(grid, options.batch_size, options.at_once)
    order: list[Any] = []  # the batches in sweep order
    users: dict[Any, list[Any]] = {}  # the markers of the blocks that use each batch
    for first in range(0, cols, band):
        block_cols = range(first, min(first + band, cols))
        tile_cols = range(max(first - 1, 0), min(first + band + 1, cols))
        batch_of: dict[tuple[int, int], tuple[Any, int]] = {}
        for r in range(rows + 1):
            if r < rows:
                ids = [(r, c) for c in tile_cols]
                step = row_batches(len(ids), options.batch_size)
                for k in range(0, len(ids), step):
                    key = (infer_name, first, r, k)
                    batch = ids[k:k + step]
                    batch_of.update({tid: (key, n) for n, tid in enumerate(batch)})
                    n = len(order)
                    after = [(used_name, n - window)] if sweep and n >= window else None
                    dsk[key] = (_infer_batch, source, grid, batch, model_key, options, after, step)
                    order.append(key)
            if r >= 1:  # blend block row r - 1: its tiles (rows r-2 .. r) are all there now
                i = r - 1
                for j in block_cols:
                    dsk[(blend_name, 0, i, j)], needed = _blend_task(
                        grid, i, j, batch_of, tuple((m.planes, m.classes) for m in options.masks))
                    if sweep:  # a marker that the block is made (on its worker, no data)
                        dsk[(done_name, i, j)] = (_done, (blend_name, 0, i, j))
                        for key in needed:
                            users.setdefault(key, []).append((done_name, i, j))
    if sweep:  # batch n is used up once its blocks are made, and so are those before it
        for n, key in enumerate(order):
            dsk[(used_name, n)] = (_done, users.get(key, []) + ([(used_name, n - 1)] if n else []))
    annotations = None
    if resources:  # the model tasks only: blending needs no GPU
        annotations = {"resources": TaskResources(infer_name, tuple(sorted(resources.items())))}
    graph = HighLevelGraph({blend_name: MaterializedLayer(dsk, annotations=annotations)},
                           {blend_name: set()})
    # With mask models, a last plane flags the pixels they made nodata (see _blend_block).
    planes = n_classes + (1 if options.masks else 0)
    return da.Array(graph, blend_name, chunks=((planes,), *grid.chunks), dtype=np.float32)


def sweep_band(grid: TileGrid) -> int:
    """Block columns in one band of the sweep: about :data:`BAND_PIXELS` wide (never under
    :data:`BAND_MIN_TILES`), spread evenly over the raster so that no band is a thin
    remainder (each band predicts its 2 side tiles again: a band of 1 column after one of
    18, at 8192² and 512 px tiles, cost 10 % more tiles). At most 1.5× the nominal width."""
    nominal = max(BAND_MIN_TILES, BAND_PIXELS // grid.stride)
    cols = grid.shape[1]
    return -(-cols // max(1, round(cols / nominal)))


def tile_results_bound(grid: TileGrid, batch_size: int, at_once: int | None = None) -> int:
    """The most batches of tile results alive at once (computed, and still to be used by
    a block) while a sweep writes the raster, whatever the scheduler and its timing.

    It is the sweep's window (see :func:`probabilities`). A block needs tiles from its row
    and the rows either side, so a batch is used up once the batches up to
    :data:`REACH_ROWS` rows and two tiles after it are done: the window reaches one batch
    beyond, so the sweep never waits on itself, and then as many batches as the scheduler
    runs tasks ``at_once`` (up to a row of the widest band, all of it on a cluster), so that
    its workers always have a batch to work on.
    """
    per_row = -(-min(sweep_band(grid) + 2, grid.shape[1]) // batch_size)
    reach = REACH_ROWS * per_row + 2  # batches, at most, up to the last one a batch's blocks need
    return reach + 1 + min(at_once or per_row, per_row)


def class_mask(probs: da.Array) -> da.Array:
    """Most probable class per pixel as uint8; 255 where the probabilities are NaN (nodata)."""
    import dask.array as da

    return da.map_blocks(_argmax_block, probs, drop_axis=0, dtype=np.uint8)


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
    out[np.isnan(p[0])] = maskfile.NODATA
    return out


def scaled_probabilities(probs: da.Array) -> da.Array:
    """Probabilities as the probabilities file stores them (see
    :func:`geoseg.maskfile.scale_probabilities`)."""
    import dask.array as da

    return da.map_blocks(maskfile.scale_probabilities, probs, dtype=np.uint8)


def as_dataarray(array: da.Array, grid: Grid, *, name: str, nodata: int,
                 band_dim: str | None = None) -> xr.DataArray:
    """Wrap a lazy array with the grid's georeferencing (pixel-centre x/y coordinates)."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)
    import xarray as xr

    xs, ys = grid.pixel_centres()
    dims = ("y", "x") if band_dim is None else (band_dim, "y", "x")
    coords = {"y": ys, "x": xs}
    out = xr.DataArray(array, dims=dims, coords=coords, name=name)
    if grid.crs is not None:
        out = out.rio.write_crs(grid.crs)
    return out.rio.write_transform(grid.transform).rio.write_nodata(nodata, encoded=False)


