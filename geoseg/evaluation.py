"""``geoseg.evaluate``: a predicted mask (or an image and a model) scored against
reference labels, window by window, with a report and pictures on request."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg import atomic, maskfile
from geoseg.errors import InputError
from geoseg.grid import Grid
from geoseg.labels import LabelMap, open_labels
from geoseg.scores import confusion_matrix, json_safe, scores

if TYPE_CHECKING:
    import xarray as xr

    from geoseg.model import Model

WINDOW = 1024  # pixels per side read at a time: memory does not grow with the raster


@dataclass
class Evaluation:
    """A confusion matrix (rows: reference, columns: prediction) and what it says."""

    class_names: list[str]
    confusion: np.ndarray
    prediction: str = ""
    labels: str = ""

    @property
    def metrics(self) -> dict[str, Any]:
        return scores(self.confusion, self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return {"prediction": self.prediction, "labels": self.labels,
                "class_names": self.class_names, **self.metrics}

    def table(self) -> str:
        m = self.metrics
        lines = [f"{'class':<16} {'IoU':>7} {'F1':>7} {'precision':>10} {'recall':>7} "
                 f"{'pixels':>10}"]
        for name, row in m["per_class"].items():
            lines.append(f"{name:<16} {_num(row['iou']):>7} {_num(row['f1']):>7} "
                         f"{_num(row['precision']):>10} {_num(row['recall']):>7} "
                         f"{row['pixels']:>10}")
        lines.append(f"mIoU {_num(m['miou'])}  overall accuracy {_num(m['overall_accuracy'])}  "
                     f"({int(self.confusion.sum())} labelled pixels scored)")
        return "\n".join(lines)


def _num(x: float) -> str:
    return "-" if x != x else f"{x:.4f}"  # NaN: the class is in neither input


def evaluate(
    prediction: str | os.PathLike[str] | xr.DataArray,
    labels: str | os.PathLike[str],
    *,
    class_field: str | None = None,
    background: int | str | None = None,
    label_map: LabelMap | None = None,
    model: str | os.PathLike[str] | Model | None = None,
    report: str | os.PathLike[str] | None = None,
    confusion_png: str | os.PathLike[str] | None = None,
    compare_png: str | os.PathLike[str] | None = None,
    image: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    **predict_options: Any,
) -> Evaluation:
    """Score a prediction against reference labels (a class raster or polygons).

    ``prediction`` is a class mask (a file from ``predict`` or a DataArray); with
    ``model`` it is an image instead, predicted once into a temporary mask. ``labels`` are
    rendered onto the prediction's grid (see :func:`geoseg.labels.open_labels`, which
    also reads another product's class codes by ``label_map``); pixels
    that are nodata in the prediction or unlabelled in the reference are not scored.
    Writes, on request, a JSON ``report``, a ``confusion_png`` and a ``compare_png``
    (image, prediction and reference side by side; the image is ``prediction`` when a
    model runs on it, else ``image``).
    """
    if compare_png and model is None and not isinstance(prediction, (str, os.PathLike)):
        raise InputError("a comparison picture needs the prediction as a file", compare_png)
    with contextlib.ExitStack() as stack:
        stack.enter_context(atomic.outputs([report, confusion_png, compare_png],
                                           overwrite=overwrite))
        shown = None
        if model is not None:  # an image: predict it once, to a temporary mask
            from geoseg.prediction import predict

            if not isinstance(prediction, (str, os.PathLike)):
                raise InputError("with a model, give the image as a file", "prediction")
            image = image or prediction
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="geoseg-")))
            predict(prediction, folder / "prediction.tif", model, **predict_options)
            shown, prediction = f"{prediction} (predicted)", folder / "prediction.tif"
        result = _score(prediction, labels, class_field, background, label_map)
        if shown:
            result.prediction = shown
        _write_results(result, prediction, labels, report=report, confusion_png=confusion_png,
                       compare_png=compare_png, image=image, class_field=class_field,
                       background=background, label_map=label_map, overwrite=overwrite)
    return result


def _score(prediction: Any, labels: str | os.PathLike[str], class_field: str | None,
           background: int | str | None, label_map: LabelMap | None) -> Evaluation:
    """The confusion matrix, accumulated window by window."""
    mask, names, grid, shown = _open_prediction(prediction)
    reference = open_labels(labels, grid, names, class_field=class_field, background=background,
                            label_map=label_map)
    cm = np.zeros((len(names), len(names)), np.int64)
    for row in range(0, grid.height, WINDOW):
        for col in range(0, grid.width, WINDOW):
            h, w = min(WINDOW, grid.height - row), min(WINDOW, grid.width - col)
            cm += confusion_matrix(mask(row, col, h, w), reference.read(row, col, h, w),
                                   len(names))
    if not cm.sum():
        raise InputError("no labelled pixel falls on the prediction's data", labels)
    return Evaluation(names, cm, shown, str(labels))


def _write_results(result: Evaluation, prediction: Any, labels: str | os.PathLike[str], *,
                   report: Any, confusion_png: Any, compare_png: Any, image: Any,
                   class_field: str | None, background: int | str | None,
                   label_map: LabelMap | None, overwrite: bool) -> None:
    # Every file is finished as a temp file first; they replace their targets together.
    with atomic.together(overwrite=overwrite) as files:
        if report:
            files.path(report).write_text(json.dumps(json_safe(result.to_dict()), indent=2) + "\n")
        if confusion_png or compare_png:
            from geoseg import plots

            if confusion_png:
                plots.confusion_png(result, files.path(confusion_png))
            if compare_png:
                plots.compare_png(prediction, labels, files.path(compare_png), image=image,
                                  class_field=class_field, background=background,
                                  label_map=label_map)


Reader = Callable[[int, int, int, int], np.ndarray]  # (row, col, height, width) -> classes


def _open_prediction(prediction: Any) -> tuple[Reader, list[str], Grid, str]:
    """A window reader of the predicted classes, the class names, the grid, a name."""
    from geoseg.sources import open_source, read_clipped

    if isinstance(prediction, (str, os.PathLike)):
        source = open_source(prediction, allow_no_crs=True)
        if len(source.bands) != 1:
            raise InputError(f"has {len(source.bands)} bands: give a class mask, or the "
                             f"image with a model (${{model}})", source.name)
        with source.open() as ds:
            names = maskfile.read_class_table(ds).names
        if not names:
            raise InputError("has no class names (CLASS_NAMES); is it a geoseg mask?",
                             source.name)

        def read(row: int, col: int, h: int, w: int) -> np.ndarray:
            with source.open() as ds:
                values, valid = read_clipped(ds, source, row, col, h, w)
            return np.where(valid, values[0], maskfile.NODATA).astype(np.uint8)

        return read, list(names), source.grid, source.name
    names = maskfile.array_classes(prediction).names
    if not names:
        raise InputError("the prediction array has no class_names attribute", "prediction")

    def read_array(row: int, col: int, h: int, w: int) -> np.ndarray:
        return np.asarray(prediction.data[row:row + h, col:col + w]).astype(np.uint8)

    grid = Grid(prediction.rio.crs, prediction.rio.transform(recalc=True), prediction.shape[0],
                prediction.shape[1])
    return read_array, names, grid, str(prediction.name or "prediction")
