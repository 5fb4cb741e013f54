"""Run a model on batches of tiles: normalization, the runtime, test-time augmentation, threads.

Workers never receive a network through the task graph; they receive a small
:class:`ModelHandle` and load (once per process) the model it names.
"""

from __future__ import annotations

import contextlib
import os
import sys
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
    card_and_weights,
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

    from geoseg.runtimes import OnnxRuntime, Signature, TorchRuntime


# Probabilities as uint16 fixed point: 1 is 65535 (a step of 1.5e-5, where float16's is
# 4.9e-4 near 1, in as many bytes; numpy casts float32 to it ~40x faster than to float16).
FIXED_POINT = 65535


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

    def carried(self) -> ModelHandle:
        """This handle with the saved model's bytes in it, for workers that share no file
        system with this process (a handle with bytes already is returned as it is). The
        files are read as they are, not re-serialized: the card, the weights and the ONNX
        graph each travel once per worker (the handle is one graph key or one scattered
        object). Its fingerprint is of the bytes, so every process caches it alike."""
        if self.path is None:
            return self
        card_path = Path(self.path)
        weights, graph = card_and_weights(card_path)[1], onnx_path(card_path)
        try:
            card = card_path.read_bytes()
            weights_bytes = weights.read_bytes() if weights.exists() else b""
            graph_bytes = graph.read_bytes() if graph.exists() else b""
        except OSError as exc:
            raise ModelError(f"cannot read the model ({exc.strerror})", card_path) from None
        return ModelHandle(fingerprint=fingerprint_of(card, weights_bytes, graph_bytes),
                           card=card, weights=weights_bytes or None, onnx=graph_bytes or None)

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


def runtime_for(model: Model, device: str) -> TorchRuntime | OnnxRuntime:
    """The runtime for ``model`` on ``device``: its card's CPU runtime on a CPU; on a GPU
    torch when there is a torch network (autocast, cuDNN), else ONNX Runtime's CUDA
    provider (or its CPU provider, with a warning, when this onnxruntime has none). An
    ONNX graph is checked against the card when its first session is made."""
    from geoseg.runtimes import OnnxRuntime, TorchRuntime, check_signature, cuda_provider

    spec = model.spec
    graph = model.graph
    cuda = device.startswith("cuda")
    if model.network is not None and (cuda or spec.runtime == "torch" or graph is None):
        import torch

        return TorchRuntime(model.network, torch.device(device))
    assert graph is not None
    name = str(onnx_path(model.path)) if model.path else spec.name
    where = "cpu"
    if cuda:
        if cuda_provider():
            where = device
        else:
            warn("this onnxruntime has no CUDA provider: the ONNX model runs on the CPU "
                 "(pip install onnxruntime-gpu)", name)

    def check(signature: Signature) -> None:
        check_signature(signature, len(spec.bands), len(spec.classes), spec.input_size, name)

    return OnnxRuntime(graph, where, check)


class Predictor:
    """Normalizes raw tiles and runs the network on a device; returns class probabilities.

    With ONNX Runtime everything happens in numpy on the host (ONNX Runtime copies to its
    device itself), and torch is never imported: half of a small scene's start-up. With
    torch everything per pixel after reading happens on the device: tiles travel in their
    own dtype (uint16 is half the bytes of float32), are normalized there, and come back
    as probabilities already multiplied by their blend weights. The runtime is the one
    :func:`runtime_for` picks (a torch network is taken over: it moves to the device).
    """

    def __init__(self, model: Model, device: str = "auto", *, tta: bool = False) -> None:
        from geoseg.runtimes import OnnxRuntime

        self.spec = model.spec
        self.device = select_device(device)
        self.tta = tta
        self.cuda = self.device.startswith("cuda")
        self.runtime = runtime_for(model, self.device)
        self.on_host = isinstance(self.runtime, OnnxRuntime)  # numpy in, numpy out
        if self.cuda and not self.on_host:
            import torch

            torch.backends.cudnn.benchmark = True  # tiles have one shape: pick the fastest kernels
        # Mean and 1/std in a scene's stored units, per declared (scale, offset), so that
        # scale and offset cost nothing per pixel.
        self._normalizations: dict[tuple[tuple[float, ...], tuple[float, ...]], Any] = {}
        self._local = threading.local()  # a CUDA stream per calling thread

    def normalization(self, scale: tuple[float, ...] = (), offset: tuple[float, ...] = ()
                      ) -> tuple[Any, Any]:
        """``(mean, 1 / std)`` shaped ``(1, bands, 1, 1)`` for a scene that declares
        ``scale`` and ``offset`` (:meth:`geoseg.model.ModelSpec.normalization`): float32
        numpy arrays with ONNX Runtime, tensors on the device with torch."""
        key = (tuple(scale), tuple(offset))
        if key not in self._normalizations:
            mean, std = self.spec.normalization(scale, offset)
            shape = (1, len(self.spec.bands), 1, 1)
            m: Any = np.asarray(mean, np.float32).reshape(shape)
            inv: Any = (1.0 / np.asarray(std, np.float64)).astype(np.float32).reshape(shape)
            if not self.on_host:
                import torch

                m, inv = (torch.from_numpy(v).to(self.device) for v in (m, inv))
            self._normalizations[key] = (m, inv)
        return self._normalizations[key]

    def to_device(self, a: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A host array as a tensor on the device; on CUDA copied asynchronously from
        pinned memory (a tensor given is taken as it is: a feeder's pinned buffer)."""
        import torch

        t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
        if self.cuda:
            if not t.is_pinned():
                t = t.pin_memory()
            t = t.to(self.device, non_blocking=True)
        return t

    def normalize(self, tiles: np.ndarray, valid: np.ndarray | None = None,
                  scale: tuple[float, ...] = (), offset: tuple[float, ...] = ()) -> Any:
        """``(B, bands, H, W)`` stored values (of a scene that declares ``scale`` and
        ``offset``) → normalized float32 (a numpy array with ONNX Runtime; a tensor on the
        device with torch, channels-last); invalid pixels become 0 (the band mean)."""
        mean, inv_std = self.normalization(scale, offset)
        # Most tiles have no invalid pixel.
        invalid = valid if valid is not None and not valid.all() else None
        if self.on_host:
            x = tiles.astype(np.float32)
            x -= mean
            x *= inv_std
            if invalid is not None:
                np.copyto(x, np.float32(0), where=~invalid[:, None])
            return x
        import torch

        # The fastest order on CPU (~4x the naive one): convert, scale, fill only when some
        # pixel is invalid, and change layout last.
        t = (self.to_device(tiles).to(torch.float32) - mean) * inv_std
        if invalid is not None:
            t.masked_fill_(~self.to_device(invalid)[:, None], 0.0)
        if self.runtime.channels_last:
            return t.contiguous(memory_format=torch.channels_last)
        return t

    def prepare(self, threads: int | None = None) -> None:
        """Make what running with ``threads`` needs now (an ONNX Runtime session), so that
        a graph ONNX Runtime cannot load, or one that does not fit its card, fails before
        any work."""
        from geoseg.runtimes import OnnxRuntime

        if isinstance(self.runtime, OnnxRuntime):
            self.runtime.session(threads)

    def predict_proba(self, tiles: np.ndarray, valid: np.ndarray | None = None,
                      weights: np.ndarray | None = None,
                      dtype: type[np.floating[Any]] | type[np.uint16] = np.float32,
                      threads: int | None = None, scale: tuple[float, ...] = (),
                      offset: tuple[float, ...] = ()) -> np.ndarray:
        """Raw ``(B, bands, H, W)`` tiles (any real dtype) → class probabilities
        ``(B, classes, H, W)`` as ``dtype``, times ``weights`` ``(B, H, W)`` (at most 1)
        when given; ``np.uint16`` is fixed point, :data:`FIXED_POINT` for 1 (see there).
        ``threads``: the intra-op threads of an ONNX Runtime session (torch's are the
        caller's, :func:`torch_threads`); ``scale``/``offset``: what the scene declares."""
        if self.on_host:
            return self._host_proba(tiles, valid, weights, dtype, threads, scale, offset)
        return self._device_proba(tiles, valid, weights, dtype, scale, offset)

    def _flips(self) -> list[tuple[int, ...]]:
        """The flips of test-time augmentation (the tile as it is alone without it)."""
        return [(), (3,), (2,), (2, 3)] if self.tta else [()]

    def _host_proba(self, tiles: np.ndarray, valid: np.ndarray | None,
                    weights: np.ndarray | None, dtype: type[np.floating[Any]] | type[np.uint16],
                    threads: int | None, scale: tuple[float, ...], offset: tuple[float, ...]
                    ) -> np.ndarray:
        from geoseg.runtimes import OnnxRuntime, probabilities_of

        runtime = self.runtime
        assert isinstance(runtime, OnnxRuntime)
        n_classes = len(self.spec.classes)
        x = self.normalize(tiles, valid, scale, offset)
        flips = self._flips()
        total: np.ndarray | None = None
        for dims in flips:
            out = runtime(np.flip(x, dims) if dims else x, threads)
            probs = probabilities_of(out, self.spec.outputs, n_classes,
                                     weights if len(flips) == 1 else None)
            if dims:
                probs = np.flip(probs, dims)
            total = probs if total is None else np.add(total, probs, out=total)
        assert total is not None
        if len(flips) > 1:
            total *= (np.float32(1 / len(flips)) if weights is None
                      else weights[:, None].astype(np.float32) / len(flips))
        if np.dtype(dtype) == np.uint16:
            total *= FIXED_POINT
            np.rint(total, out=total)
            np.clip(total, 0, FIXED_POINT, out=total)  # float rounding past 1
        return total.astype(dtype, copy=False)

    def _device_proba(self, tiles: np.ndarray, valid: np.ndarray | None,
                      weights: np.ndarray | None, dtype: type[np.floating[Any]] | type[np.uint16],
                      scale: tuple[float, ...], offset: tuple[float, ...]) -> np.ndarray:
        import torch

        with torch.inference_mode(), self.stream():
            out = self.launch(tiles, valid, weights, dtype, scale, offset)
            return self.host_result(out.cpu().numpy(), dtype)

    def launch(self, tiles: Any, valid: Any, weights: Any,
               dtype: type[np.floating[Any]] | type[np.uint16],
               scale: tuple[float, ...] = (), offset: tuple[float, ...] = ()) -> torch.Tensor:
        """The device half of :meth:`predict_proba` with torch: host arrays (numpy, or
        pinned tensors) in, probabilities on the device out, queued on the current stream
        and not waited for; :meth:`host_result` turns them, once on the host, into what
        :meth:`predict_proba` returns. Call it under ``torch.inference_mode()``."""
        import torch

        from geoseg.runtimes import TorchRuntime, to_probabilities

        runtime = self.runtime
        assert isinstance(runtime, TorchRuntime)
        n_classes = len(self.spec.classes)
        t = self.normalize(tiles, valid, scale, offset)
        flips = self._flips()
        total = None
        for dims in flips:
            inp = torch.flip(t, dims) if dims else t
            probs = to_probabilities(runtime(inp), self.spec.outputs, n_classes)
            if dims:
                probs = torch.flip(probs, dims)
            total = probs if total is None else total + probs
        assert total is not None
        if len(flips) > 1:
            total /= len(flips)
        if weights is not None:
            total *= self.to_device(weights)[:, None]
        if np.dtype(dtype) == np.uint16:  # as int16 q - 32768: CUDA has few uint16 kernels
            q = total.mul_(FIXED_POINT).round_().clamp_(0, FIXED_POINT).sub_(32768)
            return q.to(torch.int16)
        return total.to(getattr(torch, np.dtype(dtype).name)).contiguous()  # on the device

    @staticmethod
    def host_result(out: np.ndarray, dtype: type[np.floating[Any]] | type[np.uint16]
                    ) -> np.ndarray:
        """What :meth:`launch` gave, copied to the host, as :meth:`predict_proba` returns
        it (uint16 comes as int16 offset by -32768)."""
        if np.dtype(dtype) == np.uint16:
            return out.view(np.uint16) ^ np.uint16(0x8000)
        return out

    def stream(self) -> contextlib.AbstractContextManager[object]:
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
    from dask.system import CPU_COUNT  # the machine's cores as dask counts them (cgroups)

    from geoseg.cluster import tasks_at_once

    at_once = tasks_at_once(scheduler, workers)
    if at_once is None:
        return None
    torch = sys.modules.get("torch")  # not imported: nobody set its threads (ONNX Runtime)
    cores = min(torch.get_num_threads(), CPU_COUNT) if torch is not None else CPU_COUNT
    return max(1, cores // at_once)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads in the calling thread (``None``:
    as it is), then put the count back: torch keeps it per thread but also makes it the
    default for threads created later, so a task must not leave it changed. Nothing
    when torch is not loaded (ONNX Runtime takes its threads per call)."""
    torch = sys.modules.get("torch")
    if n is None or torch is None:
        yield
        return
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def model_reference(model: str | os.PathLike[str] | Model | ModelHandle
                    ) -> tuple[ModelSpec, ModelHandle]:
    """A model's card and the handle tasks load it by, without loading the weights here.

    A :class:`Model` object travels as it is in memory (it may differ from the file it
    came from); a name or path travels as that path; a handle as it is.
    """
    if isinstance(model, Model):
        return model.spec, ModelHandle.of(model)
    if isinstance(model, ModelHandle):
        if model.path is not None:
            return read_spec(model.path), model
        import json

        return ModelSpec.from_dict(json.loads(model.card or b"{}")), model
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
