"""Segmentation scores from a confusion matrix (rows: reference, columns: prediction).

Pure arithmetic on arrays: pixels that are :data:`~geoseg.maskfile.NODATA` (255: nodata
in a mask, unlabelled in labels) in either input are not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from geoseg.maskfile import NODATA


def confusion_matrix(predicted: np.ndarray, reference: np.ndarray, n_classes: int) -> np.ndarray:
    """``n × n`` counts; pixels that are 255 (nodata / unlabelled) in either input are skipped."""
    p = np.asarray(predicted).ravel().astype(np.int64)
    r = np.asarray(reference).ravel().astype(np.int64)
    keep = (p != NODATA) & (r != NODATA) & (p < n_classes) & (r < n_classes)
    return np.bincount(r[keep] * n_classes + p[keep], minlength=n_classes**2).reshape(
        n_classes, n_classes)


def scores(cm: np.ndarray, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Per-class IoU, precision, recall, F1; overall accuracy and mIoU (over present classes).

    A class absent from both reference and prediction has no IoU (NaN) and does not count
    towards the mean.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (tp + fp + fn)
        precision = tp / (tp + fp)
        recall = tp / (tp + fn)
        f1 = 2 * tp / (2 * tp + fp + fn)
    names = list(class_names) if class_names else [str(i) for i in range(len(cm))]
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "overall_accuracy": float(tp.sum() / total) if total else float("nan"),
        "per_class": {
            n: {"iou": float(iou[i]), "precision": float(precision[i]),
                "recall": float(recall[i]), "f1": float(f1[i]), "pixels": int(cm[i].sum())}
            for i, n in enumerate(names)
        },
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }


def json_safe(value: Any) -> Any:
    """``value`` with NaN (a class in neither input) as None: strict JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def evaluate_arrays(predicted: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                    class_names: Sequence[str]) -> dict[str, Any]:
    """Scores of predicted vs reference label arrays (255 in either is not scored)."""
    n = len(class_names)
    cm = np.zeros((n, n), np.int64)
    for p, r in zip(predicted, reference, strict=True):
        cm += confusion_matrix(p, r, n)
    return scores(cm, class_names)
