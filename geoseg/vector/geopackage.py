"""One polygon layer of a GeoPackage, written straight with SQLite (Python's ``sqlite3``).

The file is what GDAL's GeoPackage driver writes for such a layer (GeoPackage 1.4): the
core tables, the layer's table (``fid``, ``geom`` and the attribute columns), geometries
as GeoPackage blobs (a header with the SRS id and the envelope, then ISO WKB), the
``gpkg_rtree_index`` spatial index with its triggers, and GDAL's ``gpkg_ogr_contents``
feature count. Writing it here, rather than through GDAL (pyogrio, which imports pandas
and geopandas), saves most of the fixed cost of ``geoseg vectorize``. The spatial index is
filled as features are added and its triggers created last: they call GDAL's SQL functions
(``ST_MinX`` ...), which plain SQLite does not have, so they serve GDAL and QGIS later.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import shapely

if TYPE_CHECKING:
    from rasterio.crs import CRS

APPLICATION_ID = 0x47504B47  # "GPKG"
VERSION = 10400  # GeoPackage 1.4, as GDAL 3.10+ writes
# The header of a geometry blob: magic, version 0, flags (little-endian, envelope
# minx maxx miny maxy), SRS id, envelope.
_HEADER = np.dtype([("magic", "S2"), ("version", "u1"), ("flags", "u1"), ("srs_id", "<i4"),
                    ("envelope", "<f8", (4,))])
_FLAGS = 0b0000_0011
_FIRST_CUSTOM_SRS = 100000  # GDAL numbers SRS without an EPSG code from here
# GDAL's row for a layer without a CRS: GDAL reads it back as none (-1 as a local CRS).
_NO_CRS = ("Undefined SRS", 99999, "GDAL", 99999,
           'LOCAL_CS["Undefined SRS",LOCAL_DATUM["unknown",32767],UNIT["unknown",0],'
           'AXIS["Easting",EAST],AXIS["Northing",NORTH]]',
           "Custom undefined coordinate reference system")

_CORE_TABLES = (
    "CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL,srs_id INTEGER NOT NULL "
    "PRIMARY KEY,organization TEXT NOT NULL,organization_coordsys_id INTEGER NOT NULL,"
    "definition  TEXT NOT NULL,description TEXT)",
    "CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY,data_type TEXT NOT NULL,"
    "identifier TEXT UNIQUE,description TEXT DEFAULT '',last_change DATETIME NOT NULL DEFAULT "
    "(strftime('%Y-%m-%dT%H:%M:%fZ','now')),min_x DOUBLE, min_y DOUBLE,max_x DOUBLE, "
    "max_y DOUBLE,srs_id INTEGER,CONSTRAINT fk_gc_r_srs_id FOREIGN KEY (srs_id) REFERENCES "
    "gpkg_spatial_ref_sys(srs_id))",
    "CREATE TABLE gpkg_ogr_contents(table_name TEXT NOT NULL PRIMARY KEY,feature_count "
    "INTEGER DEFAULT NULL)",
    "CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL,column_name TEXT NOT NULL,"
    "geometry_type_name TEXT NOT NULL,srs_id INTEGER NOT NULL,z TINYINT NOT NULL,m TINYINT "
    "NOT NULL,CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name),CONSTRAINT "
    "uk_gc_table_name UNIQUE (table_name),CONSTRAINT fk_gc_tn FOREIGN KEY (table_name) "
    "REFERENCES gpkg_contents(table_name),CONSTRAINT fk_gc_srs FOREIGN KEY (srs_id) "
    "REFERENCES gpkg_spatial_ref_sys (srs_id))",
    "CREATE TABLE gpkg_extensions (table_name TEXT,column_name TEXT,extension_name TEXT NOT "
    "NULL,definition TEXT NOT NULL,scope TEXT NOT NULL,CONSTRAINT ge_tce UNIQUE (table_name, "
    "column_name, extension_name))",
)
# The two undefined systems every GeoPackage lists (WGS 84 is added from its definition).
_UNDEFINED_SRS = (
    ("Undefined Cartesian SRS", -1, "NONE", -1, "undefined",
     "undefined Cartesian coordinate reference system"),
    ("Undefined geographic SRS", 0, "NONE", 0, "undefined",
     "undefined geographic coordinate reference system"),
)
# The spatial index's upkeep when GDAL or QGIS edit the layer later (GDAL's own triggers).
_RTREE_TRIGGERS = (
    'CREATE TRIGGER "{r}_insert" AFTER INSERT ON "{t}" WHEN (new."geom" NOT NULL AND NOT '
    'ST_IsEmpty(NEW."geom")) BEGIN INSERT OR REPLACE INTO "{r}" VALUES (NEW."fid",'
    'ST_MinX(NEW."geom"), ST_MaxX(NEW."geom"),ST_MinY(NEW."geom"), ST_MaxY(NEW."geom")); END',
    'CREATE TRIGGER "{r}_update6" AFTER UPDATE OF "geom" ON "{t}" WHEN OLD."fid" = NEW."fid" '
    'AND (NEW."geom" NOTNULL AND NOT ST_IsEmpty(NEW."geom")) AND (OLD."geom" NOTNULL AND NOT '
    'ST_IsEmpty(OLD."geom")) BEGIN UPDATE "{r}" SET minx = ST_MinX(NEW."geom"), maxx = '
    'ST_MaxX(NEW."geom"),miny = ST_MinY(NEW."geom"), maxy = ST_MaxY(NEW."geom") WHERE id = '
    'NEW."fid";END',
    'CREATE TRIGGER "{r}_update7" AFTER UPDATE OF "geom" ON "{t}" WHEN OLD."fid" = NEW."fid" '
    'AND (NEW."geom" NOTNULL AND NOT ST_IsEmpty(NEW."geom")) AND (OLD."geom" ISNULL OR '
    'ST_IsEmpty(OLD."geom")) BEGIN INSERT INTO "{r}" VALUES (NEW."fid",ST_MinX(NEW."geom"), '
    'ST_MaxX(NEW."geom"),ST_MinY(NEW."geom"), ST_MaxY(NEW."geom")); END',
    'CREATE TRIGGER "{r}_update2" AFTER UPDATE OF "geom" ON "{t}" WHEN OLD."fid" = NEW."fid" '
    'AND (NEW."geom" ISNULL OR ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM "{r}" WHERE id = '
    'OLD."fid"; END',
    'CREATE TRIGGER "{r}_update5" AFTER UPDATE ON "{t}" WHEN OLD."fid" != NEW."fid" AND '
    '(NEW."geom" NOTNULL AND NOT ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM "{r}" WHERE id = '
    'OLD."fid"; INSERT OR REPLACE INTO "{r}" VALUES (NEW."fid",ST_MinX(NEW."geom"), '
    'ST_MaxX(NEW."geom"),ST_MinY(NEW."geom"), ST_MaxY(NEW."geom")); END',
    'CREATE TRIGGER "{r}_update4" AFTER UPDATE ON "{t}" WHEN OLD."fid" != NEW."fid" AND '
    '(NEW."geom" ISNULL OR ST_IsEmpty(NEW."geom")) BEGIN DELETE FROM "{r}" WHERE id IN '
    '(OLD."fid", NEW."fid"); END',
    'CREATE TRIGGER "{r}_delete" AFTER DELETE ON "{t}" WHEN old."geom" NOT NULL BEGIN DELETE '
    'FROM "{r}" WHERE id = OLD."fid"; END',
    'CREATE TRIGGER "trigger_insert_feature_count_{t}" AFTER INSERT ON "{t}" BEGIN UPDATE '
    "gpkg_ogr_contents SET feature_count = feature_count + 1 WHERE lower(table_name) = "
    "lower('{s}'); END",
    'CREATE TRIGGER "trigger_delete_feature_count_{t}" AFTER DELETE ON "{t}" BEGIN UPDATE '
    "gpkg_ogr_contents SET feature_count = feature_count - 1 WHERE lower(table_name) = "
    "lower('{s}'); END",
)


def geometry_blobs(geometry: np.ndarray, srs_id: int) -> tuple[list[bytes], np.ndarray]:
    """GeoPackage blobs of (non-empty, 2-D) geometries, and their bounds
    ``(minx, miny, maxx, maxy)`` as rows."""
    bounds = shapely.bounds(geometry)
    header = np.zeros(len(geometry), _HEADER)
    header["magic"], header["flags"], header["srs_id"] = b"GP", _FLAGS, srs_id
    header["envelope"] = bounds[:, [0, 2, 1, 3]]
    heads = header.tobytes()
    size = _HEADER.itemsize
    wkb = shapely.to_wkb(geometry, output_dimension=2, byte_order=1, flavor="iso")
    return [heads[i * size:(i + 1) * size] + w for i, w in enumerate(wkb.tolist())], bounds


def _sql_type(values: np.ndarray) -> str:
    """The GeoPackage column type GDAL gives a column of these values."""
    if values.dtype.kind in "iu":
        return "MEDIUMINT" if values.dtype.itemsize <= 4 else "INTEGER"
    if values.dtype.kind == "f":
        return "REAL"
    if values.dtype.kind == "b":
        return "BOOLEAN"
    return "TEXT"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def srs_row(crs: CRS | None) -> tuple[str, int, str, int, str, str | None]:
    """The ``gpkg_spatial_ref_sys`` row of ``crs``: its EPSG code as SRS id where it has
    one (as GDAL does), else a custom id; no CRS is GDAL's undefined system."""
    if crs is None:
        return _NO_CRS
    wkt = crs.to_wkt()
    name = wkt.split('"')[1] if '"' in wkt else "unnamed"
    epsg = crs.to_epsg()
    if epsg:
        return name, epsg, "EPSG", epsg, wkt, None
    return name, _FIRST_CUSTOM_SRS, "NONE", _FIRST_CUSTOM_SRS, wkt, None


@dataclass
class PolygonTable:
    """A GeoPackage's polygon layer being written: :meth:`create` it, :meth:`append`
    features, then :meth:`finish` (extent, feature count, index triggers). One
    transaction; the caller commits or discards the file."""

    con: sqlite3.Connection
    name: str
    columns: list[str]
    srs_id: int
    count: int = 0
    extent: np.ndarray = field(default_factory=lambda: np.array([np.inf, np.inf, -np.inf,
                                                                 -np.inf]))

    @classmethod
    def create(cls, con: sqlite3.Connection, name: str, columns: dict[str, np.ndarray],
               crs: CRS | None, when: str, *, description: str = "") -> PolygonTable:
        """The GeoPackage's tables in the empty database ``con``, with the layer ``name``
        of these attribute ``columns`` (their types from their values) in ``crs``, and its
        ``description`` in gpkg_contents (QGIS shows it as the layer's abstract)."""
        from rasterio.crs import CRS

        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        con.execute(f"PRAGMA user_version = {VERSION}")
        for ddl in _CORE_TABLES:
            con.execute(ddl)
        wgs84 = CRS.from_epsg(4326).to_wkt()
        systems: list[tuple[str, int, str, int, str, str | None]] = [
            *_UNDEFINED_SRS, ("WGS 84 geodetic", 4326, "EPSG", 4326, wgs84,
                              "longitude/latitude coordinates in decimal degrees on the "
                              "WGS 84 spheroid")]
        srs = srs_row(crs)
        if srs[1] not in {s[1] for s in systems}:
            systems.append(srs)
        con.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", systems)
        table, rtree = _quoted(name), _quoted(f"rtree_{name}_geom")
        attributes = "".join(f", {_quoted(k)} {_sql_type(v)}" for k, v in columns.items())
        con.execute(f'CREATE TABLE {table} ( "fid" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, '
                    f'"geom" POLYGON{attributes})')
        con.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, "
                    "description, last_change, srs_id) VALUES (?, 'features', ?, ?, ?, ?)",
                    (name, name, description, when, srs[1]))
        con.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', 'POLYGON', ?, 0, 0)",
                    (name, srs[1]))
        con.execute("INSERT INTO gpkg_ogr_contents VALUES (?, 0)", (name,))
        con.execute(f"CREATE VIRTUAL TABLE {rtree} USING rtree(id, minx, maxx, miny, maxy)")
        con.execute("INSERT INTO gpkg_extensions VALUES (?, 'geom', 'gpkg_rtree_index', "
                    "'http://www.geopackage.org/spec120/#extension_rtree', 'write-only')",
                    (name,))
        return cls(con, name, list(columns), srs[1])

    def append(self, geometry: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        """Add polygons (map coordinates of the layer's CRS) with their attributes."""
        if not len(geometry):
            return
        blobs, bounds = geometry_blobs(geometry, self.srs_id)
        fids = range(self.count + 1, self.count + 1 + len(blobs))
        names = ", ".join(_quoted(k) for k in self.columns)
        marks = ", ?" * len(self.columns)
        self.con.executemany(
            f'INSERT INTO {_quoted(self.name)} ("fid", "geom", {names}) VALUES (?, ?{marks})',
            zip(fids, blobs, *(columns[k].tolist() for k in self.columns), strict=True))
        self.con.executemany(
            f"INSERT INTO {_quoted(f'rtree_{self.name}_geom')} VALUES (?, ?, ?, ?, ?)",
            zip(fids, *bounds[:, [0, 2, 1, 3]].T.tolist(), strict=True))
        self.count += len(blobs)
        self.extent = np.r_[np.minimum(self.extent[:2], bounds[:, :2].min(0)),
                            np.maximum(self.extent[2:], bounds[:, 2:].max(0))]

    def finish(self) -> None:
        """The layer's extent and feature count, and the triggers that keep its spatial
        index and count true under later edits."""
        extent = self.extent.tolist() if self.count else [None] * 4
        self.con.execute("UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ? "
                         "WHERE table_name = ?", (*extent, self.name))
        self.con.execute("UPDATE gpkg_ogr_contents SET feature_count = ? WHERE table_name = ?",
                         (self.count, self.name))
        names = {"t": self.name.replace('"', '""'), "s": self.name.replace("'", "''"),
                 "r": f"rtree_{self.name}_geom".replace('"', '""')}
        for trigger in _RTREE_TRIGGERS:
            self.con.execute(trigger.format(**names))
