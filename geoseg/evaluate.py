"""Segmentation metrics from a confusion matrix (rows: reference, columns: prediction)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

IGNORE = 255


def confusion_matrix(predicted: np.ndarray, reference: np.ndarray, n_classes: int) -> np.ndarray:
    """``n × n`` counts; pixels that are 255 (nodata / unlabelled) in either input are skipped."""
    p = np.asarray(predicted).ravel().astype(np.int64)
    r = np.asarray(reference).ravel().astype(np.int64)
    keep = (p != IGNORE) & (r != IGNORE) & (p < n_classes) & (r < n_classes)
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
