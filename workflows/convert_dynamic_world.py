"""Convert Google's Dynamic World network into geoseg's bundled model, reproducibly.

    make dynamic-world DW=path/to/google/dynamicworld   # both steps, in two environments

or by hand, in two steps:

    # 1. in an environment with TensorFlow (requirements/convert.txt; not a geoseg
    #    dependency): the SavedModel's variables, its graph checked against what
    #    geoseg's network does, and its answers on probe inputs
    .venv-convert/bin/python workflows/convert_dynamic_world.py read CHECKOUT dw.npz
    # 2. in geoseg's environment: the torch network with those weights, checked against
    #    the probes, its ONNX graph checked against the network, the model folder written
    .venv/bin/python workflows/convert_dynamic_world.py write dw.npz geoseg/models/dynamic-world

``CHECKOUT`` is a clone of https://github.com/google/dynamicworld; its
``model/forward`` SavedModel is converted and its LICENSE and NOTICE are copied beside the
weights. The network (:mod:`geoseg.dynamic_world`) reads L1C digital numbers and holds
the notebook's normalization, so the probes of step 1 go through the notebook's own
numpy normalization and the SavedModel, and step 2 compares the torch network and the
ONNX graph on the same digital numbers. Step 2 fails (exit 1) if the largest logit
difference is over 1e-3.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import numpy as np

# The SavedModel's layers (Keras names) behind each of geoseg's units, in order: a unit
# is (convolution or depthwise convolution, its batch norm).
UNITS = {
    "stem": ("conv2d", "batch_normalization"),
    "stage1.body.0": ("conv2d_2", "batch_normalization_3"),
    "stage1.body.1.0": ("depthwise_conv2d_1", "batch_normalization_4"),
    "stage1.body.1.1": ("conv2d_3", "batch_normalization_5"),
    "stage1.body.2.0": ("depthwise_conv2d_2", "batch_normalization_6"),
    "stage1.body.2.1": ("conv2d_4", "batch_normalization_7"),
    "stage1.body.3": ("depthwise_conv2d_3", "batch_normalization_8"),
    "stage1.shortcut": ("conv2d_5", "batch_normalization_9"),
    "stage2.body.0": ("conv2d_6", "batch_normalization_10"),
    "stage2.body.1.0": ("depthwise_conv2d_4", "batch_normalization_11"),
    "stage2.body.1.1": ("conv2d_7", "batch_normalization_12"),
    "stage2.body.2.0": ("depthwise_conv2d_5", "batch_normalization_13"),
    "stage2.body.2.1": ("conv2d_8", "batch_normalization_14"),
    "stage2.body.3": ("depthwise_conv2d_6", "batch_normalization_15"),
    "stage2.shortcut": ("conv2d_9", "batch_normalization_16"),
    "side.0": ("conv2d_1", "batch_normalization_1"),
    "side.1": ("depthwise_conv2d", "batch_normalization_2"),
    "stage3.body.0": ("conv2d_10", "batch_normalization_17"),
    "stage3.body.1.0": ("depthwise_conv2d_7", "batch_normalization_18"),
    "stage3.body.1.1": ("conv2d_11", "batch_normalization_19"),
    "stage3.body.2.0": ("depthwise_conv2d_8", "batch_normalization_20"),
    "stage3.body.2.1": ("conv2d_12", "batch_normalization_21"),
    "stage3.body.3": ("depthwise_conv2d_9", "batch_normalization_22"),
    "stage3.shortcut": ("conv2d_13", "batch_normalization_23"),
}
HEAD = "conv2d_14"
# Probe sizes: even (as tiles), odd (TensorFlow's own scale), and not square.
PROBES = ((64, 64), (66, 70), (65, 67), (128, 96))
TOLERANCE = 1e-3  # largest |logit difference| accepted


def notebook_normalization(dn: np.ndarray) -> np.ndarray:
    """single_image_runner.ipynb's transfer, verbatim in numpy (``(H, W, 9)`` DN)."""
    p = np.array(_geoseg_module("dynamic_world").NORM_PERCENTILES)
    image = np.log(dn * 0.005 + 1)
    image = (image - p[:, 0]) / p[:, 1]
    image = np.exp(image * 5 - 1)
    return image / (image + 1)


def original(dn: np.ndarray, saved_model: Path) -> np.ndarray:
    """The original's class probabilities ``(H, W, 9)`` for digital numbers ``(H, W, 9)``,
    as its notebook computes them: normalized in float64 numpy, the whole image in one
    call of the SavedModel (TensorFlow), a softmax. The tests' references and the
    benchmark's original side are this function."""
    import tensorflow as tf

    image = notebook_normalization(dn.astype(np.float64))
    model = tf.saved_model.load(str(saved_model))
    logits = model(tf.expand_dims(tf.cast(image, dtype=tf.float32), axis=0))
    return np.array(tf.nn.softmax(logits))[0]


def _geoseg_module(name: str) -> object:
    """A module of geoseg read from this checkout by path, without importing geoseg
    (step 1's environment has TensorFlow, not geoseg's dependencies)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "geoseg" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"_geoseg_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe_inputs() -> list[np.ndarray]:
    """Digital numbers ``(H, W, 9)`` that span what L1C scenes hold (water to snow)."""
    rng = np.random.default_rng(2022)
    out = []
    for h, w in PROBES:
        base = rng.uniform(100, 6000, size=(1, 1, 9))
        field = np.exp(rng.normal(0, 0.6, size=(h, w, 9))) * base
        out.append(np.clip(np.round(field), 1, 20000).astype(np.float32))
    return out


def read(checkout: Path, out: Path) -> None:
    """Step 1 (TensorFlow): variables, graph check and probe answers → ``out`` (.npz)."""
    import tensorflow as tf

    saved = checkout / "model" / "forward"
    model = tf.saved_model.load(str(saved))
    signature = model.signatures["serving_default"]
    graph = signature.graph.as_graph_def()
    body = [f for f in graph.library.function
            if f.signature.name.startswith("__inference__wrapped_model")]
    if len(body) != 1:
        sys.exit(f"{saved}: not the Dynamic World forward graph (no single wrapped model)")
    ops = [n for n in body[0].node_def if n.op not in ("ReadVariableOp", "Const")]
    counts: dict[str, int] = {}
    for n in ops:
        counts[n.op] = counts.get(n.op, 0) + 1
    expected = {"Conv2D": 15, "DepthwiseConv2dNative": 10, "FusedBatchNormV3": 24,
                "Softplus": 24, "Tanh": 24, "ScaleAndTranslate": 1, "ResizeBilinear": 1,
                "ConcatV2": 1, "AddV2": 3, "Rsqrt": 1}
    wrong = {k: (counts.get(k, 0), v) for k, v in expected.items() if counts.get(k, 0) != v}
    if wrong:
        sys.exit(f"{saved}: the graph is not the one geoseg's network reproduces "
                 f"(op: found, expected): {wrong}")
    for n in ops:
        if n.op == "FusedBatchNormV3" and abs(n.attr["epsilon"].f - 1e-3) > 1e-9:
            sys.exit(f"{saved}: batch norm {n.name} has epsilon {n.attr['epsilon'].f}, not 1e-3")
        if n.op == "ScaleAndTranslate" and (n.attr["kernel_type"].s != b"triangle"
                                            or not n.attr["antialias"].b):
            sys.exit(f"{saved}: the downsampling is not an antialiased triangle filter")
        if n.op == "ResizeBilinear" and (n.attr["align_corners"].b
                                         or not n.attr["half_pixel_centers"].b):
            sys.exit(f"{saved}: the upsampling is not bilinear with half-pixel centres")
    arrays = {f"var/{v.name.split(':')[0]}": v.numpy() for v in model.variables}
    for k, dn in enumerate(probe_inputs()):
        x = notebook_normalization(dn.astype(np.float64))
        logits = signature(input_3=tf.constant(x[None].astype(np.float32)))
        arrays[f"probe/{k}/dn"] = dn
        arrays[f"probe/{k}/logits"] = next(iter(logits.values())).numpy()[0]
    arrays["meta/savedmodel_sha256"] = np.frombuffer(_digest(saved).encode(), dtype=np.uint8)
    arrays["meta/tensorflow"] = np.frombuffer(tf.__version__.encode(), dtype=np.uint8)
    np.savez(out, **arrays)
    print(f"{out}: {len(model.variables)} variables, {len(PROBES)} probes, "
          f"TensorFlow {tf.__version__}")


def _digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            digest.update(p.relative_to(folder).as_posix().encode())
            digest.update(p.read_bytes())
    return digest.hexdigest()


def state_dict(arrays: dict[str, np.ndarray]) -> dict[str, object]:
    """The TensorFlow variables as geoseg's network's state dict."""
    import torch

    var = {k[4:]: v for k, v in arrays.items() if k.startswith("var/")}
    state: dict[str, object] = {}
    used = set()
    for unit, (conv, bn) in UNITS.items():
        if conv.startswith("depthwise"):
            kernel = torch.from_numpy(var[f"{conv}/depthwise_kernel"]).permute(2, 3, 0, 1)
            used.add(f"{conv}/depthwise_kernel")
        else:
            kernel = torch.from_numpy(var[f"{conv}/kernel"]).permute(3, 2, 0, 1)
            used.add(f"{conv}/kernel")
        state[f"{unit}.conv.weight"] = kernel.contiguous()
        state[f"{unit}.conv.bias"] = torch.from_numpy(var[f"{conv}/bias"])
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"),
                             ("running_mean", "moving_mean"), ("running_var", "moving_variance")):
            state[f"{unit}.bn.{ours}"] = torch.from_numpy(var[f"{bn}/{theirs}"])
            used.add(f"{bn}/{theirs}")
        state[f"{unit}.bn.num_batches_tracked"] = torch.tensor(0)
        used.add(f"{conv}/bias")
    state["head.weight"] = torch.from_numpy(var[f"{HEAD}/kernel"]).permute(3, 2, 0, 1).contiguous()
    state["head.bias"] = torch.from_numpy(var[f"{HEAD}/bias"])
    used |= {f"{HEAD}/kernel", f"{HEAD}/bias"}
    if set(var) != used:
        sys.exit(f"variables left unconverted: {sorted(set(var) - used)}")
    return state


def write(npz: Path, out: Path, checkout: Path | None) -> None:
    """Step 2 (geoseg): the network with the weights, checked, saved as ``out``."""
    import torch

    import geoseg
    from geoseg import dynamic_world as dw
    from geoseg.model_export import onnx_graph
    from geoseg.runtimes import session

    arrays = dict(np.load(npz))
    network = dw.network()
    network.load_state_dict(state_dict(arrays), strict=True)
    network.eval()
    spec = card(arrays)
    model = geoseg.Model(network, spec)
    graph = onnx_graph(model)
    sess = session(graph)
    worst = {"torch": 0.0, "onnx (even probes)": 0.0}
    k = 0
    while f"probe/{k}/dn" in arrays:
        dn, ref = arrays[f"probe/{k}/dn"], arrays[f"probe/{k}/logits"]
        with torch.no_grad():
            got = network(torch.from_numpy(dn).permute(2, 0, 1)[None]).numpy()[0]
        worst["torch"] = max(worst["torch"], float(np.abs(got.transpose(1, 2, 0) - ref).max()))
        if dn.shape[0] % 2 == 0 and dn.shape[1] % 2 == 0:
            x = np.ascontiguousarray(dn.transpose(2, 0, 1)[None])
            onnx_out = sess.run(None, {sess.get_inputs()[0].name: x})[0][0]
            worst["onnx (even probes)"] = max(worst["onnx (even probes)"], float(
                np.abs(onnx_out.transpose(1, 2, 0) - ref).max()))
        k += 1
    print("largest |logit difference| against the SavedModel:",
          ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    if max(worst.values()) > TOLERANCE:
        sys.exit(f"the conversion differs from the SavedModel by more than {TOLERANCE}")
    geoseg.Model(network, spec, onnx=graph).save(out / "model.json")
    if checkout is not None:
        for name in ("LICENSE", "NOTICE"):
            shutil.copyfile(checkout / name, out / name)
    print(f"{out}: written")


def card(arrays: dict[str, np.ndarray]) -> object:
    from geoseg import dynamic_world as dw
    from geoseg.model import ClassInfo, ModelSpec

    classes = tuple(ClassInfo(name, (int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)))
                    for name, c in dw.CLASSES)
    n = len(dw.BANDS)
    return ModelSpec(
        name="dynamic-world",
        bands=tuple(s2 for s2, _ in dw.BANDS),
        # The network reads L1C digital numbers (reflectance x 10 000) and normalizes
        # them itself: the card only turns a product's stored values into those.
        units="reflectance", scale=(1e-4,) * n, offset=(0.0,) * n,
        mean=(0.0,) * n, std=(1e-4,) * n,
        classes=classes, architecture=dw.ARCHITECTURE, encoder="", encoder_depth=1,
        decoder_channels=(), tile_size=320, overlap=2 * dw.CONTEXT + 16,
        resolution=10.0, outputs="logits", runtime="onnxruntime",
        description=(
            "Dynamic World V1 (Google and the World Resources Institute; Brown et al. 2022, "
            "Scientific Data, doi:10.1038/s41597-022-01307-4): 9-class global land cover "
            "from one Sentinel-2 L1C scene at 10 m. Input: L1C bands B2 B3 B4 B5 B6 B7 B8 "
            "B11 B12 as digital numbers (reflectance x 10000; the baseline 04.00 offset is "
            "taken off from the product's metadata), 20 m bands bilinear onto the 10 m "
            "grid; the notebook's normalization is inside the network. Produced for the "
            "Dynamic World Project by Google in partnership with National Geographic and "
            "the World Resources Institute. Apache-2.0: see LICENSE and NOTICE beside it."),
        source={"format": "tensorflow-savedmodel",
                "origin": "https://github.com/google/dynamicworld model/forward",
                "sha256": bytes(arrays["meta/savedmodel_sha256"]).decode(),
                "converted_by": "workflows/convert_dynamic_world.py",
                "tensorflow": bytes(arrays["meta/tensorflow"]).decode(),
                "license": "Apache-2.0"},
        context=dw.CONTEXT, processing_level="L1C",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    r = sub.add_parser("read", help="step 1, with TensorFlow")
    r.add_argument("checkout", type=Path)
    r.add_argument("npz", type=Path)
    w = sub.add_parser("write", help="step 2, with geoseg")
    w.add_argument("npz", type=Path)
    w.add_argument("out", type=Path)
    w.add_argument("--checkout", type=Path, help="copy its LICENSE and NOTICE beside")
    args = parser.parse_args()
    if args.step == "read":
        read(args.checkout, args.npz)
    else:
        write(args.npz, args.out, args.checkout)


if __name__ == "__main__":
    main()
