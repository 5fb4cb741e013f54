"""What runs a network on a batch of normalized tiles: torch, or ONNX Runtime.

A runtime takes ``(B, bands, H, W)`` float32 input on the predictor's device and gives
the network's raw ``(B, outputs, H, W)`` output as float32; :func:`to_probabilities`
turns that into class probabilities as the card says (logits or probabilities, one
sigmoid channel or a softmax over classes). :func:`graph_signature` reads what an ONNX
graph takes and gives without running it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.errors import DeviceError, ModelError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Signature:
    """An ONNX graph's single input and first output: names, dtypes and shapes (a dim is an
    int when fixed, a name or None when dynamic)."""

    input_name: str
    input_type: str
    input_shape: tuple[int | str | None, ...]
    output_name: str
    output_type: str
    output_shape: tuple[int | str | None, ...]

    @property
    def fixed_size(self) -> int | None:
        """The one tile size the input takes (a fixed, square height and width), if any."""
        h, w = self.input_shape[2:4]
        if isinstance(h, int) and isinstance(w, int):
            if h != w:
                raise ModelError(f"its input is {h} x {w} pixels; geoseg runs square tiles only")
            return h
        return None

    @property
    def fixed_batch(self) -> int | None:
        b = self.input_shape[0]
        return b if isinstance(b, int) and b > 0 else None

    def as_dict(self) -> dict[str, Any]:
        return {"input": {"name": self.input_name, "type": self.input_type,
                          "shape": list(self.input_shape)},
                "output": {"name": self.output_name, "type": self.output_type,
                           "shape": list(self.output_shape)}}


def cuda_provider() -> bool:
    """Whether this onnxruntime has its CUDA provider (onnxruntime-gpu)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


def session(graph: bytes, device: str = "cpu", threads: int | None = None) -> Any:
    """An ONNX Runtime session on ``graph`` (``threads``: its intra-op threads, ``None``
    for ONNX Runtime's own choice); on ``cuda`` the CUDA provider, which must be there."""
    try:
        import onnxruntime as ort
    except ImportError:  # a dependency, but an environment can lack it
        raise ModelError("running an ONNX model needs onnxruntime (pip install onnxruntime)") from None
    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DeviceError("${device=cuda} asked for an ONNX model, but this onnxruntime has no "
                              "CUDA provider (pip install onnxruntime-gpu)")
        index = device.partition(":")[2] or "0"
        providers = [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: its warnings are not the user's business
    try:
        return ort.InferenceSession(graph, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"ONNX Runtime cannot load the graph ({first})") from None


def graph_signature(graph: bytes) -> Signature:
    """What an ONNX graph takes and gives, as it declares them (no session needed): one
    image input (initializers listed as inputs by old exporters aside) of float32 or
    float16, and 4-D tensors."""
    import onnx

    try:
        proto = onnx.load_from_string(graph)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"not an ONNX graph ({type(exc).__name__})") from None
    weights = {t.name for t in proto.graph.initializer}
    inputs = [v for v in proto.graph.input if v.name not in weights]
    if len(inputs) != 1 or not proto.graph.output:
        raise ModelError(f"the ONNX graph has {len(inputs)} inputs; geoseg feeds one image tensor")
    i, o = inputs[0], proto.graph.output[0]

    def described(value: Any) -> tuple[str, tuple[int | str | None, ...]]:
        tensor = value.type.tensor_type
        kind = _TYPES.get(tensor.elem_type, f"tensor(type {tensor.elem_type})")
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in tensor.shape.dim)
        return kind, dims

    (in_type, in_shape), (out_type, out_shape) = described(i), described(o)
    return _checked(Signature(i.name, in_type, in_shape, o.name, out_type, out_shape))


def session_signature(sess: Any) -> Signature:
    """What a loaded session's graph takes and gives: :func:`graph_signature` without
    parsing the graph again (nor importing ``onnx``, half a second of start-up)."""
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1 or not outputs:
        raise ModelError(f"the ONNX graph has {len(inputs)} inputs; geoseg feeds one image tensor")
    i, o = inputs[0], outputs[0]

    def dims(shape: Any) -> tuple[int | str | None, ...]:
        return tuple(d if isinstance(d, int | str) else None for d in (shape or ()))

    return _checked(Signature(i.name, i.type, dims(i.shape), o.name, o.type, dims(o.shape)))


def _checked(signature: Signature) -> Signature:
    """A signature geoseg can feed: 4-D tensors in and out, a float32 or float16 input."""
    for what, name, shape in (("input", signature.input_name, signature.input_shape),
                              ("output", signature.output_name, signature.output_shape)):
        if len(shape) != 4:
            raise ModelError(f"the ONNX graph's {what} {name!r} has shape {list(shape)}; "
                             f"geoseg needs (batch, channels, height, width)")
    if signature.input_type not in ("tensor(float)", "tensor(float16)"):
        raise ModelError(f"the ONNX graph's input is {signature.input_type}; geoseg feeds "
                         f"float32 or float16")
    return signature


_TYPES = {1: "tensor(float)", 10: "tensor(float16)", 11: "tensor(double)", 2: "tensor(uint8)",
          3: "tensor(int8)", 6: "tensor(int32)", 7: "tensor(int64)", 16: "tensor(bfloat16)"}


class TorchRuntime:
    """A torch network on a device, in channels-last memory format (~1.5x faster
    convolutions on CPU with oneDNN, and on GPU), with autocast on CUDA."""

    name = "torch"
    channels_last = True

    def __init__(self, network: torch.nn.Module, device: torch.device) -> None:
        import torch

        self.device = device
        self.network = network.to(device).eval().to(memory_format=torch.channels_last)

    def __call__(self, x: torch.Tensor, threads: int | None = None) -> torch.Tensor:
        """``threads`` are set by the caller for torch (:func:`geoseg.inference.torch_threads`)."""
        import torch

        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            return self.network(x).float()


class OnnxRuntime:
    """An ONNX graph in ONNX Runtime, fed and read as numpy arrays (torch is never needed):
    float16 inputs are fed as such, a fixed batch size is honoured by running the batch in
    parts. A session is made for each number of intra-op threads asked for (tasks that
    share the cores ask for fewer), when first asked for; the first one made reads the
    graph's :class:`Signature` and gives it to ``check`` (which raises if the graph does
    not fit its card)."""

    name = "onnxruntime"
    channels_last = False

    def __init__(self, graph: bytes, device: str,
                 check: Callable[[Signature], None] | None = None) -> None:
        import threading

        self.graph, self.device = graph, device
        self._check = check
        self._signature: Signature | None = None
        self._sessions: dict[int | None, Any] = {}
        self._lock = threading.Lock()

    def session(self, threads: int | None = None) -> Any:
        """The session with ``threads`` intra-op threads (``None``: ONNX Runtime's choice)."""
        with self._lock:
            if threads not in self._sessions:
                made = session(self.graph, self.device, threads)
                if self._signature is None:
                    signature = session_signature(made)
                    if self._check is not None:
                        self._check(signature)
                    self._signature = signature
                self._sessions[threads] = made
            return self._sessions[threads]

    @property
    def signature(self) -> Signature:
        """What the graph takes and gives (from its first session, made now if none is)."""
        if self._signature is None:
            self.session(next(iter(self._sessions), None))
        assert self._signature is not None
        return self._signature

    @property
    def input_dtype(self) -> type[np.floating[Any]]:
        return np.float16 if self.signature.input_type == "tensor(float16)" else np.float32

    def __call__(self, x: np.ndarray, threads: int | None = None) -> np.ndarray:
        """``(B, bands, H, W)`` normalized float32 → the graph's raw output as float32."""
        run = self.session(threads).run
        signature = self.signature
        a = np.ascontiguousarray(x, dtype=self.input_dtype)
        step = signature.fixed_batch or len(a)
        parts = []
        for start in range(0, len(a), step):
            part = a[start:start + step]
            short = step - len(part)
            if short:  # a fixed batch size: fill the last part with zeros, drop their outputs
                part = np.concatenate([part, np.zeros((short, *part.shape[1:]), part.dtype)])
            out = run([signature.output_name], {signature.input_name: part})[0]
            parts.append(out[:len(out) - short])
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return np.asarray(out, np.float32)


def check_signature(signature: Signature, n_bands: int, n_classes: int, input_size: int | None,
                    where: str) -> None:
    """An ONNX graph must fit its card: as many input bands, as many outputs as classes
    (one for two classes), and the card's fixed input size (where the graph fixes them)."""
    def fits(dim: int | str | None, *wanted: int) -> bool:
        return not isinstance(dim, int) or dim in wanted

    what = None
    if not fits(signature.input_shape[1], n_bands):
        what = f"it reads {signature.input_shape[1]} bands, the card names {n_bands}"
    elif not fits(signature.output_shape[1], n_classes, *((1,) if n_classes == 2 else ())):
        what = f"it gives {signature.output_shape[1]} classes, the card names {n_classes}"
    elif signature.fixed_size is not None and signature.fixed_size != input_size:
        what = f"its input is {signature.fixed_size} px, the card says {input_size}"
    if what:
        raise ModelError(f"the ONNX graph does not match the model card ({what})", where)


def to_probabilities(out: torch.Tensor, outputs: str, n_classes: int) -> torch.Tensor:
    """A network's raw output → class probabilities ``(B, n_classes, H, W)``: a softmax
    over logits, probabilities as they are; one channel is the second of two classes
    (a sigmoid over a logit). For tensors on a device; :func:`probabilities_of` is the same
    for numpy arrays."""
    import torch

    channels = out.shape[1]
    if channels == 1 and n_classes == 2:
        p = torch.sigmoid(out) if outputs == "logits" else out.clamp(0, 1)
        return torch.cat([1 - p, p], dim=1)
    _check_channels(channels, n_classes)
    return torch.softmax(out, dim=1) if outputs == "logits" else out


def probabilities_of(out: np.ndarray, outputs: str, n_classes: int,
                     weights: np.ndarray | None = None) -> np.ndarray:
    """:func:`to_probabilities` for a float32 numpy ``out`` (overwritten), times
    ``weights`` ``(B, H, W)`` when given, in as few passes over the planes as it takes:
    a softmax's division and the weights are one multiplication."""
    channels = out.shape[1]
    factor = None if weights is None else weights[:, None].astype(np.float32, copy=False)
    if channels == 1 and n_classes == 2:
        p = out
        if outputs == "logits":  # a sigmoid, in place
            np.negative(p, out=p)
            np.exp(p, out=p)
            p += 1
            np.reciprocal(p, out=p)
        else:
            np.clip(p, 0, 1, out=p)
        probs = np.concatenate([1 - p, p], axis=1)
    else:
        _check_channels(channels, n_classes)
        probs = out
        if outputs == "logits":
            probs -= probs.max(axis=1, keepdims=True)  # exp never overflows
            np.exp(probs, out=probs)
            total = probs.sum(axis=1, keepdims=True)
            factor = 1 / total if factor is None else np.divide(factor, total, out=total)
    if factor is not None:
        probs *= factor
    return probs


def _check_channels(channels: int, n_classes: int) -> None:
    if channels != n_classes:
        raise ModelError(f"the network gives {channels} output channels but the card names "
                         f"{n_classes} classes")
