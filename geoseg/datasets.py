"""Reference labels on an image's pixel grid: a class raster or polygons with a class column.

:class:`Labels` renders the labels window by window onto a target grid (the image's or
the mask's CRS, transform and size), so memory stays bounded by the window:

* a **class raster** is read through a nearest-neighbour ``WarpedVRT`` when its grid
  differs (another CRS, resolution or extent);
* **polygons** (GeoPackage, GeoJSON, shapefile…) are reprojected to the grid's CRS once
  and rasterized per window (pixel centres inside a polygon get its class). Their class
  comes from ``class_field``: class ids, or class names matched to the model's names.
  Without a class field every polygon is one class, ``foreground`` (1), against
  ``background`` (0).

Pixels that no label covers are ``IGNORE`` (255: not scored, not trained on), unless a
``background`` class is given: then they count as that class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg import raster
from geoseg.errors import InputError

IGNORE = 255
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite")


@dataclass(frozen=True)
class Grid:
    """A pixel grid to render labels on."""

    crs: Any
    transform: Any
    width: int
    height: int

    @classmethod
    def of(cls, source: raster.Source) -> Grid:
        return cls(source.crs, source.transform, source.width, source.height)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        from rasterio.transform import array_bounds

        return array_bounds(self.height, self.width, self.transform)  # west, south, east, north


class Labels:
    """Reference labels of one image, readable window by window on its grid."""

    def __init__(self, path: str | os.PathLike[str], grid: Grid, class_names: Sequence[str],
                 *, class_field: str | None = None, background: int | str | None = None) -> None:
        self.path, self.grid, self.names = str(path), grid, list(class_names)
        if "://" not in self.path and not Path(path).exists():
            raise InputError("no such file", path)
        self.background = None if background is None else class_id(background, self.names,
                                                                    self.path)
        if is_vector(path):
            self._open_vector(class_field)
        else:  # a class raster; class_field names the column of polygon labels only
            self._open_raster()

    # ---- vector ---------------------------------------------------------------------
    def _open_vector(self, class_field: str | None) -> None:
        import pyogrio
        import shapely

        try:
            frame = pyogrio.read_dataframe(self.path)
        except Exception as exc:  # pyogrio raises DataSourceError and friends
            raise InputError(f"cannot be read as vector labels ({exc})", self.path) from None
        if frame.crs is None:
            raise InputError("has no CRS; labels must say where they are", self.path)
        if class_field is None:
            if len(self.names) < 2:
                raise InputError("has no class field and the model has fewer than 2 classes",
                                 self.path)
            classes = np.ones(len(frame), np.uint8)  # foreground; background below
            if self.background is None:
                self.background = 0
        else:
            if class_field not in frame.columns:
                fields = ", ".join(c for c in frame.columns if c != "geometry")
                raise InputError(f"has no field {class_field!r} (fields: {fields})", self.path)
            frame = frame[frame[class_field].notna()]  # polygons without a class: unlabelled
            classes = np.array([class_id(v, self.names, self.path)
                                for v in frame[class_field].tolist()], np.uint8)
        frame = frame.to_crs(self.grid.crs)
        geoms = frame.geometry.values
        polygonal = np.isin(shapely.get_type_id(geoms), (3, 6))  # Polygon, MultiPolygon
        self.geoms, self.classes = np.asarray(geoms)[polygonal], classes[polygonal]
        if not len(self.geoms):
            raise InputError("has no polygons", self.path)
        self.tree = shapely.STRtree(self.geoms)
        west, south, east, north = self.grid.bounds
        if not len(self.tree.query(shapely.box(west, south, east, north))):
            raise InputError("labels do not overlap the image", self.path)
        self.kind = "vector"

    def _read_vector(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        import shapely
        from rasterio import features
        from rasterio.windows import Window
        from rasterio.windows import bounds as window_bounds

        window = Window(col, row, width, height)
        box = shapely.box(*window_bounds(window, self.grid.transform))
        hits = np.sort(self.tree.query(box))
        out = np.full((height, width), IGNORE, np.uint8)
        if len(hits):
            # Later polygons win where labels overlap, as in the file's order.
            features.rasterize(zip(self.geoms[hits], self.classes[hits].tolist(), strict=True),
                               out=out, transform=self.grid.transform * self.grid.transform
                               .translation(col, row))
        return out

    # ---- raster ---------------------------------------------------------------------
    def _open_raster(self) -> None:

        self.source = raster.open_source(self.path)
        if len(self.source.bands) != 1:
            raise InputError(f"has {len(self.source.bands)} bands; a label raster has one",
                             self.path)
        if not np.issubdtype(np.dtype(self.source.dtype), np.integer):
            raise InputError(f"holds {self.source.dtype} values; labels are integer classes",
                             self.path)
        with self.source.open() as ds:
            names = raster.class_table(ds)[0]
        # Label classes named differently from the model's are matched by name.
        self.lookup = None
        if names:
            self.lookup = np.full(256, IGNORE, np.uint8)
            for i, name in enumerate(names[:IGNORE]):
                self.lookup[i] = class_id(name, self.names, self.path)
        same_grid = (self.source.crs == self.grid.crs
                     and self.source.transform.almost_equals(self.grid.transform)
                     and (self.source.width, self.source.height)
                     == (self.grid.width, self.grid.height))
        self.warp = not same_grid
        if self.source.crs is None or self.grid.crs is None:
            if not same_grid:
                raise InputError("has no CRS and is not on the image's grid", self.path)
        else:
            from rasterio.warp import transform_bounds

            west, south, east, north = self.grid.bounds
            lw, ls, le, ln = transform_bounds(self.source.crs, self.grid.crs,
                                              *Grid.of(self.source).bounds)
            if lw >= east or le <= west or ls >= north or ln <= south:
                raise InputError("labels do not overlap the image", self.path)
        self.kind = "raster"

    def _read_raster(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT
        from rasterio.windows import Window

        window = Window(col, row, width, height)
        with self.source.open() as ds:
            if self.warp:  # the VRT spans the grid; outside the labels it is nodata
                nodata = ds.nodata if ds.nodata is not None else IGNORE
                with WarpedVRT(ds, crs=self.grid.crs, transform=self.grid.transform,
                               width=self.grid.width, height=self.grid.height,
                               resampling=Resampling.nearest, nodata=nodata) as vrt:
                    values = vrt.read(1, window=window)
                    valid = vrt.read_masks(1, window=window) > 0
            else:
                values, valid = raster.read_clipped(ds, self.source, row, col, height, width)
                values = values[0]
        values = values.astype(np.int64)
        if (valid & ((values < 0) | (values >= IGNORE))).any():
            raise InputError("holds class values outside 0..254", self.path)
        out = np.where(valid, values, IGNORE).astype(np.uint8)
        if self.lookup is not None:
            out = self.lookup[out]
        if (out[out != IGNORE] >= len(self.names)).any():
            raise InputError(f"has class {out[out != IGNORE].max()} but the model has "
                             f"{len(self.names)} classes", self.path)
        return out

    # ---- both -----------------------------------------------------------------------
    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Class ids in a window of the grid (uint8, ``IGNORE`` where unlabelled)."""
        out = (self._read_vector if self.kind == "vector" else self._read_raster)(
            row, col, height, width)
        if self.background is not None:
            out[out == IGNORE] = self.background
        return out


def is_vector(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in VECTOR_SUFFIXES


def class_id(value: Any, names: Sequence[str], where: str) -> int:
    """A class given as one of ``names``, or else as an id (int or digits)."""
    if isinstance(value, str) and value in names:
        return list(names).index(value)
    if isinstance(value, (int, np.integer)) or (isinstance(value, str) and value.isdigit()):
        k = int(value)
        if not 0 <= k < len(names):
            raise InputError(f"has class {k} but the model has {len(names)} classes "
                             f"(0..{len(names) - 1})", where)
        return k
    if isinstance(value, float) and value.is_integer():
        return class_id(int(value), names, where)
    if value in names:
        return list(names).index(value)
    raise InputError(f"has class {value!r}, which the model does not know "
                     f"(classes: {', '.join(names)})", where)


# ---- training chips --------------------------------------------------------------------

MIN_LABELLED = 0.05  # a chip with less of its pixels labelled is drawn again


@dataclass(frozen=True)
class Pair:
    """One training image and its labels, on the image's grid."""

    image: raster.Source
    labels: Labels


def open_pairs(images: Sequence[str | os.PathLike[str]], labels: Sequence[str | os.PathLike[str]],
               class_names: Sequence[str], *, class_field: str | None = None,
               background: int | str | None = None, bands: Sequence[int] | None = None
               ) -> list[Pair]:
    """Validated (image, labels) pairs; every image must have the same bands."""
    if not images or len(images) != len(labels):
        raise InputError(f"give one labels file per image ({len(images)} images, "
                         f"{len(labels)} labels)")
    pairs = []
    for image, label in zip(images, labels, strict=True):
        source = raster.open_source(image, bands=bands)
        pairs.append(Pair(source, Labels(label, Grid.of(source), class_names,
                                         class_field=class_field,
                                         background=background)))
    counts = {len(p.image.bands) for p in pairs}
    if len(counts) > 1:
        raise InputError(f"the images have different band counts ({sorted(counts)})")
    return pairs


def split_blocks(pair: Pair, block: int, val_fraction: float, rng: np.random.Generator
                 ) -> tuple[list[tuple[int, int, int, int]], list[tuple[int, int, int, int]]]:
    """The labelled parts of the image cut into ``block``-sized windows (row, col, h, w),
    some kept apart for validation: spatially separate areas, so validation measures what
    training never saw nearby. At least one block goes to each side when there are two
    or more. Blocks whose labels cover less than ``MIN_LABELLED`` are left out."""
    h, w = pair.image.height, pair.image.width
    blocks = [(r, c, min(block, h - r), min(block, w - c))
              for r in range(0, h, block) for c in range(0, w, block)]
    blocks = [b for b in blocks if (pair.labels.read(*b) != IGNORE).mean() >= MIN_LABELLED]
    order = rng.permutation(len(blocks))
    n_val = 0 if len(blocks) < 2 else min(max(1, round(val_fraction * len(blocks))),
                                          len(blocks) - 1)
    val = sorted(blocks[i] for i in order[:n_val])
    return sorted(blocks[i] for i in order[n_val:]), val


class RasterChips:
    """Random labelled chips from the training blocks of image/label pairs (read from
    disk chip by chip: memory does not grow with the images), augmented."""

    def __init__(self, pairs: Sequence[Pair], blocks: Sequence[Sequence[tuple[int, ...]]],
                 size: int, jitter: float = 0.1) -> None:
        self.pairs, self.size, self.jitter = list(pairs), size, jitter
        self.windows = [(k, b) for k, bs in enumerate(blocks) for b in bs]
        if not self.windows:
            raise InputError("no training area left (the labelled part of the images is "
                             "smaller than two blocks)")

    def chip(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One chip ``(bands, size, size)`` float32 and its labels (IGNORE = unlabelled)."""
        for _ in range(50):
            k, (r, c, h, w) = self.windows[int(rng.integers(len(self.windows)))]
            row = r + int(rng.integers(0, max(h - self.size, 0) + 1))
            col = c + int(rng.integers(0, max(w - self.size, 0) + 1))
            x, y = read_chip(self.pairs[k], row, col, self.size)
            if (y != IGNORE).mean() >= MIN_LABELLED:
                return x, y
        raise InputError("the labels cover almost none of the training area "
                         f"(fewer than {MIN_LABELLED:.0%} of the pixels of 50 chips in a row)")

    def __call__(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        from geoseg.fitting import augment

        xs, ys = [], []
        for _ in range(n):
            x, y = augment(*self.chip(rng), rng, self.jitter)
            xs.append(x)
            ys.append(y)
        return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int64)


def read_chip(pair: Pair, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and labels of a window; pixels without image data are NaN and unlabelled."""
    with pair.image.open() as ds:
        x, valid = raster.read_window(ds, pair.image, row, col, size, size)
    x[:, ~valid] = np.nan  # no data: zero once normalized, as in prediction
    y = np.full((size, size), IGNORE, np.uint8)
    h = min(size, pair.image.height - row)
    w = min(size, pair.image.width - col)
    y[:h, :w] = pair.labels.read(row, col, h, w)
    y[~valid] = IGNORE
    return x, y
