"""How classes look in QGIS: ``.qml`` styles for masks (paletted) and polygons
(categorized), the style file QGIS reads beside a layer, and the style a GeoPackage holds
inside (``layer_styles``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def style_path(layer: str | os.PathLike[str]) -> Path:
    """Where QGIS looks for a layer's style: its file name with ``.qml``."""
    return Path(layer).with_suffix(".qml")


def style_name(layer: str | os.PathLike[str]) -> str:
    """:func:`style_path` as a name, for a URL too (``s3://b/m.tif`` → ``s3://b/m.qml``:
    a Path would fold the ``//``)."""
    if isinstance(layer, str) and "://" in layer:
        head, _, name = layer.rpartition("/")
        return f"{head}/{style_path(name).name}"
    return str(style_path(layer))


def quoteattr(value: str) -> str:
    """``value`` as a quoted XML attribute, as ``xml.sax.saxutils.quoteattr`` writes it
    (which imports urllib and http: 25 ms of every ``geoseg vectorize``)."""
    for char, entity in (("&", "&amp;"), (">", "&gt;"), ("<", "&lt;"), ("\n", "&#10;"),
                         ("\r", "&#13;"), ("\t", "&#9;")):
        value = value.replace(char, entity)
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    return '"' + value.replace('"', "&quot;") + '"'


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


def categorized_qml(names: Sequence[str], colors: Sequence[tuple[int, int, int]], *,
                    field: str = "class_id") -> str:
    """A QGIS vector style: polygons filled in their class colour, categorized by ``field``.

    The outline is the fill colour, so the polygons look like the mask's pixels.
    """
    categories = "\n".join(
        f'      <category value="{i}" symbol="{i}" label={quoteattr(name)} render="true"/>'
        for i, name in enumerate(names))
    symbols = "\n".join(_fill_symbol(str(i), c) for i, c in enumerate(colors))
    return f"""<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.22.0" styleCategories="Symbology">
  <renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0"
               forceraster="0" enableorderby="0">
    <categories>
{categories}
    </categories>
    <symbols>
{symbols}
    </symbols>
  </renderer-v2>
  <blendMode>0</blendMode>
  <featureBlendMode>0</featureBlendMode>
  <layerGeometryType>2</layerGeometryType>
</qgis>
"""


def _fill_symbol(name: str, color: Sequence[int]) -> str:
    rgba = "{},{},{},255".format(*color[:3])
    props = {"color": rgba, "style": "solid", "outline_color": rgba, "outline_style": "solid",
             "outline_width": "0.1", "outline_width_unit": "MM", "joinstyle": "miter"}
    options = "\n".join(f'            <Option name="{k}" type="QString" value="{v}"/>'
                        for k, v in props.items())
    legacy = "\n".join(f'          <prop k="{k}" v="{v}"/>' for k, v in props.items())
    return f"""      <symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleFill" enabled="1" locked="0" pass="0">
          <Option type="Map">
{options}
          </Option>
{legacy}
        </layer>
      </symbol>"""


_LAYER_STYLES = """CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT, f_table_catalog TEXT(256), f_table_schema TEXT(256),
    f_table_name TEXT(256), f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT,
    styleSLD TEXT, useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
    update_time DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"""


def embed_gpkg_style(gpkg: str | os.PathLike[str], layer: str, qml: str, when: str,
                     *, geometry_column: str = "geom") -> None:
    """Store ``qml`` as the default style of ``layer`` in the GeoPackage's ``layer_styles``
    table, where QGIS looks when it opens the layer (registered as an attributes table).
    ``when`` becomes the ``last_change`` of every table, so equal content gives equal bytes."""
    import sqlite3

    con = sqlite3.connect(gpkg)
    try:
        with con:
            con.execute(_LAYER_STYLES)
            con.execute("DELETE FROM layer_styles WHERE f_table_name = ?", (layer,))
            con.execute(
                "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
                "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
                "owner, ui, update_time) VALUES ('', '', ?, ?, ?, ?, '', 1, ?, '', NULL, ?)",
                (layer, geometry_column, layer, qml, "geoseg land-cover classes", when))
            con.execute(
                "INSERT OR REPLACE INTO gpkg_contents (table_name, data_type, identifier, "
                "description, last_change) VALUES ('layer_styles', 'attributes', "
                "'layer_styles', 'QGIS layer styles', ?)", (when,))
            con.execute("UPDATE gpkg_contents SET last_change = ?", (when,))
    finally:
        con.close()
