"""The class mask format, read and written in one place.

A mask is a one-band ``uint8`` raster: class ids ``0..K-1``, :data:`NODATA` (255) where
there is no data, a GDAL colour table, the class names as tags (``CLASS_NAMES`` as JSON,
and ``CLASS_i`` on band 1) and a QGIS style beside it (:func:`geoseg.styles.style_path`).
Probabilities are a ``uint8`` raster of one band per class, ``round(p * 254)``, 255 for no
data, with the GDAL scale ``1/254``. The lazy arrays of :func:`geoseg.predict` carry the
classes as ``class_names`` and ``class_colors`` attributes. The quicklook is an RGBA PNG
of the mask in its colours.
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.errors import InputError, OutputError

if TYPE_CHECKING:
    import rasterio.io
    import xarray as xr

    from geoseg.sources import Source

NODATA = 255  # the class value of no data: nodata in masks, unlabelled in labels, never scored
PROB_NODATA = 255
PROB_SCALE = 254  # probability p is stored as round(p * 254); 255 is nodata
NODATA_COLOR = (0, 0, 0, 0)
RGB = tuple[int, int, int]


@dataclass(frozen=True)
class ClassTable:
    """What a class raster says of its classes: names in id order (as far as it names
    them) and the RGB colour of each value its colour table holds (nodata left out)."""

    names: list[str]
    colors: dict[int, RGB]
    masked: tuple[str, int] | None = None  # mask models (as given) and the pixels they made nodata

    def contiguous_colors(self) -> list[RGB]:
        """Colours of classes 0, 1, … as far as the table goes without a gap."""
        out: list[RGB] = []
        while len(out) in self.colors:
            out.append(self.colors[len(out)])
        return out


# Colours for classes a model does not colour itself (Tableau's ten, then greys).
DEFAULT_COLORS: tuple[RGB, ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


def default_color(index: int) -> RGB:
    """The colour of class ``index`` when nobody chose one."""
    if index < len(DEFAULT_COLORS):
        return DEFAULT_COLORS[index]
    grey = 40 + (index * 37) % 200
    return (grey, grey, grey)


def colormap(colors: Sequence[RGB]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL colour table: class ``i`` → its RGBA colour; nodata (255) transparent."""
    table = {i: (*c, 255) for i, c in enumerate(colors)}
    table[NODATA] = NODATA_COLOR
    return table


# ---- writing ---------------------------------------------------------------------------

def write_classes(path: str | os.PathLike[str], names: Sequence[str], colors: Sequence[RGB], *,
                  model: str, source: str, masked: tuple[str, int] | None = None) -> None:
    """Name and colour the classes of a mask file (updated in place; ``model`` and
    ``source`` are recorded as tags, and ``masked``, the mask models and the pixels they
    made nodata, as ``MASKED_BY`` and ``MASKED_PIXELS``)."""
    import rasterio

    from geoseg.gdal import gdal_env

    with rasterio.Env(**gdal_env()), rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, colormap(colors))
        ds.set_band_description(1, "class")
        ds.update_tags(CLASS_NAMES=json.dumps(list(names)), MODEL=model,
                       SOURCE=os.path.basename(source))
        if masked is not None:
            ds.update_tags(MASKED_BY=masked[0], MASKED_PIXELS=str(masked[1]))
        ds.update_tags(1, **{f"CLASS_{i}": n for i, n in enumerate(names)})


def write_probability_tags(path: str | os.PathLike[str], names: Sequence[str]) -> None:
    """Describe a probabilities file (updated in place): a band per class, its scale."""
    import rasterio

    from geoseg.gdal import gdal_env

    with rasterio.Env(**gdal_env()), rasterio.open(path, "r+") as ds:
        for b, name in enumerate(names, start=1):
            ds.set_band_description(b, f"p({name})")
        ds.scales = [1.0 / PROB_SCALE] * ds.count
        ds.update_tags(CLASS_NAMES=json.dumps(list(names)),
                       SCALE=f"probability = value / {PROB_SCALE}; {PROB_NODATA} = nodata")


def scale_probabilities(p: np.ndarray) -> np.ndarray:
    """Probabilities ``(C, h, w)`` (NaN = nodata) as stored: uint8 ``round(p * 254)``,
    255 where there is no data."""
    out = np.rint(np.nan_to_num(p, nan=0.0) * PROB_SCALE).astype(np.uint8)
    out[:, np.isnan(p[0])] = PROB_NODATA
    return out


def write_quicklook(mask_path: str | os.PathLike[str], png: str | os.PathLike[str], *,
                    max_size: int = 1024) -> None:
    """An RGBA PNG of the mask in its class colours, at most ``max_size`` pixels a side."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from geoseg.gdal import gdal_env

    with rasterio.Env(**gdal_env()), rasterio.open(mask_path) as ds:
        classes = read_preview(ds, max_size)
        lut = palette(ds.colormap(1), fill=(0, 0, 0, 0))
    height, width = classes.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a picture, on purpose
        with rasterio.open(png, "w", driver="PNG", width=width, height=height, count=4,
                           dtype="uint8") as out:
            out.write(np.moveaxis(lut[classes], -1, 0))


def read_preview(ds: rasterio.io.DatasetReader, max_size: int) -> np.ndarray:
    """A mask's classes decimated (nearest: no class is invented) to at most ``max_size``
    pixels a side."""
    from rasterio.enums import Resampling

    scale = max(ds.width / max_size, ds.height / max_size, 1.0)
    shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
    return ds.read(1, out_shape=shape, resampling=Resampling.nearest)


def palette(colors: Mapping[int, Sequence[int]], *, fill: Sequence[int]) -> np.ndarray:
    """A 256-entry lookup table of class colours (as many channels as ``fill``): each
    value the table colours gets its colour, the others ``fill``."""
    lut = np.zeros((256, len(fill)), np.uint8)
    lut[:] = fill
    for value, color in colors.items():
        lut[value] = color[:len(fill)]
    return lut


# ---- reading ---------------------------------------------------------------------------

def read_class_table(ds: rasterio.io.DatasetReader) -> ClassTable:
    """A class raster's class names (``CLASS_NAMES`` as JSON, else the ``CLASS_i`` tags of
    band 1), the RGB colours of its colour table, nodata (255) left out, and what mask
    models made nodata (``MASKED_BY``, ``MASKED_PIXELS``)."""
    from geoseg.gdal import GDAL_ERRORS

    names: list[str] = []
    with contextlib.suppress(ValueError, TypeError):
        names = [str(n) for n in json.loads(ds.tags().get("CLASS_NAMES", "null")) or []]
    if not names:
        numbered = sorted((int(k[6:]), v) for k, v in ds.tags(1).items()
                          if k.startswith("CLASS_") and k[6:].isdigit())
        names = [v for _, v in numbered]
    try:
        table = ds.colormap(1)
    except (ValueError, *GDAL_ERRORS):  # no colour table
        table = {}
    masked = None
    with contextlib.suppress(KeyError, ValueError):
        tags = ds.tags()
        masked = (tags["MASKED_BY"], int(tags["MASKED_PIXELS"]))
    return ClassTable(names, {i: (int(rgba[0]), int(rgba[1]), int(rgba[2]))
                              for i, rgba in table.items() if i != NODATA}, masked)


def open_mask_source(path: str | os.PathLike[str], *,
                     allow_no_crs: bool = False) -> tuple[Source, ClassTable]:
    """A mask file as a source to read windows of, and its class table; refused unless it
    has one band of integers."""
    from geoseg.sources import open_source

    source = open_source(path, allow_no_crs=allow_no_crs)
    if len(source.bands) != 1:
        raise InputError(f"has {len(source.bands)} bands; a class mask has one", source.name)
    if not np.issubdtype(np.dtype(source.dtype), np.integer):
        raise InputError(f"holds {source.dtype} values; a class mask holds integer classes",
                         source.name)
    with source.open() as ds:
        return source, read_class_table(ds)


def open_probabilities(path: str | os.PathLike[str], mask: Source) -> Source:
    """The probabilities raster of ``mask``: on its grid, geoseg's uint8 encoding."""
    from geoseg.sources import open_source

    probs = open_source(path, allow_no_crs=mask.grid.crs is None)
    if not probs.grid.lies_on(mask.grid):
        raise InputError(f"does not lie on the grid of {mask.name} (size or transform differ)",
                         probs.name)
    if probs.dtype != "uint8":
        raise InputError(f"holds {probs.dtype}; expected geoseg's uint8 probabilities "
                         f"(value / {PROB_SCALE})", probs.name)
    return probs


def probability_of(values: np.ndarray) -> np.ndarray:
    """Stored probabilities as floats 0..1 (a 255 where a foreign raster holds one counts
    as 1: it is nodata, and never above 1)."""
    return np.minimum(values, PROB_SCALE) / PROB_SCALE


def as_classes(raw: np.ndarray, valid: np.ndarray, name: str) -> np.ndarray:
    """Class values read from a mask as uint8 with :data:`NODATA` where there is no data;
    values a class mask cannot hold are refused (naming ``name``)."""
    if raw.dtype == np.uint8:
        bad = (raw == NODATA) & valid
        if bad.any():
            raise InputError(f"has class value {NODATA} where it has data; a class mask "
                             f"holds 0..254 and marks no data by its nodata value (set it "
                             f"with: gdal_edit.py -a_nodata {NODATA} FILE)", name)
        return np.where(valid, raw, np.uint8(NODATA))
    values = raw[valid]
    if values.size and (values.min() < 0 or values.max() >= NODATA):
        bad_value = values.min() if values.min() < 0 else values.max()
        raise InputError(f"has class value {bad_value}; a class mask holds 0..254 "
                         f"(255 or the nodata value for no data)", name)
    return np.where(valid, raw, NODATA).astype(np.uint8)


def has_data(path: str | os.PathLike[str], name: str | os.PathLike[str] | None = None) -> bool:
    """Whether the raster at ``path`` has any pixel that is not nodata (block by block; it
    stops at the first block with data, so only an empty raster is read whole). Errors
    name ``name`` (e.g. the output a scratch file is for), else ``path``."""
    import rasterio

    from geoseg.gdal import gdal_env, read_errors, reads_over_network

    with rasterio.Env(**gdal_env(reads_over_network(os.fspath(path)))), \
            read_errors(os.fspath(name if name is not None else path)), \
            rasterio.open(path, sharing=False) as ds:
        return any(ds.read_masks(1, window=window).any() for _, window in ds.block_windows(1))


# ---- lazy arrays -----------------------------------------------------------------------

def with_classes(array: xr.DataArray, names: Sequence[str], colors: Sequence[RGB]) -> xr.DataArray:
    """``array`` carrying its classes (what :func:`array_classes` reads back)."""
    array.attrs.update(class_names=list(names), class_colors=[list(c) for c in colors])
    return array


def array_classes(array: xr.DataArray) -> ClassTable:
    """The classes a mask array carries: ``class_names`` (a list or its JSON) or, as
    rioxarray reads a mask file, ``CLASS_NAMES``; colours from ``class_colors``."""
    names: Any = array.attrs.get("class_names")
    if isinstance(names, str):
        with contextlib.suppress(ValueError):
            names = json.loads(names)
    names = names or array.attrs.get("CLASS_NAMES")
    if isinstance(names, str):
        names = json.loads(names)
    colors: list[RGB] = [(int(c[0]), int(c[1]), int(c[2]))
                         for c in array.attrs.get("class_colors") or []]
    return ClassTable(list(names or []), dict(enumerate(colors)))


def open_mask(path: str | os.PathLike[str]) -> xr.DataArray:
    """A written mask COG as a lazy DataArray (chunked by its internal tiles)."""
    import rasterio
    import rioxarray
    import xarray as xr

    from geoseg.gdal import gdal_env, reads_over_network

    try:
        # GDAL fixes an S3 object's endpoint when it opens it; the cached handle keeps it.
        with rasterio.Env(**gdal_env(reads_over_network(os.fspath(path)))):
            arr = rioxarray.open_rasterio(path, chunks={"band": 1, "y": 512, "x": 512},
                                          mask_and_scale=False)
    except Exception as exc:  # rasterio raises several unrelated types here
        raise OutputError(f"cannot open the written mask ({exc})", path) from None
    assert isinstance(arr, xr.DataArray)  # one file, one variable
    return arr.squeeze("band", drop=True).rename("class")

