"""Pieces of regions from neighbouring chunks joined into one polygon per region.

A region that a chunk border cut leaves one piece in each chunk; the pieces' runs along
the shared border tell which continue each other (same class, overlapping run), connected
components give the regions, and GEOS's coverage union joins each region's pieces (they
share their vertices along the cut). Regions are given out as soon as they are complete,
row of chunks by row of chunks (:func:`complete_regions`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from geoseg.vector.chunks import Pieces


@dataclass
class Regions:
    """One polygon per region of the whole mask (on the map) and its sums."""

    geometry: np.ndarray
    cls: np.ndarray
    pixels: np.ndarray
    prob_sum: np.ndarray | None


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


def complete_regions(run: Callable[[list[Any]], list[Any]], rows: list[list[Any]], nodes: bool,
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
            yield concat([take(p, k) for p, k in zip(row, inner, strict=True)])
            # The pieces at a border, and those still open from above, form regions.
            ids = np.concatenate([pending_ids, *(t + f for t, f in zip(at_border, first,
                                                                        strict=True))])
            waiting = concat([*([pending] if pending is not None else []),
                               *(take(p, t) for p, t in zip(row, at_border, strict=True))])
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
            yield join(take(waiting, np.flatnonzero(~keep)), region[~keep], nodes, threads)
            pending, pending_ids = take(waiting, np.flatnonzero(keep)), ids[keep]
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


def take(r: Regions | Pieces, idx: np.ndarray) -> Regions:
    return Regions(r.geometry[idx], r.cls[idx], r.pixels[idx],
                   None if r.prob_sum is None else r.prob_sum[idx])


def concat(parts: Sequence[Regions]) -> Regions:
    with_probs = bool(parts) and parts[0].prob_sum is not None
    return Regions(np.concatenate([p.geometry for p in parts] or [np.empty(0, object)]),
                   np.concatenate([p.cls for p in parts] or [np.zeros(0, np.int32)]),
                   np.concatenate([p.pixels for p in parts] or [np.zeros(0, np.int64)]),
                   np.concatenate([p.prob_sum for p in parts]) if with_probs else None)


def join(pieces: Regions, region: np.ndarray, nodes: bool, threads: int | None,
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

    def union_of(k: int) -> shapely.Geometry:
        # The pieces share their vertices along the cut (see polygonize's frame), so
        # GEOS's coverage union joins them (it releases the GIL: threads share the work).
        parts = pieces.geometry[order[starts[k]:starts[k] + sizes[k]]]
        union = shapely.coverage_union_all(parts) if cls is None else shapely.union_all(parts)
        if not shapely.is_valid(union):
            # GEOS before 3.14 may join a region that touches itself at a corner into a
            # shell ring that touches itself (invalid); its rings rebuilt are the shell and
            # the holes GEOS 3.14 gives.
            union = shapely.make_valid(union, method="structure")
        # Where an outline crossed the cut, it now runs straight on through a vertex that
        # only a coverage (nodes) needs.
        return union if nodes else drop_collinear(np.array([union]))[0]

    with ThreadPoolExecutor(threads or os.cpu_count()) as pool:
        unions = list(pool.map(union_of, joined))
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

