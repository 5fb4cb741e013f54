"""Labels from a teacher model: its confident pixels, for weak supervision.

``geoseg train IMAGE --labels-from MODEL`` trains where no one has labelled: the teacher
(for instance the bundled Dynamic World network) maps a scene, and the pixels it is sure
of become labels of the student, whatever the student reads (four bands of the same
product, an aerial image of the same place and time at another resolution). The rest is
unlabelled: the sparse-label path of :mod:`geoseg.training` draws its chips around the
labels and never trains on what the teacher was unsure of.

:func:`teach` writes, in a working folder, the teacher's mask and probabilities (as
``geoseg predict`` writes them; open them in QGIS to see what the student learns from)
and the labels: a class raster on the teacher's grid, the mask where the teacher's most
probable class has a probability of at least ``min_confidence``, else nodata. Labels on
another grid than the student's are read by nearest neighbour (:mod:`geoseg.labels`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg import atomic
from geoseg.devices import Device
from geoseg.errors import InputError
from geoseg.maskfile import NODATA, PROB_SCALE

log = logging.getLogger(__name__)

MIN_CONFIDENCE = 0.5
WINDOW = 1024


@dataclass
class Taught:
    """A teacher's labels of one scene and what they hold."""

    labels: Path
    scene: str
    valid: int  # pixels the teacher mapped (not nodata)
    pixels: dict[str, int]  # confident pixels per class

    @property
    def share(self) -> float:
        """The share of the mapped pixels that are labels."""
        return sum(self.pixels.values()) / self.valid if self.valid else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"scene": self.scene, "mapped_pixels": self.valid,
                "labelled_share": round(self.share, 4), "labelled_pixels": self.pixels}


def teach(scene: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
          model: Any, folder: str | os.PathLike[str], name: str, *,
          min_confidence: float = MIN_CONFIDENCE, mask_with: Sequence[str] = (),
          device: Device = "auto", reuse: bool = False, progress: bool = False) -> Taught:
    """Let ``model`` label ``scene``: write ``NAME.mask.tif``, ``NAME.probabilities.tif``
    and ``NAME.labels.tif`` into ``folder`` and return the labels with their counts.

    The scene is read as ``geoseg predict`` reads it, its bands matched to the teacher's
    by name; ``mask_with`` runs mask models beside it (their classes are nodata, so
    unlabelled). With ``reuse`` the labels of an interrupted run are kept where they were
    made alike (the same teacher, threshold, mask models and scene)."""
    if not 0 <= min_confidence <= 1:
        raise InputError(f"the minimum confidence is a probability in [0, 1], not "
                         f"{min_confidence}")
    from geoseg.prediction import predict

    folder = Path(folder)
    mask = folder / f"{name}.mask.tif"
    probs = folder / f"{name}.probabilities.tif"
    labels = folder / f"{name}.labels.tif"
    shown = scene if isinstance(scene, (str, os.PathLike)) else "+".join(map(str, scene))
    # GDAL keeps no empty tag: "-" stands for none.
    made = {"TEACHER": os.fspath(model) if isinstance(model, (str, os.PathLike)) else "-",
            "MIN_CONFIDENCE": repr(float(min_confidence)),
            "MASK_WITH": ";".join(mask_with) or "-", "SCENE": _identity(scene)}
    have = _tags(labels) if reuse else {}
    if not (all(have.get(k) == v for k, v in made.items()) and "LABELLED_PIXELS" in have
            and mask.exists() and probs.exists()):
        predict(scene, mask, model, probabilities_path=probs, mask_with=mask_with,
                device=device, overwrite=True, progress=progress)
        with atomic.atomic_path(labels, overwrite=True) as tmp:
            _confident(mask, probs, tmp, min_confidence, made)
        have = _tags(labels)
    return Taught(labels, Path(os.fspath(shown).rstrip("/")).name,
                  int(have["MAPPED_PIXELS"]), json.loads(have["LABELLED_PIXELS"]))


def _confident(mask: Path, probs: Path, dst: Path, min_confidence: float,
               made: dict[str, str]) -> None:
    """Write the mask's classes where the top probability reaches ``min_confidence``,
    tagged with how they were ``made`` and what they hold (``MAPPED_PIXELS``: the mask's
    pixels with data; ``LABELLED_PIXELS``: the labels of each class, as JSON)."""
    import rasterio
    from rasterio.windows import Window

    from geoseg.gdal import gdal_env
    from geoseg.maskfile import default_color, read_class_table, write_classes

    # Stored probabilities are round(p * 254): the threshold on the stored values.
    least = int(np.ceil(min_confidence * PROB_SCALE - 1e-9))
    with rasterio.Env(**gdal_env()), rasterio.open(mask) as m, rasterio.open(probs) as p:
        table = read_class_table(m)
        profile = {"driver": "GTiff", "width": m.width, "height": m.height, "count": 1,
                   "dtype": "uint8", "nodata": NODATA, "crs": m.crs, "transform": m.transform,
                   "tiled": True, "blockxsize": 512, "blockysize": 512,
                   "compress": "deflate", "BIGTIFF": "IF_SAFER"}
        with rasterio.open(dst, "w", **profile) as out:
            counts = np.zeros(NODATA + 1, np.int64)
            mapped = 0
            for row in range(0, m.height, WINDOW):
                for col in range(0, m.width, WINDOW):
                    window = Window(col, row, min(WINDOW, m.width - col),
                                    min(WINDOW, m.height - row))
                    classes = m.read(1, window=window)
                    top = p.read(window=window).max(axis=0)
                    sure = (classes != NODATA) & (top >= least) & (top <= PROB_SCALE)
                    labels = np.where(sure, classes, NODATA).astype(np.uint8)
                    out.write(labels, 1, window=window)
                    counts += np.bincount(labels.ravel(), minlength=NODATA + 1)
                    mapped += int((classes != NODATA).sum())
        model = m.tags().get("MODEL", "")
    colors = [table.colors.get(i, default_color(i)) for i in range(len(table.names))]
    write_classes(dst, table.names, colors, model=model, source=os.fspath(mask))
    with rasterio.open(dst, "r+") as ds:
        ds.update_tags(**made, MAPPED_PIXELS=str(mapped), LABELLED_PIXELS=json.dumps(
            {n: int(counts[i]) for i, n in enumerate(table.names)}))


def _identity(scene: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> str:
    """The scene's files as they are now: each path, resolved, with its size and time of
    change (a URL as it is), so labels of another scene, or of a changed one, are not
    taken for its own."""
    items = ([os.fspath(scene)] if isinstance(scene, (str, os.PathLike))
             else [os.fspath(s) for s in scene])
    parts = []
    for item in (p for i in items for p in i.split("+")):
        path = Path(item)
        try:
            stat = path.stat()
            parts.append(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        except OSError:  # a URL, a glob
            parts.append(item)
    return "|".join(parts)


def _tags(path: Path) -> dict[str, str]:
    """The tags of the labels at ``path`` (none when there are no labels)."""
    import rasterio

    if not path.exists():
        return {}
    with rasterio.open(path) as ds:
        return dict(ds.tags())


def working_name(index: int, scene: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
                 ) -> str:
    """A file name for the ``index``-th scene's teacher outputs (its first file's stem)."""
    first = scene if isinstance(scene, (str, os.PathLike)) else scene[0]
    stem = Path(os.fspath(first).split("+")[0].rstrip("/")).name.split(".")[0]
    return f"{index + 1}-{re.sub(r'[^A-Za-z0-9_-]+', '_', stem) or 'scene'}"
