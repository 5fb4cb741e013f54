"""Generalizing polygons as a whole: merging those under a minimum area into their
neighbours, and simplifying outlines together (a coverage keeps no gaps or overlaps).

Both need every polygon's neighbours, so they work on all the regions at once, in a
canonical order that does not depend on the chunking (:func:`canonical`).
"""

from __future__ import annotations

import numpy as np
import shapely

from geoseg.grid import Grid
from geoseg.vector.measure import measure
from geoseg.vector.stitch import Regions, join, take


def generalize_all(regions: Regions, grid: Grid, *, min_area: float,
                   simplify: float) -> Regions:
    """``regions`` (in :func:`canonical` order) with those under ``min_area`` (m²)
    merged into their neighbours, then outlines simplified by ``simplify`` (map units)."""
    nodes = simplify > 0
    if min_area > 0 and len(regions.geometry):
        regions = absorb_small(regions, ground_area(regions, grid), min_area, nodes,
                               (grid.transform.a, grid.transform.e))
    if nodes and len(regions.geometry):
        regions.geometry = shapely.coverage_simplify(regions.geometry, simplify,
                                                     simplify_boundary=True)
    return regions


def ground_area(regions: Regions, grid: Grid) -> np.ndarray:
    """Ground area (m²) of the regions, for the min-area rule."""
    if grid.crs is not None and grid.crs.is_geographic:
        return measure(regions.geometry, grid.crs)[0]
    return regions.pixels * grid.pixel_area * grid.unit_metres**2


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


def canonical(regions: Regions) -> Regions:
    """The regions in an order and form that do not depend on the chunking: top-left
    first, rings starting at a canonical vertex (coverage simplification and min-area ties
    depend on both)."""
    bounds = shapely.bounds(regions.geometry)
    order = np.lexsort((regions.cls, bounds[:, 0], -bounds[:, 3]))
    out = take(regions, order)
    out.geometry = shapely.normalize(out.geometry)
    return out


def absorb_small(regions: Regions, area: np.ndarray, min_area: float, nodes: bool,
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
    return join(take(regions, np.flatnonzero(alive)), roots[alive], nodes, None,
                 cls=cls)

