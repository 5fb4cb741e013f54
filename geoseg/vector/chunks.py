"""A class mask read chunk by chunk, each chunk polygonized on its own and put on the map.

A chunk is read with a one-pixel frame of its neighbours' classes, so the pieces of a
region that a chunk border cuts get matching vertices along the cut, and their runs along
each border say which pieces continue each other (see :mod:`geoseg.vector.stitch`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg import maskfile
from geoseg.errors import InputError
from geoseg.grid import Grid
from geoseg.maskfile import NODATA, ClassTable
from geoseg.sources import Source, read_clipped
from geoseg.vector.polygonize import polygonize

if TYPE_CHECKING:
    import xarray as xr
    from affine import Affine

Edges = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class MaskInfo:
    """What vectorizing needs to know about a mask, read from its file or DataArray."""

    name: str
    grid: Grid
    classes: ClassTable  # as far as the mask names and colours them


@dataclass(frozen=True)
class Pieces:
    """Polygons of one chunk, on the map, with what joining them across borders needs."""

    geometry: np.ndarray
    cls: np.ndarray
    pixels: np.ndarray  # pixel count of each polygon
    prob_sum: np.ndarray | None  # sum over its pixels of p(predicted class)
    edges: Edges


def chunk_tasks(mask: str | os.PathLike[str] | xr.DataArray,
                probabilities: str | os.PathLike[str] | None, chunk_size: int, nodes: bool,
                allow_no_crs: bool) -> tuple[MaskInfo, list[list[partial[Pieces]]]]:
    """The mask's info and its chunks as calls that each give :class:`Pieces`, in rows of
    chunks (``chunk_size`` pixels a side); ``nodes``: see
    :func:`~geoseg.vector.polygonize.segments`. :func:`chunk_runner` computes them."""
    if isinstance(mask, (str, os.PathLike)):
        source, classes = maskfile.open_mask_source(mask, allow_no_crs=allow_no_crs)
        info = MaskInfo(source.name, source.grid, classes)
        probs = maskfile.open_probabilities(probabilities, source) if probabilities else None
        tasks = [partial(_file_chunk, source, probs, r, c, h, w, nodes)
                 for r, c, h, w in windows(info.grid, chunk_size)]
    else:
        if probabilities:
            raise InputError("probabilities can only be given with a mask file")
        info = dataarray_info(mask)
        if info.grid.crs is None and not allow_no_crs:
            raise InputError("has no CRS (allow it with ${allow_no_crs=True})", info.name)
        data, nodata = mask.data, mask.rio.nodata
        tasks = []
        height, width = info.grid.shape
        for r, c, h, w in windows(info.grid, chunk_size):
            r0, c0 = max(r - 1, 0), max(c - 1, 0)
            r1, c1 = min(r + h + 1, height), min(c + w + 1, width)
            pads = ((r0 - r + 1, r + h + 1 - r1), (c0 - c + 1, c + w + 1 - c1))
            tasks.append(partial(_array_chunk, data[r0:r1, c0:c1], nodata, pads, r, c, nodes,
                                 info.grid.transform, info.name))
    n_cols = len(range(0, info.grid.width, chunk_size))
    return info, [tasks[i:i + n_cols] for i in range(0, len(tasks), n_cols)]


@contextlib.contextmanager
def chunk_runner(rows: list[list[partial[Pieces]]], scheduler: str, workers: int | None,
                 progress: bool) -> Iterator[tuple[Callable[[list[Any]], list[Any]],
                                                   list[list[Any]]]]:
    """A function that computes a list of chunk tasks, and the rows of tasks to give it.

    On a scheduler that runs in this process (``threads``, ``sync``) the chunks are
    polygonized by this process's threads without Dask, whose import and graphs cost
    more than a small mask takes; Dask still reads a lazy (Dask-backed) mask. Otherwise
    the tasks become Dask tasks for the scheduler (:func:`geoseg.cluster.session`).
    """
    from geoseg.cluster import IN_PROCESS, session

    total = sum(map(len, rows))
    lazy_input = any(hasattr(a, "__dask_graph__") for row in rows for t in row for a in t.args)
    if scheduler in IN_PROCESS and not lazy_input:
        with _in_process(1 if scheduler == "sync" else workers or os.cpu_count() or 1,
                         total, progress) as run:
            yield run, rows
        return
    import dask

    tasks = [[dask.delayed(t.func, pure=True)(*t.args) for t in row] for row in rows]
    with session(scheduler, workers, total=total, progress=progress, desc="vectorize") as run:
        yield run, tasks


@contextlib.contextmanager
def _in_process(threads: int, total: int, progress: bool
                ) -> Iterator[Callable[[list[partial[Pieces]]], list[Pieces]]]:
    """Chunk calls computed by a pool of ``threads`` (polygonizing releases the GIL), with
    a progress bar over ``total`` chunks if asked."""
    from concurrent.futures import ThreadPoolExecutor

    bar = None
    if progress:
        from geoseg.progress import bar as progress_bar

        bar = progress_bar(total, "vectorize")

    def run(calls: list[partial[Pieces]]) -> list[Pieces]:
        out = list(pool.map(lambda call: call(), calls))
        if bar is not None:
            bar.update(len(calls))
        return out

    try:
        with ThreadPoolExecutor(threads) as pool:
            yield run
    finally:
        if bar is not None:
            bar.close()


def windows(grid: Grid, size: int) -> list[tuple[int, int, int, int]]:
    """``(row, col, height, width)`` of the chunks of ``grid``, row by row."""
    return [(r, c, min(size, grid.height - r), min(size, grid.width - c))
            for r in range(0, grid.height, size) for c in range(0, grid.width, size)]


def dataarray_info(mask: xr.DataArray) -> MaskInfo:
    """The grid and classes of a mask held as a georeferenced DataArray."""
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    if mask.ndim != 2:
        raise InputError(f"has dimensions {mask.dims}; a class mask is 2-D (y, x)", "mask")
    transform = mask.rio.transform(recalc=True)  # from the coordinates: never stale
    grid = Grid(mask.rio.crs, transform, mask.shape[0], mask.shape[1])
    return MaskInfo(str(mask.name or "mask"), grid, maskfile.array_classes(mask))


def _file_chunk(source: Source, probs: Source | None, row: int, col: int,
                height: int, width: int, nodes: bool) -> Pieces:
    with source.open() as ds:
        raw, valid = read_clipped(ds, source, row - 1, col - 1, height + 2, width + 2)
    framed = maskfile.as_classes(raw[0], valid, source.name)
    prob = None
    if probs is not None:
        with probs.open() as ds:
            prob, _ = read_clipped(ds, probs, row, col, height, width)
        top = framed[1:-1, 1:-1][framed[1:-1, 1:-1] != NODATA]
        if top.size and top.max() >= len(prob):
            raise InputError(f"has {len(prob)} bands but the mask has class {top.max()}",
                             probs.name)
    return _chunk_pieces(framed, row, col, prob, nodes, source.grid.transform)


def _array_chunk(block: np.ndarray, nodata: float | None, pads: tuple[tuple[int, int], ...],
                 row: int, col: int, nodes: bool, transform: Affine, name: str) -> Pieces:
    block = np.asarray(block)
    valid = np.ones(block.shape, bool) if nodata is None else block != nodata
    if np.issubdtype(block.dtype, np.floating):  # e.g. read with mask_and_scale: NaN = nodata
        valid &= np.isfinite(block)
        block = np.where(valid, block, 0)
        if (block != np.round(block)).any():
            raise InputError("holds fractional values; a class mask holds integer classes",
                             name)
        block = block.astype(np.int64)
    elif not np.issubdtype(block.dtype, np.integer):
        raise InputError(f"holds {block.dtype} values; a class mask holds integer classes", name)
    framed = np.pad(maskfile.as_classes(block, valid, name), pads, constant_values=NODATA)
    return _chunk_pieces(framed, row, col, None, nodes, transform)


def _chunk_pieces(framed: np.ndarray, row: int, col: int, probs: np.ndarray | None,
                  nodes: bool, transform: Affine) -> Pieces:
    """Polygonize the chunk at (row, col); ``framed`` has a one-pixel frame of its
    neighbours' classes around it (``NODATA`` outside the mask)."""
    # On the map at once: equal pixel corners give equal map coordinates in every chunk,
    # so the pieces still match exactly where they are joined.
    found = polygonize(framed, nodes=nodes, frame=True,
                       place=lambda xy: map_coords(xy, transform, (col, row)))
    classes = framed[1:-1, 1:-1]
    prob_sum = None if probs is None else _prob_sums(classes, probs, found.seed)
    edges = {}
    for side, (start, stop, cls, poly) in found.edges.items():
        shift = row if side in ("left", "right") else col
        edges[side] = (start + shift, stop + shift, cls, poly)
    return Pieces(found.geometry, found.cls, found.pixels, prob_sum, edges)


def _prob_sums(classes: np.ndarray, probs: np.ndarray, seed: tuple[np.ndarray, np.ndarray]
               ) -> np.ndarray:
    """Per polygon, the sum of p(pixel's class) over its pixels (from 4-connected labels)."""
    from scipy import ndimage

    valid = classes != NODATA
    own = np.zeros(classes.shape, np.float64)
    idx = np.where(valid, classes, 0)[None]
    own[valid] = maskfile.probability_of(np.take_along_axis(probs, idx, 0)[0][valid])
    labels = np.zeros(classes.shape, np.int64)
    offset = 0
    for k in np.unique(classes[valid]):
        lab, n = ndimage.label(classes == k)
        labels[lab > 0] = lab[lab > 0] + offset
        offset += n
    sums = np.bincount(labels.ravel(), weights=own.ravel(), minlength=offset + 1)
    return sums[labels[seed]]


def map_coords(xy: np.ndarray, t: Affine, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Pixel coordinates ``(n, 2)`` on the map by the affine transform ``t``, after shifting
    them by whole pixels ``offset`` (so a corner has the same map coordinates from
    whichever chunk it came)."""
    x, y = xy[:, 0] + offset[0], xy[:, 1] + offset[1]
    return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])
