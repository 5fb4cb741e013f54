"""How class masks look: GDAL color tables and QGIS ``.qml`` styles from a model's classes."""

from __future__ import annotations

from collections.abc import Sequence
from xml.sax.saxutils import quoteattr

NODATA_CLASS = 255
NODATA_COLOR = (0, 0, 0, 0)


def colormap(colors: Sequence[tuple[int, int, int]]) -> dict[int, tuple[int, int, int, int]]:
    """GDAL color table: class ``i`` → its RGBA color; nodata (255) transparent."""
    table = {i: (*c, 255) for i, c in enumerate(colors)}
    table[NODATA_CLASS] = NODATA_COLOR
    return table


def _hex(color: Sequence[int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color[:3])


def paletted_qml(names: Sequence[str], colors: Sequence[tuple[int, int, int]]) -> str:
    """A QGIS raster style (paletted/unique values) naming every class of a mask."""
    entries = "\n".join(
        f"        <paletteEntry value=\"{i}\" color=\"{_hex(c)}\" alpha=\"255\" "
        f"label={quoteattr(name)}/>"
        for i, (name, c) in enumerate(zip(names, colors, strict=True))
    )
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0" styleCategories="AllStyleCategories">
  <pipe>
    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1" nodataColor="">
      <rasterTransparency/>
      <colorPalette>
{entries}
      </colorPalette>
    </rasterrenderer>
    <brightnesscontrast brightness="0" contrast="0" gamma="1"/>
    <huesaturation saturation="0" colorizeOn="0" grayscaleMode="0" invertColors="0"/>
    <rasterresampler maxOversampling="2" zoomedInResampler="" zoomedOutResampler=""/>
  </pipe>
  <blendMode>0</blendMode>
</qgis>
"""
