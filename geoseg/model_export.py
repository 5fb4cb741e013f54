"""``geoseg models export``: a geoseg model in the forms other tools load.

* ``onnx``: the network as an ONNX graph with a dynamic batch, height and width (a model
  whose input has one size keeps it), the geoseg card embedded in the metadata as
  ``geoseg_card`` (JSON text), so that ``geoseg models import`` gives the same model back.
* ``deepness``: what the Deepness QGIS plugin loads: a fixed square tile input (the plugin
  refuses a dynamic height and width), a dynamic batch, a softmax inside the graph, and
  its metadata as JSON text: ``model_type`` "Segmentor", ``class_names`` ``{id: name}``,
  ``resolution`` in cm/px, ``tile_size``, ``tiles_overlap`` in %, ``seg_thresh`` and
  ``standardization_mean``/``_std`` on the plugin's scale: it divides every input value by
  255 and then standardizes, so geoseg's normalization in raw units is expressed as
  ``raw_mean / 255`` and ``raw_std / 255``.
* ``smp``: a segmentation-models-pytorch ``save_pretrained`` folder (``config.json``,
  ``model.safetensors``) that ``smp.from_pretrained(folder)`` loads offline, with the geoseg
  card beside as ``geoseg.json``.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

from geoseg import atomic
from geoseg.errors import ModelError
from geoseg.model import ONNX, Model

FORMATS = ("onnx", "deepness", "smp")
OPSET = 17
CARD_KEY = "geoseg_card"  # the ONNX metadata entry that holds a geoseg card


def export_model(model: Model, out: str | os.PathLike[str], format: str = "onnx", *,
                 overwrite: bool = False) -> Path:
    """Write ``model`` to ``out`` (a ``.onnx`` file, or a folder for ``smp``); returns it."""
    if format not in FORMATS:
        raise ModelError(f"unknown export format {format!r} (use {', '.join(FORMATS)})")
    target = Path(out)
    if format == "smp":
        return _export_smp(model, target, overwrite=overwrite)
    if format == "onnx":
        graph = onnx_graph(model)
        graph = with_metadata(graph, {CARD_KEY: json.dumps(model.spec.to_dict(), sort_keys=True)})
    else:
        graph = deepness_graph(model)
    with atomic.outputs([target], overwrite=overwrite), \
            atomic.together(overwrite=overwrite) as files:
        files.path(target).write_bytes(graph)
    return target


def with_onnx(model: Model) -> Model:
    """``model`` with its ONNX graph (exported now if it has none) and run on ONNX Runtime
    on a CPU, which ran the default model 1.47x faster than torch end to end at the same
    masks (``python -m benchmarks runtimes``)."""
    import dataclasses

    graph, spec = model.graph, model.spec  # its graph, if still the network's (a digest)
    if graph is None:
        graph = onnx_graph(model)
        spec = dataclasses.replace(spec, quantization={})  # a new float32 graph
    spec = dataclasses.replace(spec, runtime="onnxruntime")
    return Model(model.network, spec, model.path, graph)


def onnx_graph(model: Model, *, fixed_size: int | None = None, softmax: bool = False) -> bytes:
    """The model's network as ONNX bytes: dynamic batch, height and width unless
    ``fixed_size`` (or the network's own fixed input) sets height and width; with
    ``softmax`` its output is class probabilities."""
    spec = model.spec
    if model.network is None:
        assert model.onnx is not None
        return _edit_graph(model.onnx, fixed_size=fixed_size,
                           softmax=softmax and spec.outputs == "logits")
    import torch

    size = fixed_size or spec.input_size or spec.tile_size
    network: torch.nn.Module = model.network
    if softmax:
        network = _probabilities_module(network, spec.outputs, len(spec.classes))
    dynamic = {0: "batch"} if fixed_size or spec.input_size else {0: "batch", 2: "height", 3: "width"}
    example = torch.zeros(1, len(spec.bands), size, size)
    buffer = io.BytesIO()
    device = next(model.network.parameters()).device
    model.network.to("cpu")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
            torch.onnx.export(network.eval(), (example,), buffer,  # type: ignore[arg-type]
                              dynamo=False,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": dynamic, "output": dynamic},
                              opset_version=OPSET, do_constant_folding=True)
    except Exception as exc:  # the exporter raises many types for unsupported layers
        raise ModelError(f"cannot export the network to ONNX ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    finally:
        model.network.to(device)
    return buffer.getvalue()


def _probabilities_module(network: Any, outputs: str, n_classes: int) -> Any:
    """``network`` wrapped so that its output is class probabilities (a softmax, or the
    pair ``1 - p, p`` of a single sigmoid channel)."""
    import torch

    from geoseg.runtimes import to_probabilities

    class Probabilities(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return to_probabilities(self.network(x), outputs, n_classes)

    return Probabilities()


def deepness_graph(model: Model) -> bytes:
    """The Deepness plugin's form of ``model`` (see the module's text)."""
    spec = model.spec
    size = spec.input_size or spec.tile_size
    graph = onnx_graph(model, fixed_size=size, softmax=True)
    overlap = spec.overlap if spec.overlap is not None else min(size // 4, 128)
    metadata: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(i): name for i, name in enumerate(spec.class_names)},
        "tile_size": size,
        "tiles_overlap": round(100 * overlap / size),
        "seg_thresh": 0.0,  # every pixel gets its most probable class, as in geoseg
        "standardization_mean": [m / 255 for m in spec.raw_mean],
        "standardization_std": [s / 255 for s in spec.raw_std],
    }
    if spec.resolution is not None:
        metadata["resolution"] = round(spec.resolution * 100, 6)
    text = {k: json.dumps(v) for k, v in metadata.items()}
    text[CARD_KEY] = json.dumps(spec.to_dict(), sort_keys=True)
    return with_metadata(graph, text)


def with_metadata(graph: bytes, entries: dict[str, str]) -> bytes:
    """``graph`` with ``entries`` set in its ``metadata_props`` (others kept)."""
    import onnx

    proto = onnx.load_from_string(graph)
    kept = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    return bytes(proto.SerializeToString())


def _edit_graph(graph: bytes, *, fixed_size: int | None, softmax: bool) -> bytes:
    """An ONNX-only model's graph with a fixed height and width and/or a softmax at its end."""
    import onnx
    from onnx import helper

    proto = onnx.load_from_string(graph)
    if fixed_size is not None:
        for value in (proto.graph.input[0], proto.graph.output[0]):
            dims = value.type.tensor_type.shape.dim
            for k in (2, 3):
                if dims[k].HasField("dim_value") and dims[k].dim_value != fixed_size:
                    raise ModelError(f"the network takes {dims[k].dim_value} px tiles, "
                                     f"not {fixed_size}")
                dims[k].dim_value = fixed_size
    if softmax:
        out = proto.graph.output[0]
        raw = out.name + "_logits"
        for node in proto.graph.node:
            node.output[:] = [raw if o == out.name else o for o in node.output]
        proto.graph.node.append(helper.make_node("Softmax", [raw], [out.name], axis=1))
    return bytes(proto.SerializeToString())


def _export_smp(model: Model, folder: Path, *, overwrite: bool) -> Path:
    if model.network is None or model.spec.architecture == ONNX:
        raise ModelError("this model is an ONNX graph: it has no segmentation-models-pytorch "
                         "network to save (export it as onnx or deepness)")
    if not hasattr(model.network, "save_pretrained"):
        raise ModelError("this segmentation-models-pytorch version cannot save_pretrained "
                         "(smp 0.4 or later can)")
    import shutil
    import tempfile

    targets = [folder / "config.json", folder / "model.safetensors", folder / "geoseg.json"]
    with atomic.outputs(targets, overwrite=overwrite):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".export-") as tmp:
            model.network.save_pretrained(tmp)  # type: ignore[operator]
            (Path(tmp) / "geoseg.json").write_text(json.dumps(model.spec.to_dict(), indent=2) + "\n")
            with atomic.together(overwrite=overwrite) as files:
                for p in Path(tmp).iterdir():
                    if p.is_file():
                        shutil.copyfile(p, files.path(folder / p.name))
    return folder
