"""What runs a network on a batch of normalized tiles: torch, or ONNX Runtime.

A runtime takes ``(B, bands, H, W)`` float32 input on the predictor's device and gives
the network's raw ``(B, outputs, H, W)`` output as float32; :func:`to_probabilities`
turns that into class probabilities as the card says (logits or probabilities, one
sigmoid channel or a softmax over classes). :func:`onnx_signature` reads what an ONNX
graph takes and gives without running it.
"""

from __future__ import annotations

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


def onnx_signature(sess: Any) -> Signature:
    """What a session's graph takes and gives; one input and 4-D tensors are required."""
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1:
        raise ModelError(f"the ONNX graph has {len(inputs)} inputs; geoseg feeds one image tensor")
    i, o = inputs[0], outputs[0]
    for what, node in (("input", i), ("output", o)):
        if len(node.shape) != 4:
            raise ModelError(f"the ONNX graph's {what} {node.name!r} has shape {node.shape}; "
                             f"geoseg needs (batch, channels, height, width)")
    if i.type not in ("tensor(float)", "tensor(float16)"):
        raise ModelError(f"the ONNX graph's input is {i.type}; geoseg feeds float32 or float16")
    return Signature(i.name, i.type, tuple(i.shape), o.name, o.type, tuple(o.shape))


class TorchRuntime:
    """A torch network on a device, in channels-last memory format (~1.5x faster
    convolutions on CPU with oneDNN, and on GPU), with autocast on CUDA."""

    name = "torch"
    channels_last = True

    def __init__(self, network: torch.nn.Module, device: torch.device) -> None:
        import torch

        self.device = device
        self.network = network.to(device).eval().to(memory_format=torch.channels_last)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.autocast(self.device.type, enabled=self.device.type == "cuda"):
            return self.network(x).float()


class OnnxRuntime:
    """An ONNX graph in ONNX Runtime: float16 inputs are fed as such, a fixed batch size
    is honoured by running the batch in parts."""

    name = "onnxruntime"
    channels_last = False

    def __init__(self, graph: bytes, device: str, threads: int | None = None) -> None:
        self.session = session(graph, device, threads)
        self.signature = onnx_signature(self.session)
        self.input_dtype = np.float16 if self.signature.input_type == "tensor(float16)" else np.float32

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        a = x.detach().cpu().contiguous().numpy().astype(self.input_dtype, copy=False)
        step = self.signature.fixed_batch or len(a)
        parts = []
        for start in range(0, len(a), step):
            part = a[start:start + step]
            short = step - len(part)
            if short:  # a fixed batch size: fill the last part with zeros, drop their outputs
                part = np.concatenate([part, np.zeros((short, *part.shape[1:]), part.dtype)])
            out = self.session.run([self.signature.output_name], {self.signature.input_name: part})[0]
            parts.append(out[:len(out) - short])
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return torch.from_numpy(np.asarray(out, np.float32)).to(x.device)


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
    (a sigmoid over a logit)."""
    import torch

    channels = out.shape[1]
    if channels == 1 and n_classes == 2:
        p = torch.sigmoid(out) if outputs == "logits" else out.clamp(0, 1)
        return torch.cat([1 - p, p], dim=1)
    if channels != n_classes:
        raise ModelError(f"the network gives {channels} output channels but the card names "
                         f"{n_classes} classes")
    return torch.softmax(out, dim=1) if outputs == "logits" else out

