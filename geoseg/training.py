"""``geoseg train``: a model for the user's own imagery from their labels.

Images and labels (class rasters or polygons, see :mod:`geoseg.labels`) are cut into
blocks; some blocks are kept apart for validation (spatially separate areas), the others
give random augmented training chips read from disk (:mod:`geoseg.chips`). Normalization statistics come from
the training blocks and go into the model card with the bands, classes and colours, tile
size, resolution and the validation scores. The loop (:func:`geoseg.fitting.fit`)
validates after every epoch, keeps the best weights, stops early, and checkpoints so a
run can ``resume``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg import atomic, styles
from geoseg.chips import Pair, RasterChips, Window, band_statistics, open_pairs, split_blocks
from geoseg.devices import Device
from geoseg.errors import InputError
from geoseg.fitting import FitOptions, fit
from geoseg.labels import is_vector
from geoseg.maskfile import NODATA, read_class_table
from geoseg.model import ClassInfo, Model, ModelSpec
from geoseg.scores import confusion_matrix, scores
from geoseg.sources import Source, open_source, read_window

DECODER = (256, 128, 64, 32, 16)
STAT_CHIPS = 32  # chips sampled for the normalization statistics


def train(
    images: Sequence[str | os.PathLike[str]],
    labels: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    class_field: str | None = None,
    background: int | str | None = None,
    bands: Sequence[int] | None = None,
    chip_size: int = 256,
    encoder: str = "tu-mobilenetv3_small_100",
    encoder_depth: int = 3,
    val_fraction: float = 0.2,
    jitter: float = 0.1,
    epochs: int = 20,
    steps_per_epoch: int = 100,
    batch_size: int = 8,
    lr: float = 3e-3,
    patience: int = 5,
    seed: int = 0,
    device: Device = "auto",
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> Model:
    """Train a U-Net on ``images`` with their ``labels`` and save it in the folder ``out``
    (``model.json`` + ``model.safetensors``, loadable by ``predict --model OUT``); the
    checkpoint of every epoch goes to ``out/checkpoint``. Returns the best model.

    ``jitter`` is the per-band brightness and contrast augmentation (±10 % by default);
    lower it when the classes hinge on band ratios (labels from spectral indices).
    """
    folder = Path(out)
    targets = [] if resume else [folder / "model.json", folder / "model.safetensors"]
    # A run that fails before its first checkpoint leaves no new folder behind.
    with atomic.outputs(targets, overwrite=overwrite):
        if not 0 <= val_fraction < 1:
            raise InputError(f"the validation fraction must be in [0, 1), not {val_fraction}")
        names, colors = label_classes(labels, class_field, classes)
        pairs = open_pairs(images, labels, names, class_field=class_field, background=background,
                           bands=bands)
        rng = np.random.default_rng(seed)
        block = 2 * chip_size
        split = [split_blocks(p, block, val_fraction, rng) for p in pairs]
        if not any(t or v for t, v in split):
            raise InputError("the labels cover none of the images' pixels", labels[0])
        chips = RasterChips(pairs, [t for t, _ in split], chip_size, jitter=jitter)
        val_blocks = [v for _, v in split]
        if not any(val_blocks):
            raise InputError(f"no block is left for validation: the images are too small for "
                             f"chips of {chip_size} px (each block is {block} px)")
        sample = [chips.chip(rng) for _ in range(STAT_CHIPS)]
        mean, std = band_statistics([x for x, _ in sample], [y for _, y in sample])
        first = pairs[0].image
        spec = ModelSpec(
            name=folder.name or "model", bands=_band_names(first), mean=tuple(mean), std=tuple(std),
            classes=tuple(ClassInfo(n, c) for n, c in zip(names, colors, strict=True)),
            encoder=encoder, encoder_depth=encoder_depth,
            decoder_channels=DECODER[-encoder_depth:], tile_size=max(chip_size, 512),
            resolution=first.grid.resolution_m(), description=(
                f"Trained by geoseg on {len(pairs)} image(s): "
                + ", ".join(Path(p.image.name).name for p in pairs)))
        options = FitOptions(epochs=epochs, steps_per_epoch=steps_per_epoch,
                             batch_size=batch_size, lr=lr, patience=patience, seed=seed,
                             device=device)

        def validate(model: Model) -> dict[str, object]:
            return validation_scores(model, pairs, val_blocks)

        model = fit(spec, chips, validate, options, folder / "checkpoint", resume=resume,
                    progress=progress)
        model.save(folder)
    return model


def label_classes(labels: Sequence[str | os.PathLike[str]], class_field: str | None,
                classes: Sequence[str] | None) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Class names and their colours. Names: ``classes``, else the first label raster's
    ``CLASS_NAMES``, else the polygons' class column, else class_0..class_N of the
    rasters' values. Colours: a label raster's colour table, by name, else a palette."""

    named: dict[str, tuple[int, int, int]] = {}
    stored: list[str] = []
    for path in labels:
        if is_vector(path):
            continue
        with open_source(path, allow_no_crs=True).open() as ds:  # one-line errors
            table = read_class_table(ds)
        named.update({n: table.colors[i] for i, n in enumerate(table.names)
                      if i in table.colors and n not in named})
        stored = stored or list(table.names)
    names = list(classes or stored)
    if not names:
        vectors = [p for p in labels if is_vector(p)]
        if vectors:
            names = _vector_class_names(vectors, class_field)
        else:
            top = max(max(int(_raster_max(p)), 1) for p in labels)
            names = [f"class_{i}" for i in range(top + 1)]
    colors = [named.get(n, styles.fallback_color(i)) for i, n in enumerate(names)]
    return names, colors


def _raster_max(path: str | os.PathLike[str]) -> int:
    import rasterio

    with rasterio.open(path) as ds:
        top = 0
        for _, window in ds.block_windows(1):
            data = ds.read(1, window=window, masked=True)
            if data.count():
                top = max(top, int(data.max()))
    if top >= NODATA:
        raise InputError(f"has class value {top}; labels hold 0..254", path)
    return top


def _vector_class_names(labels: Sequence[str | os.PathLike[str]], class_field: str | None
                        ) -> list[str]:
    """Names from the class column of polygon labels: its distinct text values in
    sorted order, or class_0..class_N for numbers; one foreground class without a column."""
    if class_field is None:
        return ["background", "foreground"]
    import pyogrio

    values: set[Any] = set()
    for path in labels:
        try:
            frame = pyogrio.read_dataframe(path, columns=[class_field], read_geometry=False)
        except Exception as exc:  # pyogrio raises several unrelated types here
            raise InputError(f"cannot read the field {class_field!r} ({exc})", path) from None
        values |= set(frame[class_field].dropna().tolist())
    if not values:
        raise InputError(f"the field {class_field!r} has no values", labels[0])
    if all(isinstance(v, (int, np.integer)) or (isinstance(v, float) and v.is_integer())
           for v in values):
        return [f"class_{i}" for i in range(int(max(values)) + 1)]
    return sorted(str(v) for v in values)


def _band_names(source: Source) -> tuple[str, ...]:
    with source.open() as ds:
        described = [ds.descriptions[b - 1] for b in source.bands]
    return tuple(d or f"band_{b}" for d, b in zip(described, source.bands, strict=True))


def validation_scores(model: Model, pairs: Sequence[Pair],
                      blocks: Sequence[Sequence[Window]]) -> dict[str, object]:
    """Scores of the network on the validation blocks (one forward pass per block)."""
    import torch

    spec = model.spec
    multiple = spec.size_multiple
    device = next(model.network.parameters()).device
    mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
    cm = np.zeros((len(spec.classes),) * 2, np.int64)
    for pair, windows in zip(pairs, blocks, strict=True):
        for row, col, h, w in windows:
            ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
            with pair.image.open() as ds:
                x, valid = read_window(ds, pair.image, row, col, ph, pw)
            reference = pair.labels.read(row, col, h, w)
            reference[~valid[:h, :w]] = NODATA
            normalized = (torch.from_numpy(x[None]).to(device) - mean) / std
            normalized[:, :, ~torch.from_numpy(valid)] = 0.0  # no data, as in prediction
            with torch.no_grad():
                logits = model.network(normalized)
            predicted = logits.argmax(1)[0, :h, :w].cpu().numpy()
            cm += confusion_matrix(predicted, reference, len(spec.classes))
    return scores(cm, spec.class_names)
