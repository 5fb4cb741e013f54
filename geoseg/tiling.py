"""Overlapping tiles over a raster and the weights that blend them without seams.

Along each axis, tile ``i`` starts at ``i * stride - margin`` (``stride = tile - overlap``,
``margin = overlap // 2``) so the first tile reaches past the raster edge by ``margin``
pixels (filled by reflection) and edge pixels get context on both sides. Output blocks
are the strides ``[i * stride, (i + 1) * stride)``; each block is covered by its own tile
and blended with the neighbours' overlapping strips.

The 1-D weight ramps with ``sin²`` over the overlap on every side that has a neighbour, so
two neighbouring ramps sum to exactly one (``sin² + cos² = 1``): a partition of unity and
no seam. Sides at the outer edge of the grid keep weight one.

A network whose answer a tile's edge changes only up to a known distance (``context``,
its reach) can be tiled exactly: each tile's weight is zero within ``context`` of an edge
that has a neighbour, and the ramp lies in the middle ``overlap - 2 * context`` pixels,
where both tiles see everything the network reaches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from geoseg.errors import InputError


@dataclass(frozen=True)
class Tile:
    """Where one tile lies: grid index and pixel window (may extend past the raster)."""

    row_index: int
    col_index: int
    row: int
    col: int
    size: int


@dataclass(frozen=True)
class TileGrid:
    """Overlapping ``size × size`` tiles over a ``height × width`` raster (all in pixels)."""

    height: int
    width: int
    size: int
    overlap: int
    context: int = 0

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise InputError(f"tile size must be positive, not {self.size}")
        if not 0 <= self.overlap <= self.size // 2:
            # Wider overlaps would let tiles two strides away reach a block.
            raise InputError(f"overlap must be between 0 and half the tile size "
                             f"({self.size // 2}), not {self.overlap}")
        if not 0 <= 2 * self.context <= self.overlap:
            raise InputError(f"the overlap ({self.overlap}) must hold the network's reach on "
                             f"both sides (2 x {self.context} px)")
        if self.height <= 0 or self.width <= 0:
            raise InputError(f"raster has no pixels ({self.height} × {self.width})")

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    @property
    def margin(self) -> int:
        return self.overlap // 2

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tile rows and columns."""
        return math.ceil(self.height / self.stride), math.ceil(self.width / self.stride)

    @property
    def chunks(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Output block sizes along rows and columns (Dask chunks)."""
        return _axis_chunks(self.height, self.stride), _axis_chunks(self.width, self.stride)

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def tiles(self) -> list[Tile]:
        """All tiles in row-major order."""
        rows, cols = self.shape
        return [self.tile(i, j) for i in range(rows) for j in range(cols)]

    def tile(self, i: int, j: int) -> Tile:
        return Tile(i, j, i * self.stride - self.margin, j * self.stride - self.margin, self.size)

    def tiles_over_block(self, i: int, j: int) -> list[tuple[Tile, tuple[slice, slice], tuple[slice, slice]]]:
        """Tiles overlapping output block ``(i, j)`` with the matching slices.

        Each entry is ``(tile, tile_slices, block_slices)``: the part of the tile's array
        and the part of the block it lands on.
        """
        rows, cols = self.shape
        out = []
        for ti in range(max(i - 1, 0), min(i + 2, rows)):
            rs = _overlap(ti * self.stride - self.margin, self.size, i * self.stride,
                          self.chunks[0][i])
            if rs is None:
                continue
            for tj in range(max(j - 1, 0), min(j + 2, cols)):
                cs = _overlap(tj * self.stride - self.margin, self.size, j * self.stride,
                              self.chunks[1][j])
                if cs is None:
                    continue
                out.append((self.tile(ti, tj), (rs[0], cs[0]), (rs[1], cs[1])))
        return out

    def blend_weights(self, tile: Tile) -> np.ndarray:
        """``size × size`` float32 weights for ``tile`` (partition of unity across tiles).

        Read-only and shared: a grid has at most 9 distinct weight windows (by which
        sides have a neighbour), built once each instead of once per tile.
        """
        rows, cols = self.shape
        return _weights(self.size, self.overlap, self.context,
                        tile.row_index > 0, tile.row_index < rows - 1,
                        tile.col_index > 0, tile.col_index < cols - 1)


@lru_cache(maxsize=64)
def _weights(size: int, overlap: int, context: int, top: bool, bottom: bool, left: bool,
             right: bool) -> np.ndarray:
    out = np.outer(_ramp(size, overlap, context, top, bottom),
                   _ramp(size, overlap, context, left, right))
    out = out.astype(np.float32)
    out.flags.writeable = False
    return out


def _ramp(size: int, overlap: int, context: int, before: bool, after: bool) -> np.ndarray:
    """1-D weights: on each side that has a neighbour, 0 for ``context`` pixels, ``sin²`` up
    over the rest of the overlap but ``context`` and 1 beyond; else 1."""
    w = np.ones(size)
    if overlap:
        span = overlap - 2 * context
        up = np.concatenate([np.zeros(context),
                             np.sin((np.arange(span) + 0.5) / span * np.pi / 2) ** 2,
                             np.ones(context)])
        if before:
            w[:overlap] = up
        if after:
            w[-overlap:] = up[::-1]
    return w


def _axis_chunks(length: int, stride: int) -> tuple[int, ...]:
    n = math.ceil(length / stride)
    return (stride,) * (n - 1) + (length - (n - 1) * stride,)


def _overlap(tile_start: int, size: int, block_start: int, block_len: int) -> tuple[slice, slice] | None:
    lo = max(tile_start, block_start)
    hi = min(tile_start + size, block_start + block_len)
    if lo >= hi:
        return None
    return slice(lo - tile_start, hi - tile_start), slice(lo - block_start, hi - block_start)
