"""True ground measures of polygons: area (m²) and perimeter (m).

Planar in a projected CRS (converted to metres when its unit is, e.g., US feet); on the
CRS's ellipsoid in a geographic CRS, exactly for pixel outlines (along parallels and
meridians) and with pyproj's ``Geod`` on densified outlines otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from geoseg.errors import InputError

if TYPE_CHECKING:
    from rasterio.crs import CRS


def measure(geometry: np.ndarray, crs: CRS | None) -> tuple[np.ndarray, np.ndarray]:
    """True ground (area m², perimeter m) of polygons in map coordinates of ``crs``.

    The perimeter counts the outlines of holes too. Projected CRS: planar, in the CRS's
    linear unit converted to metres. Geographic CRS:
    on the CRS's ellipsoid; exactly for outlines along parallels and meridians (pixel
    outlines), else with pyproj's ``Geod`` (edges densified to 0.01°). No CRS: planar in
    map units.
    """
    if crs is None:
        return shapely.area(geometry), shapely.length(geometry)
    if not crs.is_geographic:
        factor = crs.linear_units_factor[1]
        return shapely.area(geometry) * factor**2, shapely.length(geometry) * factor
    from pyproj import CRS as ProjCRS

    geod = ProjCRS.from_user_input(crs.to_wkt()).get_geod()
    if geod is None:  # a geographic CRS has an ellipsoid; a broken definition may not
        raise InputError(f"its CRS has no ellipsoid to measure on ({crs})")
    # Geod adds each ring's signed area: outlines and holes must wind opposite ways.
    geometry = shapely.orient_polygons(geometry)
    area, perimeter, exact = _graticule_measures(geometry, geod)
    for i in np.flatnonzero(~exact):  # outlines with slanted edges (simplified): geodesics
        dense = shapely.segmentize(geometry[i], 0.01)
        area[i] = abs(geod.geometry_area_perimeter(dense)[0])
        perimeter[i] = geod.geometry_length(dense.boundary)  # holes too, as planar lengths
    return area, perimeter


def _graticule_measures(geometry: np.ndarray, geod: Any
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact ellipsoidal area and perimeter of polygons whose edges all run along parallels
    and meridians (pixel outlines in a north-up geographic raster), vectorized.

    Area is the integral of S(φ) dλ around the rings, S being the area from the equator to
    latitude φ per radian of longitude; a parallel's arc is N(φ)·cos φ·Δλ and a meridian's
    comes from ``Geod``. Returns (area m², perimeter m, which polygons this applied to).
    """
    n = len(geometry)
    rings, owner = shapely.get_rings(geometry, return_index=True)
    coords, ring = shapely.get_coordinates(rings, return_index=True)
    same = ring[1:] == ring[:-1]
    lon0, lat0 = coords[:-1, 0][same], coords[:-1, 1][same]
    lon1, lat1 = coords[1:, 0][same], coords[1:, 1][same]
    poly = owner[ring[:-1][same]]
    along_parallel = lat0 == lat1
    along_meridian = (lon0 == lon1) & ~along_parallel
    exact = np.bincount(poly, weights=~(along_parallel | along_meridian), minlength=n) == 0
    a, e2 = geod.a, geod.es
    b2 = a * a * (1 - e2)
    e = np.sqrt(e2)
    phi = np.radians(lat0)
    sin = np.sin(phi)
    band = (b2 / 2 * (sin / (1 - e2 * sin * sin) + np.arctanh(e * sin) / e) if e > 0
            else a * a * sin)  # a sphere
    d_lon = np.radians(lon1 - lon0)
    area = np.abs(np.bincount(poly, weights=np.where(along_parallel, -d_lon * band, 0),
                              minlength=n))
    parallel = a / np.sqrt(1 - e2 * sin * sin) * np.cos(phi) * np.abs(d_lon)
    meridian = np.zeros(len(phi))
    if along_meridian.any():
        meridian[along_meridian] = geod.inv(lon0[along_meridian], lat0[along_meridian],
                                            lon1[along_meridian], lat1[along_meridian])[2]
    perimeter = np.bincount(poly, weights=np.where(along_parallel, parallel, meridian),
                            minlength=n)
    return area, perimeter, exact
