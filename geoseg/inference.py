"""Run a model on batches of tiles: normalization, the runtime, test-time augmentation, threads.

Workers never receive a network through the task graph; they receive a small
:class:`ModelHandle` and load (once per process) the model it names.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.devices import select_device
from geoseg.errors import ModelError, warn
from geoseg.model import (
    Model,
    ModelSpec,
    fingerprint_of,
    load_model,
    model_files,
    model_from_state,
    onnx_path,
    read_spec,
    resolve_model_path,
)

if TYPE_CHECKING:
    import torch

    from geoseg.runtimes import OnnxRuntime, TorchRuntime


@dataclass(frozen=True)
class ModelHandle:
    """What a task needs to get the model: a card path, or the saved bytes of an in-memory model."""

    fingerprint: str
    path: str | None = field(default=None, compare=False)
    card: bytes | None = field(default=None, compare=False, repr=False)
    weights: bytes | None = field(default=None, compare=False, repr=False)
    onnx: bytes | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, model: Model) -> ModelHandle:
        """A handle that carries an in-memory model's bytes (it may differ from any file)."""
        card, weights, onnx = model.to_bytes()  # serialized once: shipped and hashed
        return cls(fingerprint=fingerprint_of(card, weights, onnx), card=card,
                   weights=weights or None, onnx=onnx or None)

    @classmethod
    def of_path(cls, card: str | os.PathLike[str]) -> ModelHandle:
        """A handle on a saved model, by the absolute path of its card (workers may run
        elsewhere). Its fingerprint holds the card's content and the size, time and inode
        of the network's files, so a process never reuses a model whose files changed
        since it loaded it."""
        import hashlib

        card_path = Path(os.path.abspath(card))
        try:
            digest = hashlib.sha256(card_path.read_bytes()).hexdigest()[:16]
        except OSError as exc:
            raise ModelError(f"cannot read the model ({exc.strerror})", card_path) from None
        stats = []
        for p in model_files(card_path):
            try:
                st = p.stat()
            except OSError as exc:
                raise ModelError(f"cannot read the model ({exc.strerror})", p) from None
            stats.append(f"{p.suffix}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")
        return cls(fingerprint=f"{card_path}@{digest}:{','.join(stats)}", path=str(card_path))

    def load(self, runtime: str | None = None) -> Model:
        """The model (with ``runtime`` ``"onnxruntime"``, without its torch network when it
        has an ONNX graph)."""
        if self.path is not None:
            return load_model(self.path, runtime=runtime)
        import json

        from safetensors.torch import load

        spec = ModelSpec.from_dict(json.loads(self.card or b"{}"))
        if self.weights is None or (runtime == spec.runtime == "onnxruntime"
                                    and self.onnx is not None):
            return Model(None, spec, onnx=self.onnx)
        model = model_from_state(spec, load(self.weights), "in-memory model")
        return Model(model.network, spec, onnx=self.onnx)


def runtime_for(model: Model, device: torch.device) -> TorchRuntime | OnnxRuntime:
    """The runtime for ``model`` on ``device``: its card's CPU runtime on a CPU; on a GPU
    torch when there is a torch network (autocast, cuDNN), else ONNX Runtime's CUDA
    provider (or its CPU provider, with a warning, when this onnxruntime has none). An
    ONNX graph is checked against the card."""
    from geoseg.runtimes import OnnxRuntime, TorchRuntime, check_signature, cuda_provider

    spec = model.spec
    graph = model.graph
    if model.network is not None and (device.type == "cuda" or spec.runtime == "torch"
                                      or graph is None):
        return TorchRuntime(model.network, device)
    assert graph is not None
    name = str(onnx_path(model.path)) if model.path else spec.name
    where = "cpu"
    if device.type == "cuda":
        if cuda_provider():
            where = str(device)
        else:
            warn("this onnxruntime has no CUDA provider: the ONNX model runs on the CPU "
                 "(pip install onnxruntime-gpu)", name)
    runtime = OnnxRuntime(graph, where)
    check_signature(runtime.signature, len(spec.bands), len(spec.classes), spec.input_size, name)
    return runtime


class Predictor:
    """Normalizes raw tiles and runs the network on a device; returns class probabilities.

    Everything per pixel after reading happens on the device: tiles travel in their own
    dtype (uint16 is half the bytes of float32), are normalized there, and come back as
    probabilities already multiplied by their blend weights. The network runs in the
    runtime :func:`runtime_for` picks (a torch network is taken over: it moves to the
    device).
    """

    def __init__(self, model: Model, device: str = "auto", *, tta: bool = False) -> None:
        import torch

        self.spec = model.spec
        self.device = torch.device(select_device(device))
        self.tta = tta
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            torch.backends.cudnn.benchmark = True  # tiles have one shape: pick the fastest kernels
        self.runtime = runtime_for(model, self.device)
        # Mean and 1/std in a scene's stored units, per declared (scale, offset), so that
        # scale and offset cost nothing per pixel.
        self._normalizations: dict[tuple[tuple[float, ...], tuple[float, ...]],
                                   tuple[torch.Tensor, torch.Tensor]] = {}
        self._local = threading.local()  # a CUDA stream per calling thread

    def normalization(self, scale: tuple[float, ...] = (), offset: tuple[float, ...] = ()
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, 1 / std)`` on the device for a scene that declares ``scale`` and
        ``offset`` (:meth:`geoseg.model.ModelSpec.normalization`)."""
        import torch

        key = (tuple(scale), tuple(offset))
        if key not in self._normalizations:
            mean, std = self.spec.normalization(scale, offset)
            shape = (1, len(self.spec.bands), 1, 1)
            self._normalizations[key] = (
                torch.tensor(mean, dtype=torch.float32, device=self.device).view(shape),
                1.0 / torch.tensor(std, dtype=torch.float32, device=self.device).view(shape))
        return self._normalizations[key]

    def to_device(self, a: np.ndarray) -> torch.Tensor:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(a))
        if self.cuda:
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t

    def normalize(self, tiles: np.ndarray, valid: np.ndarray | None = None,
                  scale: tuple[float, ...] = (), offset: tuple[float, ...] = ()) -> torch.Tensor:
        """``(B, bands, H, W)`` stored values (of a scene that declares ``scale`` and
        ``offset``) → normalized float32 on the device (channels-last for a torch
        network); invalid pixels become 0 (the band mean)."""
        import torch

        mean, inv_std = self.normalization(scale, offset)
        # The fastest order on CPU (~4x the naive one): convert, scale, fill only when some
        # pixel is invalid (most tiles have none), and change layout last.
        x = (self.to_device(tiles).to(torch.float32) - mean) * inv_std
        if valid is not None and not valid.all():
            x.masked_fill_(~self.to_device(valid)[:, None], 0.0)
        if self.runtime.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare(self, threads: int | None = None) -> None:
        """Make what running with ``threads`` needs now (an ONNX Runtime session), so that
        a graph ONNX Runtime cannot load fails before any work."""
        from geoseg.runtimes import OnnxRuntime

        if isinstance(self.runtime, OnnxRuntime):
            self.runtime.session(threads)

    def predict_proba(self, tiles: np.ndarray, valid: np.ndarray | None = None,
                      weights: np.ndarray | None = None,
                      dtype: type[np.floating[Any]] = np.float32,
                      threads: int | None = None, scale: tuple[float, ...] = (),
                      offset: tuple[float, ...] = ()) -> np.ndarray:
        """Raw ``(B, bands, H, W)`` tiles (any real dtype) → class probabilities
        ``(B, classes, H, W)`` as ``dtype``, times ``weights`` ``(B, H, W)`` when given.
        ``threads``: the intra-op threads of an ONNX Runtime session (torch's are the
        caller's, :func:`torch_threads`); ``scale``/``offset``: what the scene declares."""
        import torch

        from geoseg.runtimes import to_probabilities

        n_classes = len(self.spec.classes)
        with torch.inference_mode(), self._stream():
            t = self.normalize(tiles, valid, scale, offset)
            flips = [(), (3,), (2,), (2, 3)] if self.tta else [()]
            total = None
            for dims in flips:
                inp = torch.flip(t, dims) if dims else t
                probs = to_probabilities(self.runtime(inp, threads), self.spec.outputs,
                                         n_classes)
                if dims:
                    probs = torch.flip(probs, dims)
                total = probs if total is None else total + probs
            assert total is not None
            if len(flips) > 1:
                total /= len(flips)
            if weights is not None:
                total *= self.to_device(weights)[:, None]
            out = total.to(getattr(torch, np.dtype(dtype).name)).contiguous()  # on the device
            return out.cpu().numpy()

    def _stream(self) -> contextlib.AbstractContextManager[object]:
        """On CUDA, this thread's own stream, so one task's copies overlap another's compute."""
        import torch

        if not self.cuda:
            return contextlib.nullcontext()
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream(self.device)
        return torch.cuda.stream(stream)


def task_threads(scheduler: str, workers: int | None) -> int | None:
    """Torch threads for each model task so that the tasks running at once share the
    cores instead of each taking all of them: 2 tasks × 2 threads on 2 cores ran the
    default model 10-30 % slower than 2 × 1, and on a GPU the tasks' CPU-side copies
    would start pool × cores OpenMP threads. At most what torch has in this thread, so a
    limit the caller set with ``torch.set_num_threads`` holds. ``None`` on a distributed
    cluster, whose worker processes start with ``OMP_NUM_THREADS=1`` already."""
    import torch
    from dask.system import CPU_COUNT  # the machine's cores as dask counts them (cgroups)

    from geoseg.cluster import tasks_at_once

    at_once = tasks_at_once(scheduler, workers)
    if at_once is None:
        return None
    cores = min(torch.get_num_threads(), CPU_COUNT)
    return max(1, cores // at_once)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads in the calling thread (``None``:
    as it is), then put the count back: torch keeps it per thread but also makes it the
    default for threads created later, so a task must not leave it changed."""
    import torch

    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_reference(model: str | os.PathLike[str] | Model) -> tuple[ModelSpec, ModelHandle]:
    """A model's card and the handle tasks load it by, without loading the weights here.

    A :class:`Model` object travels as it is in memory (it may differ from the file it
    came from); a name or path travels as that path.
    """
    if isinstance(model, Model):
        return model.spec, ModelHandle.of(model)
    card = resolve_model_path(model)
    return read_spec(card), ModelHandle.of_path(card)


def check_weights(handle: ModelHandle, device: str, tta: bool, *, in_process: bool,
                  threads: int | None = None) -> None:
    """Load a model now, so that a bad file fails before any work. When this process runs
    the tasks (``in_process``) the load goes into the cache they use (with the session
    they run, for ONNX Runtime); otherwise it is a CPU load thrown away (each worker loads
    its own copy)."""
    if in_process:
        cached_predictor(handle, select_device(device), tta).prepare(threads)
    else:
        Predictor(handle.load(runtime="onnxruntime"), "cpu").prepare(1)


@lru_cache(maxsize=4)
def cached_predictor(handle: ModelHandle, device: str, tta: bool) -> Predictor:
    """One predictor per (model, device, tta) per process: workers load the model once.
    On a CPU a model whose card runs it on ONNX Runtime is loaded without its torch
    network."""
    runtime = "onnxruntime" if not device.startswith("cuda") else None
    return Predictor(handle.load(runtime=runtime), device, tta=tta)
