"""Raster inputs: open and validate a scene up front, then read windows of it lazily.

A scene is one file, a VRT, a folder of GeoTIFF tiles or several tiles of one mosaic
(made one VRT by :mod:`geoseg.mosaic`, never a hand-merged array). A :class:`Source` is a
small picklable value (a path or VRT text, its :class:`~geoseg.grid.Grid` and bands);
tasks get their dataset handle from it through :meth:`Source.open`, one per thread,
because GDAL handles are not thread-safe.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rasterio.windows import Window

from geoseg import mosaic
from geoseg.errors import InputError, RasterReadError
from geoseg.gdal import (
    GDAL_ERRORS,
    gdal_env,
    gdal_text,
    is_gdal_path,
    read_errors,
    read_message,
    reads_over_network,
)
from geoseg.grid import Grid

SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32",
                    "uint64", "int64", "float32", "float64")
# What lies outside a raster in a window read past its edge: zeros, or a reflection of
# the inside (invalid either way), or a reflection that is as valid as what it mirrors.
Fill = Literal["zeros", "reflect", "reflect-valid"]


@dataclass(frozen=True)
class RasterInfo:
    """One raster file as opened and checked: where it is, its grid and its bands."""

    path: str  # as GDAL opens it (absolute)
    shown: str  # as the user wrote it (errors name it)
    grid: Grid
    count: int
    dtype: str
    nodata: float | None


@dataclass(frozen=True)
class Source:
    """A validated raster input: one file, a VRT, or a mosaic of GeoTIFFs (as VRT text).

    ``bands`` are the 1-based band indexes to read, in model order.
    """

    name: str
    path: str
    vrt_xml: str | None
    grid: Grid
    bands: tuple[int, ...]
    dtype: str
    nodata: float | None
    remote: bool = False  # read over a network (a file, or any tile of a mosaic)

    @contextlib.contextmanager
    def open(self) -> Iterator[rasterio.io.DatasetReader]:
        """This thread's own dataset handle for the source (GDAL handles are not thread-safe).

        Handles are kept open per thread, so neighbouring overlapping tiles read by one
        thread share GDAL's block cache instead of decoding the same blocks again.
        """
        with rasterio.Env(**gdal_env(self.remote)), read_errors(self.name):
            yield _thread_handle(self)


_HANDLES = threading.local()
_HANDLES_PER_THREAD = 4


def _thread_handle(source: Source) -> rasterio.io.DatasetReader:
    """An open dataset for ``source`` owned by the calling thread (a small LRU per thread)."""
    handles: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = _HANDLES.__dict__.setdefault(
        "lru", OrderedDict())
    stamp = os.stat(source.path).st_mtime_ns if source.vrt_xml is None and os.path.isfile(
        source.path) else None
    key = (source.path, source.vrt_xml, stamp)  # a rewritten file gets a new handle
    if key in handles:
        handles.move_to_end(key)
        return handles[key][1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # checked by open_source
        if source.vrt_xml is None:
            mem, ds = None, rasterio.open(source.path, sharing=False)
        else:
            mem = MemoryFile(source.vrt_xml.encode(), ext=".vrt")
            ds = mem.open()
    handles[key] = (mem, ds)
    while len(handles) > _HANDLES_PER_THREAD:
        _, (old_mem, old_ds) = handles.popitem(last=False)
        old_ds.close()
        if old_mem is not None:
            old_mem.close()
    return ds


def open_source(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    bands: Sequence[int] | None = None,
    allow_no_crs: bool = False,
) -> Source:
    """Open and validate one raster, a VRT, a folder of GeoTIFF tiles or several tiles (a mosaic).

    Raises :class:`RasterReadError` / :class:`InputError` naming the file at fault.
    """
    infos = [inspect(real, shown, allow_no_crs=allow_no_crs) for shown, real in expand(paths)]
    if len(infos) == 1:
        info = infos[0]
        name, path, vrt = info.shown, info.path, None
    else:
        mosaic.check_tiles(infos)
        vrt, grid = mosaic.vrt(infos)
        info = replace(infos[0], grid=grid)
        name, path = f"{infos[0].shown} (+{len(infos) - 1} tiles)", ""
    return Source(
        name=name, path=path, vrt_xml=vrt, grid=info.grid,
        bands=_select_bands(bands, info.count, name), dtype=info.dtype, nodata=info.nodata,
        remote=any(reads_over_network(i.path) for i in infos),
    )


def expand(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
           ) -> list[tuple[str, str]]:
    """Input arguments → ``(as the user wrote it, absolute path)`` of every raster file.

    Absolute paths keep working in VRTs and on workers with another working directory.
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise InputError("no input raster given")
    files: list[tuple[str, str]] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            tiles = sorted(c for c in p.iterdir()
                           if c.suffix.lower() in (".tif", ".tiff") and c.is_file())
            if not tiles:
                raise RasterReadError("is a directory without GeoTIFF tiles", p)
            files.extend((str(c), str(c.absolute())) for c in tiles)
        elif is_gdal_path(str(item)):
            files.append((str(item), str(item)))
        elif not p.exists():
            raise RasterReadError("no such file", p)
        else:
            files.append((str(p), str(p.absolute())))
    return files


def inspect(path: str, shown: str, *, allow_no_crs: bool) -> RasterInfo:
    """Open one raster and check it can feed a model; errors name it as ``shown``."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise RasterReadError("is an empty file (0 bytes)", shown)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(**gdal_env(reads_over_network(path))), read_errors(shown), \
                rasterio.open(path, sharing=False) as ds:
            dtypes = set(ds.dtypes)
            if len(dtypes) != 1:
                raise InputError(f"bands have different data types {sorted(dtypes)}", shown)
            dtype = ds.dtypes[0]
            if dtype not in SUPPORTED_DTYPES:
                raise InputError(f"data type {dtype} is not supported (use a real-valued raster)", shown)
            transform = ds.transform
            if transform.b != 0 or transform.d != 0:
                raise InputError("rotated or sheared geotransform is not supported "
                                 "(warp it north-up first, e.g. gdalwarp)", shown)
            if ds.crs is None and not allow_no_crs:
                raise InputError("has no CRS (use ${allow_no_crs=True} to process it anyway)",
                                 shown)
            _check_readable(ds, shown)
            return RasterInfo(path, shown, Grid.of(ds), ds.count, dtype, ds.nodata)


def _check_readable(ds: rasterio.io.DatasetReader, path: str) -> None:
    """Read the last block of every band so a truncated file fails now, not mid-run."""
    bh, bw = ds.block_shapes[0]
    row, col = (ds.height - 1) // bh * bh, (ds.width - 1) // bw * bw
    window = Window(col, row, min(bw, ds.width - col), min(bh, ds.height - row))
    try:
        ds.read(window=window)
    except GDAL_ERRORS as exc:
        if reads_over_network(ds.name):  # a network failure is no proof of a truncated file
            raise RasterReadError(read_message(exc, remote=True), path) from None
        text = gdal_text(exc)  # e.g. "x.tif, band 1: IReadBlock failed at X offset 0, …"
        text = text.removeprefix(f"{os.path.basename(ds.name)}, ")
        raise RasterReadError(f"is truncated or corrupt ({text})", path) from None


def _select_bands(bands: Sequence[int] | None, count: int, name: str) -> tuple[int, ...]:
    if bands is None:
        return tuple(range(1, count + 1))
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise InputError(f"band {bad[0]} does not exist (the raster has {count} bands)", name)
    return tuple(int(b) for b in bands)


def read_window(
    ds: rasterio.io.DatasetReader, source: Source, row: int, col: int, height: int, width: int,
    *, native: bool = False, outside_valid: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window that may extend past the raster; the outside is filled by reflection.

    Returns ``(data (bands, height, width), valid bool (height, width))``; pixels that are
    nodata, masked or not finite (in float32) are ``valid == False``, and so is the outside
    unless ``outside_valid``, which makes it as valid as the pixels it mirrors (a model
    then sees the scene go on past its edge, as peers pad, instead of a flat fill).
    Data is float32, or with ``native`` integers stay in their own dtype (a smaller copy
    for the device to convert).
    """
    data, valid = read_clipped(ds, source, row, col, height, width,
                               fill="reflect-valid" if outside_valid else "reflect")
    integers = data.dtype.kind in "iub"
    if not (integers and native):
        data = data.astype(np.float32, copy=False)
    if not integers:
        valid &= np.all(np.isfinite(data), axis=0)
    return data, valid


def read_clipped(
    ds: rasterio.io.DatasetReader, source: Source, row: int, col: int, height: int, width: int,
    *, fill: Fill = "zeros",
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window that may extend past the raster, in the raster's own dtype.

    The outside is zeros (``fill="zeros"``) or a reflection of the inside (``"reflect"``)
    and always ``valid == False``. Returns ``(data (bands, height, width), valid)``.
    """
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, source.grid.height), min(col + width, source.grid.width)
    window = Window(c0, r0, c1 - c0, r1 - r0)
    with read_errors(source.name):
        data = ds.read(source.bands, window=window)
        valid = _valid_pixels(ds, source.bands, window, data)
    pads = ((r0 - row, row + height - r1), (c0 - col, col + width - c1))
    if any(p for pair in pads for p in pair):
        if fill.startswith("reflect"):
            mode: Literal["reflect", "edge"] = "reflect" if min(data.shape[1:]) > 1 else "edge"
            data = np.pad(data, ((0, 0), *pads), mode=mode)
        else:
            data = np.pad(data, ((0, 0), *pads))
        if fill == "reflect-valid":
            valid = np.pad(valid, pads, mode=mode)
        else:
            valid = np.pad(valid, pads, mode="constant", constant_values=False)
    return data, valid


def _valid_pixels(ds: rasterio.io.DatasetReader, bands: tuple[int, ...], window: Window,
                  raw: np.ndarray) -> np.ndarray:
    """Pixels with data in every band, by the cheapest way GDAL's mask flags allow.

    A plain nodata value is compared on the native values already read (GDAL would read
    every band again to build that mask); real mask bands or alpha are read.
    """
    flags = [ds.mask_flag_enums[b - 1] for b in bands]
    if any(MaskFlags.alpha in f for f in flags) and _alpha_bands(ds) & set(bands):
        # A band read as data is no alpha mask, whatever the file says: GDAL writes a
        # 4-band uint8 GeoTIFF as RGBA by default, so a NIR of 0 would read as "no data".
        flags = [[MaskFlags.all_valid] if ds.nodatavals[b - 1] is None else [MaskFlags.nodata]
                 for b in bands]
    if all(f == [MaskFlags.all_valid] for f in flags):
        return np.ones(raw.shape[1:], bool)
    if all(f == [MaskFlags.nodata] for f in flags):
        valid = np.ones(raw.shape[1:], bool)
        for k, b in enumerate(bands):
            nodata = ds.nodatavals[b - 1]
            if not (isinstance(nodata, float) and math.isnan(nodata)):  # NaN: isfinite catches it
                valid &= raw[k] != np.array(nodata).astype(raw.dtype)
        return valid
    if all(MaskFlags.per_dataset in f for f in flags):
        return ds.read_masks(bands[0], window=window) > 0
    return np.all(ds.read_masks(bands, window=window) > 0, axis=0)


def _alpha_bands(ds: rasterio.io.DatasetReader) -> set[int]:
    return {i + 1 for i, c in enumerate(ds.colorinterp) if c == ColorInterp.alpha}


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``geoseg info`` shows about a raster: geometry, bands, nodata, classes, COG layout."""
    shown, real = expand(path)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(**gdal_env(reads_over_network(real))), read_errors(shown), \
                rasterio.open(real) as ds:
            tags = ds.tags()
            out: dict[str, Any] = {
                "path": shown, "driver": ds.driver, "size": f"{ds.width} x {ds.height}",
                "bands": ds.count, "dtype": ds.dtypes[0],
                "crs": ds.crs.to_string() if ds.crs else None,
                "resolution": list(ds.res), "bounds": list(ds.bounds),
                "nodata": ds.nodata, "band_names": [d or "" for d in ds.descriptions],
                "block_size": list(ds.block_shapes[0]), "overviews": ds.overviews(1),
                "compression": ds.compression.value if ds.compression else None,
            }
            if "CLASS_NAMES" in tags:
                out["classes"] = tags["CLASS_NAMES"]
    return out
