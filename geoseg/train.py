"""The core training loop: chips in, a trained :class:`~geoseg.model.Model` out.

Loss is cross-entropy + soft Dice (pixels labelled 255 are ignored), optimiser AdamW with a
one-cycle schedule; chips are augmented with flips, 90° rotations and per-band
brightness/contrast jitter. Seeded: the same chips, seed and thread count give the same
weights.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from geoseg.evaluate import confusion_matrix, scores
from geoseg.model import Model, ModelSpec, build_network

IGNORE = 255


@dataclass(frozen=True)
class ChipSampler:
    """Random ``size × size`` chips from in-memory (image, labels) pairs, with augmentation.

    Images are ``(bands, H, W)`` in raw units, labels ``(H, W)`` uint8 (255 = ignore).
    """

    images: Sequence[np.ndarray]
    labels: Sequence[np.ndarray]
    size: int
    jitter: float = 0.1

    def __call__(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for _ in range(n):
            k = int(rng.integers(len(self.images)))
            img, lab = self.images[k], self.labels[k]
            r = int(rng.integers(0, lab.shape[0] - self.size + 1))
            c = int(rng.integers(0, lab.shape[1] - self.size + 1))
            x = img[:, r:r + self.size, c:c + self.size].astype(np.float32)
            y = lab[r:r + self.size, c:c + self.size]
            turns = int(rng.integers(4))
            x, y = np.rot90(x, turns, axes=(1, 2)), np.rot90(y, turns)
            if rng.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
            gain = 1 + rng.uniform(-self.jitter, self.jitter, size=(x.shape[0], 1, 1))
            mean = x.mean(axis=(1, 2), keepdims=True)
            contrast = 1 + rng.uniform(-self.jitter, self.jitter, size=(x.shape[0], 1, 1))
            x = ((x - mean) * contrast + mean) * gain
            xs.append(x)
            ys.append(y)
        return np.stack(xs).astype(np.float32), np.stack(ys).astype(np.int64)


def band_statistics(images: Sequence[np.ndarray],
                    labels: Sequence[np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-band mean and standard deviation over labelled (non-ignored) pixels."""
    values = [img[:, lab != IGNORE].astype(np.float64) for img, lab in zip(images, labels, strict=True)]
    stacked = np.concatenate(values, axis=1)
    return stacked.mean(axis=1).tolist(), np.maximum(stacked.std(axis=1), 1e-6).tolist()


def dice_loss(logits, target, n_classes: int):  # type: ignore[no-untyped-def]
    """Soft multi-class Dice loss over labelled pixels."""
    import torch

    valid = (target != IGNORE).unsqueeze(1)
    probs = torch.softmax(logits, dim=1) * valid
    onehot = torch.nn.functional.one_hot(target.clamp(max=n_classes - 1), n_classes)
    onehot = onehot.permute(0, 3, 1, 2).float() * valid
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    denom = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    present = onehot.sum(dim=(0, 2, 3)) > 0
    dice = (2 * inter + 1) / (denom + 1)
    return 1 - dice[present].mean()


def train(
    spec: ModelSpec,
    sampler: Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]],
    *,
    steps: int = 1000,
    batch_size: int = 8,
    lr: float = 3e-3,
    seed: int = 0,
    device: str = "auto",
    validation: Callable[[Model], float] | None = None,
    log_every: int = 50,
) -> Model:
    """Train a fresh network for ``spec`` on chips from ``sampler``; returns the model (eval mode)."""
    import torch

    from geoseg.inference import select_device

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dev = torch.device(select_device(device))
    network = build_network(spec).to(dev)
    mean = torch.tensor(spec.mean, device=dev).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=dev).view(1, -1, 1, 1)
    optimiser = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps,
                                                   pct_start=0.1)
    ce = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    n_classes = len(spec.classes)
    network.train()
    running = 0.0
    for step in range(1, steps + 1):
        x, y = sampler(rng, batch_size)
        xt = (torch.from_numpy(x).to(dev) - mean) / std
        yt = torch.from_numpy(y).to(dev)
        # bfloat16 autocast on GPUs: float16 would need a GradScaler against underflow.
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            logits = network(xt)
        logits = logits.float()
        loss = ce(logits, yt) + dice_loss(logits, yt, n_classes)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        running += loss.item()
        if step % log_every == 0 or step == steps:
            print(f"step {step}/{steps}  loss {running / log_every:.4f}", file=sys.stderr,
                  flush=True)
            running = 0.0
    network.eval()
    model = Model(network=network.cpu(), spec=spec)
    if validation is not None:
        print(f"validation mIoU {validation(model):.4f}", file=sys.stderr)
    return model


def evaluate_arrays(predicted: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                    class_names: Sequence[str]) -> dict[str, object]:
    """Scores of predicted vs reference label arrays (255 in either is ignored)."""
    n = len(class_names)
    cm = sum(confusion_matrix(p, r, n) for p, r in zip(predicted, reference, strict=True))
    return scores(np.asarray(cm), class_names)
