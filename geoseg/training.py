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

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg import atomic, encoders
from geoseg.chips import (
    LabelChips,
    Pair,
    Window,
    band_statistics,
    census,
    open_pairs,
    read_chip,
    split_blocks,
)
from geoseg.devices import Device
from geoseg.errors import InputError, warn
from geoseg.fitting import FitOptions, fit
from geoseg.fitting import class_weights as weights_of_shares
from geoseg.labels import LabelMap, label_classes
from geoseg.maskfile import NODATA
from geoseg.model import ClassInfo, Model, ModelSpec
from geoseg.model_export import with_onnx
from geoseg.progress import within
from geoseg.scores import confusion_matrix, scores
from geoseg.sources import Source
from geoseg.teacher import MIN_CONFIDENCE, teach, working_name

log = logging.getLogger(__name__)

DECODER = (256, 128, 64, 32, 16)
TEACHING = 0.1  # the share of a taught run's progress that the teacher's maps take
STAT_CHIPS = 32  # chips sampled for the normalization statistics


def train(
    images: Sequence[str | os.PathLike[str]],
    labels: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    labels_from: str | os.PathLike[str] | None = None,
    teacher_images: Sequence[str | os.PathLike[str]] | None = None,
    min_confidence: float = MIN_CONFIDENCE,
    mask_with: Sequence[str] = (),
    label_map: LabelMap | None = None,
    classes: Sequence[str] | None = None,
    class_field: str | None = None,
    background: int | str | None = None,
    bands: Sequence[int] | None = None,
    assets: Sequence[str] | None = None,
    resolution: float | None = None,
    resampling: str = "bilinear",
    labelled_area: str | os.PathLike[str] | None = None,
    background_ratio: float = 0.25,
    loss: str = "ce+dice",
    class_weights: str | Sequence[float] | None = "auto",
    chip_size: int = 256,
    encoder: str = "tu-mobilenetv3_small_100",
    encoder_depth: int = 3,
    encoder_weights: str | os.PathLike[str] | None = None,
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
    (``model.json``, ``model.safetensors`` and the same network as ``model.onnx``, which
    runs it on a CPU; loadable by ``predict --model OUT``); the
    checkpoint of every epoch goes to ``out/checkpoint``. Returns the best model.

    ``encoder_weights`` starts the encoder from pretrained weights: ``"imagenet"`` (the
    encoder's own, from the model hub), a weights file, or a URL/``hf://`` reference,
    downloaded once into the cache (:mod:`geoseg.encoders`); a 3-band first layer is
    adapted to the images' bands. Without it the weights start random and nothing is
    downloaded.

    ``labels_from`` trains without labels (weak supervision): this model (a bundled name
    or a saved model) maps each image, or the scene of ``teacher_images`` in its place (the
    same place and time, read whole where the student reads some bands), and its pixels of
    a top probability ≥ ``min_confidence`` become the labels, the rest unlabelled; clouds
    and such are left out by ``mask_with`` (see :mod:`geoseg.teacher`). Its maps stay in
    ``out/teacher``. ``label_map`` reads the labels' values as codes of another product's
    classes (:func:`geoseg.labels.parse_label_map`), a teacher's class ids too.

    ``labelled_area`` (polygons) is where the labels are complete (see
    :func:`geoseg.labels.open_labels`). Chips are drawn around the labels: around a class
    chosen uniformly among the labelled ones, or for ``background_ratio`` of them around
    any labelled pixel. ``loss`` is one of :data:`geoseg.fitting.LOSSES`;
    ``class_weights`` ``"auto"`` (from the drawn pixels' class shares), ``"none"`` or one
    number per class.

    ``jitter`` is the per-band brightness and contrast augmentation (±10 % by default);
    lower it when the classes hinge on band ratios (labels from spectral indices).

    Images are scenes in any form :func:`geoseg.sources.open_source` takes (``bands``,
    ``assets``, ``resolution``, ``resampling`` as there). Where they declare a scale and
    offset (STAC ``raster:bands``, a GeoTIFF's own) the model learns physical values: its
    card keeps the first image's scale and offset and the units ``"physical"``, so later
    scenes are converted by their own declared scale and offset.
    """
    folder = Path(out)
    targets = [] if resume else [folder / "model.json", folder / "model.safetensors",
                                 folder / "model.onnx"]
    # A run that fails before its first checkpoint leaves no new folder behind.
    with atomic.outputs(targets, overwrite=overwrite):
        if not 0 <= val_fraction < 1:
            raise InputError(f"the validation fraction must be in [0, 1), not {val_fraction}")
        taught = []
        if labels_from is not None:
            if labels:
                raise InputError("give labels (${labels}) or a teacher (${labels_from}), "
                                 "not both")
            scenes = list(teacher_images or images)
            if len(scenes) != len(images):
                raise InputError(f"give one teacher image per image ({len(images)} images, "
                                 f"{len(scenes)} teacher images)")
            for i, scene in enumerate(scenes):
                # The teacher's maps: the first tenth of the command's progress.
                with within(TEACHING * i / len(scenes), TEACHING * (i + 1) / len(scenes)):
                    taught.append(teach(scene, labels_from, folder / "teacher",
                                        working_name(i, scene), min_confidence=min_confidence,
                                        mask_with=mask_with, device=device, reuse=resume,
                                        progress=progress))
                log.info("teacher: %s labelled %.1f %% of %s (probability ≥ %g)",
                         labels_from, 100 * taught[-1].share, taught[-1].scene,
                         min_confidence)
            labels = [t.labels for t in taught]
        elif mask_with or teacher_images:
            raise InputError("mask models and teacher images serve a teacher "
                             "(${labels_from})")
        if not labels:
            raise InputError("give labels (${labels}) or a teacher model (${labels_from})")
        names, colors = label_classes(labels, class_field, classes, label_map)
        if not 0 <= background_ratio <= 1:
            raise InputError(f"the background ratio must be in [0, 1], not {background_ratio}")
        _class_weights(class_weights, [], names)  # bad weights: an error before any work
        weights_path, ref = (encoders.fetch(encoder, os.fspath(encoder_weights))
                             if encoder_weights is not None else (None, ""))
        pairs = open_pairs(images, labels, names, class_field=class_field, background=background,
                           bands=bands, assets=assets, resolution=resolution,
                           resampling=resampling, labelled_area=labelled_area,
                           label_map=label_map)
        if all(min(p.image.grid.shape) < chip_size for p in pairs):
            h, w = pairs[0].image.grid.shape
            raise InputError(f"no block is left for validation: the images ({w} × {h} px) "
                             f"are smaller than a chip of {chip_size} px (${{chip_size}})")
        rng = np.random.default_rng(seed)
        censuses = [census(p, max(4, chip_size // 4), len(names)) for p in pairs]
        if not any(c.counts.any() for c in censuses):
            raise InputError("the labels cover none of the images' pixels", labels[0])
        split = split_blocks(pairs, censuses, chip_size, val_fraction, rng, names)
        for note in split.notes:
            warn(note)
        if not any(split.val):
            raise InputError(f"no block is left for validation: the labels lie in one block of "
                             f"{split.block} px (label more places, or use smaller chips)")
        chips = LabelChips(pairs, censuses, split, chip_size, jitter=jitter,
                           background_ratio=background_ratio,
                           background=pairs[0].labels.background)
        sample = [chips.chip(rng) for _ in range(STAT_CHIPS)]
        mean, std = band_statistics([x for x, _ in sample], [y for _, y in sample])
        weights = _class_weights(class_weights, [y for _, y in sample], names)
        first = pairs[0].image
        training = {"sampling": "around labels", "background_ratio": background_ratio,
                    "loss": loss, "class_weights": list(weights), "chip_size": chip_size,
                    "validation_block": split.block,
                    "labelled_pixels": {"training": dict(zip(names, split.train_pixels.tolist(),
                                                             strict=True)),
                                        "validation": dict(zip(names, split.val_pixels.tolist(),
                                                               strict=True))}}
        if weights_path is not None:
            training.update(encoders.describe(weights_path, ref))
        if taught:
            training["teacher"] = {"model": os.fspath(labels_from or ""),
                                   "min_confidence": min_confidence,
                                   "mask_with": list(mask_with),
                                   "scenes": [t.to_dict() for t in taught]}
        trained_on = ", ".join(Path(p.image.name).name for p in pairs)
        spec = ModelSpec(
            name=folder.name or "model", bands=_band_names(first), mean=tuple(mean), std=tuple(std),
            classes=tuple(ClassInfo(n, c) for n, c in zip(names, colors, strict=True)),
            encoder=encoder, encoder_depth=encoder_depth,
            decoder_channels=DECODER[-encoder_depth:], tile_size=max(chip_size, 512),
            resolution=first.grid.resolution_m(), scale=first.scale, offset=first.offset,
            units="physical" if first.scale else "", metrics={"training": training},
            description=(f"Taught by {os.fspath(labels_from or '')} (its pixels of "
                         f"probability ≥ {min_confidence:g}) on {len(pairs)} image(s): "
                         f"{trained_on}" if taught else
                         f"Trained by geoseg on {len(pairs)} image(s): {trained_on}"))
        options = FitOptions(epochs=epochs, steps_per_epoch=steps_per_epoch,
                             batch_size=batch_size, lr=lr, patience=patience, seed=seed,
                             device=device, loss=loss, class_weights=weights)
        val_blocks = split.val
        init = None
        if weights_path is not None:

            def init(network: Any) -> None:
                loaded = encoders.load_encoder(network, weights_path, ref)
                log.info("encoder weights %s: %d of %d tensors loaded (%d adapted to %d "
                         "bands)", ref, loaded["matched"], loaded["of"], loaded["adapted"],
                         len(spec.bands))

        def validate(model: Model) -> dict[str, object]:
            return validation_scores(model, pairs, val_blocks)

        with within(TEACHING if taught else 0.0, 1.0):
            model = fit(spec, chips, validate, options, folder / "checkpoint", resume=resume,
                        progress=progress, init=init)
        _verdict(model.spec)
        model = with_onnx(model)  # runs on ONNX Runtime on a CPU: faster at the same masks
        model.save(folder)
    return model


def _class_weights(given: str | Sequence[float] | None, drawn: Sequence[np.ndarray],
                   names: Sequence[str]) -> tuple[float, ...]:
    """``"auto"``: from the classes' shares of the labelled pixels training draws
    (:func:`geoseg.fitting.class_weights`); ``"none"``/None: none; else one per class."""
    if given is None or given == "none":
        return ()
    if given == "auto":
        if not drawn:
            return ()
        labelled = np.concatenate([y[y != NODATA].ravel() for y in drawn])
        shares = np.bincount(labelled, minlength=len(names))[:len(names)] / max(len(labelled), 1)
        return weights_of_shares(shares)
    if isinstance(given, str):
        raise InputError(f"class weights are auto, none or one number per class, not {given!r}")
    weights = tuple(float(w) for w in given)
    if len(weights) != len(names) or not all(w >= 0 and np.isfinite(w) for w in weights):
        raise InputError(f"give {len(names)} class weights, one per class "
                         f"({', '.join(names)}), each ≥ 0; not {list(given)}")
    return weights


def _verdict(spec: ModelSpec) -> None:
    """One line when validation has labels of a class the model never predicts there."""
    validation = spec.metrics.get("validation", {})
    per_class = validation.get("per_class", {}) if isinstance(validation, dict) else {}
    never = [(n, v["pixels"]) for n, v in per_class.items()
             if v.get("pixels") and v.get("precision") is None]
    if never:
        said = ", ".join(f"{n!r} ({k} labelled pixels)" for n, k in never)
        warn(f"the model never predicts {said} on the validation blocks: it has not learnt "
             f"{'it' if len(never) == 1 else 'them'} (label more of "
             f"{'it' if len(never) == 1 else 'them'}, train longer, or weight the loss: "
             f"${{class_weights}}=auto)")


def _band_names(source: Source) -> tuple[str, ...]:
    """Common names where the scene gives them, else its band descriptions or ``band_N``."""
    with source.open() as ds:
        described = [ds.descriptions[b - 1] for b in source.bands]
    known = source.band_names or ("",) * len(source.bands)
    return tuple(k or d or f"band_{b}"
                 for k, d, b in zip(known, described, source.bands, strict=True))


def validation_scores(model: Model, pairs: Sequence[Pair],
                      blocks: Sequence[Sequence[Window]]) -> dict[str, object]:
    """Scores of the network on the validation blocks (one forward pass per block)."""
    import torch

    spec = model.spec
    multiple = spec.size_multiple
    network = model.network
    assert network is not None  # training makes torch networks
    device = next(network.parameters()).device
    mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)
    cm = np.zeros((len(spec.classes),) * 2, np.int64)
    for pair, windows in zip(pairs, blocks, strict=True):
        for row, col, h, w in windows:  # read to whole strides of the network
            shape = (-(-h // multiple) * multiple, -(-w // multiple) * multiple)
            x, reference = read_chip(pair, row, col, shape, labelled=(h, w))
            # No data (NaN) becomes 0 once normalized, as in prediction.
            normalized = torch.nan_to_num((torch.from_numpy(x[None]).to(device) - mean) / std,
                                          nan=0.0)
            with torch.no_grad():
                logits = network(normalized)
            predicted = logits.argmax(1)[0].cpu().numpy()
            cm += confusion_matrix(predicted, reference, len(spec.classes))
    return scores(cm, spec.class_names)
