"""Reference labels on an image's pixel grid: a class raster or polygons with a class column.

:func:`open_labels` gives labels that render window by window onto a target
:class:`~geoseg.grid.Grid` (the image's or the mask's), so memory stays bounded by the
window:

* a **class raster** (:class:`RasterLabels`) is read through a nearest-neighbour
  ``WarpedVRT`` when its grid differs (another CRS, resolution or extent);
* **polygons** (:class:`VectorLabels`: GeoPackage, GeoJSON, shapefile…) are reprojected
  to the grid's CRS once and rasterized per window (pixel centres inside a polygon get its
  class). Their class comes from ``class_field``: class ids, or class names matched to the
  model's names. Without a class field every polygon is one class, ``foreground`` (1),
  against ``background`` (0).

Pixels that no label covers are :data:`~geoseg.maskfile.NODATA` (255: not scored, not
trained on), unless a ``background`` class is given: then they count as that class.

A **label map** (:func:`parse_label_map`) reads another land-cover product's codes as
classes: ``10=trees,20=shrub_and_scrub`` (ESA WorldCover), ``111..142=built`` (CORINE
Land Cover), applied to a class raster's values or to the polygons' class field. Codes
that it does not name are unlabelled.
"""

from __future__ import annotations

import math
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import InputError, warn
from geoseg.gdal import is_gdal_path
from geoseg.grid import Grid, crs_name
from geoseg.maskfile import NODATA, RGB, default_color, read_class_table
from geoseg.sources import open_source, read_clipped

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite")


class Labels(ABC):
    """Reference labels of one image, readable window by window on its grid."""

    area: VectorLabels | None = None  # where the labels are complete (None: everywhere)

    def __init__(self, path: str | os.PathLike[str], grid: Grid, class_names: Sequence[str],
                 background: int | str | None, label_map: LabelMap | None = None) -> None:
        self.path, self.grid, self.names = str(path), grid, list(class_names)
        self.background = None if background is None else class_id(background, self.names,
                                                                    self.path)
        # Codes in ascending order and the class id of each (a label map's, checked here).
        self.codes: tuple[np.ndarray, np.ndarray] | None = None
        if label_map is not None:
            codes = sorted(label_map.codes)
            self.codes = (np.array(codes, np.int64),
                          np.array([class_id(label_map.codes[c], self.names,
                                             f"{self.path} (label map)") for c in codes],
                                   np.uint8))

    def classes_of(self, codes: np.ndarray) -> np.ndarray:
        """Class ids (uint8) of integer ``codes`` by the label map; codes it does not name
        are ``NODATA``."""
        assert self.codes is not None
        keys, ids = self.codes
        at = np.searchsorted(keys, codes).clip(0, len(keys) - 1)
        return np.where(keys[at] == codes, ids[at], NODATA).astype(np.uint8)

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Class ids in a window of the grid (uint8, ``NODATA`` where unlabelled)."""
        out = self._read(row, col, height, width)
        if self.background is not None:
            fill = out == NODATA
            if self.area is not None:  # the rest of the image is unlabelled, not background
                fill &= self.area._read(row, col, height, width) == 1
            out[fill] = self.background
        return out

    @abstractmethod
    def _read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """The window's labels, unlabelled pixels ``NODATA``."""


def open_labels(path: str | os.PathLike[str], grid: Grid, class_names: Sequence[str], *,
                class_field: str | None = None, background: int | str | None = None,
                labelled_area: str | os.PathLike[str] | None = None,
                label_map: LabelMap | None = None) -> Labels:
    """The labels in ``path`` (polygons by their suffix, else a class raster) on ``grid``;
    ``class_field`` names the polygons' class column (class rasters ignore it).
    ``label_map`` reads the raster's values (or the class field's) as codes of classes.

    ``labelled_area`` (polygons) is where the labels are complete: the background class
    fills unlabelled pixels there only, and the rest of the image stays unlabelled (not
    trained on, not scored), for labels digitised in part of an image."""
    if not is_gdal_path(str(path)) and not Path(path).exists():
        raise InputError("no such file", path)
    labels: Labels
    if is_vector(path):
        if label_map is not None and class_field is None:
            raise InputError("a label map reads the codes of a class field; name it "
                             "(${class_field})", path)
        labels = VectorLabels(path, grid, class_names, class_field=class_field,
                              background=background, label_map=label_map)
    else:
        labels = RasterLabels(path, grid, class_names, background=background,
                              label_map=label_map)
    if labelled_area is not None:
        if not Path(labelled_area).exists():
            raise InputError("no such file", labelled_area)
        if not is_vector(labelled_area):
            raise InputError("is no polygon file (the labelled area is polygons: .gpkg, "
                             ".geojson, .shp…)", labelled_area)
        if labels.background is None:
            raise InputError("a labelled area says where unlabelled pixels are background; "
                             "give the background class (${background}), or polygons "
                             "without a class field", labelled_area)
        labels.area = VectorLabels(labelled_area, grid, ("outside", "inside"))
    return labels


class VectorLabels(Labels):
    """Polygons with a class column (or none: one foreground class), rasterized per window."""

    def __init__(self, path: str | os.PathLike[str], grid: Grid, class_names: Sequence[str], *,
                 class_field: str | None = None, background: int | str | None = None,
                 label_map: LabelMap | None = None) -> None:
        import pyogrio
        import shapely

        super().__init__(path, grid, class_names, background, label_map)
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
            values = frame[class_field].tolist()
            if self.codes is not None:  # codes it does not name: unlabelled
                classes = self.classes_of(np.array([_code(v, self.path) for v in values],
                                                   np.int64))
                frame, classes = frame[classes != NODATA], classes[classes != NODATA]
            else:
                classes = np.array([class_id(v, self.names, self.path) for v in values],
                                   np.uint8)
        frame = frame.to_crs(self.grid.crs)
        geoms = frame.geometry.values
        polygonal = np.isin(shapely.get_type_id(geoms), (3, 6))  # Polygon, MultiPolygon
        self.geoms, self.classes = np.asarray(geoms)[polygonal], classes[polygonal]
        if not len(self.geoms):
            raise InputError("has no polygons", self.path)
        self.tree = shapely.STRtree(self.geoms)
        if not len(self.tree.query(shapely.box(*self.grid.bounds))):
            raise InputError("labels do not overlap the image", self.path)

    def _read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        import shapely
        from rasterio import features

        box = shapely.box(*self.grid.window_bounds(row, col, height, width))
        hits = np.sort(self.tree.query(box))
        out = np.full((height, width), NODATA, np.uint8)
        if len(hits):
            # Later polygons win where labels overlap, as in the file's order.
            features.rasterize(zip(self.geoms[hits], self.classes[hits].tolist(), strict=True),
                               out=out, transform=self.grid.window_transform(row, col))
        return out


class RasterLabels(Labels):
    """A class raster, warped (nearest neighbour) onto the grid where its own differs."""

    def __init__(self, path: str | os.PathLike[str], grid: Grid, class_names: Sequence[str], *,
                 background: int | str | None = None, label_map: LabelMap | None = None
                 ) -> None:
        super().__init__(path, grid, class_names, background, label_map)
        self.source = open_source(self.path)
        if len(self.source.bands) != 1:
            raise InputError(f"has {len(self.source.bands)} bands; a label raster has one",
                             self.path)
        # Float rasters (as many GIS exports store classes, with a nodata such as -99999)
        # are classes where their values are whole numbers; a fraction is refused on read.
        self.floats = not np.issubdtype(np.dtype(self.source.dtype), np.integer)
        with self.source.open() as ds:
            names = read_class_table(ds).names
        # Label classes named differently from the model's are matched by name.
        self.lookup = None
        if names and self.codes is None:
            self.lookup = np.full(256, NODATA, np.uint8)
            for i, name in enumerate(names[:NODATA]):
                self.lookup[i] = class_id(name, self.names, self.path)
        own = self.source.grid
        self.warp = not own.same_as(self.grid)
        if self.warp and own.lies_on(self.grid) and _same_place(own, self.grid):
            # One pixel grid in two spellings of a CRS (EPSG:3358 against EPSG:32119, one
            # State Plane zone on the HARN datum and on plain NAD83): pixel for pixel.
            warn(f"is in {crs_name(own.crs)} and the image in {crs_name(self.grid.crs)}, "
                 f"on the same pixel grid: its pixels are taken as the image's", self.path)
            self.warp = False
        if own.crs is None or self.grid.crs is None:
            if self.warp:
                raise InputError("has no CRS and is not on the image's grid", self.path)
        else:
            from rasterio.warp import transform_bounds

            west, south, east, north = self.grid.bounds
            lw, ls, le, ln = transform_bounds(own.crs, self.grid.crs, *own.bounds)
            if lw >= east or le <= west or ls >= north or ln <= south:
                raise InputError("labels do not overlap the image", self.path)

    def _read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT
        from rasterio.windows import Window

        window = Window(col, row, width, height)
        with self.source.open() as ds:
            if self.warp:  # the VRT spans the grid; outside the labels it is nodata
                nodata = ds.nodata if ds.nodata is not None else self._outside(ds.dtypes[0])
                with WarpedVRT(ds, crs=self.grid.crs, transform=self.grid.transform,
                               width=self.grid.width, height=self.grid.height,
                               resampling=Resampling.nearest, nodata=nodata) as vrt:
                    values = vrt.read(1, window=window)
                    valid = vrt.read_masks(1, window=window) > 0
            else:
                values, valid = read_clipped(ds, self.source, row, col, height, width)
                values = values[0]
        if self.floats:
            valid &= np.isfinite(values)
            fraction = valid & (values != np.round(values))
            if fraction.any():
                raise InputError(f"holds the value {values[fraction][0]:g}; labels are whole "
                                 f"class numbers (a float raster may hold them, as 0.0, 1.0…)",
                                 self.path)
        values = np.where(valid, values, 0).astype(np.int64)
        if self.codes is not None:  # any integer is a code; those not mapped: unlabelled
            return np.where(valid, self.classes_of(values), NODATA).astype(np.uint8)
        if (valid & ((values < 0) | (values >= NODATA))).any():
            raise InputError("holds class values outside 0..254", self.path)
        out = np.where(valid, values, NODATA).astype(np.uint8)
        if self.lookup is not None:
            out = self.lookup[out]
        if (out[out != NODATA] >= len(self.names)).any():
            raise InputError(f"has class {out[out != NODATA].max()} but the model has "
                             f"{len(self.names)} classes", self.path)
        return out


    def _outside(self, dtype: str) -> float:
        """A value to mark the warp's outside with, where the raster declares no nodata:
        255 (no class), or with a label map a value of the raster's type it does not
        name (a pixel of that value is unlabelled either way)."""
        if self.codes is None:
            return NODATA
        info = np.iinfo(dtype) if np.issubdtype(np.dtype(dtype), np.integer) else None
        candidates = [NODATA, *([info.max, info.min] if info else [-1e30])]
        named = set(self.codes[0].tolist())
        return next((c for c in candidates if c not in named), candidates[-1])


def _same_place(a: Grid, b: Grid) -> bool:
    """Whether ``a``'s corners, taken into ``b``'s CRS, land within two of ``b``'s pixels
    of ``b``'s own (a datum variant of one CRS, not another place)."""
    if a.crs is None or b.crs is None:
        return False
    from rasterio.warp import transform_bounds

    try:
        moved = transform_bounds(a.crs, b.crs, *a.bounds)
    except Exception:  # PROJ has no path between them: not the same place
        return False
    slack = 2 * max(abs(b.transform.a), abs(b.transform.e))
    return all(math.isfinite(m) and abs(m - o) <= slack for m, o in zip(moved, b.bounds,
                                                                         strict=True))


def is_vector(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names polygons (by its suffix) rather than a class raster."""
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


def label_classes(labels: Sequence[str | os.PathLike[str]], class_field: str | None,
                  classes: Sequence[str] | None, label_map: LabelMap | None = None
                  ) -> tuple[list[str], list[RGB]]:
    """Class names and their colours. Names: ``classes``, else the label map's (in its
    order), else the first label raster's ``CLASS_NAMES``, else the polygons' class
    column, else class_0..class_N of the rasters' values. Colours: a label raster's colour
    table, by name (by code with a label map: its first code's), else a palette."""
    named: dict[str, RGB] = {}
    stored: list[str] = []
    for path in labels:
        if is_vector(path):
            continue
        with open_source(path, allow_no_crs=True).open() as ds:  # one-line errors
            table = read_class_table(ds)
        if label_map is not None:
            for code, name in label_map.codes.items():
                if code in table.colors and name not in named:
                    named[name] = table.colors[code]
            continue
        named.update({n: table.colors[i] for i, n in enumerate(table.names)
                      if i in table.colors and n not in named})
        stored = stored or list(table.names)
    if label_map is not None and not classes:
        stored = label_map.names
    names = list(classes or stored)
    if not names:
        vectors = [p for p in labels if is_vector(p)]
        if vectors:
            names = _vector_class_names(vectors, class_field)
        else:
            top = max(max(int(_raster_max(p)), 1) for p in labels)
            names = [f"class_{i}" for i in range(top + 1)]
    colors = [named.get(n, default_color(i)) for i, n in enumerate(names)]
    return names, colors


def _raster_max(path: str | os.PathLike[str]) -> int:
    import rasterio

    with rasterio.open(path) as ds:
        top = 0
        for _, window in ds.block_windows(1):
            data = ds.read(1, window=window, masked=True)
            if data.count():
                top = max(top, int(data.max()))
    if top >= NODATA:
        raise InputError(f"has class value {top}; labels hold 0..254", path)
    return top


def _vector_class_names(labels: Sequence[str | os.PathLike[str]], class_field: str | None
                        ) -> list[str]:
    """Names from the class column of polygon labels: its distinct text values in
    sorted order, or class_0..class_N for numbers; one foreground class without a column."""
    if class_field is None:
        return ["background", "foreground"]
    import pyogrio

    values: set[Any] = set()
    for path in labels:
        try:
            frame = pyogrio.read_dataframe(path, columns=[class_field], read_geometry=False)
        except Exception as exc:  # pyogrio raises several unrelated types here
            raise InputError(f"cannot read the field {class_field!r} ({exc})", path) from None
        values |= set(frame[class_field].dropna().tolist())
    if not values:
        raise InputError(f"the field {class_field!r} has no values", labels[0])
    if all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())
           for v in values):
        return [f"class_{i}" for i in range(int(max(values)) + 1)]
    return sorted(str(v) for v in values)


@dataclass(frozen=True)
class LabelMap:
    """Codes of another product's classes and the class name each is read as (several
    codes may name one class)."""

    codes: dict[int, str]

    @property
    def names(self) -> list[str]:
        """The class names, in the order the map first names them."""
        return list(dict.fromkeys(self.codes.values()))


def parse_label_map(text: str | os.PathLike[str]) -> LabelMap:
    """A label map from ``CODE=NAME`` entries separated by commas (``LOW..HIGH=NAME`` for
    every code of a range), or from a text file of such entries, one or more a line
    (``#`` starts a comment). Raises :class:`InputError` on a malformed entry, a code named
    twice, or a range of more than 65536 codes."""
    where = None
    try:
        is_file = Path(text).is_file()
    except OSError:  # an inline map longer than a file name may be
        is_file = False
    if is_file:
        where = str(text)
        lines = Path(text).read_text(encoding="utf-8").splitlines()
        entries = [e for line in lines for e in line.split("#", 1)[0].split(",")]
    else:
        entries = str(text).split(",")
    codes: dict[int, str] = {}
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        key, sep, name = (part.strip() for part in entry.partition("="))
        low, dots, high = (part.strip() for part in key.partition(".."))
        if not sep or not name or not _is_int(low) or (dots and not _is_int(high)):
            raise InputError(f"the label map entry {entry!r} is not CODE=NAME or "
                             f"LOW..HIGH=NAME (codes are integers)", where)
        first, last = int(low), int(high) if dots else int(low)
        if not 0 <= last - first < 65536:
            raise InputError(f"the label map range {key} is empty or over 65536 codes",
                             where)
        for code in range(first, last + 1):
            if code in codes:
                raise InputError(f"the label map names code {code} twice ({codes[code]!r} "
                                 f"and {name!r})", where)
            codes[code] = name
    if not codes:
        raise InputError("the label map is empty (give CODE=NAME entries)", where)
    label_map = LabelMap(codes)
    if len(label_map.names) >= NODATA:
        raise InputError(f"the label map names {len(label_map.names)} classes; a class "
                         f"mask holds at most {NODATA} (0..{NODATA - 1})", where)
    return label_map


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[+-]?[0-9]+", text) is not None


def _code(value: Any, where: str) -> int:
    """A class field's value as an integer code (numbers, or text of digits)."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _is_int(value.strip()):
        return int(value)
    raise InputError(f"has the class value {value!r}, which is no code of the label map "
                     f"(codes are integers)", where)
