"""Several rasters as one: GDAL's own VRT XML.

A mosaic: tiles that agree in CRS, band count, data type and pixel size, and lie on one
pixel grid; the VRT places each at its offset and carries a dataset mask, so gaps between
the tiles are nodata. A band stack: bands of several files (of any pixel size) on one
grid, each resampled by GDAL as it is read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from affine import Affine
from rasterio.dtypes import _gdal_typename

from geoseg.errors import InputError
from geoseg.gdal import vsi_path
from geoseg.grid import Grid

if TYPE_CHECKING:
    from geoseg.sources import RasterInfo


def check_tiles(infos: Sequence[RasterInfo]) -> None:
    """Refuse tiles that cannot form one mosaic; the error names the first that differs."""
    first = infos[0]
    for info in infos[1:]:
        for what, value, expected in (("CRS", info.grid.crs, first.grid.crs),
                                      ("band count", info.count, first.count),
                                      ("data type", info.dtype, first.dtype)):
            if value != expected:
                raise InputError(f"mosaic tile {what} {value} differs from "
                                 f"{expected} of {first.shown}", info.shown)
        a, b = info.grid.transform, first.grid.transform
        if not (math.isclose(a.a, b.a, rel_tol=1e-9) and math.isclose(a.e, b.e, rel_tol=1e-9)):
            raise InputError(f"mosaic tile pixel size ({a.a}, {a.e}) differs from "
                             f"({b.a}, {b.e}) of {first.shown}", info.shown)
        col, row = ~b @ (a.c, a.f)
        if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
            raise InputError(f"mosaic tile is not on the pixel grid of {first.shown}", info.shown)


def vrt(infos: Sequence[RasterInfo]) -> tuple[str, Grid]:
    """GDAL VRT XML for tiles on one grid (see :func:`check_tiles`), and its grid; gaps
    between tiles are masked out."""
    from xml.sax.saxutils import escape  # imports urllib and http: only for mosaics

    ref = infos[0].grid.transform
    offsets = []
    for info in infos:
        col, row = ~ref @ (info.grid.transform.c, info.grid.transform.f)
        offsets.append((round(col), round(row)))
    col0 = min(c for c, _ in offsets)
    row0 = min(r for _, r in offsets)
    width = max(c + i.grid.width for (c, _), i in zip(offsets, infos, strict=True)) - col0
    height = max(r + i.grid.height for (_, r), i in zip(offsets, infos, strict=True)) - row0
    transform = ref @ Affine.translation(col0, row0)
    gdal_type = _gdal_typename(infos[0].dtype)

    def sources(band: str, tag: str, nodata: bool) -> str:
        out = []
        for (c, r), info in zip(offsets, infos, strict=True):
            nd = info.nodata
            w, h = info.grid.width, info.grid.height
            out.append(
                f"<{tag}><SourceFilename relativeToVRT=\"0\">{escape(vsi_path(info.path))}"
                f"</SourceFilename>"
                f"<SourceBand>{band}</SourceBand>"
                f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{w}\" ySize=\"{h}\"/>"
                f"<DstRect xOff=\"{c - col0}\" yOff=\"{r - row0}\" "
                f"xSize=\"{w}\" ySize=\"{h}\"/>"
                + (f"<NODATA>{_xml_number(nd)}</NODATA>" if nodata and nd is not None else "")
                + f"</{tag}>"
            )
        return "".join(out)

    nodata = infos[0].nodata
    bands = "".join(
        f"<VRTRasterBand dataType=\"{gdal_type}\" band=\"{b}\">"
        + (f"<NoDataValue>{_xml_number(nodata)}</NoDataValue>" if nodata is not None else "")
        + sources(str(b), "ComplexSource", nodata=True)
        + "</VRTRasterBand>"
        for b in range(1, infos[0].count + 1)
    )
    mask = ("<MaskBand><VRTRasterBand dataType=\"Byte\">"
            + sources("mask,1", "SimpleSource", nodata=False)
            + "</VRTRasterBand></MaskBand>")
    crs = infos[0].grid.crs
    srs = f"<SRS>{escape(crs.to_wkt())}</SRS>" if crs is not None else ""
    gt = ", ".join(repr(float(v)) for v in transform.to_gdal())
    xml = (f"<VRTDataset rasterXSize=\"{width}\" rasterYSize=\"{height}\">{srs}"
           f"<GeoTransform>{gt}</GeoTransform>{bands}{mask}</VRTDataset>")
    return xml, Grid(crs, transform, height, width)


def stack_vrt(layers: Sequence[tuple[str, int, Grid, float | None, bool]], grid: Grid,
              dtype: str, resampling: str) -> str:
    """GDAL VRT XML of a band stack on ``grid``: one band per ``(GDAL path, band in that
    file, the file's grid, nodata, masked)``, placed by georeferencing and resampled with
    ``resampling`` where its pixels differ from the grid's (same CRS assumed). A
    ``masked`` band carries its file's mask band (nearest), so no data stays no data."""
    from xml.sax.saxutils import escape  # imports urllib and http: only for mosaics

    t = grid.transform
    gdal_type = _gdal_typename(dtype)
    bands = []
    for k, (path, band, src, nodata, masked) in enumerate(layers, 1):
        s = src.transform
        rects = (f"<SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{src.width}\" ySize=\"{src.height}\"/>"
                 f"<DstRect xOff=\"{(s.c - t.c) / t.a!r}\" yOff=\"{(s.f - t.f) / t.e!r}\" "
                 f"xSize=\"{src.width * s.a / t.a!r}\" ySize=\"{src.height * s.e / t.e!r}\"/>")
        source = f"<SourceFilename relativeToVRT=\"0\">{escape(path)}</SourceFilename>"
        nd = _xml_number(nodata) if nodata is not None else None
        mask = (f"<MaskBand><VRTRasterBand dataType=\"Byte\"><ComplexSource resampling=\"nearest\">"
                f"{source}<SourceBand>mask,{band}</SourceBand>{rects}</ComplexSource>"
                f"</VRTRasterBand></MaskBand>") if masked and nd is None else ""
        bands.append(
            f"<VRTRasterBand dataType=\"{gdal_type}\" band=\"{k}\">"
            + (f"<NoDataValue>{nd}</NoDataValue>" if nd is not None else "")
            + f"<ComplexSource resampling=\"{resampling}\">{source}"
            f"<SourceBand>{band}</SourceBand>{rects}"
            + (f"<NODATA>{nd}</NODATA>" if nd is not None else "")
            + f"</ComplexSource>{mask}</VRTRasterBand>")
    srs = f"<SRS>{escape(grid.crs.to_wkt())}</SRS>" if grid.crs is not None else ""
    gt = ", ".join(repr(float(v)) for v in t.to_gdal())
    return (f"<VRTDataset rasterXSize=\"{grid.width}\" rasterYSize=\"{grid.height}\">{srs}"
            f"<GeoTransform>{gt}</GeoTransform>{''.join(bands)}</VRTDataset>")


def _xml_number(value: float) -> str:
    return "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
