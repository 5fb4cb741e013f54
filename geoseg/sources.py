"""Raster inputs: open and validate a scene up front, then read windows of it lazily.

A scene is one file, a VRT, a folder of GeoTIFF tiles or several tiles of one mosaic, a
band stack (one file per band: ``B02.tif+B03.tif+B04.tif``, ``red=a.tif+nir=b.tif``, a
product folder of band files, or several band files given at once) or a STAC Item
(:mod:`geoseg.stac`). Mosaics and stacks become one VRT (:mod:`geoseg.mosaic`), never a
hand-merged array: a stack's bands of other resolutions are resampled by GDAL onto the
finest band's grid (or one of ``resolution``) as windows are read.

Bands are matched to the model's band names (:mod:`geoseg.bands`) wherever the scene names
them; a scale and offset the product declares (STAC ``raster:bands``, the GeoTIFF's own)
travel with the source. A :class:`Source` is a small picklable value (a path or VRT text,
its :class:`~geoseg.grid.Grid` and bands); tasks get their dataset handle from it through
:meth:`Source.open`, one per thread, because GDAL handles are not thread-safe.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
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

from geoseg import mosaic, safe, stac, storage
from geoseg.bands import (
    BandFile,
    common_name,
    match,
    mission_of,
    mission_of_ids,
    names_in_files,
)
from geoseg.errors import InputError, RasterReadError
from geoseg.gdal import (
    GDAL_ERRORS,
    gdal_env,
    gdal_text,
    is_gdal_path,
    read_errors,
    read_message,
    reads_over_network,
    vsi_path,
)
from geoseg.grid import RESAMPLING, Grid, crs_name

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
    names: tuple[str | None, ...] = ()  # each band's common name (None: unknown)
    scales: tuple[float, ...] = ()  # each band's own scale and offset (1 and 0: none)
    offsets: tuple[float, ...] = ()
    nodatas: tuple[float | None, ...] = ()
    masked: tuple[bool, ...] = ()  # each band's: a mask band of its own (not nodata, alpha)


@dataclass(frozen=True)
class Source:
    """A validated raster input: one file, a VRT, or a mosaic or band stack (as VRT text).

    ``bands`` are the 1-based band indexes to read, in model order; ``band_names`` their
    common names ("" where unknown). ``scale`` and ``offset`` (per read band; empty when
    the product declares none) turn stored values into the product's physical units.
    """

    name: str
    path: str
    vrt_xml: str | None
    grid: Grid
    bands: tuple[int, ...]
    dtype: str
    nodata: float | None
    remote: bool = False  # read over a network (a file, or any tile of a mosaic)
    band_names: tuple[str, ...] = ()
    scale: tuple[float, ...] = ()
    offset: tuple[float, ...] = ()

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
    want: Sequence[str] | None = None,
    assets: Sequence[str] | None = None,
    resolution: float | None = None,
    resampling: str = "bilinear",
    allow_no_crs: bool = False,
) -> Source:
    """Open and validate a scene: one raster, a VRT, a folder of GeoTIFF tiles or several
    tiles (a mosaic), a band stack or a STAC Item (see the module's text).

    ``want`` are the band names the model reads: the scene's bands are matched to them by
    name wherever it names its bands (``bands``, 1-based indexes, choose by position
    instead). ``assets`` choose a STAC Item's assets by key. A stack's grid is its finest
    band's, or one of ``resolution`` (CRS units) over the same area; other bands are
    resampled with ``resampling``. Raises :class:`RasterReadError` / :class:`InputError`
    naming the file at fault.
    """
    if resampling not in RESAMPLING:
        raise InputError(f"resampling {resampling!r} is not one of {', '.join(RESAMPLING)}")
    if resolution is not None and not (math.isfinite(resolution) and resolution > 0):
        raise InputError(f"resolution must be a positive number, not {resolution}")
    items = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [
        os.fspath(p) for p in paths]
    # An s3:// glob becomes its objects here, as a shell expands a local glob into files.
    items = [u for i in items for u in (storage.glob(i) if storage.has_magic(i) else [i])]
    if assets and not (len(items) == 1 and is_item(items[0])):
        raise InputError("${assets} chooses the assets of a STAC Item; the scene is no Item")
    stack = scene_bands(items, assets)
    if stack is not None:
        name, band_files = stack
        return open_stack(band_files, name=name, bands=bands, want=want, resolution=resolution,
                          resampling=resampling, allow_no_crs=allow_no_crs)
    infos = [inspect(real, shown, allow_no_crs=allow_no_crs) for shown, real in expand(items)]
    if (len(infos) > 1 and want is not None and len(want) > 1 and bands is None
            and all(i.count == 1 for i in infos)):
        raise InputError(f"is one of {len(infos)} single-band files, taken as tiles of a mosaic "
                         f"(their names do not say which band each is, or they cover different "
                         f"areas); the bands of one scene are joined with + and named where "
                         f"their file names do not (blue=a.tif+green=b.tif+…)", infos[0].shown)
    if resolution is not None:
        if len(infos) > 1:
            raise InputError("${resolution} resamples one raster, a band stack or a STAC "
                             "Item, not a mosaic of tiles", infos[0].shown)
        info = infos[0]
        layers = [BandFile(info.path, info.shown, b) for b in range(1, info.count + 1)]
        return open_stack(layers, name=info.shown, bands=bands, want=want,
                          resolution=resolution, resampling=resampling,
                          allow_no_crs=allow_no_crs, infos={info.path: info})
    if len(infos) == 1:
        info = infos[0]
        name, path, vrt = info.shown, info.path, None
    else:
        mosaic.check_tiles(infos)
        vrt, grid = mosaic.vrt(infos)
        info = replace(infos[0], grid=grid)
        name, path = f"{infos[0].shown} (+{len(infos) - 1} tiles)", ""
    chosen = _choose_bands(bands, want, info.names, info.count, name)
    scale, offset = _declared(info.scales, info.offsets, chosen)
    return Source(
        name=name, path=path, vrt_xml=vrt, grid=info.grid,
        bands=chosen, dtype=info.dtype, nodata=info.nodata,
        remote=any(reads_over_network(i.path) for i in infos),
        band_names=tuple(info.names[b - 1] or "" for b in chosen), scale=scale, offset=offset,
    )


def scene_bands(items: Sequence[str], assets: Sequence[str] | None = None
                ) -> tuple[str, list[BandFile]] | None:
    """The bands of a scene stored one file per band (with its name), or None when the
    scene is a raster or a mosaic. A stack is a STAC Item; ``A+B+C`` (each part a file,
    or ``NAME=FILE`` to name its band); files given apart with ``NAME=FILE``, or whose
    names announce distinct bands (``B02``, ``SR_B4``…); a folder of such files; or a
    Sentinel-2 SAFE product (:mod:`geoseg.safe`)."""
    if len(items) == 1 and stac.is_stac(items[0]) and not (
            not is_gdal_path(items[0]) and Path(items[0]).is_dir()):
        return stac.item_bands(items[0], assets)
    if len(items) == 1 and not is_gdal_path(items[0]) and safe.is_product(Path(items[0])):
        return safe.product_bands(Path(items[0]))
    if len(items) == 1 and not is_gdal_path(items[0]) and Path(items[0]).is_dir():
        folder = Path(items[0])
        rasters = _raster_files(folder)
        if not rasters:  # a folder of STAC Items, or of nothing geoseg reads
            found = stac.folder_items(folder)
            if len(found) > 1:
                raise InputError(f"holds {len(found)} STAC Items; a scene is one of them "
                                 f"(give one, or run them all with geoseg run)", folder)
            return stac.item_bands(found[0], assets) if found else None
        files = zip(rasters, names_in_files([str(p) for p in rasters]), strict=True)
        band_files = [BandFile(str(p.absolute()), str(p), name=n, nodata=_product_nodata(str(p)))
                      for p, n in files if n is not None]
        if (len(band_files) >= 2 and len({b.name for b in band_files}) > 1
                and _one_footprint([b.path for b in band_files])):
            return folder.name or str(folder), band_files
        return None
    parts = items
    if len(items) == 1 and len(stack_parts(items[0])) > 1:
        parts = stack_parts(items[0])
        if any(not p for p in parts):
            raise InputError("a band stack is FILE+FILE+… (a file on each side of every +)",
                             items[0])
    elif len(items) == 1 and _named(items[0]) is None:
        return None
    explicit = any(_named(p) for p in parts)
    by_file = names_in_files([part_path(p) for p in parts])
    resolved = [expand([part_path(p)])[0] for p in parts]  # (as written, absolute)
    apart = not explicit and len(parts) == len(items)  # files given apart, named by their names
    if apart and (None in by_file or len(set(by_file)) < len(by_file)
                  or not _one_footprint([real for _, real in resolved])):
        return None  # tiles of a mosaic
    band_files = []
    said = [n for n, _ in filter(None, map(_named, parts))]
    mission = mission_of_ids(said)
    for part, from_file, (shown, real) in zip(parts, by_file, resolved, strict=True):
        named = _named(part)
        name = named[0] if named is not None else None
        if name is not None and common_name(name, mission=mission) is None:
            raise InputError(f"band name {name!r} is no band name geoseg knows (use a "
                             f"common name such as blue, green, red, nir, swir16, or an id "
                             f"such as B04 or B8A)", part)
        band = common_name(name, mission=mission) if name is not None else from_file
        band_files.append(BandFile(real, shown, name=band, nodata=_product_nodata(real)))
    return stack_name([b.shown for b in band_files]), band_files


def _product_nodata(path: str) -> float | None:
    """0 for a Sentinel-2 JPEG 2000 band file (ESA's products say 0 is NO_DATA, and the
    files do not); None (the file's own) otherwise."""
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    return 0.0 if name.lower().endswith(".jp2") and mission_of(name) == "sentinel2" else None


def _one_footprint(paths: Sequence[str]) -> bool:
    """Whether the rasters cover one area (to within their coarsest pixel), as the band
    files of one product do and the tiles of a mosaic do not (tiles named ``…_B1.tif``,
    ``…_B2.tif`` stay a mosaic). False where one cannot be read: the mosaic's checks
    then say why."""
    bounds, pixels = [], []
    try:
        for path in paths:
            with rasterio.Env(**gdal_env(reads_over_network(path))), rasterio.open(path) as ds:
                bounds.append(ds.bounds)
                pixels.append(max(abs(ds.transform.a), abs(ds.transform.e)))
    except (*GDAL_ERRORS, OSError):
        return False
    slack = max(pixels)
    return all(abs(a - b) <= slack for other in bounds[1:] for a, b in zip(bounds[0], other,
                                                                            strict=True))


def is_item(ref: str) -> bool:
    """Whether ``ref`` is STAC (an Item or ItemCollection), or a folder of Items without
    rasters (a product folder with an Item beside its band files is the band files)."""
    if not is_gdal_path(ref) and Path(ref).is_dir():
        return not _raster_files(Path(ref)) and bool(stac.folder_items(Path(ref)))
    return stac.is_stac(ref)


def stack_name(files: Sequence[str]) -> str:
    """A band stack's name: what its files' names share up to a separator
    (``T32_B02_10m.tif+T32_B08_20m.tif`` → ``T32``), else the first file's."""
    stems = [Path(f.split("?")[0]).stem for f in files]
    prefix = stems[0]
    for stem in stems[1:]:
        prefix = prefix[:next((k for k, (a, b) in enumerate(zip(prefix, stem, strict=False))
                               if a != b),
                              min(len(prefix), len(stem)))]
    if any(len(s) > len(prefix) and s[len(prefix)] not in "_-. " for s in stems):
        prefix = re.sub(r"[^_\-. ]*$", "", prefix)
    return prefix.rstrip("_-. ") or stems[0]


def stack_parts(text: str) -> list[str]:
    """The parts of a band stack ``A+B+C`` (each ``FILE`` or ``NAME=FILE``), or ``[text]``
    where ``text`` is one path with a ``+`` in it: an existing file, a URL whose parts are
    not all URLs, or a path none of whose parts exists."""
    if "+" not in text or _exists(text):
        return [text]
    parts = text.split("+")
    paths = [(_named(p) or ("", p))[1] for p in parts]
    if is_gdal_path(text):
        stack = all(is_gdal_path(p) for p in paths if p)
    else:
        stack = any(p and (is_gdal_path(p) or Path(p).exists()) for p in paths)
    return parts if stack else [text]


def part_path(part: str) -> str:
    """A band stack's part without its ``NAME=``."""
    named = _named(part)
    return part if named is None else named[1]


def _named(part: str) -> tuple[str, str] | None:
    """``"red=B04.tif"`` → ``("red", "B04.tif")``; None for a plain path."""
    name, sep, path = part.partition("=")
    if sep and path and name and "/" not in name and "\\" not in name and not _exists(part):
        return name, path
    return None


def _exists(text: str) -> bool:
    return not is_gdal_path(text) and Path(text).exists()


def _raster_files(folder: Path) -> list[Path]:
    return sorted(c for c in folder.iterdir()
                  if c.suffix.lower() in FOLDER_SUFFIXES and c.is_file())


FOLDER_SUFFIXES = (".tif", ".tiff", ".jp2")


def open_stack(layers: Sequence[BandFile], *, name: str, bands: Sequence[int] | None = None,
               want: Sequence[str] | None = None, resolution: float | None = None,
               resampling: str = "bilinear", allow_no_crs: bool = False,
               infos: dict[str, RasterInfo] | None = None) -> Source:
    """A scene of bands from several files (or one file's bands on another grid) as one
    VRT: the finest band's grid, or ``resolution`` over its area; every band must be in
    one CRS and cover that grid."""
    infos = dict(infos or {})
    for layer in layers:
        if layer.path not in infos:
            infos[layer.path] = inspect(layer.path, layer.shown, allow_no_crs=allow_no_crs)
        if layer.band > infos[layer.path].count:
            raise InputError(f"has no band {layer.band}", layer.shown)
    def named(layer: BandFile) -> str | None:
        info = infos[layer.path]
        return layer.name or info.names[layer.band - 1]

    layers = _finest_per_name(list(layers), infos, named)
    names = [named(layer) for layer in layers]
    chosen = [layers[b - 1] for b in _choose_bands(bands, want, tuple(names), len(layers), name)]
    first = infos[chosen[0].path]
    for layer in chosen:
        t = infos[layer.path].grid.transform
        if t.b or t.d or t.a < 0 or t.e > 0:
            raise InputError("is not north-up (rotated or flipped pixels): a band of a stack "
                             "must be (warp it first, e.g. gdalwarp)", layer.shown)
    for layer in chosen[1:]:
        crs = infos[layer.path].grid.crs
        if crs != first.grid.crs:
            raise InputError(f"is in {crs_name(crs)} but {first.shown} is in "
                             f"{crs_name(first.grid.crs)}: the bands of a scene share one CRS "
                             f"(warp them to one first, e.g. gdalwarp -t_srs)", layer.shown)
    finest = min(chosen, key=lambda b: abs(infos[b.path].grid.transform.a))
    grid = infos[finest.path].grid
    if resolution is not None:
        grid = grid.resampled(resolution)
    for layer in chosen:
        _check_covers(infos[layer.path], grid)
    dtype = np.result_type(*[infos[b.path].dtype for b in chosen]).name
    nodatas = [b.nodata if b.nodata is not None else infos[b.path].nodatas[b.band - 1]
               for b in chosen]
    xml = mosaic.stack_vrt([(vsi_path(b.path), b.band, infos[b.path].grid, nd,
                             infos[b.path].masked[b.band - 1])
                            for b, nd in zip(chosen, nodatas, strict=True)],
                           grid, dtype, resampling)
    scales = tuple(b.scale if b.scale is not None else infos[b.path].scales[b.band - 1]
                   for b in chosen)
    offsets = tuple(b.offset if b.offset is not None else infos[b.path].offsets[b.band - 1]
                    for b in chosen)
    scale, offset = _declared(scales, offsets, tuple(range(1, len(chosen) + 1)))
    return Source(name=name, path="", vrt_xml=xml, grid=grid,
                  bands=tuple(range(1, len(chosen) + 1)), dtype=dtype, nodata=nodatas[0],
                  remote=any(reads_over_network(b.path) for b in chosen),
                  band_names=tuple(named(b) or "" for b in chosen), scale=scale, offset=offset)


def _finest_per_name(layers: list[BandFile], infos: dict[str, RasterInfo],
                     named: Any) -> list[BandFile]:
    """Of several bands of one name (B02 at 10, 20 and 60 m), the finest, in place of the first."""
    best: dict[str, BandFile] = {}
    for layer in layers:
        n = named(layer)
        if n is None:
            continue
        if n not in best or (abs(infos[layer.path].grid.transform.a)
                             < abs(infos[best[n].path].grid.transform.a)):
            best[n] = layer
    out, seen = [], set()
    for layer in layers:
        n = named(layer)
        if n is None:
            out.append(layer)
        elif n not in seen:
            seen.add(n)
            out.append(best[n])
    return out


def _check_covers(info: RasterInfo, grid: Grid) -> None:
    """A band must cover the scene's grid (to within half of its own pixel)."""
    have, need = info.grid.bounds, grid.bounds
    slack = abs(info.grid.transform.a) / 2, abs(info.grid.transform.e) / 2
    if (have[0] > need[0] + slack[0] or have[2] < need[2] - slack[0]
            or have[1] > need[1] + slack[1] or have[3] < need[3] - slack[1]):
        raise InputError(f"covers {_bounds_text(have)}, less than the scene's "
                         f"{_bounds_text(need)}: every band of a scene must cover it", info.shown)


def _bounds_text(b: tuple[float, float, float, float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in b) + ")"


def _choose_bands(bands: Sequence[int] | None, want: Sequence[str] | None,
                  names: tuple[str | None, ...], count: int, scene: str) -> tuple[int, ...]:
    """The 1-based bands to read: as ``bands`` says, else matched to the model's ``want``
    by name where the scene names its bands, else all of them in order."""
    if bands is not None:
        return _select_bands(bands, count, scene)
    if want is not None and names:
        picked = match(want, names, scene)
        if picked is not None:
            return tuple(i + 1 for i in picked)
    return tuple(range(1, count + 1))


def _declared(scales: Sequence[float], offsets: Sequence[float], chosen: Sequence[int]
              ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The chosen bands' scale and offset, or ``((), ())`` when none declares any."""
    scale = tuple(float(scales[b - 1]) if scales else 1.0 for b in chosen)
    offset = tuple(float(offsets[b - 1]) if offsets else 0.0 for b in chosen)
    if all(s == 1.0 for s in scale) and all(o == 0.0 for o in offset):
        return (), ()
    return scale, offset


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
            tiles = _raster_files(p)
            if not tiles:
                raise RasterReadError("is a directory without GeoTIFF tiles", p)
            files.extend((str(c), str(c.absolute())) for c in tiles)
        elif storage.is_url(str(item)):  # checked here so each failure is one clear line
            storage.check_readable(str(item))
            files.append((str(item), vsi_path(str(item))))
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
            mission = mission_of(path) or mission_of_ids(ds.descriptions)
            names = tuple(common_name(d, path, mission) for d in ds.descriptions)
            return RasterInfo(path, shown, Grid.of(ds), ds.count, dtype, ds.nodata, names,
                              tuple(1.0 if v is None else float(v) for v in ds.scales),
                              tuple(0.0 if v is None else float(v) for v in ds.offsets),
                              tuple(ds.nodatavals),
                              tuple(f not in ([MaskFlags.all_valid], [MaskFlags.nodata])
                                    and MaskFlags.alpha not in f for f in ds.mask_flag_enums))


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
    """What ``geoseg info`` shows about a raster: geometry, bands, nodata, classes, COG
    layout; about a band stack or STAC Item: its grid and each band's file, name, scale
    and offset."""
    stack = scene_bands([os.fspath(path)])
    if stack is not None:
        return _describe_stack(os.fspath(path), stack[1])
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


def _describe_stack(path: str, band_files: Sequence[BandFile]) -> dict[str, Any]:
    src = open_source(path, allow_no_crs=True)
    t = src.grid.transform
    scale, offset = src.scale or (1.0,) * len(src.bands), src.offset or (0.0,) * len(src.bands)
    with src.open() as ds:
        files = [ds.files[1 + k] if len(ds.files) > 1 + k else "" for k in range(ds.count)]
        nodata = list(ds.nodatavals)
    return {
        "scene": src.name, "driver": "band stack (VRT)",
        "size": f"{src.grid.width} x {src.grid.height}", "bands": len(src.bands),
        "dtype": src.dtype, "crs": src.grid.crs.to_string() if src.grid.crs else None,
        "resolution": [abs(t.a), abs(t.e)], "bounds": list(src.grid.bounds),
        "band_names": list(src.band_names), "scale": list(scale), "offset": list(offset),
        "nodata": nodata, "files": files or [b.shown for b in band_files],
    }
