"""Training chips: image and label windows drawn from the training blocks of each image,
read from disk chip by chip (memory does not grow with the images) and augmented.

Each image is cut into blocks (:func:`split_blocks`); spatially separate ones are kept
apart for validation, so the score measures what training never saw nearby.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import InputError
from geoseg.labels import Labels, open_labels
from geoseg.maskfile import NODATA
from geoseg.sources import Source, open_source, read_window

Window = tuple[int, int, int, int]  # row, col, height, width (pixels)

MIN_LABELLED = 0.05  # a chip with less of its pixels labelled is drawn again


@dataclass(frozen=True)
class Pair:
    """One training image and its labels, on the image's grid."""

    image: Source
    labels: Labels


def open_pairs(images: Sequence[str | os.PathLike[str]], labels: Sequence[str | os.PathLike[str]],
               class_names: Sequence[str], *, class_field: str | None = None,
               background: int | str | None = None, bands: Sequence[int] | None = None,
               assets: Sequence[str] | None = None, resolution: float | None = None,
               resampling: str = "bilinear") -> list[Pair]:
    """Validated (image, labels) pairs; every image must have the same bands (matched by
    name to the first image's where the images name them) and declare a scale and offset
    alike (chips are in physical units when they do)."""
    if not images or len(images) != len(labels):
        raise InputError(f"give one labels file per image ({len(images)} images, "
                         f"{len(labels)} labels)")
    pairs: list[Pair] = []
    for image, label in zip(images, labels, strict=True):
        first = pairs[0].image if pairs else None
        want = first.band_names if first is not None and all(first.band_names) else None
        source = open_source(image, bands=bands, want=want, assets=assets,
                             resolution=resolution, resampling=resampling)
        if first is not None and bool(first.scale) != bool(source.scale):
            declares, lacks = (first, source) if first.scale else (source, first)
            raise InputError(f"declares no scale and offset, but {declares.name} does: train "
                             f"on images in one kind of units", lacks.name)
        pairs.append(Pair(source, open_labels(label, source.grid, class_names,
                                              class_field=class_field, background=background)))
    counts = {len(p.image.bands) for p in pairs}
    if len(counts) > 1:
        raise InputError(f"the images have different band counts ({sorted(counts)})")
    return pairs


def split_blocks(pair: Pair, block: int, val_fraction: float, rng: np.random.Generator
                 ) -> tuple[list[Window], list[Window]]:
    """The labelled parts of the image cut into ``block``-sized windows (row, col, h, w),
    some kept apart for validation: spatially separate areas, so validation measures what
    training never saw nearby. At least one block goes to each side when there are two
    or more. Blocks whose labels cover less than ``MIN_LABELLED`` are left out."""
    h, w = pair.image.grid.shape
    blocks = [(r, c, min(block, h - r), min(block, w - c))
              for r in range(0, h, block) for c in range(0, w, block)]
    blocks = [b for b in blocks if (pair.labels.read(*b) != NODATA).mean() >= MIN_LABELLED]
    order = rng.permutation(len(blocks))
    n_val = 0 if len(blocks) < 2 else min(max(1, round(val_fraction * len(blocks))),
                                          len(blocks) - 1)
    val = sorted(blocks[i] for i in order[:n_val])
    return sorted(blocks[i] for i in order[n_val:]), val


class RasterChips:
    """Random labelled chips from the training blocks of image/label pairs (read from
    disk chip by chip: memory does not grow with the images), augmented."""

    def __init__(self, pairs: Sequence[Pair], blocks: Sequence[Sequence[Window]],
                 size: int, jitter: float = 0.1) -> None:
        self.pairs, self.size, self.jitter = list(pairs), size, jitter
        self.windows = [(k, b) for k, bs in enumerate(blocks) for b in bs]
        if not self.windows:
            raise InputError("no training area left (the labelled part of the images is "
                             "smaller than two blocks)")

    def chip(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One chip ``(bands, size, size)`` float32 and its labels (NODATA = unlabelled)."""
        for _ in range(50):
            k, (r, c, h, w) = self.windows[int(rng.integers(len(self.windows)))]
            row = r + int(rng.integers(0, max(h - self.size, 0) + 1))
            col = c + int(rng.integers(0, max(w - self.size, 0) + 1))
            x, y = read_chip(self.pairs[k], row, col, (self.size, self.size))
            if (y != NODATA).mean() >= MIN_LABELLED:
                return x, y
        raise InputError("the labels cover almost none of the training area "
                         f"(fewer than {MIN_LABELLED:.0%} of the pixels of 50 chips in a row)")

    def __call__(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for _ in range(n):
            x, y = augment(*self.chip(rng), rng, self.jitter)
            xs.append(x)
            ys.append(y)
        return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int64)


def read_chip(pair: Pair, row: int, col: int, shape: tuple[int, int],
              labelled: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image ``(bands, *shape)`` float32 and labels ``shape`` of the window at (row, col);
    pixels without image data are NaN and unlabelled, and so is all beyond ``labelled``
    (height, width: default, as far as the image goes). Values are physical where the
    image declares a scale and offset, else as stored."""
    height, width = shape
    with pair.image.open() as ds:
        x, valid = read_window(ds, pair.image, row, col, height, width)
    if pair.image.scale:
        x = (x * np.array(pair.image.scale, np.float32)[:, None, None]
             + np.array(pair.image.offset, np.float32)[:, None, None])
    x[:, ~valid] = np.nan  # no data: zero once normalized, as in prediction
    y = np.full(shape, NODATA, np.uint8)
    h, w = labelled or (min(height, pair.image.grid.height - row),
                        min(width, pair.image.grid.width - col))
    y[:h, :w] = pair.labels.read(row, col, h, w)
    y[~valid] = NODATA
    return x, y


def augment(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, jitter: float
            ) -> tuple[np.ndarray, np.ndarray]:
    """A random 90° rotation and flip of a chip, and per-band brightness/contrast jitter."""
    turns = int(rng.integers(4))
    x, y = np.rot90(x, turns, axes=(1, 2)), np.rot90(y, turns)
    if rng.random() < 0.5:
        x, y = x[:, :, ::-1], y[:, ::-1]
    gain = 1 + rng.uniform(-jitter, jitter, size=(x.shape[0], 1, 1))
    mean = x.mean(axis=(1, 2), keepdims=True)
    contrast = 1 + rng.uniform(-jitter, jitter, size=(x.shape[0], 1, 1))
    return ((x - mean) * contrast + mean) * gain, y


def band_statistics(images: Sequence[np.ndarray],
                    labels: Sequence[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation over labelled (non-NODATA) pixels."""
    values = [img[:, lab != NODATA].astype(np.float64)
              for img, lab in zip(images, labels, strict=True)]
    stacked = np.concatenate(values, axis=1)
    return stacked.mean(axis=1).tolist(), np.maximum(stacked.std(axis=1), 1e-6).tolist()
