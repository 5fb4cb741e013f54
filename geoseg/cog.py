"""Raster outputs: a scratch GeoTIFF that tasks fill window by window, then a
Cloud-Optimized GeoTIFF made from it by GDAL's COG driver.

The scratch file lies beside the output (see :func:`geoseg.atomic.temp_sibling`); every
block written is read back, because GDAL only prints a write that a full disk lost.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from geoseg.errors import OutputError
from geoseg.gdal import gdal_env, write_errors
from geoseg.grid import Grid

# Overviews of class masks must never average classes: nearest or mode.
OverviewResampling = Literal["nearest", "mode", "average"]


def create_scratch(path: Path, grid: Grid, *, count: int, dtype: str, nodata: float | None,
                   name: str | os.PathLike[str], blocksize: int = 512) -> None:
    """An empty tiled GeoTIFF on ``grid`` that tasks fill window by window.

    ``name`` is the output the scratch file is for (errors name it).
    """
    profile = {
        "driver": "GTiff", "width": grid.width, "height": grid.height, "count": count,
        "dtype": dtype, "crs": grid.crs, "transform": grid.transform, "nodata": nodata,
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
    if shutil.disk_usage(os.path.dirname(path) or ".").free < 1 << 20:
        return "No space left on device"
    return "a block read back differs from the one written"


def check_free_space(needs: Mapping[Path, tuple[int, str | os.PathLike[str]]]) -> None:
    """Fail before any work when a folder has less room than its scratch files need:
    ``{folder: (bytes, the output named in the error)}``; folders on one file system
    share its room."""
    by_device: dict[int, tuple[int, Path, str | os.PathLike[str]]] = {}
    for folder, (size, name) in needs.items():
        device = os.stat(folder).st_dev
        total = by_device.get(device, (0, folder, name))[0] + size
        by_device[device] = (total, folder, name)
    for total, folder, name in by_device.values():
        free = shutil.disk_usage(folder).free
        if free < total:
            raise OutputError(f"could not be written (its scratch files need "
                              f"{readable_bytes(total)} free, {readable_bytes(free)} are)", name)


def readable_bytes(n: float) -> str:
    """A byte count as people read it: ``512 bytes``, ``360.0 kB``, ``1.2 GB``."""
    if n < 1000:
        return f"{n:.0f} bytes"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:.1f} {unit}"
    return f"{n / 1000:.1f} GB"


def write_cog(scratch: Path, dst: Path, *, overview_resampling: OverviewResampling = "nearest",
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
