"""Class mask → polygons → GeoPackage, in chunks, for masks of any size.

The stages, each a module:

* :mod:`~geoseg.vector.chunks`: each chunk of the mask is read with a one-pixel frame
  and polygonized on its own (:mod:`~geoseg.vector.polygonize`), in parallel, by Dask,
  a row of chunks at a time;
* :mod:`~geoseg.vector.stitch`: pieces that a chunk border cut are joined, so every
  4-connected region of one class is exactly one polygon, holes kept, whatever the chunk
  size; finished regions leave as soon as they are complete;
* :mod:`~geoseg.vector.generalize`: ``min_area`` (m²) merges a polygon smaller than this,
  smallest first, into the neighbour it shares the longest border with, taking its class
  (one with only nodata around is dropped); ``simplify`` (map units) simplifies all
  polygons together as a coverage (no gaps, no overlaps);
* :mod:`~geoseg.vector.layer`: ``classes`` keeps only these classes (``min_area`` still
  saw all), and every polygon gets ``class_id``, ``class_name``, ``area_m2`` and
  ``perimeter_m`` (:mod:`~geoseg.vector.measure`: planar in a projected CRS, on the
  ellipsoid in a geographic one) and, with a probabilities raster, ``confidence``: the
  mean over its pixels of the probability of the class each pixel was predicted as;
* :mod:`~geoseg.vector.gpkg`: the GeoPackage, with its QGIS style.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.errors import InputError, warn
from geoseg.maskfile import NODATA
from geoseg.vector.chunks import MaskInfo, chunk_runner, chunk_tasks
from geoseg.vector.generalize import canonical, generalize_all
from geoseg.vector.gpkg import Tally, gpkg_outputs, write_gpkg
from geoseg.vector.layer import Layer, concat_layers, make_layer, to_geodataframe
from geoseg.vector.stitch import complete_regions, concat

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr

__all__ = ["Layer", "Tally", "iter_layers", "polygons", "vectorize", "vectorize_to_gpkg"]

DEFAULT_CHUNK = 2048
MIN_CHUNK = 16


def iter_layers(
    mask: str | os.PathLike[str] | xr.DataArray,
    *,
    probabilities: str | os.PathLike[str] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    classes: Sequence[int | str] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    allow_no_crs: bool = False,
    scheduler: str = "threads",
    workers: int | None = None,
    progress: bool = False,
) -> Iterator[Layer]:
    """Vectorize a class mask in batches (see :func:`vectorize`): one :class:`Layer` per
    row of chunks, so that a writer holds only one row's polygons (plus those of regions
    still open below it). ``min_area`` and ``simplify`` need every polygon's neighbours:
    with them, the polygons are gathered and come as one batch at the end."""
    from geoseg.cluster import check_scheduler

    check_scheduler(scheduler)
    if chunk_size < MIN_CHUNK:
        raise InputError(f"chunk size must be at least {MIN_CHUNK} pixels, not {chunk_size}")
    if min_area < 0 or simplify < 0 or not (math.isfinite(min_area) and math.isfinite(simplify)):
        raise InputError("${min_area} and ${simplify} must be finite and not negative")
    nodes = simplify > 0
    info, rows = chunk_tasks(mask, probabilities, chunk_size, nodes, allow_no_crs)
    keep = None if classes is None else class_ids(classes, info.classes.names)
    with chunk_runner(rows, scheduler, workers, progress) as (run, tasks):
        batches = complete_regions(run, tasks, nodes, threads=workers)
        if not (min_area > 0 or nodes):
            found = 0
            for regions in batches:
                found += len(regions.geometry)
                yield make_layer(regions, info, keep)
            _warn_if_empty(found, info)
            return
        regions = canonical(concat(list(batches)))
        _warn_if_empty(len(regions.geometry), info)
    yield make_layer(generalize_all(regions, info.grid, min_area=min_area, simplify=simplify),
                     info, keep)


def _warn_if_empty(regions: int, info: MaskInfo) -> None:
    """Every valid pixel lies in some region: none at all means an all-nodata mask."""
    if not regions:
        warn("has no valid pixels (all nodata): the layer is empty", info.name)


def class_ids(classes: Sequence[int | str], names: list[str]) -> list[int]:
    """Class ids from ids or the names the mask gives its classes."""
    ids = []
    for c in classes:
        if isinstance(c, (int, np.integer)) or (isinstance(c, str) and c.strip().isdigit()):
            if not 0 <= int(c) < NODATA:
                raise InputError(f"class id {c} is out of range (0..{NODATA - 1})")
            ids.append(int(c))
        elif c in names:
            ids.append(names.index(c))
        else:
            known = f"the mask names: {', '.join(names)}" if names else "the mask names none"
            raise InputError(f"unknown class {c!r} ({known}; ids work too)")
    return ids


def polygons(mask: str | os.PathLike[str] | xr.DataArray, **options: object) -> Layer:
    """Vectorize a class mask into one :class:`Layer` (options: see :func:`iter_layers`)."""
    return concat_layers(list(iter_layers(mask, **options)))  # type: ignore[arg-type]


def vectorize(
    mask: str | os.PathLike[str] | xr.DataArray,
    dst: str | os.PathLike[str] | None = None,
    *,
    probabilities: str | os.PathLike[str] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    classes: Sequence[int | str] | None = None,
    layer: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    overwrite: bool = False,
    allow_no_crs: bool = False,
    scheduler: str = "threads",
    workers: int | None = None,
    progress: bool = False,
) -> gpd.GeoDataFrame:
    """Polygons of a class mask (a mask file or a georeferenced DataArray, e.g. from
    :func:`geoseg.predict`): one per 4-connected region of one class, holes kept.

    Columns: ``class_id``, ``class_name``, ``area_m2``, ``perimeter_m`` and, with a
    ``probabilities`` raster (from ``predict``), ``confidence``. ``min_area`` (m²) merges
    smaller polygons into their neighbour, ``simplify`` (map units) simplifies all
    polygons together without gaps or overlaps, ``classes`` (ids or names) keeps a
    subset. With ``dst`` the polygons are also written to a GeoPackage (with its QGIS
    style embedded, and a ``.qml`` beside it).
    """
    with gpkg_outputs(mask, dst, overwrite=overwrite) as local:
        out = polygons(mask, probabilities=probabilities, min_area=min_area, simplify=simplify,
                       classes=classes, chunk_size=chunk_size, allow_no_crs=allow_no_crs,
                       scheduler=scheduler, workers=workers, progress=progress)
        if local is not None:
            write_gpkg(out, local, layer_name=layer, overwrite=overwrite)
    return to_geodataframe(out)


def vectorize_to_gpkg(mask: str | os.PathLike[str] | xr.DataArray, dst: str | os.PathLike[str],
                      *, layer: str | None = None, overwrite: bool = False,
                      timestamp: float | None = None, **options: Any) -> Tally:
    """Vectorize a class mask straight into a GeoPackage, a row of chunks at a time (so
    memory follows the open regions, not the mask: see :func:`iter_layers` for
    ``options``), and return what the layer holds. ``timestamp``: see
    :func:`~geoseg.vector.gpkg.write_gpkg`."""
    with gpkg_outputs(mask, dst, overwrite=overwrite) as local:
        assert local is not None  # dst is given
        return write_gpkg(iter_layers(mask, **options), local, layer_name=layer,
                          overwrite=overwrite, timestamp=timestamp)
