"""Where a raster's pixels lie: one small value object for sources, labels and masks.

A :class:`Grid` is a CRS, a north-up affine transform and a size in pixels (rows and
columns). Windows are ``(row, col, height, width)`` in pixels of the grid; bounds are
``(west, south, east, north)`` in the grid's CRS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from affine import Affine
    from rasterio.crs import CRS

# GDAL's resampling methods a scene's bands of another pixel size may be read with.
RESAMPLING = ("nearest", "bilinear", "cubic", "cubicspline", "lanczos", "average")


def crs_name(crs: CRS | None) -> str:
    """A CRS as people name it in a message: ``EPSG:32633``, else its PROJ string."""
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()


@dataclass(frozen=True)
class Grid:
    """A CRS (or None), an affine ``transform`` (pixel → map) and ``height × width`` pixels."""

    crs: CRS | None
    transform: Affine
    height: int
    width: int

    @classmethod
    def of(cls, dataset: Any) -> Grid:
        """The grid of an open rasterio dataset."""
        return cls(dataset.crs, dataset.transform, dataset.height, dataset.width)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return self.height, self.width

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of the whole grid, in its CRS."""
        return self.window_bounds(0, 0, self.height, self.width)

    def window_bounds(self, row: int, col: int, height: int,
                      width: int) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` of a window, in the grid's CRS."""
        from rasterio.transform import array_bounds

        return array_bounds(height, width, self.window_transform(row, col))

    def window_transform(self, row: int, col: int) -> Affine:
        """The transform of a window whose top-left pixel is ``(row, col)``."""
        return self.transform * self.transform.translation(col, row)

    def decimated(self, height: int, width: int) -> Grid:
        """The same extent on a coarser (or finer) grid of ``height × width`` pixels."""
        scale = self.transform.scale(self.width / width, self.height / height)
        return Grid(self.crs, self.transform * scale, height, width)

    def resampled(self, resolution: float) -> Grid:
        """The grid of square ``resolution`` pixels (CRS units) from the same top-left
        corner over the same area, in whole pixels that all lie inside it (a last partial
        row or column is left out, never read past the data)."""
        import math

        from affine import Affine

        t = self.transform
        width = max(1, math.floor(abs(t.a) * self.width / resolution + 1e-9))
        height = max(1, math.floor(abs(t.e) * self.height / resolution + 1e-9))
        step_x = resolution if t.a > 0 else -resolution
        step_y = -resolution if t.e < 0 else resolution
        return Grid(self.crs, Affine(step_x, 0.0, t.c, 0.0, step_y, t.f), height, width)

    def pixel_centres(self) -> tuple[np.ndarray, np.ndarray]:
        """Map ``x`` of every column's and ``y`` of every row's pixel centres."""
        import numpy as np

        t = self.transform
        return (t.c + t.a * (np.arange(self.width) + 0.5),
                t.f + t.e * (np.arange(self.height) + 0.5))

    @property
    def pixel_area(self) -> float:
        """Area of one pixel in map units² (planar)."""
        t = self.transform
        return abs(t.a * t.e - t.b * t.d)

    @property
    def unit_metres(self) -> float:
        """Metres per map unit of a projected CRS (1.0 without a CRS)."""
        return self.crs.linear_units_factor[1] if self.crs is not None else 1.0

    def resolution_m(self) -> float | None:
        """The pixel width in metres, for a projected CRS (None otherwise)."""
        if self.crs is None or self.crs.is_geographic:
            return None
        return abs(self.transform.a) * self.unit_metres

    def same_as(self, other: Grid) -> bool:
        """Equal CRS and size and (to rounding) equal transforms: the pixels coincide."""
        return (self.crs == other.crs and self.shape == other.shape
                and self.transform.almost_equals(other.transform))

    def lies_on(self, other: Grid) -> bool:
        """The same size and transform (CRS aside): e.g. probabilities beside their mask."""
        return self.shape == other.shape and self.transform.almost_equals(other.transform)
