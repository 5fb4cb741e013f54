"""Pictures of an evaluation: the confusion matrix, and image | prediction | reference.

Drawn with Pillow (no plotting library); rasters are read decimated, so a picture of a
huge scene costs what its pixels on screen cost.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg import maskfile

if TYPE_CHECKING:
    from geoseg.evaluation import Evaluation
    from geoseg.labels import LabelMap

PANEL = 512  # longest side of each panel of the comparison, pixels
CELL = 44


def confusion_png(result: Evaluation, path: str | os.PathLike[str]) -> None:
    """The confusion matrix as a picture: rows are the reference, columns the prediction;
    each cell is shaded by its share of the reference row (recall) and shows the count."""
    from PIL import Image, ImageDraw, ImageFont

    cm = result.confusion.astype(np.float64)
    n = len(cm)
    share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    font = ImageFont.load_default()
    left = 12 + 7 * max(len(f"{i} {name}") for i, name in enumerate(result.class_names))
    top = 40
    img = Image.new("RGB", (left + n * CELL + 12, top + n * CELL + 40), "white")
    draw = ImageDraw.Draw(img)
    draw.text((left, 6), "prediction (columns) vs reference (rows)", fill="black", font=font)
    for i, name in enumerate(result.class_names):
        draw.text((6, top + i * CELL + CELL // 2 - 5), f"{i} {name}", fill="black", font=font)
        draw.text((left + i * CELL + CELL // 2 - 3, top - 14), str(i), fill="black", font=font)
        for j in range(n):
            v = int(255 - 200 * share[i, j])
            box = (left + j * CELL, top + i * CELL, left + (j + 1) * CELL - 1,
                   top + (i + 1) * CELL - 1)
            draw.rectangle(box, fill=(v, v, 255), outline=(200, 200, 200))
            count = _short(int(cm[i, j]))
            draw.text((box[0] + 3, box[1] + CELL // 2 - 5), count,
                      fill="white" if share[i, j] > 0.6 else "black", font=font)
    m = result.metrics
    draw.text((6, top + n * CELL + 12),
              f"mIoU {m['miou']:.4f}   overall accuracy {m['overall_accuracy']:.4f}",
              fill="black", font=font)
    img.save(path, format="PNG")


def _short(count: int) -> str:
    for unit, size in (("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}"
    return str(count)


def compare_png(prediction: str | os.PathLike[str], labels: str | os.PathLike[str],
                path: str | os.PathLike[str], *, image: str | os.PathLike[str] | None = None,
                class_field: str | None = None, background: int | str | None = None,
                label_map: LabelMap | None = None) -> None:
    """Image (if given), prediction and reference side by side, in the class colours."""
    import rasterio
    from PIL import Image, ImageDraw, ImageFont

    from geoseg.grid import Grid
    from geoseg.labels import open_labels

    with rasterio.open(prediction) as ds:
        predicted = maskfile.read_preview(ds, PANEL)
        shape = predicted.shape
        classes = maskfile.read_class_table(ds)
        coarse = Grid.of(ds).decimated(*shape)
    reference = open_labels(labels, coarse, classes.names, class_field=class_field,
                            label_map=label_map,
                            background=background).read(0, 0, shape[0], shape[1])
    lut = maskfile.palette(classes.colors, fill=(255, 255, 255))  # nodata, unlabelled: white
    panels = [("prediction", lut[predicted]), ("reference", lut[reference])]
    if image is not None:
        panels.insert(0, ("image", _image_rgb(image, shape)))
    font = ImageFont.load_default()
    gap, title = 8, 16
    out = Image.new("RGB", (len(panels) * (shape[1] + gap) + gap, shape[0] + title + gap),
                    "white")
    draw = ImageDraw.Draw(out)
    for k, (name, rgb) in enumerate(panels):
        x = gap + k * (shape[1] + gap)
        out.paste(Image.fromarray(rgb), (x, title))
        draw.text((x, 2), name, fill="black", font=font)
    out.save(path, format="PNG")


def _image_rgb(path: str | os.PathLike[str], shape: tuple[int, int]) -> np.ndarray:
    """A natural-colour (or grey) picture of an image, stretched 2-98 % per band."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as ds:
        named = {(d or "").lower(): i + 1 for i, d in enumerate(ds.descriptions)}
        bands: Any = [named[c] for c in ("red", "green", "blue") if c in named]
        if len(bands) != 3:
            bands = [1, 2, 3] if ds.count >= 3 else [1, 1, 1]
        data = ds.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.average,
                       masked=True).astype(np.float64)
    rgb = np.zeros((*shape, 3), np.uint8)
    for k in range(3):
        band = data[k]
        values = band.compressed()
        if values.size:
            lo, hi = np.percentile(values, (2, 98))
            stretched = np.clip((band.filled(lo) - lo) / max(hi - lo, 1e-9), 0, 1)
            rgb[..., k] = (stretched * 255).astype(np.uint8)
    return rgb
