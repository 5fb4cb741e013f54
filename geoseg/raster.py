"""Raster sources and outputs: open and validate inputs, read windows, write COGs.

A :class:`Source` is a small picklable value (paths or VRT text + geometry); tasks get
their dataset handle from it through ``Source.open()``, one per thread, because GDAL
handles are not thread-safe.
Several GeoTIFFs that form a mosaic become one VRT (built here as GDAL's own VRT XML,
with a dataset mask so gaps between tiles are nodata), never a hand-merged array.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.dtypes import _gdal_typename
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import MemoryFile
from rasterio.windows import Window

from geoseg.errors import InputError, OutputError, RasterReadError

# What GDAL failures surface as: rasterio's own errors and GDAL's CPLE_* classes.
GDAL_ERRORS = (RasterioError, CPLE_BaseError)

SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32",
                    "uint64", "int64", "float32", "float64")
# GDAL configuration geoseg reads and writes with, each unless the environment sets it:
# - a fixed 128 MB block cache per process, whatever the raster's size (the sweep re-reads
#   only a tile row's overlap, so more buys no speed; GDAL reads a value below 100000 as MB);
# - network paths (/vsicurl/, /vsis3/, /vsigs/, /vsiaz/, https://…) retry a request that
#   failed transiently (HTTP 429, 5xx, dropped connection) up to 4 times, 1 s apart and
#   growing; GDAL_HTTP_MAX_RETRY and GDAL_HTTP_RETRY_DELAY in the environment change that.
GDAL_DEFAULTS = {"GDAL_CACHEMAX": 128, "GDAL_NUM_THREADS": "ALL_CPUS",
                 "GDAL_HTTP_MAX_RETRY": "4", "GDAL_HTTP_RETRY_DELAY": "1"}


def gdal_env(remote: bool = False) -> dict[str, Any]:
    """The options for ``rasterio.Env``: :data:`GDAL_DEFAULTS` less those the environment
    sets. A ``remote`` raster is read by one GDAL thread: with GDAL_NUM_THREADS, GDAL 3.10
    fills a window with wrong pixels, raising nothing, when an HTTP request of its parallel
    block reads fails (tests/test_raster.py shows it on a server failing 1 request in 3)."""
    env = {k: v for k, v in GDAL_DEFAULTS.items() if k not in os.environ}
    if remote:
        env["GDAL_NUM_THREADS"] = "1"
    return env


# GDAL's file systems that read over a network (a local /vsizip/ or /vsigzip/ does not).
NETWORK_VSI = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
               "/vsiwebhdfs", "/vsihdfs")


def is_remote(path: str) -> bool:
    """Whether GDAL reads ``path`` over a network (/vsicurl/, /vsis3/, https://…, also
    inside a chain such as /vsizip//vsicurl/…)."""
    return "://" in path or any(prefix in path for prefix in NETWORK_VSI)


@dataclass(frozen=True)
class Source:
    """A validated raster input: one file, a VRT, or a mosaic of GeoTIFFs (as VRT text).

    ``bands`` are the 1-based band indexes to read, in model order.
    """

    name: str
    path: str
    vrt_xml: str | None
    width: int
    height: int
    bands: tuple[int, ...]
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    remote: bool = False  # read over a network (a file, or any tile of a mosaic)

    @contextlib.contextmanager
    def open(self) -> Iterator[rasterio.io.DatasetReader]:
        """This thread's own dataset handle for the source (GDAL handles are not thread-safe).

        Handles are kept open per thread, so neighbouring overlapping tiles read by one
        thread share GDAL's block cache instead of decoding the same blocks again.
        """
        with rasterio.Env(**gdal_env(self.remote)), _read_errors(self.name):
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


@contextlib.contextmanager
def _read_errors(name: str) -> Iterator[None]:
    """Turn GDAL/rasterio failures into one-line RasterReadErrors naming the file."""
    try:
        yield
    except GDAL_ERRORS as exc:
        raise RasterReadError(_gdal_message(exc, remote=is_remote(name)), name) from None


def _gdal_text(exc: BaseException) -> str:
    """GDAL's own words for a failure (rasterio often wraps them in a generic message)."""
    text = str(exc).strip()
    cause = exc.__cause__ or exc.__context__
    if cause is not None and ("previous exception" in text or not text):
        text = str(cause).strip() or text
    return text.splitlines()[0] if text else type(exc).__name__


def _gdal_message(exc: Exception, *, remote: bool = False) -> str:
    text = _gdal_text(exc)
    if "not recognized as" in text or "not a supported file format" in text:
        return "not a raster GDAL can read"
    if "No such file" in text or "HTTP response code: 404" in text:
        return "no such file"
    if remote or "HTTP response code" in text:  # retried by GDAL already
        retries = os.environ.get("GDAL_HTTP_MAX_RETRY", GDAL_DEFAULTS["GDAL_HTTP_MAX_RETRY"])
        return f"cannot be read over the network ({text}; GDAL_HTTP_MAX_RETRY={retries})"
    return f"cannot be read ({text})"


def open_source(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    bands: Sequence[int] | None = None,
    allow_no_crs: bool = False,
) -> Source:
    """Open and validate one raster, a VRT, a folder of GeoTIFF tiles or several tiles (a mosaic).

    Raises :class:`RasterReadError` / :class:`InputError` naming the file at fault.
    """
    infos = [_inspect(real, shown, allow_no_crs=allow_no_crs) for shown, real in _expand(paths)]
    if len(infos) == 1:
        info = infos[0]
        name, path, vrt = info["shown"], info["path"], None
    else:
        _check_mosaic(infos)
        vrt, width, height, transform = _mosaic_vrt(infos)
        info = {**infos[0], "width": width, "height": height, "transform": transform}
        name, path = f"{infos[0]['shown']} (+{len(infos) - 1} tiles)", ""
    band_indexes = _select_bands(bands, info["count"], name)
    return Source(
        name=name, path=path, vrt_xml=vrt, width=info["width"], height=info["height"],
        bands=band_indexes, dtype=info["dtype"], crs=info["crs"],
        transform=info["transform"], nodata=info["nodata"],
        remote=any(is_remote(i["path"]) for i in infos),
    )


def _expand(paths: Any) -> list[tuple[str, str]]:
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
        elif "://" in str(item) or str(item).startswith("/vsi"):
            files.append((str(item), str(item)))
        elif not p.exists():
            raise RasterReadError("no such file", p)
        else:
            files.append((str(p), str(p.absolute())))
    return files


def _inspect(path: str, shown: str, *, allow_no_crs: bool) -> dict[str, Any]:
    """Open one raster and check it can feed a model; errors name it as ``shown``."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise RasterReadError("is an empty file (0 bytes)", shown)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(**gdal_env(is_remote(path))), _read_errors(shown), \
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
                raise InputError("has no CRS (use --allow-no-crs to process it anyway)", shown)
            _check_readable(ds, shown)
            return {
                "path": path, "shown": shown, "width": ds.width, "height": ds.height, "count": ds.count,
                "dtype": dtype, "crs": ds.crs, "transform": transform, "nodata": ds.nodata,
            }


def _check_readable(ds: rasterio.io.DatasetReader, path: str) -> None:
    """Read the last block of every band so a truncated file fails now, not mid-run."""
    bh, bw = ds.block_shapes[0]
    row, col = (ds.height - 1) // bh * bh, (ds.width - 1) // bw * bw
    window = Window(col, row, min(bw, ds.width - col), min(bh, ds.height - row))
    try:
        ds.read(window=window)
    except GDAL_ERRORS as exc:
        if is_remote(ds.name):  # a network failure is no proof of a truncated file
            raise RasterReadError(_gdal_message(exc, remote=True), path) from None
        text = _gdal_text(exc)  # e.g. "x.tif, band 1: IReadBlock failed at X offset 0, …"
        text = text.removeprefix(f"{os.path.basename(ds.name)}, ")
        raise RasterReadError(f"is truncated or corrupt ({text})", path) from None


def _select_bands(bands: Sequence[int] | None, count: int, name: str) -> tuple[int, ...]:
    if bands is None:
        return tuple(range(1, count + 1))
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise InputError(f"band {bad[0]} does not exist (the raster has {count} bands)", name)
    return tuple(int(b) for b in bands)


def _check_mosaic(infos: list[dict[str, Any]]) -> None:
    first = infos[0]
    for info in infos[1:]:
        for key, what in (("crs", "CRS"), ("count", "band count"), ("dtype", "data type")):
            if info[key] != first[key]:
                raise InputError(f"mosaic tile {what} {info[key]} differs from "
                                 f"{first[key]} of {first['shown']}", info["shown"])
        a, b = info["transform"], first["transform"]
        if not (math.isclose(a.a, b.a, rel_tol=1e-9) and math.isclose(a.e, b.e, rel_tol=1e-9)):
            raise InputError(f"mosaic tile pixel size ({a.a}, {a.e}) differs from "
                             f"({b.a}, {b.e}) of {first['shown']}", info["shown"])
        col, row = ~b @ (a.c, a.f)
        if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
            raise InputError(f"mosaic tile is not on the pixel grid of {first['shown']}", info["shown"])


def _mosaic_vrt(infos: list[dict[str, Any]]) -> tuple[str, int, int, Affine]:
    """GDAL VRT XML for tiles on one grid; gaps between tiles are masked out."""
    ref = infos[0]["transform"]
    offsets = []
    for info in infos:
        col, row = ~ref @ (info["transform"].c, info["transform"].f)
        offsets.append((round(col), round(row)))
    col0 = min(c for c, _ in offsets)
    row0 = min(r for _, r in offsets)
    width = max(c + i["width"] for (c, _), i in zip(offsets, infos, strict=True)) - col0
    height = max(r + i["height"] for (_, r), i in zip(offsets, infos, strict=True)) - row0
    transform = ref @ Affine.translation(col0, row0)
    gdal_type = _gdal_typename(infos[0]["dtype"])

    def sources(band: str, tag: str, nodata: bool) -> str:
        out = []
        for (c, r), info in zip(offsets, infos, strict=True):
            nd = info["nodata"]
            out.append(
                f"<{tag}><SourceFilename relativeToVRT=\"0\">{escape(info['path'])}</SourceFilename>"
                f"<SourceBand>{band}</SourceBand>"
                f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{info['width']}\" ySize=\"{info['height']}\"/>"
                f"<DstRect xOff=\"{c - col0}\" yOff=\"{r - row0}\" "
                f"xSize=\"{info['width']}\" ySize=\"{info['height']}\"/>"
                + (f"<NODATA>{_xml_number(nd)}</NODATA>" if nodata and nd is not None else "")
                + f"</{tag}>"
            )
        return "".join(out)

    nodata = infos[0]["nodata"]
    bands = "".join(
        f"<VRTRasterBand dataType=\"{gdal_type}\" band=\"{b}\">"
        + (f"<NoDataValue>{_xml_number(nodata)}</NoDataValue>" if nodata is not None else "")
        + sources(str(b), "ComplexSource", nodata=True)
        + "</VRTRasterBand>"
        for b in range(1, infos[0]["count"] + 1)
    )
    mask = ("<MaskBand><VRTRasterBand dataType=\"Byte\">"
            + sources("mask,1", "SimpleSource", nodata=False)
            + "</VRTRasterBand></MaskBand>")
    crs = infos[0]["crs"]
    srs = f"<SRS>{escape(crs.to_wkt())}</SRS>" if crs is not None else ""
    gt = ", ".join(repr(float(v)) for v in transform.to_gdal())
    xml = (f"<VRTDataset rasterXSize=\"{width}\" rasterYSize=\"{height}\">{srs}"
           f"<GeoTransform>{gt}</GeoTransform>{bands}{mask}</VRTDataset>")
    return xml, width, height, transform


def _xml_number(value: float) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else repr(value)


def read_window(
    ds: rasterio.io.DatasetReader, source: Source, row: int, col: int, height: int, width: int,
    *, native: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window that may extend past the raster; the outside is filled by reflection.

    Returns ``(data (bands, height, width), valid bool (height, width))``; pixels that are
    nodata, masked or not finite (in float32) are ``valid == False``, and so is the outside.
    Data is float32, or with ``native`` integers stay in their own dtype (a smaller copy
    for the device to convert).
    """
    data, valid = read_clipped(ds, source, row, col, height, width, fill="reflect")
    integers = data.dtype.kind in "iub"
    if not (integers and native):
        data = data.astype(np.float32, copy=False)
    if not integers:
        valid &= np.all(np.isfinite(data), axis=0)
    return data, valid


def read_clipped(
    ds: rasterio.io.DatasetReader, source: Source, row: int, col: int, height: int, width: int,
    *, fill: str = "zeros",
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window that may extend past the raster, in the raster's own dtype.

    The outside is zeros (``fill="zeros"``) or a reflection of the inside (``"reflect"``)
    and always ``valid == False``. Returns ``(data (bands, height, width), valid)``.
    """
    r0, c0 = max(row, 0), max(col, 0)
    r1, c1 = min(row + height, source.height), min(col + width, source.width)
    window = Window(c0, r0, c1 - c0, r1 - r0)
    with _read_errors(source.name):
        data = ds.read(source.bands, window=window)
        valid = _valid_pixels(ds, source.bands, window, data)
    pads = ((r0 - row, row + height - r1), (c0 - col, col + width - c1))
    if any(p for pair in pads for p in pair):
        if fill == "reflect":
            mode = "reflect" if min(data.shape[1:]) > 1 else "edge"
            data = np.pad(data, ((0, 0), *pads), mode=mode)
        else:
            data = np.pad(data, ((0, 0), *pads))
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


def has_data(path: str | os.PathLike[str], name: str | os.PathLike[str] | None = None) -> bool:
    """Whether the raster at ``path`` has any pixel that is not nodata (block by block; it
    stops at the first block with data, so only an empty raster is read whole). Errors
    name ``name`` (e.g. the output a scratch file is for), else ``path``."""
    with rasterio.Env(**gdal_env(is_remote(os.fspath(path)))), \
            _read_errors(os.fspath(name if name is not None else path)), \
            rasterio.open(path, sharing=False) as ds:
        return any(ds.read_masks(1, window=window).any() for _, window in ds.block_windows(1))


def _alpha_bands(ds: rasterio.io.DatasetReader) -> set[int]:
    return {i + 1 for i, c in enumerate(ds.colorinterp) if c == ColorInterp.alpha}


# ---- writing ---------------------------------------------------------------------------

@contextlib.contextmanager
def write_errors(name: str | os.PathLike[str]) -> Iterator[None]:
    """Turn GDAL/OS write failures (disk full, file too large…) into OutputErrors naming ``name``."""
    try:
        yield
    except OutputError:
        raise
    except (*GDAL_ERRORS, OSError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else _gdal_text(exc)
        raise OutputError(f"could not be written ({text})", name) from None


def create_scratch(path: Path, source: Source, *, count: int, dtype: str, nodata: float | None,
                   name: str | os.PathLike[str], blocksize: int = 512) -> None:
    """An empty tiled GeoTIFF on the source's grid that tasks fill window by window.

    ``name`` is the output the scratch file is for (errors name it).
    """
    profile = {
        "driver": "GTiff", "width": source.width, "height": source.height, "count": count,
        "dtype": dtype, "crs": source.crs, "transform": source.transform, "nodata": nodata,
        "tiled": True, "blockxsize": blocksize, "blockysize": blocksize,
        "BIGTIFF": "IF_SAFER", "SPARSE_OK": "TRUE", "INTERLEAVE": "BAND",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with write_errors(name), rasterio.Env(**gdal_env()), rasterio.open(path, "w", **profile):
            pass


class WindowWriter:
    """A picklable ``target[key] = block`` sink for :func:`dask.array.store`.

    Each write opens the scratch file holding an exclusive lock on the file itself, so
    threads, processes and Dask workers on one file system can all write into it safely.
    ``name`` is the output it is for (errors name it).
    """

    def __init__(self, path: str | os.PathLike[str], name: str | os.PathLike[str]) -> None:
        self.path = str(path)
        self.name = str(name)

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        rows, cols = key[-2], key[-1]
        window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
        if block.ndim == 2:
            block = block[None]
        # Opened without O_CREAT: once a failed run removed the scratch file, a late task
        # fails here instead of leaving a file behind.
        with write_errors(self.name), open(self.path, "rb") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with warnings.catch_warnings(), rasterio.Env(**gdal_env()):
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                with rasterio.open(self.path, "r+", sharing=False) as ds:
                    ds.write(block, window=window)
                # GDAL only prints it when a full disk fails the flush at close: read back.
                with rasterio.open(self.path, sharing=False) as ds:
                    stored = ds.read(window=window)
        if not np.array_equal(stored, block, equal_nan=block.dtype.kind == "f"):
            raise OutputError(f"could not be written ({_write_failure(self.path)})", self.name)


def _write_failure(path: str) -> str:
    import shutil

    if shutil.disk_usage(os.path.dirname(path) or ".").free < 1 << 20:
        return "No space left on device"
    return "a block read back differs from the one written"


def check_free_space(needs: dict[Path, tuple[int, str | os.PathLike[str]]]) -> None:
    """Fail before any work when a folder has less room than its scratch files need:
    ``{folder: (bytes, the output named in the error)}``; folders on one file system
    share its room."""
    import shutil

    by_device: dict[int, tuple[int, Path, str | os.PathLike[str]]] = {}
    for folder, (size, name) in needs.items():
        device = os.stat(folder).st_dev
        total = by_device.get(device, (0, folder, name))[0] + size
        by_device[device] = (total, folder, name)
    for total, folder, name in by_device.values():
        free = shutil.disk_usage(folder).free
        if free < total:
            raise OutputError(f"could not be written (its scratch files need "
                              f"{_bytes(total)} free, {_bytes(free)} are)", name)


def _bytes(n: float) -> str:
    if n < 1000:
        return f"{n:.0f} bytes"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def write_cog(scratch: Path, dst: Path, *, overview_resampling: str = "nearest",
              blocksize: int = 512) -> None:
    """Convert a filled scratch GeoTIFF into a Cloud-Optimized GeoTIFF at ``dst`` (a temp path).

    Overviews use ``nearest`` (or ``mode``) so that class values are never averaged.
    """
    from rasterio.shutil import copy as gdal_copy

    with write_errors(dst), rasterio.Env(**gdal_env()):
        gdal_copy(
            str(scratch), str(dst), driver="COG", COMPRESS="DEFLATE", PREDICTOR="YES",
            BLOCKSIZE=blocksize, OVERVIEW_RESAMPLING=overview_resampling.upper(),
            BIGTIFF="IF_SAFER", NUM_THREADS="ALL_CPUS",
        )


def class_table(ds: rasterio.io.DatasetReader) -> tuple[list[str], dict[int, tuple[int, int, int]]]:
    """A class raster's class names (``CLASS_NAMES`` as JSON, else the ``CLASS_i`` tags of
    band 1) and the RGB colours of its colour table, nodata (255) left out."""
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
    return names, {i: tuple(rgba[:3]) for i, rgba in table.items() if i != 255}  # type: ignore[misc]


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``geoseg info`` shows about a raster: geometry, bands, nodata, classes, COG layout."""
    shown, real = _expand(path)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.Env(**gdal_env(is_remote(real))), _read_errors(shown), rasterio.open(real) as ds:
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
