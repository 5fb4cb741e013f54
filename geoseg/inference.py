"""Run a model on batches of tiles: device choice, normalization, AMP, test-time augmentation.

Workers never receive a network through the task graph; they receive a small
:class:`ModelHandle` and load (once per process) the model it names.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, get_args

import numpy as np

from geoseg.errors import InputError, ModelError
from geoseg.model import (
    Model,
    ModelSpec,
    card_and_weights,
    fingerprint_of,
    load_model,
    model_from_state,
    read_spec,
    resolve_model_path,
)

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)


def select_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda:N`` is accepted."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r} (use auto, cpu or cuda)")
    return device


@dataclass(frozen=True)
class ModelHandle:
    """What a task needs to get the model: a card path, or the saved bytes of an in-memory model."""

    fingerprint: str
    path: str | None = field(default=None, compare=False)
    card: bytes | None = field(default=None, compare=False, repr=False)
    weights: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, model: Model) -> ModelHandle:
        """A handle that carries an in-memory model's bytes (it may differ from any file)."""
        card, weights = model.to_bytes()  # serialized once: shipped and hashed
        return cls(fingerprint=fingerprint_of(card, weights), card=card, weights=weights)

    @classmethod
    def of_path(cls, card: str | os.PathLike[str]) -> ModelHandle:
        """A handle on a saved model, by the absolute path of its card (workers may run
        elsewhere). Its fingerprint holds the card's content and the weights' size, time and
        inode, so a process never reuses a model whose files changed since it loaded it."""
        import hashlib

        card_path, weights = card_and_weights(os.path.abspath(card))
        try:
            digest = hashlib.sha256(card_path.read_bytes()).hexdigest()[:16]
            st = weights.stat()
        except OSError as exc:
            missing = card_path if exc.filename == str(card_path) else weights
            raise ModelError(f"cannot read the model ({exc.strerror})", missing) from None
        return cls(fingerprint=f"{card_path}@{digest}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}",
                   path=str(card_path))

    def load(self) -> Model:
        if self.path is not None:
            return load_model(self.path)
        import json

        from safetensors.torch import load

        spec = ModelSpec.from_dict(json.loads(self.card or b"{}"))
        return model_from_state(spec, load(self.weights or b""), "in-memory model")


class Predictor:
    """Normalizes tiles, runs the network on a device, returns class probabilities."""

    def __init__(self, model: Model, device: str = "auto", *, tta: bool = False) -> None:
        import torch

        self.spec = model.spec
        self.device = torch.device(select_device(device))
        self.tta = tta
        self.cuda = self.device.type == "cuda"
        network = model.network.to(self.device).eval()
        if self.cuda:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.mean = np.asarray(self.spec.mean, dtype=np.float32)[:, None, None]
        self.inv_std = (1.0 / np.asarray(self.spec.std, dtype=np.float32))[:, None, None]

    def normalize(self, tiles: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """``(B, bands, H, W)`` raw values → normalized float32; invalid pixels become 0 (the mean)."""
        x = (tiles.astype(np.float32, copy=False) - self.mean) * self.inv_std
        if valid is not None:
            x = np.where(valid[:, None], x, np.float32(0))
        return x

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Normalized ``(B, bands, H, W)`` float32 → softmax probabilities ``(B, classes, H, W)``."""
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(x))
            if self.cuda:
                t = t.pin_memory().to(self.device, non_blocking=True)
                t = t.contiguous(memory_format=torch.channels_last)
            flips = [(), (3,), (2,), (2, 3)] if self.tta else [()]
            total = None
            for dims in flips:
                inp = torch.flip(t, dims) if dims else t
                with torch.autocast(self.device.type, enabled=self.cuda):
                    logits = self.network(inp)
                probs = torch.softmax(logits.float(), dim=1)
                if dims:
                    probs = torch.flip(probs, dims)
                total = probs if total is None else total + probs
            assert total is not None
            if len(flips) > 1:
                total /= len(flips)
            return total.cpu().numpy()


def model_reference(model: str | os.PathLike[str] | Model) -> tuple[ModelSpec, ModelHandle]:
    """A model's card and the handle tasks load it by, without loading the weights here.

    A :class:`Model` object travels as it is in memory (it may differ from the file it
    came from); a name or path travels as that path.
    """
    if isinstance(model, Model):
        return model.spec, ModelHandle.of(model)
    card = resolve_model_path(model)
    return read_spec(card), ModelHandle.of_path(card)


def check_weights(handle: ModelHandle, device: str, tta: bool, *, in_process: bool) -> None:
    """Load a model's weights now, so that a bad file fails before any work. When this
    process runs the tasks (``in_process``) the load goes into the cache they use;
    otherwise it is a CPU load thrown away (each worker loads its own copy)."""
    if in_process:
        cached_predictor(handle, select_device(device), tta)
    else:
        handle.load()


@lru_cache(maxsize=4)
def cached_predictor(handle: ModelHandle, device: str, tta: bool) -> Predictor:
    """One predictor per (model, device, tta) per process: workers load the model once."""
    return Predictor(handle.load(), device, tta=tta)
