"""The core training loop: chips in, a trained :class:`~geoseg.model.Model` out.

The loss is cross-entropy or focal loss, optionally class-weighted, plus soft Dice by
default (:func:`loss_function`; unlabelled pixels, 255, are not trained on); the
optimiser AdamW with a one-cycle schedule. Chips come augmented (:mod:`geoseg.chips`),
read a batch or two ahead in a thread (:func:`prefetched`). Seeded: the same chips, seed
and thread count give the same weights. Each epoch's scores, per class, go to the
``geoseg.fitting`` logger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.atomic import atomic_path
from geoseg.devices import Device, select_device
from geoseg.errors import InputError, ModelError
from geoseg.maskfile import NODATA
from geoseg.model import Model, ModelSpec, build_network
from geoseg.scores import json_safe

log = logging.getLogger(__name__)


def dice_loss(logits, target, n_classes: int):  # type: ignore[no-untyped-def]
    """Soft multi-class Dice loss over labelled pixels."""
    import torch

    valid = (target != NODATA).unsqueeze(1)
    probs = torch.softmax(logits, dim=1) * valid
    onehot = torch.nn.functional.one_hot(target.clamp(max=n_classes - 1), n_classes)
    onehot = onehot.permute(0, 3, 1, 2).float() * valid
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    dice = (2 * inter + 1) / (denom + 1)
    return 1 - dice[present].mean()


LOSSES = ("ce+dice", "ce", "focal", "focal+dice", "dice")


def loss_function(kind: str, n_classes: int, weights: tuple[float, ...], device):  # type: ignore[no-untyped-def]
    """The training loss ``kind`` (:data:`LOSSES`): cross-entropy or focal loss (γ = 2),
    each weighted per class by ``weights`` when given, plus soft Dice where asked.
    Unlabelled pixels (255) are not trained on."""
    import torch

    if kind not in LOSSES:
        raise InputError(f"loss {kind!r} is not one of {', '.join(LOSSES)}")
    w = torch.tensor(weights, dtype=torch.float32, device=device) if weights else None
    ce = torch.nn.CrossEntropyLoss(weight=w, ignore_index=NODATA)

    def focal(logits, target):  # type: ignore[no-untyped-def]
        valid = target != NODATA
        t = target.clamp(max=n_classes - 1)
        log_p = torch.log_softmax(logits, dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
        per_pixel = -((1 - log_p.exp()) ** 2) * log_p
        scale = w[t] if w is not None else torch.ones_like(log_p)
        return (per_pixel * scale)[valid].sum() / scale[valid].sum().clamp(min=1e-6)

    first = kind.split("+")[0]

    def loss(logits, target):  # type: ignore[no-untyped-def]
        total = (ce(logits, target) if first == "ce" else focal(logits, target)
                 if first == "focal" else 0.0)
        if "dice" in kind:
            total = total + dice_loss(logits, target, n_classes)
        return total

    return loss


def class_weights(frequencies: np.ndarray) -> tuple[float, ...]:
    """Per-class loss weights from the classes' pixel shares in what training draws:
    1 / √share, scaled so that the mean weight of a drawn pixel is 1 (a class never drawn
    gets the largest weight)."""
    f = np.asarray(frequencies, np.float64)
    w = np.zeros_like(f)
    w[f > 0] = 1 / np.sqrt(f[f > 0])
    w[f <= 0] = w.max() if (f > 0).any() else 1.0
    return tuple(float(v) for v in np.round(w / max(float((w * f).sum()), 1e-12), 4))


def one_cycle(optimiser, lr: float, total: int):  # type: ignore[no-untyped-def]
    """One-cycle learning rate over ``total`` steps, warming up over 10 % of them (at least
    two steps); runs too short for a cycle keep ``lr`` constant."""
    import torch

    if total < 7:
        return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=total,
                                               pct_start=max(0.1, 2 / total))


# ---- epochs, validation, checkpoints ---------------------------------------------------

@dataclass(frozen=True)
class FitOptions:
    """How long and how to train (see ``geoseg train --help``)."""

    epochs: int = 20
    steps_per_epoch: int = 100
    batch_size: int = 8
    lr: float = 3e-3
    patience: int = 5
    seed: int = 0
    device: Device = "auto"
    loss: str = "ce+dice"
    class_weights: tuple[float, ...] = ()


def fit(spec: ModelSpec, sampler: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]],
        validate: Callable[[Model], dict[str, object]], options: FitOptions,
        checkpoint: Path, *, resume: bool = False, progress: bool = False,
        init: Callable[[Any], object] | None = None) -> Model:
    """Train for up to ``options.epochs`` epochs, validating after each; keep the best.
    The ``sampler``'s chips are in the model's units (normalized here by ``spec.mean`` and
    ``spec.std``).

    Stops early when validation mIoU has not improved for ``patience`` epochs. After each
    epoch the state (weights, optimiser, schedule, random generators, history) goes to
    ``checkpoint`` (a folder), so ``resume`` continues exactly where an interrupted run
    stopped (with the same options: the learning-rate schedule spans all epochs). Returns
    the best model, with its validation scores and the history in ``spec.metrics``.
    ``init`` is called on the new network before a fresh run (not a resumed one).
    """
    import dataclasses
    import json

    import torch
    from safetensors.torch import load_file, save_file

    dev = torch.device(select_device(options.device))
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    network = build_network(spec)
    if init is not None and not resume:  # e.g. pretrained encoder weights
        init(network)
    # Channels-last where it pays: on CUDA with bfloat16 (tensor cores); on 2 CPU cores
    # it measured the same as contiguous within noise (benchmarks/train.py).
    layout = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    network = network.to(dev).to(memory_format=layout)
    mean = torch.tensor(spec.mean, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=dev).view(1, -1, 1, 1)
    optimiser = torch.optim.AdamW(network.parameters(), lr=options.lr, weight_decay=1e-4)
    total = options.epochs * options.steps_per_epoch
    schedule = one_cycle(optimiser, options.lr, total)
    criterion = loss_function(options.loss, len(spec.classes), options.class_weights, dev)
    state: dict[str, Any] = {"epoch": 0, "best_miou": -1.0, "best_epoch": 0, "history": []}
    best_path = checkpoint / "best.safetensors"  # the folder is made at the first save
    run = {"options": dataclasses.asdict(options),
           "spec": {k: v for k, v in spec.to_dict().items() if k != "metrics"}}
    if resume:
        if not (checkpoint / "state.json").exists():
            raise InputError("has no checkpoint to resume from", checkpoint)
        saved = json.loads((checkpoint / "state.json").read_text())
        differ = [k for k in run["options"] if saved.get("options", {}).get(k)
                  != json.loads(json.dumps(run["options"][k]))]
        # A card field newer than the checkpoint is not compared (it did not exist then).
        before = {**run["spec"], **saved["spec"]} if saved.get("spec") else {}
        differ += [f"model {k}" for k in run["spec"] if before.get(k)
                   != json.loads(json.dumps(run["spec"][k]))]
        if differ:
            raise InputError(f"holds a run with other settings ({', '.join(differ)}); "
                             f"resume it with the same images, labels and options",
                             checkpoint)
        state = _load_checkpoint(checkpoint, network, optimiser, schedule, rng, dev)
    else:
        (checkpoint / "best.safetensors").unlink(missing_ok=True)  # not from an old run
    state.update(run)
    estimated = False
    for epoch in range(state["epoch"] + 1, options.epochs + 1):
        network.train()
        losses: list[float] = []
        bar = None
        if progress:
            from geoseg.progress import bar as progress_bar

            bar = progress_bar(options.steps_per_epoch, f"epoch {epoch}/{options.epochs}",
                               unit="step", start=(epoch - 1) / options.epochs,
                               span=1 / options.epochs)
        started = time.perf_counter()
        for step, (x, y) in enumerate(prefetched(sampler, rng, options.steps_per_epoch,
                                                 options.batch_size), 1):
            # Pixels without data (NaN) become 0 once normalized, as in prediction.
            xt = torch.nan_to_num((torch.from_numpy(x).to(dev) - mean) / std, nan=0.0)
            xt = xt.contiguous(memory_format=layout)
            yt = torch.from_numpy(y).to(dev)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                logits = network(xt)
            logits = logits.float()
            loss = criterion(logits, yt)
            if not torch.isfinite(loss):
                raise ModelError(f"training diverged at epoch {epoch} (the loss is not "
                                 f"finite); try a lower ${{lr}}")
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            if step == min(5, options.steps_per_epoch) and not estimated:
                estimated = True
                per_epoch = (time.perf_counter() - started) / step * options.steps_per_epoch
                log.info("about %s an epoch (%d steps of %d chips); %s for the %d epochs left",
                         _duration(per_epoch), options.steps_per_epoch, options.batch_size,
                         _duration(per_epoch * (options.epochs - epoch + 1)),
                         options.epochs - epoch + 1)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - started  # the steps alone, chips read ahead included
        network.eval()
        scores = validate(Model(network=network, spec=spec))
        miou = float(scores["miou"])  # type: ignore[arg-type]
        if miou != miou:
            raise InputError("the validation areas hold no labelled pixel", checkpoint)
        improved = miou > state["best_miou"]
        state["history"].append({"epoch": epoch, "loss": round(float(np.mean(losses)), 5),
                                 "val_miou": round(miou, 5), "train_seconds": round(seconds, 2),
                                 "samples_per_s": round(options.steps_per_epoch
                                                        * options.batch_size / seconds, 2)})
        if improved:
            state.update(best_miou=miou, best_epoch=epoch, best_scores=scores)
            with atomic_path(best_path, overwrite=True) as tmp:  # makes the folder, too
                save_file({k: v.detach().cpu().contiguous()
                           for k, v in network.state_dict().items()}, str(tmp))
        state["epoch"] = epoch
        _save_checkpoint(checkpoint, state, network, optimiser, schedule, rng)
        log.info("epoch %d/%d  loss %.4f  val mIoU %.4f%s  IoU: %s", epoch, options.epochs,
                 np.mean(losses), miou, "  (best)" if improved else "", _per_class(scores))
        if epoch - state["best_epoch"] >= options.patience:
            log.info("no better for %d epochs: stopping", options.patience)
            break
    best = build_network(spec)
    best.load_state_dict(load_file(str(best_path)))
    best.eval()
    metrics = {"val_miou": state["best_miou"], "best_epoch": state["best_epoch"],
               "validation": state.get("best_scores", {}), "history": state["history"]}
    return Model(network=best, spec=_with_metrics(spec, metrics))


def prefetched(sampler: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]],
               rng: np.random.Generator, steps: int, batch_size: int
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``steps`` batches of ``sampler``, read two ahead in a thread of their own, so that
    reading chips (GDAL, numpy: the GIL is let go) overlaps the training step. The thread
    alone draws from ``rng``, in order: the same seed gives the same batches."""
    import queue
    import threading

    ready: queue.Queue[tuple[np.ndarray, np.ndarray] | BaseException] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def offer(item: tuple[np.ndarray, np.ndarray] | BaseException) -> bool:
        while not stop.is_set():  # the loop may have stopped taking: then give up
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for _ in range(steps):
                if not offer(sampler(rng, batch_size)):
                    return
        except BaseException as exc:  # handed to the training loop, which raises it
            offer(exc)

    thread = threading.Thread(target=produce, name="geoseg-chips", daemon=True)
    thread.start()
    try:
        for _ in range(steps):
            item = ready.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def _per_class(scores: dict[str, object]) -> str:
    """``water 0.91, field 0.00, road -`` (no IoU: the class is in neither)."""
    per_class = scores.get("per_class", {})
    assert isinstance(per_class, dict)
    parts = []
    for name, values in per_class.items():
        iou = values["iou"]
        parts.append(f"{name} " + ("-" if iou != iou else f"{iou:.2f}"))
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _with_metrics(spec: ModelSpec, metrics: dict[str, object]) -> ModelSpec:
    import dataclasses

    return dataclasses.replace(spec, metrics=json_safe({**spec.metrics, **metrics}))


def _save_checkpoint(folder: Path, state: dict, network, optimiser, schedule,  # type: ignore[no-untyped-def]
                     rng: np.random.Generator) -> None:
    import json

    import torch


    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / "state.pt", overwrite=True) as tmp:
        torch.save({"network": network.state_dict(), "optimiser": optimiser.state_dict(),
                    "schedule": schedule.state_dict(), "torch_rng": torch.get_rng_state()},
                   tmp)
    with atomic_path(folder / "state.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps({**state, "numpy_rng": rng.bit_generator.state},
                                  default=float, indent=1))


def _load_checkpoint(folder: Path, network, optimiser, schedule,  # type: ignore[no-untyped-def]
                     rng: np.random.Generator, dev) -> dict:
    import json

    import torch

    if not (folder / "state.json").exists() or not (folder / "state.pt").exists():
        raise InputError("has no checkpoint to resume from", folder)
    state = json.loads((folder / "state.json").read_text())
    saved = torch.load(folder / "state.pt", map_location=dev, weights_only=True)
    network.load_state_dict(saved["network"])
    optimiser.load_state_dict(saved["optimiser"])
    schedule.load_state_dict(saved["schedule"])
    torch.set_rng_state(saved["torch_rng"].cpu())
    rng.bit_generator.state = state.pop("numpy_rng")
    return state
