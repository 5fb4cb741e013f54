"""Class raster → polygons, vectorized with numpy (no Python loop over pixels or polygons).

Every 4-connected region of equal class becomes one polygon, holes kept, in pixel
coordinates (x = column, y = row, integer corners), exactly as GDAL's polygonizer draws
it: vertices only where the outline turns. The work is array operations (which release
the GIL), so chunks polygonize in parallel threads, and geometries are built in bulk.

How: every pixel side between two different classes gives a directed edge with its
pixel on the left; collinear edges of one pixel row or column merge into segments. A
segment's successor is the segment leaving its end point, preferring a left turn, then
straight on, then a right turn (which keeps diagonal neighbours apart: 4-connectivity).
The successor permutation splits into rings (pointer jumping); rings running one way are
outlines, the other way holes, and each hole belongs to the smallest outline of its class
that contains it. A ring that would touch itself at a corner (one region meeting itself
diagonally) is split there into an outline and a hole, as OGC validity requires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import shapely

from geoseg.maskfile import NODATA  # the class value that is not vectorized

# Directions in pixel space (y grows downwards): east, south, west, north.
_DX = np.array([1, 0, -1, 0])
_DY = np.array([0, 1, 0, -1])


@dataclass(frozen=True)
class Segments:
    """Directed boundary segments of one raster, each with the class on its left."""

    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    y1: np.ndarray
    direction: np.ndarray
    cls: np.ndarray


@dataclass(frozen=True)
class Polygons:
    """Polygons of one raster with their class, and the raster-edge runs of each.

    ``edges[side]`` lists the segments lying on that side of the raster (top, bottom,
    left, right) as arrays ``(start, stop, cls, polygon)``: the pixel interval along the
    side covered by ``polygon``. Joining the runs of two neighbouring chunks tells which
    polygons continue across their border.
    """

    geometry: np.ndarray  # shapely Polygons, in pixel coordinates or placed on the map
    cls: np.ndarray
    pixels: np.ndarray  # pixel count of each polygon
    seed: tuple[np.ndarray, np.ndarray]  # (row, col) of one pixel inside each polygon
    edges: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def segments(classes: np.ndarray, *, nodes: bool = False, frame: bool = False) -> Segments:
    """Boundary segments of a uint8 class raster (``NODATA`` = 255 is not vectorized).

    With ``nodes`` a segment also ends where the class across it changes, so that two
    neighbouring polygons share the same vertices along their common border (a "valid
    coverage", which GEOS needs to simplify them together without gaps or overlaps).

    With ``frame`` the outermost rows and columns of ``classes`` are not polygonized but
    are the neighbours' pixels (a chunk's surroundings): a segment along the chunk's border
    ends wherever the neighbour across starts or stops having its class, so the pieces of
    a region that the border cut share their vertices there and join with a fast coverage
    union (pieces that continue nowhere get no extra vertex).
    """
    if frame:
        framed = np.ascontiguousarray(classes, np.uint8)
        c = framed.copy()
        c[[0, -1], :] = NODATA
        c[:, [0, -1]] = NODATA
    else:
        h, w = classes.shape
        c = np.full((h + 2, w + 2), NODATA, np.uint8)
        c[1:-1, 1:-1] = classes
        framed = c
    rows, cols = c.shape
    valid = c.ravel() != NODATA
    # Pixel p (flat index into c) has an edge below it / right of it where the class changes.
    below = np.zeros(c.shape, bool)
    np.not_equal(c[:-1], c[1:], out=below[:-1])
    right = np.zeros(c.shape, bool)
    np.not_equal(c[:, :-1], c[:, 1:], out=right[:, :-1])
    flat_c, flat_f = c.ravel(), framed.ravel()
    split = "all" if nodes else ("border" if frame else None)
    parts = []
    # (edges, offset of the inside pixel and of the pixel across from p, step along a run,
    #  direction); c's padding never has edges, so runs stop there by themselves.
    for changes, step, sides in ((below.ravel(), 1, ((0, cols, 0), (cols, 0, 2))),
                                 (right.ravel(), cols, ((0, 1, 3), (1, 0, 1)))):
        p_all = np.flatnonzero(changes)
        for inside, across, d in sides:
            # Heading east: the pixel above is on the left; west: below; north: the pixel
            # on the west; south: the pixel on the east.
            first, last, cls = _runs(p_all[valid[p_all + inside]], changes, valid, flat_c,
                                     flat_f, inside, across, step, split, rows, cols)
            r0, q0, r1, q1 = first // cols, first % cols, last // cols, last % cols
            if step == 1:  # line y = r between pixel rows r - 1 and r; x from q - 1 to q
                lo, hi = q0 - 1, q1
                parts.append((lo, r0, hi, r0, d, cls) if d == 0 else (hi, r0, lo, r0, d, cls))
            else:  # line x = q between pixel columns q - 1 and q; y from r - 1 to r
                lo, hi = r0 - 1, r1
                parts.append((q0, hi, q0, lo, d, cls) if d == 3 else (q0, lo, q0, hi, d, cls))
    cols6 = [np.concatenate([np.broadcast_to(np.asarray(p[k]), p[0].shape) for p in parts])
             for k in range(6)]
    x0, y0, x1, y1, direction, cls = (a.astype(np.int64) for a in cols6)
    return Segments(x0, y0, x1, y1, direction, cls.astype(np.int32))


def _runs(p: np.ndarray, changes: np.ndarray, valid: np.ndarray, c: np.ndarray,
          framed: np.ndarray, inside: int, across: int, step: int, split: str | None,
          rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Maximal runs of the edges at flat positions ``p`` (consecutive by ``step``) whose
    inside pixel ``p + inside`` keeps one class. Where ``split`` says, a run also ends where
    the pixel across (in ``framed``) changes class (``"all"``), or, on the raster's border
    lines only, where it starts or stops matching the inside class (``"border"``).
    Returns (first p, last p, class) of every run, ordered along the lines."""

    prev = p - step
    cls = c[p + inside]
    # Edge p continues the run of edge p - step if that is an edge too, with the same
    # class inside (which is then valid as well).
    cont = changes[prev] & (c[prev + inside] == cls)
    if split == "all":
        cont &= framed[prev + across] == framed[p + across]
    elif split == "border":
        line = p // cols if step == 1 else p % cols
        on_border = (line == 0) | (line == (rows - 2 if step == 1 else cols - 2))
        same = (framed[prev + across] == cls) == (framed[p + across] == cls)
        cont &= ~on_border | same
    # A run ends where the next edge does not continue it.
    continued = np.zeros(changes.shape, bool)
    continued[p[cont]] = True
    first, last = p[~cont], p[~continued[p + step]]
    if step != 1:  # row-major order interleaves the columns' runs: order both by column
        first = first[np.argsort(first % cols * rows + first // cols, kind="stable")]
        last = last[np.argsort(last % cols * rows + last // cols, kind="stable")]
    return first, last, c[first + inside]


def _successors(seg: Segments, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index of the segment that continues each segment's ring: of the (up to four)
    segments leaving its end corner, the one turning left, else straight on, else right.

    Also returns the pairs of segments that leave one corner with the same class: where
    two diagonal pixels of a class meet (see :func:`_split_pinches`)."""
    n = len(seg.x0)
    stride = width + 1
    start = seg.y0 * stride + seg.x0
    order = np.argsort(start * 4 + seg.direction, kind="stable")
    sorted_start = np.append(start[order], -1)
    end = seg.y1 * stride + seg.x1
    pos = np.searchsorted(sorted_start[:-1], end)
    # Preference by turn (d_out - d_in) % 4: straight 1, right 2, back never, left 0.
    preference = np.array([1, 2, 9, 0])
    best = np.full(n, 9)
    succ = np.full(n, -1, np.int64)
    for k in range(4):
        at = np.minimum(pos + k, n)
        here = sorted_start[at] == end
        cand = order[np.minimum(at, n - 1)]
        score = np.where(here, preference[(seg.direction[cand] - seg.direction) % 4], 9)
        better = score < best
        best = np.where(better, score, best)
        succ = np.where(better, cand, succ)
    if (succ < 0).any():
        raise AssertionError("polygonize: an outline does not close")
    sorted_cls = seg.cls[order]
    pairs = [np.flatnonzero((sorted_start[k:-1] == sorted_start[:-1 - k])
                            & (sorted_cls[k:] == sorted_cls[:-k])) for k in (1, 2, 3)]
    a = np.concatenate([order[i] for i in pairs])
    b = np.concatenate([order[i + k] for k, i in zip((1, 2, 3), pairs, strict=True)])
    return succ, a, b


def _split_pinches(succ: np.ndarray, rep: np.ndarray, out_a: np.ndarray, out_b: np.ndarray
                   ) -> np.ndarray:
    """Turn rings that touch themselves at a corner into an outline and a hole (in place).

    Where two diagonal pixels of one class meet at a corner (two segments of that class
    leave it: ``out_a``, ``out_b``), the left-turn rule keeps them apart. If they belong to
    one region anyway, its ring passes that corner twice, which OGC forbids; pairing the
    two visits the other way splits it into two valid rings.
    """
    twice = rep[out_a] == rep[out_b]
    if not twice.any():
        return rep
    pred = np.empty_like(succ)
    pred[succ] = np.arange(len(succ))
    a, b = pred[out_a[twice]], pred[out_b[twice]]
    succ[a], succ[b] = succ[b], succ[a].copy()
    return _update_reps(succ, rep, np.unique(rep[a]))


def _ring_reps(succ: np.ndarray) -> np.ndarray:
    """The smallest member of each element's cycle in the permutation ``succ``.

    After k rounds each element holds the minimum of the next 2^k; once a round changes
    nothing, every window already holds its cycle's minimum.
    """
    rep = np.arange(len(succ))
    jump = succ.copy()
    for _ in range(max(1, len(succ).bit_length())):
        new = np.minimum(rep, rep[jump])
        if np.array_equal(new, rep):
            break
        rep = new
        jump = jump[jump]
    return rep


def _update_reps(succ: np.ndarray, rep: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """``rep`` again after the rings with representatives ``changed`` were rewired."""
    sub = np.flatnonzero(np.isin(rep, changed))
    local = np.empty(len(succ), np.int64)
    local[sub] = np.arange(len(sub))
    rep = rep.copy()
    rep[sub] = sub[_ring_reps(local[succ[sub]])]
    return rep


def _ring_order(succ: np.ndarray, rep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Number the cycles 0.. (by smallest member) and place every element in traversal
    order, starting at that member. Returns (ring of each element, its position in the
    ring-by-ring order, ring sizes)."""
    n = len(succ)
    idx = np.arange(n)
    # Steps left to the member before the representative (pointer jumping).
    last = succ == rep
    nxt = np.where(last, idx, succ)
    left = (~last).astype(np.int64)
    for _ in range(max(1, int(n).bit_length())):
        left = left + left[nxt]
        nxt = nxt[nxt]
    ring = (np.cumsum(rep == idx) - 1)[rep]
    sizes = np.bincount(ring)
    offsets = np.cumsum(sizes) - sizes
    return ring, offsets[ring] + sizes[ring] - 1 - left, sizes


def polygonize(classes: np.ndarray, *, nodes: bool = False, frame: bool = False,
               place: Callable[[np.ndarray], np.ndarray] | None = None) -> Polygons:
    """All 4-connected regions of equal class in ``classes`` (uint8; ``NODATA`` skipped).

    ``nodes`` and ``frame``: see :func:`segments`; with ``frame`` the coordinates start at
    the first pixel inside the frame. ``place`` maps pixel coordinates ``(n, 2)`` to the
    coordinates the geometries get (e.g. onto the map); default: pixel coordinates.
    """
    h, w = classes.shape[0] - 2 * frame, classes.shape[1] - 2 * frame
    seg = segments(classes, nodes=nodes, frame=frame)
    empty = np.zeros(0, np.int64)
    if len(seg.x0) == 0:
        no_edges = (empty, empty, empty.astype(np.int32), empty)
        return Polygons(np.empty(0, object), np.zeros(0, np.int32), empty, (empty, empty),
                        {side: no_edges for side in ("top", "bottom", "left", "right")})
    succ, out_a, out_b = _successors(seg, w)
    rep = _split_pinches(succ, _ring_reps(succ), out_a, out_b)
    ring, pos, sizes = _ring_order(succ, rep)
    n = len(ring)
    coords = np.empty((n, 2))
    coords[pos, 0] = seg.x0
    coords[pos, 1] = seg.y0
    ring_of_pos = np.repeat(np.arange(len(sizes)), sizes)
    first = np.cumsum(sizes) - sizes
    # Signed area (shoelace) per ring: the inside is on the left of every segment, so
    # outlines run counterclockwise on screen (y down), which is a negative shoelace sum.
    x, y = coords[:, 0], coords[:, 1]
    nxt = np.arange(1, n + 1)
    nxt[first + sizes - 1] = first
    area2 = np.add.reduceat(x * y[nxt] - x[nxt] * y, first)
    is_shell = area2 < 0
    ring_start = np.flatnonzero(rep == np.arange(n))  # each ring's first segment
    ring_cls = seg.cls[ring_start]
    place = place or (lambda xy: xy)
    rings = shapely.linearrings(place(coords), indices=ring_of_pos)
    owner = _hole_owners(rings, is_shell, ring_cls, seg, ring_start, area2, place)
    poly_of_ring = (np.cumsum(is_shell) - 1)[owner]  # polygon k is the k-th outline
    # Each polygon: its outline, then its holes.
    ring_order = np.lexsort((~is_shell, poly_of_ring))
    polys = shapely.polygons(rings[ring_order], indices=poly_of_ring[ring_order])
    shells = np.flatnonzero(is_shell)
    sx, sy = _left_pixel(seg, ring_start[shells])
    seed = (np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64))
    pixels = np.rint(np.bincount(poly_of_ring, weights=-area2 / 2)).astype(np.int64)
    return Polygons(polys, ring_cls[shells], pixels, seed,
                    _edge_runs(seg, poly_of_ring[ring], h, w))


def _left_pixel(seg: Segments, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) of the pixel on the left of segments ``idx`` (at their middle)."""
    d = seg.direction[idx]
    x = (seg.x0[idx] + seg.x1[idx]) / 2 + _DX[(d + 3) % 4] * 0.5
    y = (seg.y0[idx] + seg.y1[idx]) / 2 + _DY[(d + 3) % 4] * 0.5
    return x, y


def _hole_owners(rings: np.ndarray, is_shell: np.ndarray, ring_cls: np.ndarray, seg: Segments,
                 ring_ids: np.ndarray, area2: np.ndarray,
                 place: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """For every ring the index of the outline it belongs to (itself for an outline)."""
    owner = np.arange(len(rings))
    holes = np.flatnonzero(~is_shell)
    if len(holes) == 0:
        return owner
    shells = np.flatnonzero(is_shell)
    # A point inside the pixel on the left of each hole's first segment: a pixel of its polygon.
    points = shapely.points(place(np.column_stack(_left_pixel(seg, ring_ids[holes]))))
    # Query the points with the outlines (prepared once each), not the other way round.
    shell_j, hole_i = shapely.STRtree(points).query(shapely.polygons(rings[shells]),
                                                    predicate="contains_properly")
    keep = ring_cls[shells[shell_j]] == ring_cls[holes[hole_i]]
    hole_i, shell_j = hole_i[keep], shell_j[keep]
    # The smallest containing outline of the same class is the hole's polygon.
    sizes = -area2[shells[shell_j]]
    pick = np.lexsort((sizes, hole_i))
    hole_i, shell_j = hole_i[pick], shell_j[pick]
    firsts = np.unique(hole_i, return_index=True)[1]
    owner[holes[hole_i[firsts]]] = shells[shell_j[firsts]]
    return owner


def _edge_runs(seg: Segments, poly: np.ndarray, h: int, w: int
               ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    horizontal = seg.y0 == seg.y1
    lo_x, hi_x = np.minimum(seg.x0, seg.x1), np.maximum(seg.x0, seg.x1)
    lo_y, hi_y = np.minimum(seg.y0, seg.y1), np.maximum(seg.y0, seg.y1)
    out = {}
    for side, sel, lo, hi in (("top", horizontal & (seg.y0 == 0), lo_x, hi_x),
                              ("bottom", horizontal & (seg.y0 == h), lo_x, hi_x),
                              ("left", ~horizontal & (seg.x0 == 0), lo_y, hi_y),
                              ("right", ~horizontal & (seg.x0 == w), lo_y, hi_y)):
        idx = np.flatnonzero(sel)
        idx = idx[np.argsort(lo[idx], kind="stable")]
        out[side] = (lo[idx], hi[idx], seg.cls[idx], poly[idx])
    return out
