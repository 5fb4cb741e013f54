"""Polygons into a GeoPackage, written atomically batch by batch, with the QGIS style
stored inside (``layer_styles``) and beside it (``.qml``)."""

from __future__ import annotations

import contextlib
import datetime
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg import atomic, storage, styles
from geoseg.errors import InputError, OutputError
from geoseg.maskfile import RGB
from geoseg.vector.geopackage import PolygonTable
from geoseg.vector.layer import Layer, crs_text


@contextlib.contextmanager
def gpkg_outputs(mask: Any, dst: str | os.PathLike[str] | None, *,
                 overwrite: bool) -> Iterator[Path | None]:
    """Check the GeoPackage and its style file before any work; the work goes in the
    ``with`` block, writing to the path it yields (see :func:`atomic.outputs`; for an
    ``s3://`` URL a local file, uploaded when the block ends well: see
    :func:`geoseg.storage.staged`). ``scene.mask.gpkg`` beside ``scene.mask.tif`` would
    share one ``scene.mask.qml``: refused."""
    if dst is None:
        yield None
        return
    style = styles.style_name(dst)
    if isinstance(mask, (str, os.PathLike)) and _same_file(styles.style_name(mask), style):
        raise InputError(f"its QGIS style file would be {style}, which styles the mask; "
                         f"give the GeoPackage another name", dst)
    with contextlib.ExitStack() as stack:
        local, local_style = stack.enter_context(storage.staged([dst, style], overwrite=overwrite))
        stack.enter_context(atomic.outputs([local, local_style], overwrite=overwrite))
        yield local


def _same_file(a: str, b: str) -> bool:
    if storage.is_url(a) or storage.is_url(b):
        return a == b
    return Path(a).resolve() == Path(b).resolve()


@dataclass
class Tally:
    """What a written layer holds, per class id: polygon count and area (m²)."""

    class_names: list[str]
    polygons: np.ndarray
    area_m2: np.ndarray
    crs: str | None = None
    masked: tuple[str, int] | None = None  # what mask models made nodata (MODEL:CLASS…, pixels)

    def add(self, layer: Layer) -> None:
        self.crs = crs_text(layer.crs)
        self.masked = layer.masked
        n = max(len(layer.class_names), len(self.polygons))
        self.class_names = max(self.class_names, layer.class_names, key=len)
        self.polygons = np.bincount(layer.class_id, minlength=n) + np.pad(
            self.polygons, (0, n - len(self.polygons)))
        self.area_m2 = np.bincount(layer.class_id, weights=layer.area_m2, minlength=n) + np.pad(
            self.area_m2, (0, n - len(self.area_m2)))


def write_gpkg(layers: Layer | Iterable[Layer], dst: str | os.PathLike[str], *,
               layer_name: str | None = None, overwrite: bool = False,
               timestamp: float | None = None) -> Tally:
    """Write polygons to a GeoPackage atomically, batch after batch as they come, then
    embed the QGIS style (and write it beside the file). Returns what was written.

    ``timestamp`` (POSIX seconds; default now, or ``SOURCE_DATE_EPOCH``) is the file's
    ``last_change``: the only thing that differs between two writes of the same polygons.
    """
    name = layer_name or Path(dst).stem
    batches = [layers] if isinstance(layers, Layer) else layers
    tally = Tally([], np.zeros(0, np.int64), np.zeros(0))
    colors: list[RGB] = []
    when = gpkg_timestamp(timestamp)
    with contextlib.ExitStack() as outputs:
        tmp = outputs.enter_context(atomic.atomic_path(dst, overwrite=overwrite))
        con = sqlite3.connect(tmp, isolation_level=None)
        try:
            # A temp file that replaces dst only once complete (and synced): no journal.
            con.execute("PRAGMA journal_mode = OFF")
            con.execute("PRAGMA synchronous = OFF")
            con.execute("BEGIN")
            table = None
            for batch in batches:
                cols = batch.columns()
                if table is None:
                    table = PolygonTable.create(con, name, cols, batch.crs, when,
                                                description=batch.description)
                table.append(batch.geometry, cols)
                tally.add(batch)
                colors = max(colors, batch.colors, key=len)
            if table is not None:
                table.finish()
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            raise OutputError(f"could not be written ({exc})", dst) from None
        finally:
            con.close()
        qml = styles.categorized_qml(tally.class_names, colors, field="class_id")
        try:
            styles.embed_gpkg_style(tmp, name, qml, when)
        except sqlite3.Error as exc:
            raise OutputError(f"could not be written ({exc})", dst) from None
        tmp_qml = outputs.enter_context(atomic.atomic_path(styles.style_path(dst), overwrite=overwrite))
        tmp_qml.write_text(qml)
    return tally


def gpkg_timestamp(seconds: float | None = None) -> str:
    """GeoPackage timestamp of ``seconds``, else SOURCE_DATE_EPOCH (reproducible files), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if seconds is None and epoch:
        seconds = int(epoch)
    when = (datetime.datetime.fromtimestamp(seconds, datetime.UTC) if seconds is not None
            else datetime.datetime.now(datetime.UTC))
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
