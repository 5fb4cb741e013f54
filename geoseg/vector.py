"""Class mask → polygons → GeoPackage, in chunks, for masks of any size.

Each chunk of the mask is polygonized on its own (in parallel, by Dask). A region that a
chunk border cut leaves one piece in each chunk; the pieces' runs along the shared
border tell which continue each other (same class, overlapping run), and those are
unioned, so every 4-connected region of one class is exactly one polygon, holes kept,
whatever the chunk size. Geometry is built and merged in pixel coordinates (integers,
exact) and only then put on the map with the mask's transform.

Options, applied in this order:

* ``min_area`` (m²): a polygon smaller than this is merged into the neighbouring polygon
  with which it shares the longest border (as GDAL's sieve does), taking that polygon's
  class; one with no neighbour (only nodata around it) is dropped.
* ``simplify`` (map units): GEOS coverage simplification of all polygons together, so
  neighbours keep sharing one border (no gaps, no overlaps).
* ``classes``: keep only these classes (the others were still used by ``min_area``).

Attributes: ``class_id``, ``class_name``, ``area_m2`` and ``perimeter_m`` (planar in a
projected CRS; on the ellipsoid, with pyproj's ``Geod``, in a geographic one), and
``confidence`` with a probabilities raster: the mean over the polygon's pixels of the
probability of the class each pixel was predicted as.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import sqlite3
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import shapely

from geoseg import atomic, raster, styles
from geoseg.errors import InputError, OutputError
from geoseg.polygonize import INVALID, polygonize

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr
    from affine import Affine
    from rasterio.crs import CRS

DEFAULT_CHUNK = 2048
PROB_SCALE = 254  # probabilities COG: value / 254 (see geoseg.pipeline)
COLUMNS = ("class_id", "class_name", "area_m2", "perimeter_m", "confidence")


@dataclass(frozen=True)
class Pieces:
    """Polygons of one chunk, in pixel coordinates of the whole mask."""

    geometry: np.ndarray
    cls: np.ndarray
    pixels: np.ndarray  # pixel count of each polygon
    prob_sum: np.ndarray | None  # sum over its pixels of p(predicted class)
    edges: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class Regions:
    """One polygon per region of the whole mask (pixel coordinates) and its sums."""

    geometry: np.ndarray
    cls: np.ndarray
    pixels: np.ndarray
    prob_sum: np.ndarray | None


@dataclass(frozen=True)
class MaskInfo:
    """What vectorizing needs to know about a mask, read from its file or DataArray."""

    name: str
    height: int
    width: int
    crs: CRS | None
    transform: Affine
    class_names: list[str]  # as far as the mask names them
    colors: list[tuple[int, int, int]]


# ---- chunks --------------------------------------------------------------------------

def _chunk_pieces(framed: np.ndarray, row: int, col: int, probs: np.ndarray | None,
                  nodes: bool, transform: Affine) -> Pieces:
    """Polygonize the chunk at (row, col); ``framed`` has a one-pixel frame of its
    neighbours' classes around it (``INVALID`` outside the mask)."""
    found = polygonize(framed, nodes=nodes, frame=True)
    classes = framed[1:-1, 1:-1]
    # On the map at once: equal pixel corners give equal map coordinates in every chunk,
    # so the pieces still match exactly where they are joined.
    geometry = to_map(found.geometry, transform, offset=(col, row))
    pixels = np.rint(shapely.area(found.geometry)).astype(np.int64)
    prob_sum = None if probs is None else _prob_sums(classes, probs, found.seed)
    edges = {}
    for side, (start, stop, cls, poly) in found.edges.items():
        shift = row if side in ("left", "right") else col
        edges[side] = (start + shift, stop + shift, cls, poly)
    return Pieces(geometry, found.cls, pixels, prob_sum, edges)


def _prob_sums(classes: np.ndarray, probs: np.ndarray, seed: tuple[np.ndarray, np.ndarray]
               ) -> np.ndarray:
    """Per polygon, the sum of p(pixel's class) over its pixels (from 4-connected labels)."""
    from scipy import ndimage

    valid = classes != INVALID
    own = np.zeros(classes.shape, np.float64)
    idx = np.minimum(classes, len(probs) - 1)[None]
    own[valid] = np.take_along_axis(probs, idx, 0)[0][valid] / PROB_SCALE
    labels = np.zeros(classes.shape, np.int64)
    offset = 0
    for k in np.unique(classes[valid]):
        lab, n = ndimage.label(classes == k)
        labels[lab > 0] = lab[lab > 0] + offset
        offset += n
    sums = np.bincount(labels.ravel(), weights=own.ravel(), minlength=offset + 1)
    return sums[labels[seed]]


def drop_collinear(polygons: np.ndarray) -> np.ndarray:
    """The polygons without the vertices where an axis-parallel outline runs straight on."""
    if len(polygons) == 0:
        return polygons
    rings, poly_idx = shapely.get_rings(polygons, return_index=True)
    coords, ring_idx = shapely.get_coordinates(rings, return_index=True)
    n = len(coords)
    start = np.flatnonzero(np.r_[True, ring_idx[1:] != ring_idx[:-1]])
    stop = np.r_[start[1:], n] - 1  # the closing vertex repeats the first
    length = np.repeat(stop - start, np.diff(np.r_[start, n]))
    first = np.repeat(start, np.diff(np.r_[start, n]))
    pos = np.arange(n) - first
    prev = first + (pos - 1) % length
    nxt = first + (pos + 1) % length
    x, y = coords[:, 0], coords[:, 1]
    straight = ((x[prev] == x) & (x == x[nxt])) | ((y[prev] == y) & (y == y[nxt]))
    keep = ~straight & (pos < length)  # the closing vertex is added back by linearrings
    new_rings = shapely.linearrings(coords[keep], indices=ring_idx[keep])
    return shapely.polygons(new_rings, indices=poly_idx)


def connected(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of ``n`` nodes joined by the edges ``a[i] - b[i]``: for every
    node the smallest node of its component (label propagation with pointer jumping)."""
    label = np.arange(n)
    while True:
        low = np.minimum(label[a], label[b])
        before = label.copy()
        np.minimum.at(label, a, low)
        np.minimum.at(label, b, low)
        label = label[label]
        while not np.array_equal(label, label[label]):
            label = label[label]
        if np.array_equal(label, before):
            return label


def _links(pieces: list[list[Pieces]], first_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of global polygon ids that continue each other across a chunk border."""
    a_ids, b_ids = [], []
    rows, cols = len(pieces), len(pieces[0])
    for i in range(rows):
        for j in range(cols):
            for di, dj, side_a, side_b in ((0, 1, "right", "left"), (1, 0, "bottom", "top")):
                if i + di >= rows or j + dj >= cols:
                    continue
                a = pieces[i][j].edges[side_a]
                b = pieces[i + di][j + dj].edges[side_b]
                pa, pb = _overlapping_runs(a, b)
                a_ids.append(pa + first_id[i * cols + j])
                b_ids.append(pb + first_id[(i + di) * cols + j + dj])
    if not a_ids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a_ids), np.concatenate(b_ids)


def _overlapping_runs(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Polygon pairs whose runs (sorted, disjoint per side) overlap with the same class."""
    a_start, a_stop, a_cls, a_poly = a
    b_start, b_stop, b_cls, b_poly = b
    lo = np.searchsorted(b_stop, a_start, side="right")
    hi = np.searchsorted(b_start, a_stop, side="left")
    n = np.maximum(hi - lo, 0)
    ia = np.repeat(np.arange(len(a_start)), n)
    ib = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())
    same = a_cls[ia] == b_cls[ib]
    return a_poly[ia[same]], b_poly[ib[same]]


def _merge(pieces: list[list[Pieces]], nodes: bool, threads: int | None = None) -> Regions:
    """Join the pieces of every region cut by chunk borders: one polygon per region."""
    flat = [p for row in pieces for p in row]
    counts = np.array([len(p.geometry) for p in flat])
    first_id = np.concatenate([[0], np.cumsum(counts)[:-1]])
    geometry = np.concatenate([p.geometry for p in flat])
    n = len(geometry)
    a, b = _links(pieces, first_id)
    region = connected(n, a, b)
    # A region is listed where its first piece was (chunk order: deterministic).
    order = np.argsort(region, kind="stable")
    starts = np.flatnonzero(np.r_[True, region[order][1:] != region[order][:-1]])
    sizes = np.diff(np.r_[starts, n])
    joined = np.flatnonzero(sizes > 1)
    # The pieces share their vertices along the cut (see polygonize's frame), so GEOS's
    # coverage union joins them; it releases the GIL, so threads share the work.
    def join(k: int) -> shapely.Geometry:
        union = shapely.coverage_union_all(geometry[order[starts[k]:starts[k] + sizes[k]]])
        # Where an outline crossed the cut, it now runs straight on through a vertex that
        # only a coverage (nodes) needs.
        return union if nodes else drop_collinear(np.array([union]))[0]

    with ThreadPoolExecutor(threads or os.cpu_count()) as pool:
        unions = list(pool.map(join, joined))
    merged = geometry[order[starts]]
    merged[joined] = unions
    by_first = np.argsort(order[starts], kind="stable")
    first = order[starts][by_first]

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(region, weights=values)[region[first]]

    with_probs = flat[0].prob_sum is not None
    return Regions(
        geometry=merged[by_first],
        cls=np.concatenate([p.cls for p in flat])[first],
        pixels=np.rint(total(np.concatenate([p.pixels for p in flat]))).astype(np.int64),
        prob_sum=total(np.concatenate([p.prob_sum for p in flat])) if with_probs else None,
    )


# ---- reading the mask ----------------------------------------------------------------

def _as_classes(raw: np.ndarray, valid: np.ndarray, name: str) -> np.ndarray:
    """Class values as uint8 with ``INVALID`` where there is no data."""
    values = raw[valid]
    if values.size and (values.min() < 0 or values.max() >= INVALID):
        bad = values.min() if values.min() < 0 else values.max()
        raise InputError(f"has class value {bad}; a class mask holds 0..254 "
                         f"(255 or the nodata value for no data)", name)
    return np.where(valid, raw, INVALID).astype(np.uint8)


def _file_chunk(source: raster.Source, probs: raster.Source | None, row: int, col: int,
                height: int, width: int, nodes: bool) -> Pieces:
    with source.open() as ds:
        raw, valid = raster.read_clipped(ds, source, row - 1, col - 1, height + 2, width + 2)
    framed = _as_classes(raw[0], valid, source.name)
    prob = None
    if probs is not None:
        with probs.open() as ds:
            prob, _ = raster.read_clipped(ds, probs, row, col, height, width)
    return _chunk_pieces(framed, row, col, prob, nodes, source.transform)


def _array_chunk(block: np.ndarray, nodata: float | None, pads: tuple[tuple[int, int], ...],
                 row: int, col: int, nodes: bool, transform: Affine, name: str) -> Pieces:
    block = np.asarray(block)
    valid = np.ones(block.shape, bool) if nodata is None else block != nodata
    if np.issubdtype(block.dtype, np.floating):
        valid &= np.isfinite(block)
        block = np.where(valid, block, 0)
    framed = np.pad(_as_classes(block, valid, name), pads, constant_values=INVALID)
    return _chunk_pieces(framed, row, col, None, nodes, transform)


def _class_style(info: MaskInfo, n: int) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Names and colours of classes 0..n-1 (numbered names, a fixed palette where unknown)."""
    names = list(info.class_names) + [f"class_{i}" for i in range(len(info.class_names), n)]
    colors = [(int(c[0]), int(c[1]), int(c[2])) for c in info.colors]
    colors += [styles.fallback_color(i) for i in range(len(colors), len(names))]
    return names, colors


def _open_file_mask(path: str | os.PathLike[str], allow_no_crs: bool
                    ) -> tuple[MaskInfo, raster.Source]:
    source = raster.open_source(path, allow_no_crs=allow_no_crs)
    if len(source.bands) != 1:
        raise InputError(f"has {len(source.bands)} bands; a class mask has one", source.name)
    if not np.issubdtype(np.dtype(source.dtype), np.integer):
        raise InputError(f"holds {source.dtype} values; a class mask holds integer classes",
                         source.name)
    with source.open() as ds:
        tags = ds.tags()
        try:
            table = ds.colormap(1)
        except (ValueError, *raster.GDAL_ERRORS):
            table = {}
        band_tags = ds.tags(1)
    names = None
    with contextlib.suppress(ValueError, TypeError):
        names = [str(n) for n in json.loads(tags.get("CLASS_NAMES", "null")) or []]
    if not names:
        numbered = sorted((int(k[6:]), v) for k, v in band_tags.items()
                          if k.startswith("CLASS_") and k[6:].isdigit())
        names = [v for _, v in numbered] or None
    colors = [tuple(table[i][:3]) for i in range(len(table)) if i in table and i != INVALID]
    return MaskInfo(source.name, source.height, source.width, source.crs, source.transform,
                    names or [], colors), source


def _dataarray_info(mask: xr.DataArray) -> MaskInfo:
    import rioxarray  # noqa: F401  (registers the .rio accessor)

    if mask.ndim != 2:
        raise InputError(f"has dimensions {mask.dims}; a class mask is 2-D (y, x)", "mask")
    names = mask.attrs.get("class_names")
    if isinstance(names, str):
        with contextlib.suppress(ValueError):
            names = json.loads(names)
    names = names or mask.attrs.get("CLASS_NAMES")
    if isinstance(names, str):
        names = json.loads(names)
    transform = mask.rio.transform(recalc=False)
    colors = [tuple(c[:3]) for c in mask.attrs.get("class_colors") or []]
    return MaskInfo(str(mask.name or "mask"), mask.shape[0], mask.shape[1], mask.rio.crs,
                    transform, list(names or []), colors)


# ---- min-area, simplification, measures ----------------------------------------------

def _absorb_small(regions: Regions, area: np.ndarray, min_area: float, nodes: bool) -> Regions:
    """Merge each polygon below ``min_area`` into the neighbour it shares most border with.

    Smallest first; a merged polygon may grow past the threshold and stay. Polygons with
    no neighbour (nodata all around) are dropped.
    """
    geometry = regions.geometry.copy()
    area = area.astype(np.float64).copy()
    pixels = regions.pixels.astype(np.float64).copy()
    probs = None if regions.prob_sum is None else regions.prob_sum.copy()
    owner = np.arange(len(geometry))
    alive = np.ones(len(geometry), bool)
    tree = shapely.STRtree(regions.geometry)

    def find(i: int) -> int:
        while owner[i] != i:
            owner[i] = owner[owner[i]]
            i = owner[i]
        return i

    for s in np.argsort(area, kind="stable"):
        if area[s] >= min_area:
            break
        if not alive[s]:
            continue
        near = {find(int(j)) for j in tree.query(geometry[s], predicate="intersects")} - {s}
        near_ids = np.array(sorted(near), np.int64)
        shared = (shapely.length(shapely.intersection(shapely.boundary(geometry[s]),
                                                      shapely.boundary(geometry[near_ids])))
                  if len(near_ids) else np.zeros(0))
        alive[s] = False
        if not len(shared) or shared.max() <= 0:
            continue  # touches nothing along an edge: dropped
        t = int(near_ids[np.argmax(shared)])
        union = shapely.union(geometry[t], geometry[s])
        geometry[t] = union if nodes else drop_collinear(np.array([union]))[0]
        owner[s] = t
        area[t] += area[s]
        pixels[t] += pixels[s]
        if probs is not None:
            probs[t] += probs[s]
    keep = np.flatnonzero(alive)
    return Regions(geometry[keep], regions.cls[keep], np.rint(pixels[keep]).astype(np.int64),
                   None if probs is None else probs[keep])


def to_map(geometry: np.ndarray, t: Affine, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Pixel-space geometries placed on the map by the affine transform ``t``, after
    shifting them by whole pixels ``offset`` (so a corner has the same map coordinates
    from whichever chunk it came)."""

    def apply(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0] + offset[0], xy[:, 1] + offset[1]
        return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])

    return shapely.transform(geometry, apply)


def measure(geometry: np.ndarray, crs: CRS | None) -> tuple[np.ndarray, np.ndarray]:
    """True ground (area m², perimeter m) of polygons in map coordinates of ``crs``.

    Projected CRS: planar, in the CRS's linear unit converted to metres. Geographic CRS:
    on the CRS's ellipsoid with pyproj's ``Geod`` (edges densified to 0.01°, so that
    outlines along parallels are followed closely). No CRS: planar in map units.
    """
    if crs is None:
        return shapely.area(geometry), shapely.length(geometry)
    if not crs.is_geographic:
        factor = crs.linear_units_factor[1]
        return shapely.area(geometry) * factor**2, shapely.length(geometry) * factor
    from pyproj import CRS as ProjCRS

    geod = ProjCRS.from_user_input(crs.to_wkt()).get_geod()
    dense = shapely.segmentize(geometry, 0.01)
    area = np.empty(len(geometry))
    perimeter = np.empty(len(geometry))
    for i, g in enumerate(dense):
        a, p = geod.geometry_area_perimeter(g)
        area[i], perimeter[i] = abs(a), p
    return area, perimeter


def _ground_area(regions: Regions, info: MaskInfo) -> np.ndarray:
    """Ground area (m²) of the regions, for the min-area rule."""
    if info.crs is not None and info.crs.is_geographic:
        return measure(regions.geometry, info.crs)[0]
    t = info.transform
    factor = info.crs.linear_units_factor[1] if info.crs is not None else 1.0
    return regions.pixels * abs(t.a * t.e - t.b * t.d) * factor**2


# ---- the whole line ------------------------------------------------------------------

@dataclass
class Layer:
    """Polygons with their attributes, on the map, ready for a GeoDataFrame or a file."""

    geometry: np.ndarray
    class_id: np.ndarray
    class_names: list[str]
    colors: list[tuple[int, int, int]]
    area_m2: np.ndarray
    perimeter_m: np.ndarray
    confidence: np.ndarray | None
    crs: CRS | None

    def columns(self) -> dict[str, np.ndarray]:
        cols = {"class_id": self.class_id.astype(np.int32),
                "class_name": np.array([*self.class_names, ""], object)[self.class_id],
                "area_m2": self.area_m2, "perimeter_m": self.perimeter_m}
        if self.confidence is not None:
            cols["confidence"] = self.confidence
        return cols


def polygons(
    mask: str | os.PathLike[str] | xr.DataArray,
    *,
    probabilities: str | os.PathLike[str] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    classes: Sequence[int | str] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    allow_no_crs: bool = False,
    scheduler: str = "threads",
    workers: int | None = None,
    progress: bool = False,
) -> Layer:
    """Vectorize a class mask into a :class:`Layer` (see :func:`vectorize`)."""
    import dask

    from geoseg.cluster import check_scheduler, compute

    check_scheduler(scheduler)
    if chunk_size < 16:
        raise InputError(f"chunk size must be at least 16 pixels, not {chunk_size}")
    if min_area < 0 or simplify < 0 or not (math.isfinite(min_area) and math.isfinite(simplify)):
        raise InputError("min-area and simplify must be finite and not negative")
    nodes = simplify > 0
    if isinstance(mask, (str, os.PathLike)):
        info, source = _open_file_mask(mask, allow_no_crs)
        probs = _open_probabilities(probabilities, source) if probabilities else None
        windows = _windows(info, chunk_size)
        tasks = [dask.delayed(_file_chunk, pure=True)(source, probs, r, c, h, w, nodes)
                 for r, c, h, w in windows]
    else:
        if probabilities:
            raise InputError("probabilities can only be given with a mask file")
        info = _dataarray_info(mask)
        if info.crs is None and not allow_no_crs:
            raise InputError("has no CRS (allow it with allow_no_crs)", info.name)
        data, nodata = mask.data, mask.rio.nodata
        windows = _windows(info, chunk_size)
        tasks = []
        for r, c, h, w in windows:
            r0, c0 = max(r - 1, 0), max(c - 1, 0)
            r1, c1 = min(r + h + 1, info.height), min(c + w + 1, info.width)
            pads = ((r0 - r + 1, r + h + 1 - r1), (c0 - c + 1, c + w + 1 - c1))
            tasks.append(dask.delayed(_array_chunk, pure=True)(
                data[r0:r1, c0:c1], nodata, pads, r, c, nodes, info.transform, info.name))
    found = compute(*tasks, scheduler=scheduler, workers=workers, progress=progress)
    n_cols = len(range(0, info.width, chunk_size))
    grid = [list(found[i:i + n_cols]) for i in range(0, len(found), n_cols)]
    regions = _merge(grid, nodes, threads=workers)
    if min_area > 0 and len(regions.geometry):
        regions = _absorb_small(regions, _ground_area(regions, info), min_area, nodes)
    geometry = regions.geometry
    if nodes and len(geometry):
        geometry = shapely.coverage_simplify(geometry, simplify, simplify_boundary=True)
    n_classes = int(regions.cls.max()) + 1 if len(regions.cls) else 0
    names, colors = _class_style(info, max(n_classes, len(info.class_names)))
    keep = np.ones(len(geometry), bool)
    if classes is not None:
        keep = np.isin(regions.cls, _class_ids(classes, names))
    geometry = geometry[keep]
    area, perimeter = measure(geometry, info.crs)
    confidence = None
    if regions.prob_sum is not None:
        confidence = regions.prob_sum[keep] / np.maximum(regions.pixels[keep], 1)
    return Layer(geometry, regions.cls[keep], names, colors, area, perimeter, confidence,
                 info.crs)


def _windows(info: MaskInfo, size: int) -> list[tuple[int, int, int, int]]:
    return [(r, c, min(size, info.height - r), min(size, info.width - c))
            for r in range(0, info.height, size) for c in range(0, info.width, size)]


def _class_ids(classes: Sequence[int | str], names: list[str]) -> list[int]:
    ids = []
    for c in classes:
        if isinstance(c, (int, np.integer)) or (isinstance(c, str) and c.strip().isdigit()):
            ids.append(int(c))
        elif c in names:
            ids.append(names.index(c))
        else:
            raise InputError(f"unknown class {c!r} (classes: {', '.join(names)})")
    return ids


def _open_probabilities(path: str | os.PathLike[str], mask: raster.Source) -> raster.Source:
    probs = raster.open_source(path, allow_no_crs=mask.crs is None)
    if (probs.width, probs.height) != (mask.width, mask.height) or not probs.transform.almost_equals(
            mask.transform):
        raise InputError(f"does not lie on the grid of {mask.name} (size or transform differ)",
                         probs.name)
    if probs.dtype != "uint8":
        raise InputError(f"holds {probs.dtype}; expected geoseg's uint8 probabilities "
                         f"(value / {PROB_SCALE})", probs.name)
    return probs


def vectorize(
    mask: str | os.PathLike[str] | xr.DataArray,
    dst: str | os.PathLike[str] | None = None,
    *,
    probabilities: str | os.PathLike[str] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    classes: Sequence[int | str] | None = None,
    layer: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    overwrite: bool = False,
    allow_no_crs: bool = False,
    scheduler: str = "threads",
    workers: int | None = None,
    progress: bool = False,
) -> gpd.GeoDataFrame:
    """Polygons of a class mask (a mask file or a georeferenced DataArray, e.g. from
    :func:`geoseg.predict`): one per 4-connected region of one class, holes kept.

    Columns: ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m`` and, with a
    ``probabilities`` raster (from ``predict``), ``confidence``. ``min_area`` (m²) merges
    smaller polygons into their neighbour, ``simplify`` (map units) simplifies all
    polygons together without gaps or overlaps, ``classes`` (ids or names) keeps a
    subset. With ``dst`` the polygons are also written to a GeoPackage (with its QGIS
    style embedded, and a ``.qml`` beside it).
    """
    if dst is not None:
        atomic.check_outputs([dst, qml_path(dst)], overwrite=overwrite)
    out = polygons(mask, probabilities=probabilities, min_area=min_area, simplify=simplify,
                   classes=classes, chunk_size=chunk_size, allow_no_crs=allow_no_crs,
                   scheduler=scheduler, workers=workers, progress=progress)
    if dst is not None:
        write_gpkg(out, dst, layer_name=layer, overwrite=overwrite)
    return to_geodataframe(out)


def to_geodataframe(layer: Layer) -> gpd.GeoDataFrame:
    import geopandas as gpd

    crs = _crs_text(layer.crs)
    return gpd.GeoDataFrame(layer.columns(), geometry=gpd.GeoSeries(layer.geometry, crs=crs))


def _crs_text(crs: CRS | None) -> str | None:
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()


def qml_path(gpkg: str | os.PathLike[str]) -> Path:
    return Path(gpkg).with_suffix(".qml")


def write_gpkg(layer: Layer, dst: str | os.PathLike[str], *, layer_name: str | None = None,
               overwrite: bool = False) -> None:
    """Write the polygons to a GeoPackage atomically, QGIS style embedded and beside it."""
    import pyogrio.raw

    name = layer_name or Path(dst).stem
    qml = styles.categorized_qml(layer.class_names, layer.colors, field="class_id")
    cols = layer.columns()
    with contextlib.ExitStack() as outputs:
        tmp = outputs.enter_context(atomic.atomic_path(dst, overwrite=overwrite))
        tmp.unlink()  # GDAL creates the GeoPackage itself
        if os.environ.get("SOURCE_DATE_EPOCH"):
            pyogrio.set_gdal_config_options({"OGR_CURRENT_DATE": _now()})
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                pyogrio.raw.write(
                    tmp, shapely.to_wkb(layer.geometry), list(cols.values()), list(cols),
                    layer=name, driver="GPKG", geometry_type="Polygon",
                    crs=_crs_text(layer.crs), promote_to_multi=False,
                    layer_options={"SPATIAL_INDEX": "YES"})
            styles.embed_gpkg_style(tmp, name, qml, _now())
        except (OSError, sqlite3.Error, RuntimeError, ValueError) as exc:
            raise OutputError(f"could not be written ({exc})", dst) from None
        tmp_qml = outputs.enter_context(atomic.atomic_path(qml_path(dst), overwrite=overwrite))
        tmp_qml.write_text(qml)


def _now() -> str:
    """GeoPackage timestamp: now, or SOURCE_DATE_EPOCH for reproducible files."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch
            else datetime.datetime.now(datetime.timezone.utc))
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
