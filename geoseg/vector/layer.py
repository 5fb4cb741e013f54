"""Polygons with their attributes, as they leave vectorizing: a :class:`Layer`, ready for a
GeoDataFrame (:func:`to_geodataframe`) or a GeoPackage (:mod:`geoseg.vector.gpkg`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import shapely

from geoseg.maskfile import RGB, default_color
from geoseg.vector.chunks import MaskInfo
from geoseg.vector.measure import measure
from geoseg.vector.stitch import Regions, take

if TYPE_CHECKING:
    import geopandas as gpd
    from rasterio.crs import CRS

@dataclass
class Layer:
    """Polygons with their attributes, on the map, ready for a GeoDataFrame or a file."""

    geometry: np.ndarray
    class_id: np.ndarray
    class_names: list[str]
    colors: list[RGB]
    area_m2: np.ndarray
    perimeter_m: np.ndarray
    confidence: np.ndarray | None
    crs: CRS | None
    masked: tuple[str, int] | None = None  # mask models and the pixels they made nodata

    @property
    def description(self) -> str:
        """The layer's description: what mask models made nodata in its mask, if any."""
        if self.masked is None:
            return ""
        by, pixels = self.masked
        return f"nodata where mask models said so ({by}): {pixels} pixels"

    def columns(self) -> dict[str, np.ndarray]:
        cols = {"class_id": self.class_id.astype(np.int32),
                "class_name": np.array([*self.class_names, ""], object)[self.class_id],
                "area_m2": self.area_m2, "perimeter_m": self.perimeter_m}
        if self.confidence is not None:
            cols["confidence"] = self.confidence
        return cols


def make_layer(regions: Regions, info: MaskInfo, keep: Sequence[int] | None) -> Layer:
    """Measured polygons of the classes to ``keep`` (all: None), named and coloured,
    outlines counterclockwise and holes clockwise (as OGC Simple Features recommends)."""
    if keep is not None:
        regions = take(regions, np.flatnonzero(np.isin(regions.cls, keep)))
    regions.geometry = shapely.orient_polygons(regions.geometry)
    n_classes = int(regions.cls.max()) + 1 if len(regions.cls) else 0
    names, colors = _class_style(info, max(n_classes, len(info.classes.names)))
    area, perimeter = measure(regions.geometry, info.grid.crs)
    confidence = None
    if regions.prob_sum is not None:
        confidence = regions.prob_sum / np.maximum(regions.pixels, 1)
    return Layer(regions.geometry, regions.cls, names, colors, area, perimeter, confidence,
                 info.grid.crs, info.classes.masked)


def _class_style(info: MaskInfo, n: int) -> tuple[list[str], list[RGB]]:
    """Names and colours of classes 0..n-1 (numbered names, a fixed palette where unknown)."""
    names = list(info.classes.names) + [f"class_{i}" for i in range(len(info.classes.names), n)]
    colors = info.classes.contiguous_colors()[:len(names)]
    colors += [default_color(i) for i in range(len(colors), len(names))]
    return names, colors


def concat_layers(batches: Sequence[Layer]) -> Layer:
    """Batches of one vectorizing as one layer."""
    names = max((b.class_names for b in batches), key=len)
    colors = max((b.colors for b in batches), key=len)

    def cat(values: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(values)

    confidence = [b.confidence for b in batches if b.confidence is not None]
    return Layer(cat([b.geometry for b in batches]), cat([b.class_id for b in batches]),
                 names, colors, cat([b.area_m2 for b in batches]),
                 cat([b.perimeter_m for b in batches]),
                 None if batches[0].confidence is None else cat(confidence),
                 batches[0].crs, batches[0].masked)


def to_geodataframe(layer: Layer) -> gpd.GeoDataFrame:
    """The layer as a GeoDataFrame: its columns and geometry, in its CRS."""
    import geopandas as gpd

    crs = crs_text(layer.crs)
    return gpd.GeoDataFrame(layer.columns(), geometry=gpd.GeoSeries(layer.geometry, crs=crs))


def crs_text(crs: CRS | None) -> str | None:
    """A CRS as an EPSG code where it has one, else WKT."""
    if crs is None:
        return None
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_wkt()
