"""Training chips: image and label windows drawn where the labels are, read from disk
chip by chip (memory does not grow with the images) and augmented.

A :class:`Census` counts each image's labelled pixels per class and cell once; blocks of
the images are kept apart for validation (:func:`split_blocks`, stratified so every
labelled class is scored where it can be), so the score measures what training never
saw nearby; :class:`LabelChips` draws training chips around the labels, class by class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.errors import InputError
from geoseg.labels import LabelMap, Labels, open_labels
from geoseg.maskfile import NODATA
from geoseg.sources import Source, open_source, read_window

Window = tuple[int, int, int, int]  # row, col, height, width (pixels)



@dataclass(frozen=True)
class Pair:
    """One training image and its labels, on the image's grid."""

    image: Source
    labels: Labels


def open_pairs(images: Sequence[str | os.PathLike[str]], labels: Sequence[str | os.PathLike[str]],
               class_names: Sequence[str], *, class_field: str | None = None,
               background: int | str | None = None, bands: Sequence[int] | None = None,
               assets: Sequence[str] | None = None, resolution: float | None = None,
               resampling: str = "bilinear",
               labelled_area: str | os.PathLike[str] | None = None,
               label_map: LabelMap | None = None) -> list[Pair]:
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
                                              class_field=class_field, background=background,
                                              labelled_area=labelled_area,
                                              label_map=label_map)))
    counts = {len(p.image.bands) for p in pairs}
    if len(counts) > 1:
        raise InputError(f"the images have different band counts ({sorted(counts)})")
    return pairs


@dataclass(frozen=True)
class Census:
    """Labelled pixels of each class in square cells (``cell`` px a side) of one image:
    where the labels are, counted once strip by strip (memory: a strip of labels)."""

    cell: int
    counts: np.ndarray  # (cell rows, cell cols, classes) int64


def census(pair: Pair, cell: int, n_classes: int, strip_cells: int = 16) -> Census:
    """Count ``pair``'s labelled pixels per class and cell."""
    h, w = pair.image.grid.shape
    rows, cols = -(-h // cell), -(-w // cell)
    counts = np.zeros((rows, cols, n_classes), np.int64)
    for r in range(0, rows, strip_cells):
        n = min(strip_cells, rows - r)
        y = np.full((n * cell, cols * cell), NODATA, np.uint8)
        height = min(n * cell, h - r * cell)
        y[:height, :w] = pair.labels.read(r * cell, 0, height, w)
        for c in np.unique(y):
            if c != NODATA and c < n_classes:
                counts[r:r + n, :, c] = (y == c).reshape(n, cell, cols, cell).sum(axis=(1, 3))
    return Census(cell, counts)


@dataclass(frozen=True)
class Split:
    """Validation blocks (row, col, height, width) per image, spatially apart from the
    training area, and what the split says about each class."""

    block: int
    val: list[list[Window]]
    val_pixels: np.ndarray  # per class, labelled pixels in the validation blocks
    train_pixels: np.ndarray  # per class, in the training area
    notes: list[str]  # warnings: classes validation cannot score


MIN_VAL_PIXELS = 200  # fewer labelled validation pixels of a class: its IoU is noise


def split_blocks(pairs: Sequence[Pair], censuses: Sequence[Census], chip: int,
                 val_fraction: float, rng: np.random.Generator, names: Sequence[str]) -> Split:
    """Validation blocks, stratified: every class labelled in two blocks or more has at
    least one in validation and one in training, and about ``val_fraction`` of the
    labelled blocks are validation. Blocks are ``2 × chip`` px, or ``chip`` or ``chip / 2``
    px where some class is labelled in one larger block only (labels digitised in one
    corner)."""
    cell = censuses[0].cell
    for block in (2 * chip, chip, max(cell, chip // 2)):
        holders = _block_counts(censuses, block // cell)
        per_class = [sum(1 for _, _, _, n in holders if n[c]) for c in range(len(names))]
        if all(k != 1 for k in per_class):
            break
    blocks = [(k, r, c) for k, r, c, _ in holders]
    counts = np.array([n for _, _, _, n in holders]) if holders else np.zeros((0, len(names)))
    n_val = 0 if len(blocks) < 2 else min(max(1, round(val_fraction * len(blocks))),
                                          len(blocks) - 1)
    chosen: set[int] = set()
    present = counts > 0
    in_training = present.sum(axis=0)  # per class, blocks of it left to training

    def take(i: int) -> bool:  # to validation, if training keeps every class it has
        if i in chosen or (in_training[present[i]] < 2).any():
            return False
        chosen.add(i)
        in_training[present[i]] -= 1
        return True

    if n_val:
        # Rarest class first: one block of it for validation, while training keeps one.
        for c in np.argsort(counts.sum(axis=0)):
            have = np.flatnonzero(present[:, c])
            if len(have) >= 2 and not chosen.intersection(have.tolist()):
                for i in rng.permutation(have):
                    if take(int(i)):
                        break
        for i in rng.permutation(len(blocks)):
            if len(chosen) >= n_val:
                break
            take(int(i))
    val: list[list[Window]] = [[] for _ in pairs]
    for i in sorted(chosen):
        k, r, c = blocks[i]
        h, w = pairs[k].image.grid.shape
        val[k].append((r * block, c * block, min(block, h - r * block), min(block, w - c * block)))
    in_val = np.zeros(len(blocks), bool)
    in_val[list(chosen)] = True
    val_pixels = counts[in_val].sum(axis=0).astype(np.int64)
    train_pixels = counts[~in_val].sum(axis=0).astype(np.int64)
    notes = []
    for c, name in enumerate(names):
        total = val_pixels[c] + train_pixels[c]
        if total and not val_pixels[c] and n_val:
            where = ("one block" if present[:, c].sum() == 1
                     else f"{present[:, c].sum()} blocks that training needs")
            notes.append(f"class {name!r} is labelled in {where} only ({total} px in blocks "
                         f"of {block} px): it is trained on but validation cannot score it")
        elif 0 < val_pixels[c] < MIN_VAL_PIXELS:
            notes.append(f"class {name!r} has {val_pixels[c]} labelled "
                         f"pixel{'s' * int(val_pixels[c] != 1)} in the validation blocks: too few "
                         f"for its IoU to mean much")
    return Split(block, val, val_pixels, train_pixels, notes)


def _block_counts(censuses: Sequence[Census], cells: int
                  ) -> list[tuple[int, int, int, np.ndarray]]:
    """``(image, block row, block col, pixels per class)`` of every labelled block."""
    out = []
    for k, cen in enumerate(censuses):
        rows, cols, n = cen.counts.shape
        padded = np.zeros((-(-rows // cells) * cells, -(-cols // cells) * cells, n), np.int64)
        padded[:rows, :cols] = cen.counts
        sums = padded.reshape(padded.shape[0] // cells, cells, padded.shape[1] // cells, cells,
                              n).sum(axis=(1, 3))
        out += [(k, r, c, sums[r, c]) for r, c in zip(*np.nonzero(sums.sum(axis=2)), strict=True)]
    return out


class LabelChips:
    """Augmented training chips, drawn where the labels are: around a class chosen
    uniformly among the labelled ones (so a class on 0.1 % of the pixels is in most
    batches), or, for ``background_ratio`` of the chips, around any labelled pixel
    (in sparse labels mostly background). Validation blocks' labels never reach a chip.
    Read from disk chip by chip: memory does not grow with the images."""

    def __init__(self, pairs: Sequence[Pair], censuses: Sequence[Census], split: Split,
                 size: int, jitter: float = 0.1, background_ratio: float = 0.25,
                 background: int | None = None) -> None:
        self.pairs, self.size, self.jitter = list(pairs), size, jitter
        self.background_ratio, self.val, self.cell = background_ratio, split.val, censuses[0].cell
        cells = []
        for k, cen in enumerate(censuses):
            counts = cen.counts.copy()
            for r, c, h, w in split.val[k]:  # the validation blocks' cells
                counts[r // self.cell:-(-(r + h) // self.cell),
                       c // self.cell:-(-(c + w) // self.cell)] = 0
            rr, cc = np.nonzero(counts.sum(axis=2))
            cells += [(k, int(r), int(c), counts[r, c]) for r, c in zip(rr, cc, strict=True)]
        if not cells:
            raise InputError("no labelled training area is left once validation blocks are "
                             "set apart (label more, or lower the validation fraction)")
        self.cells = [(k, r, c) for k, r, c, _ in cells]
        weights = np.array([n for *_, n in cells], np.float64)  # (cells, classes)
        self.any = np.cumsum(weights.sum(axis=1))
        self.classes = [c for c in range(weights.shape[1])
                        if weights[:, c].sum() and c != background]
        self.by_class = {c: np.cumsum(weights[:, c]) for c in self.classes}

    def _cell(self, rng: np.random.Generator) -> tuple[int, int, int]:
        if not self.classes or rng.random() < self.background_ratio:
            table = self.any
        else:
            table = self.by_class[self.classes[int(rng.integers(len(self.classes)))]]
        i = int(np.searchsorted(table, rng.random() * table[-1], side="right"))
        return self.cells[min(i, len(self.cells) - 1)]

    def chip(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One chip ``(bands, size, size)`` float32 and its labels (NODATA = unlabelled)."""
        return self.draw(rng)[3:]

    def draw(self, rng: np.random.Generator
             ) -> tuple[int, int, int, np.ndarray, np.ndarray]:
        """``(image, row, col, chip, labels)``: a chip and where it was read."""
        for _ in range(50):
            k, cr, cc = self._cell(rng)
            h, w = self.pairs[k].image.grid.shape
            # A pixel of the cell, at a random place in the chip.
            py = min(cr * self.cell + int(rng.integers(self.cell)), h - 1)
            px = min(cc * self.cell + int(rng.integers(self.cell)), w - 1)
            row = int(np.clip(py - rng.integers(self.size), 0, max(h - self.size, 0)))
            col = int(np.clip(px - rng.integers(self.size), 0, max(w - self.size, 0)))
            x, y = read_chip(self.pairs[k], row, col, (self.size, self.size))
            for vr, vc, vh, vw in self.val[k]:  # validation labels stay unseen
                r0, c0 = max(vr - row, 0), max(vc - col, 0)
                r1, c1 = min(vr + vh - row, self.size), min(vc + vw - col, self.size)
                if r0 < r1 and c0 < c1:
                    y[r0:r1, c0:c1] = NODATA
            if (y != NODATA).any():
                return k, row, col, x, y
        raise InputError("the labels cover none of 50 training chips in a row (are the "
                         "labelled pixels all where the image has no data?)")

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
