"""Class mask → polygons → GeoPackage, in chunks, for masks of any size.

Each chunk of the mask is polygonized on its own (in parallel, by Dask), a row of chunks
at a time. A region that a chunk border cut leaves one piece in each chunk; the pieces'
runs along the shared border tell which continue each other (same class, overlapping
run), and those are unioned, so every 4-connected region of one class is exactly one
polygon, holes kept, whatever the chunk size. Vertices are whole-pixel corners put on the
map by one formula (see :func:`map_coords`), so the pieces of a region meet exactly.
Finished polygons leave as soon as their region is complete (:func:`iter_layers`).

Options, applied in this order:

* ``min_area`` (m²): a polygon smaller than this is merged, smallest first, into the
  neighbouring polygon with which it shares the longest border, taking that polygon's
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
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geoseg import atomic, raster, styles
from geoseg.errors import InputError, OutputError, warn
from geoseg.polygonize import INVALID, polygonize

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr
    from affine import Affine
    from rasterio.crs import CRS

DEFAULT_CHUNK = 2048
MIN_CHUNK = 16
PROB_SCALE = 254  # probabilities COG: value / 254 (see geoseg.pipeline)


@dataclass(frozen=True)
class Pieces:
    """Polygons of one chunk, on the map, with what joining them across borders needs."""

    geometry: np.ndarray
    cls: np.ndarray
    pixels: np.ndarray  # pixel count of each polygon
    prob_sum: np.ndarray | None  # sum over its pixels of p(predicted class)
    edges: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class Regions:
    """One polygon per region of the whole mask (on the map) and its sums."""

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

    valid = classes != INVALID
    own = np.zeros(classes.shape, np.float64)
    idx = np.where(valid, classes, 0)[None]
    # 255 is the probabilities' nodata: where the mask has data it cannot occur, but a
    # foreign raster could hold it; it must not count above 1.
    own[valid] = np.minimum(np.take_along_axis(probs, idx, 0)[0][valid], PROB_SCALE) / PROB_SCALE
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


def _regions(run: Callable[[list[Any]], list[Any]], rows: list[list[Any]], nodes: bool,
             threads: int | None = None) -> Iterator[Regions]:
    """Compute the chunk tasks row by row and yield, after each row, the regions that are
    complete: one polygon each, its pieces from every chunk joined.

    A piece that touches no chunk border is a whole region at once. The others wait,
    with the pieces they continue across borders, until no piece of their region touches
    the bottom of the last row computed; only those wait in memory, so memory follows the
    regions that cross one row of chunks, not the size of the mask.
    """
    pending: Regions | None = None  # pieces of open regions, with their ids
    pending_ids = np.zeros(0, np.int64)
    joins = (pending_ids, pending_ids)  # each open piece and the first of its region
    above: list[tuple[np.ndarray, ...]] = []  # bottom runs of the row above, global ids
    next_id = 0
    # The next row computes while this one is joined and written (by the consumer).
    with ThreadPoolExecutor(1) as ahead:
        coming = ahead.submit(run, rows[0]) if rows else None
        for i in range(len(rows)):
            row: list[Pieces] = coming.result()  # type: ignore[union-attr]
            last_row = i == len(rows) - 1
            if not last_row:
                coming = ahead.submit(run, rows[i + 1])
            first = np.cumsum([0] + [len(p.geometry) for p in row])[:-1] + next_id
            next_id += sum(len(p.geometry) for p in row)
            a, b = _row_links(row, first, above, joins)
            above = [(*p.edges["bottom"][:3], p.edges["bottom"][3] + first[j])
                     for j, p in enumerate(row)]
            at_border = [np.unique(np.concatenate([e[3] for e in p.edges.values()])) for p in row]
            inner = [np.setdiff1d(np.arange(len(p.geometry)), t) for p, t in zip(row, at_border,
                                                                                   strict=True)]
            yield _concat([_take(p, k) for p, k in zip(row, inner, strict=True)])
            # The pieces at a border, and those still open from above, form regions.
            ids = np.concatenate([pending_ids, *(t + f for t, f in zip(at_border, first,
                                                                        strict=True))])
            waiting = _concat([*([pending] if pending is not None else []),
                               *(_take(p, t) for p, t in zip(row, at_border, strict=True))])
            if len(ids) == 0:
                continue
            region = connected(len(ids), np.searchsorted(ids, a), np.searchsorted(ids, b))
            still_open = np.zeros(len(ids), bool)
            if not last_row:
                open_ids = np.concatenate([p.edges["bottom"][3] + f for p, f in zip(row, first,
                                                                                     strict=True)])
                still_open[np.searchsorted(ids, open_ids)] = True
            region_open = np.zeros(len(ids), bool)
            region_open[region[still_open]] = True
            keep = region_open[region]
            yield _join(_take(waiting, np.flatnonzero(~keep)), region[~keep], nodes, threads)
            pending, pending_ids = _take(waiting, np.flatnonzero(keep)), ids[keep]
            joins = (pending_ids, ids[region[keep]])


def _row_links(row: list[Pieces], first: np.ndarray, above: list[tuple[np.ndarray, ...]],
               joins: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of piece ids (global) that are one region: pieces continuing each other from
    chunk to chunk along the row and from the row ``above``, and the ``joins`` already
    known between open pieces."""
    a, b = [joins[0]], [joins[1]]
    for j in range(len(row) - 1):
        pa, pb = _overlapping_runs(row[j].edges["right"], row[j + 1].edges["left"])
        a.append(pa + first[j])
        b.append(pb + first[j + 1])
    for j, bottom in enumerate(above):
        pa, pb = _overlapping_runs(bottom, row[j].edges["top"])
        a.append(pa)
        b.append(pb + first[j])
    return np.concatenate(a), np.concatenate(b)


def _take(r: Regions | Pieces, idx: np.ndarray) -> Regions:
    return Regions(r.geometry[idx], r.cls[idx], r.pixels[idx],
                   None if r.prob_sum is None else r.prob_sum[idx])


def _concat(parts: Sequence[Regions]) -> Regions:
    with_probs = bool(parts) and parts[0].prob_sum is not None
    return Regions(np.concatenate([p.geometry for p in parts] or [np.empty(0, object)]),
                   np.concatenate([p.cls for p in parts] or [np.zeros(0, np.int32)]),
                   np.concatenate([p.pixels for p in parts] or [np.zeros(0, np.int64)]),
                   np.concatenate([p.prob_sum for p in parts]) if with_probs else None)


def _join(pieces: Regions, region: np.ndarray, nodes: bool, threads: int | None,
          cls: np.ndarray | None = None) -> Regions:
    """One polygon per region label, its pieces joined, listed by its first piece.

    With ``cls`` (indexed by label) the region takes that class, and pieces are joined by
    a full union: they need not share their vertices (polygons merged by min-area)."""
    if len(region) == 0:
        return pieces
    order = np.argsort(region, kind="stable")
    starts = np.flatnonzero(np.r_[True, region[order][1:] != region[order][:-1]])
    sizes = np.diff(np.r_[starts, len(region)])
    joined = np.flatnonzero(sizes > 1)

    def join(k: int) -> shapely.Geometry:
        # The pieces share their vertices along the cut (see polygonize's frame), so
        # GEOS's coverage union joins them (it releases the GIL: threads share the work).
        parts = pieces.geometry[order[starts[k]:starts[k] + sizes[k]]]
        union = shapely.coverage_union_all(parts) if cls is None else shapely.union_all(parts)
        # Where an outline crossed the cut, it now runs straight on through a vertex that
        # only a coverage (nodes) needs.
        return union if nodes else drop_collinear(np.array([union]))[0]

    with ThreadPoolExecutor(threads or os.cpu_count()) as pool:
        unions = list(pool.map(join, joined))
    firsts = order[starts]
    merged = pieces.geometry[firsts]
    merged[joined] = unions
    by_first = np.argsort(firsts, kind="stable")
    label = region[firsts[by_first]]

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(region, weights=values)[label]

    return Regions(merged[by_first],
                   pieces.cls[firsts[by_first]] if cls is None else cls[label],
                   np.rint(total(pieces.pixels)).astype(np.int64),
                   None if pieces.prob_sum is None else total(pieces.prob_sum))


# ---- reading the mask ----------------------------------------------------------------

def _as_classes(raw: np.ndarray, valid: np.ndarray, name: str) -> np.ndarray:
    """Class values as uint8 with ``INVALID`` where there is no data."""
    if raw.dtype == np.uint8:
        bad = (raw == INVALID) & valid
        if bad.any():
            raise InputError(f"has class value {INVALID} where it has data; a class mask "
                             f"holds 0..254 and marks no data by its nodata value (set it "
                             f"with: gdal_edit.py -a_nodata {INVALID} FILE)", name)
        return np.where(valid, raw, np.uint8(INVALID))
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
        top = framed[1:-1, 1:-1][framed[1:-1, 1:-1] != INVALID]
        if top.size and top.max() >= len(prob):
            raise InputError(f"has {len(prob)} bands but the mask has class {top.max()}",
                             probs.name)
    return _chunk_pieces(framed, row, col, prob, nodes, source.transform)


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
    framed = np.pad(_as_classes(block, valid, name), pads, constant_values=INVALID)
    return _chunk_pieces(framed, row, col, None, nodes, transform)


def _class_style(info: MaskInfo, n: int) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Names and colours of classes 0..n-1 (numbered names, a fixed palette where unknown)."""
    names = list(info.class_names) + [f"class_{i}" for i in range(len(info.class_names), n)]
    colors = [(int(c[0]), int(c[1]), int(c[2])) for c in info.colors[:len(names)]]
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
        names, table = raster.class_table(ds)
    colors = []  # of classes 0, 1, ... as far as the table goes without a gap
    while len(colors) in table:
        colors.append(table[len(colors)])
    return MaskInfo(source.name, source.height, source.width, source.crs, source.transform,
                    names, colors), source


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
    transform = mask.rio.transform(recalc=True)  # from the coordinates: never stale
    colors = [tuple(c[:3]) for c in mask.attrs.get("class_colors") or []]
    return MaskInfo(str(mask.name or "mask"), mask.shape[0], mask.shape[1], mask.rio.crs,
                    transform, list(names or []), colors)


# ---- min-area, simplification, measures ----------------------------------------------

def _borders(geometry: np.ndarray, which: np.ndarray, pixel: tuple[float, float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Who borders the polygons ``which`` along an edge, and over how many pixel edges.

    Every pixel edge of their outlines gets a point a quarter pixel outside it; the
    polygon containing that point is the neighbour there. The neighbours are found by
    querying the points with every polygon prepared once (fast even for huge outlines),
    never by intersecting outlines. Returns (polygon, neighbour, pixel edges) triples.
    """
    px, py = abs(pixel[0]), abs(pixel[1])
    oriented = shapely.orient_polygons(geometry[which])  # outside is on the right
    rings, owner = shapely.get_rings(oriented, return_index=True)
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    same_ring = ring[1:] == ring[:-1]
    start, end, seg_ring = coords[:-1][same_ring], coords[1:][same_ring], ring[:-1][same_ring]
    d = end - start
    steps = np.maximum(np.rint(np.abs(d[:, 0]) / px + np.abs(d[:, 1]) / py), 1).astype(np.int64)
    seg = np.repeat(np.arange(len(d)), steps)
    frac = (np.arange(steps.sum()) - np.repeat(np.cumsum(steps) - steps, steps) + 0.5) / steps[seg]
    mid = start[seg] + d[seg] * frac[:, None]
    outward = np.column_stack([np.sign(d[seg, 1]) * px / 4, -np.sign(d[seg, 0]) * py / 4])
    points = shapely.points(mid + outward)
    poly_i, point_j = shapely.STRtree(points).query(geometry, predicate="contains")
    source = which[owner[seg_ring[seg[point_j]]]]
    keep = poly_i != source
    key = source[keep] * len(geometry) + poly_i[keep]
    pairs, counts = np.unique(key, return_counts=True)
    return pairs // len(geometry), pairs % len(geometry), counts.astype(np.float64)


def _canonical(regions: Regions) -> Regions:
    """The regions in an order and form that do not depend on the chunking: top-left
    first, rings starting at a canonical vertex (coverage simplification and min-area ties
    depend on both)."""
    bounds = shapely.bounds(regions.geometry)
    order = np.lexsort((regions.cls, bounds[:, 0], -bounds[:, 3]))
    out = _take(regions, order)
    out.geometry = shapely.normalize(out.geometry)
    return out


def _absorb_small(regions: Regions, area: np.ndarray, min_area: float, nodes: bool,
                  pixel: tuple[float, float]) -> Regions:
    """Merge each polygon below ``min_area`` into the neighbour it shares most border with.

    Region merging on the adjacency graph, smallest first: a polygon still below the
    threshold (it may have grown by absorbing smaller ones) joins the neighbour with the
    longest shared border in pixel edges (ties: the larger, then the first), taking its
    class. One with
    no neighbour along an edge (nodata all around) is dropped. Polygons of one class
    that end up sharing an edge are then joined, so each remains one connected region.
    Geometry is only unioned at the end, once per final polygon.
    """
    n = len(regions.geometry)
    small = np.flatnonzero(area < min_area)
    small = small[np.argsort(area[small], kind="stable")]  # ties: canonical position
    s_i, n_j, length = _borders(regions.geometry, small, pixel)
    neighbours: dict[int, dict[int, float]] = {int(k): {} for k in small}
    for a, b, w in zip(s_i.tolist(), n_j.tolist(), length.tolist(), strict=True):
        neighbours[a][b] = w
    parent = np.arange(n)
    size = area.astype(np.float64).copy()
    dropped = np.zeros(n, bool)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for s in small.tolist():
        g = find(s)
        if size[g] >= min_area or dropped[g]:
            continue
        shared: dict[int, float] = {}  # border length with each neighbouring polygon now
        for k, w in neighbours.get(g, {}).items():
            r = find(k)
            if r != g and not dropped[r]:
                shared[r] = shared.get(r, 0.0) + w
        if not shared:
            dropped[g] = True
            continue
        t = max(shared, key=lambda r: (shared[r], size[r], -r))
        parent[g] = t
        size[t] += size[g]
        if t in neighbours:  # a small target inherits what its new part touches
            merged = neighbours[t]
            for k, w in neighbours.pop(g, {}).items():
                merged[k] = merged.get(k, 0.0) + w
    # Same-class polygons that now meet along an edge (through an absorbed speck) join.
    cls = regions.cls.copy()
    for a, b in zip(s_i.tolist(), n_j.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra != rb and cls[ra] == cls[rb] and not (dropped[ra] or dropped[rb]):
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    alive = ~dropped[roots]
    return _join(_take(regions, np.flatnonzero(alive)), roots[alive], nodes, None,
                 cls=cls)


def map_coords(xy: np.ndarray, t: Affine, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Pixel coordinates ``(n, 2)`` on the map by the affine transform ``t``, after shifting
    them by whole pixels ``offset`` (so a corner has the same map coordinates from
    whichever chunk it came)."""
    x, y = xy[:, 0] + offset[0], xy[:, 1] + offset[1]
    return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])


def measure(geometry: np.ndarray, crs: CRS | None) -> tuple[np.ndarray, np.ndarray]:
    """True ground (area m², perimeter m) of polygons in map coordinates of ``crs``.

    The perimeter counts the outlines of holes too. Projected CRS: planar, in the CRS's
    linear unit converted to metres. Geographic CRS:
    on the CRS's ellipsoid; exactly for outlines along parallels and meridians (pixel
    outlines), else with pyproj's ``Geod`` (edges densified to 0.01°). No CRS: planar in
    map units.
    """
    if crs is None:
        return shapely.area(geometry), shapely.length(geometry)
    if not crs.is_geographic:
        factor = crs.linear_units_factor[1]
        return shapely.area(geometry) * factor**2, shapely.length(geometry) * factor
    from pyproj import CRS as ProjCRS

    geod = ProjCRS.from_user_input(crs.to_wkt()).get_geod()
    # Geod adds each ring's signed area: outlines and holes must wind opposite ways.
    geometry = shapely.orient_polygons(geometry)
    area, perimeter, exact = _graticule_measures(geometry, geod)
    for i in np.flatnonzero(~exact):  # outlines with slanted edges (simplified): geodesics
        dense = shapely.segmentize(geometry[i], 0.01)
        area[i] = abs(geod.geometry_area_perimeter(dense)[0])
        perimeter[i] = geod.geometry_length(dense.boundary)  # holes too, as planar lengths
    return area, perimeter


def _graticule_measures(geometry: np.ndarray, geod: Any
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ellipsoidal area and perimeter of polygons whose edges all run along parallels
    and meridians (pixel outlines in a north-up geographic raster), vectorized.

    Area is the integral of S(φ) dλ around the rings, S being the area from the equator to
    latitude φ per radian of longitude; a parallel's arc is N(φ)·cos φ·Δλ and a meridian's
    comes from ``Geod``. Returns (area m², perimeter m, which polygons this applied to).
    """
    n = len(geometry)
    rings, owner = shapely.get_rings(geometry, return_index=True)
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    same = ring[1:] == ring[:-1]
    lon0, lat0 = coords[:-1, 0][same], coords[:-1, 1][same]
    lon1, lat1 = coords[1:, 0][same], coords[1:, 1][same]
    poly = owner[ring[:-1][same]]
    along_parallel = lat0 == lat1
    along_meridian = (lon0 == lon1) & ~along_parallel
    exact = np.bincount(poly, weights=~(along_parallel | along_meridian), minlength=n) == 0
    a, e2 = geod.a, geod.es
    b2 = a * a * (1 - e2)
    e = np.sqrt(e2)
    phi = np.radians(lat0)
    sin = np.sin(phi)
    band = (b2 / 2 * (sin / (1 - e2 * sin * sin) + np.arctanh(e * sin) / e) if e > 0
            else a * a * sin)  # a sphere
    d_lon = np.radians(lon1 - lon0)
    area = np.abs(np.bincount(poly, weights=np.where(along_parallel, -d_lon * band, 0),
                              minlength=n))
    parallel = a / np.sqrt(1 - e2 * sin * sin) * np.cos(phi) * np.abs(d_lon)
    meridian = np.zeros(len(phi))
    if along_meridian.any():
        meridian[along_meridian] = geod.inv(lon0[along_meridian], lat0[along_meridian],
                                            lon1[along_meridian], lat1[along_meridian])[2]
    perimeter = np.bincount(poly, weights=np.where(along_parallel, parallel, meridian),
                            minlength=n)
    return area, perimeter, exact


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


def iter_layers(
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
) -> Iterator[Layer]:
    """Vectorize a class mask in batches (see :func:`vectorize`): one :class:`Layer` per
    row of chunks, so that a writer holds only one row's polygons (plus those of regions
    still open below it). ``min_area`` and ``simplify`` need every polygon's neighbours:
    with them, the polygons are gathered and come as one batch at the end."""
    import dask

    from geoseg.cluster import check_scheduler, session

    check_scheduler(scheduler)
    if chunk_size < MIN_CHUNK:
        raise InputError(f"chunk size must be at least {MIN_CHUNK} pixels, not {chunk_size}")
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
    n_cols = len(range(0, info.width, chunk_size))
    rows = [tasks[i:i + n_cols] for i in range(0, len(tasks), n_cols)]
    keep = None if classes is None else _class_ids(classes, info.class_names)
    with session(scheduler, workers, total=len(tasks), progress=progress,
                 desc="vectorize") as run:
        batches = _regions(run, rows, nodes, threads=workers)
        if not (min_area > 0 or nodes):
            found = 0
            for regions in batches:
                found += len(regions.geometry)
                yield _layer(regions, info, keep)
            _warn_if_empty(found, info)
            return
        regions = _canonical(_concat(list(batches)))
        _warn_if_empty(len(regions.geometry), info)
    if min_area > 0 and len(regions.geometry):
        regions = _absorb_small(regions, _ground_area(regions, info), min_area, nodes,
                                (info.transform.a, info.transform.e))
    if nodes and len(regions.geometry):
        regions.geometry = shapely.coverage_simplify(regions.geometry, simplify,
                                                     simplify_boundary=True)
    yield _layer(regions, info, keep)


def _warn_if_empty(regions: int, info: MaskInfo) -> None:
    """Every valid pixel lies in some region: none at all means an all-nodata mask."""
    if not regions:
        warn("has no valid pixels (all nodata): the layer is empty", info.name)


def _layer(regions: Regions, info: MaskInfo, keep: list[int] | None) -> Layer:
    """Measured polygons of the classes to keep, named and coloured, outlines
    counterclockwise and holes clockwise (as OGC Simple Features recommends)."""
    if keep is not None:
        regions = _take(regions, np.flatnonzero(np.isin(regions.cls, keep)))
    regions.geometry = shapely.orient_polygons(regions.geometry)
    n_classes = int(regions.cls.max()) + 1 if len(regions.cls) else 0
    names, colors = _class_style(info, max(n_classes, len(info.class_names)))
    area, perimeter = measure(regions.geometry, info.crs)
    confidence = None
    if regions.prob_sum is not None:
        confidence = regions.prob_sum / np.maximum(regions.pixels, 1)
    return Layer(regions.geometry, regions.cls, names, colors, area, perimeter, confidence,
                 info.crs)


def polygons(mask: str | os.PathLike[str] | xr.DataArray, **options: Any) -> Layer:
    """Vectorize a class mask into one :class:`Layer` (options: see :func:`iter_layers`)."""
    batches = list(iter_layers(mask, **options))
    names = max((b.class_names for b in batches), key=len)
    colors = max((b.colors for b in batches), key=len)

    def cat(values: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(values)

    return Layer(cat([b.geometry for b in batches]), cat([b.class_id for b in batches]),
                 names, colors, cat([b.area_m2 for b in batches]),
                 cat([b.perimeter_m for b in batches]),
                 None if batches[0].confidence is None else cat([b.confidence for b in batches]),
                 batches[0].crs)


def _windows(info: MaskInfo, size: int) -> list[tuple[int, int, int, int]]:
    return [(r, c, min(size, info.height - r), min(size, info.width - c))
            for r in range(0, info.height, size) for c in range(0, info.width, size)]


def _class_ids(classes: Sequence[int | str], names: list[str]) -> list[int]:
    """Class ids from ids or the names the mask gives its classes."""
    ids = []
    for c in classes:
        if isinstance(c, (int, np.integer)) or (isinstance(c, str) and c.strip().isdigit()):
            if not 0 <= int(c) < INVALID:
                raise InputError(f"class id {c} is out of range (0..{INVALID - 1})")
            ids.append(int(c))
        elif c in names:
            ids.append(names.index(c))
        else:
            known = f"the mask names: {', '.join(names)}" if names else "the mask names none"
            raise InputError(f"unknown class {c!r} ({known}; ids work too)")
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
    with check_outputs(mask, dst, overwrite=overwrite):
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
    """Where QGIS looks for a GeoPackage's style file: its name with ``.qml``."""
    return Path(gpkg).with_suffix(".qml")


def check_outputs(mask: Any, dst: str | os.PathLike[str] | None, *,
                  overwrite: bool) -> contextlib.AbstractContextManager[None]:
    """Check the GeoPackage and its style file before any work; the work goes in the
    ``with`` block of the result (see :func:`atomic.outputs`). ``scene.mask.gpkg`` beside
    ``scene.mask.tif`` would share one ``scene.mask.qml``: refused."""
    if dst is None:
        return contextlib.nullcontext()
    style = qml_path(dst)
    if isinstance(mask, (str, os.PathLike)) and Path(mask).with_suffix(".qml").resolve() == \
            style.resolve():
        raise InputError(f"its QGIS style file would be {style}, which styles the mask; "
                         f"give the GeoPackage another name", dst)
    return atomic.outputs([dst, style], overwrite=overwrite)


@dataclass
class Tally:
    """What a written layer holds, per class id: polygon count and area (m²)."""

    class_names: list[str]
    polygons: np.ndarray
    area_m2: np.ndarray
    crs: str | None = None

    def add(self, layer: Layer) -> None:
        self.crs = _crs_text(layer.crs)
        n = max(len(layer.class_names), len(self.polygons))
        self.class_names = max(self.class_names, layer.class_names, key=len)
        self.polygons = np.bincount(layer.class_id, minlength=n) + np.pad(
            self.polygons, (0, n - len(self.polygons)))
        self.area_m2 = np.bincount(layer.class_id, weights=layer.area_m2, minlength=n) + np.pad(
            self.area_m2, (0, n - len(self.area_m2)))


def write_gpkg(layers: Layer | Iterable[Layer], dst: str | os.PathLike[str], *,
               layer_name: str | None = None, overwrite: bool = False,
               timestamp: float | None = None) -> Tally:
    """Write polygons to a GeoPackage atomically, batch after batch as they come, then
    embed the QGIS style (and write it beside the file). Returns what was written.

    ``timestamp`` (POSIX seconds; default now, or ``SOURCE_DATE_EPOCH``) is the file's
    ``last_change``: the only thing that differs between two writes of the same polygons.
    """
    import pyogrio.raw

    name = layer_name or Path(dst).stem
    batches = [layers] if isinstance(layers, Layer) else layers
    tally = Tally([], np.zeros(0, np.int64), np.zeros(0))
    colors: list[tuple[int, int, int]] = []
    with contextlib.ExitStack() as outputs:
        tmp = outputs.enter_context(atomic.atomic_path(dst, overwrite=overwrite))
        tmp.unlink()  # GDAL creates the GeoPackage itself
        crs = None
        for i, batch in enumerate(batches):
            if i and not len(batch.geometry):
                continue
            cols = batch.columns()
            crs = batch.crs
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    pyogrio.raw.write(
                        tmp, shapely.to_wkb(batch.geometry), list(cols.values()), list(cols),
                        layer=name, driver="GPKG", geometry_type="Polygon",
                        crs=_crs_text(crs), promote_to_multi=False, append=i > 0,
                        layer_options=None if i else {"SPATIAL_INDEX": "YES"})
            except (OSError, RuntimeError, ValueError) as exc:
                raise OutputError(f"could not be written ({exc})", dst) from None
            tally.add(batch)
            colors = max(colors, batch.colors, key=len)
        qml = styles.categorized_qml(tally.class_names, colors, field="class_id")
        try:
            styles.embed_gpkg_style(tmp, name, qml, _timestamp(timestamp))
        except sqlite3.Error as exc:
            raise OutputError(f"could not be written ({exc})", dst) from None
        tmp_qml = outputs.enter_context(atomic.atomic_path(qml_path(dst), overwrite=overwrite))
        tmp_qml.write_text(qml)
    return tally


def _timestamp(seconds: float | None = None) -> str:
    """GeoPackage timestamp of ``seconds``, else SOURCE_DATE_EPOCH (reproducible files), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if seconds is None and epoch:
        seconds = int(epoch)
    when = (datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc) if seconds is not None
            else datetime.datetime.now(datetime.timezone.utc))
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
