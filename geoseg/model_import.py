"""``geoseg models import``: a model from elsewhere becomes a geoseg model folder.

A source is one of

* an ONNX file. Its metadata is read as the Deepness plugin writes it (``model_type``,
  ``class_names``, ``resolution`` in cm/px, ``tile_size``, ``tiles_overlap`` in %,
  ``standardization_mean``/``_std`` on the plugin's 0-1 scale: every input value divided
  by 255), or as geoseg's own export writes it (``geoseg_card``); a JSON beside it is read
  as ukis-csmask writes one (``data.dataset_statistics.img`` = [mean, std],
  ``band_names``, ``target_size``) or as a geoseg card;
* a segmentation-models-pytorch ``save_pretrained`` folder (``config.json`` with
  ``_model_class``, ``model.safetensors``), built with ``encoder_weights=None``;
* a state-dict checkpoint (``.pth .pt .ckpt .bin .safetensors``: TorchGeo weights, a
  Lightning checkpoint with ``state_dict`` and a ``model.`` prefix…), read by torch's
  restricted unpickler (``weights_only=True``): plain tensors need no trust, anything that
  needs full unpickling is refused unless ``trust_pickle``;
* a reference (``https://``, ``file://``, ``hf://ORG/REPO[@REV][/PATH]``), downloaded once
  into the cache (:mod:`geoseg.downloads`).

What the source does not say comes from the caller (flags, or a YAML card with the same
keys), which also overrides what it does say. The result works wherever ``--model`` does;
its card records the source (format, origin, sha256) and the runtime.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg import atomic, maskfile
from geoseg.downloads import fetch_if_there, fetch_reference, file_sha256, is_reference
from geoseg.errors import InputError, ModelError, warn
from geoseg.model import (
    CARD_FORMAT,
    ONNX,
    PICKLE_SUFFIXES,
    ClassInfo,
    Model,
    ModelSpec,
    card_and_weights,
    is_card,
    load_model,
    model_from_state,
    state_candidates,
)

if TYPE_CHECKING:
    import torch

STATE_SUFFIXES = (*PICKLE_SUFFIXES, ".safetensors")
DEFAULT_CPU_RUNTIME = "onnxruntime"  # 1.47x torch's speed on CPU (python -m benchmarks runtimes)
ONNX_STRIDE_DEPTH = 5  # a dynamic ONNX graph takes tiles in multiples of 2**5 (U-Nets)
# TorchGeo's task names for smp architectures (its Lightning checkpoints' hyper_parameters).
TORCHGEO_MODELS = {"unet": "Unet", "deeplabv3+": "DeepLabV3Plus", "fpn": "FPN"}
SETTINGS = ("name", "description", "bands", "classes", "mean", "std", "scale", "offset",
            "tile_size", "resolution", "overlap", "outputs", "architecture", "encoder",
            "runtime", "units")


@dataclass
class Settings:
    """What is known of a model's use: from its source, then overridden by the caller.
    ``None`` (or an empty value) means not said."""

    values: dict[str, Any] = field(default_factory=dict)

    def update(self, values: dict[str, Any], by: str) -> None:
        for key, value in values.items():
            if value is None or (isinstance(value, (list, tuple)) and not value):
                continue
            if key not in SETTINGS:
                raise InputError(f"{by}: unknown setting {key!r} (known: {', '.join(SETTINGS)})")
            self.values[key] = value

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


def import_model(src: str | os.PathLike[str], out: str | os.PathLike[str], *,
                 sha256: str | None = None, card: str | os.PathLike[str] | None = None,
                 trust_pickle: bool = False, overwrite: bool = False,
                 **settings: Any) -> Model:
    """Import the model at ``src`` (see the module's text) into the folder ``out``
    (``model.json`` plus ``model.safetensors`` and/or ``model.onnx``); returns it.

    ``card`` is a YAML file of settings; keyword ``settings`` (``bands``, ``classes`` as
    names or ``name=#rrggbb``, ``mean``, ``std``, ``scale``, ``offset`` as one value or one
    per band, ``units`` (what the network reads, e.g. ``reflectance``), ``tile_size``,
    ``resolution`` in metres, ``overlap`` in pixels, ``outputs`` ``logits|probabilities``,
    ``architecture``/``encoder`` for a bare state dict, ``runtime``, ``name``,
    ``description``) override both it and the source.
    """
    folder = Path(out)
    targets = [folder / "model.json", folder / "model.safetensors", folder / "model.onnx"]
    with atomic.outputs(targets, overwrite=overwrite):
        text = os.fspath(src)
        sidecar = None
        if is_reference(text):
            path, origin = fetch_reference(text, sha256=sha256), text
            if path.suffix.lower() == ".onnx" and text.lower().endswith(".onnx"):
                sidecar = fetch_if_there(text[:-len(".onnx")] + ".json")
        else:
            path, origin = Path(text), str(Path(text).resolve())
            if not path.exists():
                raise InputError("no such file or folder", path)
            if sha256 and path.is_file():
                from geoseg.downloads import check_sha256

                check_sha256(path, sha256, path)
        user = Settings()
        if card is not None:
            user.update(read_settings_file(card), str(card))
        user.update({k: v for k, v in settings.items() if k in SETTINGS}, "the caller")
        unknown = sorted(set(settings) - set(SETTINGS))
        if unknown:
            raise InputError(f"unknown setting {unknown[0]!r}")
        model = _import(path, origin, user, trust_pickle=trust_pickle, sidecar=sidecar)
        model.save(folder, overwrite=overwrite)
        model.path = folder / "model.json"
    return model


def _import(path: Path, origin: str, user: Settings, *, trust_pickle: bool,
            sidecar: Path | None = None) -> Model:
    if path.is_dir():
        if (path / "model.json").exists() and is_card(path / "model.json"):
            return _from_geoseg(path / "model.json", origin, user)
        if (path / "config.json").exists():
            return _from_smp_folder(path, origin, user, trust_pickle=trust_pickle)
        raise InputError("is a folder without config.json (an smp save_pretrained folder) "
                         "or model.json (a geoseg model)", path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _from_onnx(path, origin, user, sidecar or path.with_suffix(".json"))
    if suffix == ".json" and is_card(path):
        return _from_geoseg(path, origin, user)
    if suffix in STATE_SUFFIXES:
        if suffix == ".safetensors" and is_card(card_and_weights(path)[0]):
            return _from_geoseg(card_and_weights(path)[0], origin, user)
        return _from_state_file(path, origin, user, trust_pickle=trust_pickle)
    raise InputError(f"cannot tell what model this is from its name (an .onnx file, an smp "
                     f"folder, or a checkpoint: {', '.join(STATE_SUFFIXES)})", path)


# --- what each kind of source says ---------------------------------------------------

def _from_geoseg(card: Path, origin: str, user: Settings) -> Model:
    model = load_model(card)
    source = {"format": "geoseg", "origin": origin}
    return _finish(model.network, model.graph, model.spec, user, source)


def _from_onnx(path: Path, origin: str, user: Settings, beside: Path) -> Model:
    from geoseg.runtimes import graph_signature, session

    where = origin if is_reference(origin) else path  # what messages call it
    graph, metadata, final_op = read_onnx(path)
    said = Settings()
    fmt = "onnx"
    if "geoseg_card" in metadata:
        fmt = "geoseg onnx"
        try:
            card = ModelSpec.from_dict(json.loads(metadata["geoseg_card"]))
        except (ValueError, ModelError) as exc:
            raise ModelError(f"its geoseg_card metadata is not a geoseg card ({exc})", where) from None
        said.update(card_settings(card), "geoseg")
    elif _deepness_keys(metadata):
        fmt = "deepness"
        said.update(_deepness_settings(metadata, path), "its Deepness metadata")
    if beside.exists() and fmt == "onnx":
        found = _sidecar_settings(beside)
        if found is not None:
            fmt = found.pop("_format")
            said.update(found, str(beside))
    sig = graph_signature(graph)
    sess = session(graph)
    size = sig.fixed_size
    channels = sig.input_shape[1]
    merged = _merge(said, user)
    n_bands = len(merged.get("bands") or []) or (channels if isinstance(channels, int) else None)
    if n_bands is None:
        raise ModelError("the ONNX graph does not say how many bands it reads: give the bands",
                         where)
    if isinstance(channels, int) and channels != n_bands:
        raise ModelError(f"the ONNX graph reads {channels} bands but {n_bands} were named", where)
    tile = size or merged.get("tile_size") or 512
    probe = _probe_onnx(sess, sig, n_bands, tile if size else min(tile, 256), where)
    if "outputs" not in merged.values:
        merged.update({"outputs": "probabilities" if final_op in ("Softmax", "Sigmoid")
                       else "logits"}, f"its final {final_op or 'node'}")
    spec_values = _spec_values(merged, n_bands=n_bands, n_outputs=probe, path=where,
                               name=default_name(origin))
    spec = ModelSpec(architecture=ONNX, encoder="", decoder_channels=(),
                     encoder_depth=ONNX_STRIDE_DEPTH, input_size=size,
                     tile_size=size or spec_values.pop("tile_size", None) or 512,
                     runtime="onnxruntime",
                     source={"format": fmt, "origin": origin, "sha256": file_sha256(path)},
                     **{k: v for k, v in spec_values.items() if k != "tile_size"})
    return Model(None, spec, onnx=graph)


def _from_smp_folder(folder: Path, origin: str, user: Settings, *, trust_pickle: bool) -> Model:
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the smp config ({exc})", config_path) from None
    if not isinstance(config, dict) or "_model_class" not in config:
        raise ModelError("has no _model_class: not a segmentation-models-pytorch save_pretrained "
                         "config", config_path)
    said = Settings()
    geoseg_card = folder / "geoseg.json"  # what geoseg's smp export puts beside
    if geoseg_card.exists():
        card = ModelSpec.from_dict(json.loads(geoseg_card.read_text()))
        said.update(card_settings(card), "geoseg.json")
    weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin")
                    if (folder / n).exists()), None)
    if weights is None:
        raise ModelError("has no model.safetensors", folder)
    state = read_state_file(weights, trust_pickle=trust_pickle)
    architecture = str(config["_model_class"])
    options = {k: v for k, v in config.items()
               if k not in ("_model_class", "encoder_weights", "in_channels", "classes",
                            "encoder_name", "encoder_depth", "decoder_channels")}
    activation = options.get("activation")
    if activation not in (None, "identity", "logsoftmax"):
        said.update({"outputs": "probabilities"}, f"its activation {activation!r}")
    net = {"architecture": architecture, "encoder": config.get("encoder_name", "resnet34"),
           "encoder_depth": int(config.get("encoder_depth", 5)),
           "decoder_channels": _decoder_channels(architecture, config),
           "network_options": options}
    n_bands = int(config.get("in_channels", 3))
    n_classes = int(config.get("classes", 1))
    return _torch_model(state, net, said, user, n_bands=n_bands, n_outputs=n_classes,
                        source={"format": "smp", "origin": origin,
                                "sha256": file_sha256(weights)}, where=folder)


def _from_state_file(path: Path, origin: str, user: Settings, *, trust_pickle: bool) -> Model:
    obj = read_state_file(path, trust_pickle=trust_pickle, whole=True)
    fmt = "state_dict"
    said = Settings()
    hyper = obj.get("hyper_parameters") if isinstance(obj, dict) else None
    if isinstance(hyper, dict):  # a Lightning checkpoint (TorchGeo's task names its net)
        fmt = "lightning"
        arch = TORCHGEO_MODELS.get(str(hyper.get("model", "")).lower())
        said.update({"architecture": arch, "encoder": hyper.get("backbone")},
                    "its hyper_parameters")
    merged = _merge(said, user)
    architecture = merged.get("architecture", "Unet")
    encoder = merged.get("encoder")
    if encoder is None:
        raise ModelError("a bare state dict does not say its network: give the encoder "
                         "(and the architecture unless it is Unet), e.g. ${encoder=resnet34}", path)
    candidates = state_candidates(obj, path)
    first_error: ModelError | None = None
    for state in candidates:
        try:
            net = _network_from_shapes(architecture, encoder, state, path)
        except ModelError as exc:
            first_error = first_error or exc
            continue
        try:
            return _torch_model(state, net, said, user, n_bands=net.pop("_in"),
                                n_outputs=net.pop("_out"),
                                source={"format": fmt, "origin": origin,
                                        "sha256": file_sha256(path)}, where=path)
        except ModelError as exc:
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


# --- torch networks ------------------------------------------------------------------

def read_state_file(path: Path, *, trust_pickle: bool, whole: bool = False) -> Any:
    """A checkpoint's content: safetensors tensors, or what torch's restricted unpickler
    reads (plain tensors and containers); a pickle that needs more is refused unless
    trusted. ``whole``: the whole object (a Lightning dict), else its state dict."""
    import pickle

    import torch

    if path.suffix.lower() == ".safetensors":
        from geoseg.model import read_weights

        return read_weights(path)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust_pickle:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            detail = f" (it asks for {found.group(1)})" if found else ""
            raise ModelError(f"holds objects beyond tensors{detail}, and unpickling them can "
                             f"run code: refused (if you trust this file, add "
                             f"${{trust_pickle=True}})", path) from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:  # any unpickling failure: not a torch checkpoint
            raise ModelError(f"cannot load the checkpoint ({type(exc2).__name__}: {exc2})",
                             path) from None
    except Exception as exc:  # zip/pickle/EOF errors: not a torch checkpoint at all
        # torch's own message helps for a broken zip; an unpickler's KeyError or EOFError
        # on bytes that are no pickle says nothing.
        text = str(exc).strip() if isinstance(exc, RuntimeError) else ""
        detail = text.splitlines()[0] if text else ""
        raise ModelError("is not a torch checkpoint" + (f" ({detail})" if detail else ""),
                         path) from None
    if whole:
        return obj
    return state_candidates(obj, path)[0]


def _network_from_shapes(architecture: str, encoder: str, state: dict[str, torch.Tensor],
                         path: Path) -> dict[str, Any]:
    """What the tensors say of an smp network: bands (the first convolution's inputs),
    outputs (the segmentation head's), and for a U-Net its decoder's channels."""
    convs = [v for v in state.values() if v.ndim == 4]
    head = [k for k in state if k.startswith("segmentation_head.") and k.endswith(".weight")
            and state[k].ndim == 4]
    if not convs or not head:
        raise ModelError("its tensors are not a segmentation-models-pytorch network (no "
                         "segmentation_head)", path)
    net: dict[str, Any] = {"architecture": architecture, "encoder": encoder,
                           "_in": int(convs[0].shape[1]), "_out": int(state[head[-1]].shape[0]),
                           "network_options": {}}
    blocks = sorted({int(m.group(1)) for k in state
                     if (m := re.match(r"decoder\.blocks\.(\d+)\.conv1\.0\.weight$", k))})
    if architecture in ("Unet", "UnetPlusPlus") and blocks:
        net["encoder_depth"] = len(blocks)
        net["decoder_channels"] = tuple(int(state[f"decoder.blocks.{i}.conv1.0.weight"].shape[0])
                                        for i in blocks)
    else:
        net["encoder_depth"] = 5
        net["decoder_channels"] = _decoder_channels(architecture, {})
    return net


def _decoder_channels(architecture: str, config: dict[str, Any]) -> tuple[int, ...]:
    """A U-Net's decoder channels (the config's, or the class's default); other
    architectures keep theirs in their options."""
    import inspect

    import segmentation_models_pytorch as smp

    value = config.get("decoder_channels")
    if value is None:
        cls = getattr(smp, architecture, None)
        if cls is None:
            raise ModelError(f"unknown architecture {architecture!r}")
        param = inspect.signature(cls).parameters.get("decoder_channels")
        value = None if param is None else param.default
    if isinstance(value, (list, tuple)):
        depth = int(config.get("encoder_depth", len(value)))
        return tuple(int(v) for v in value)[:depth]
    return ()


def _torch_model(state: dict[str, torch.Tensor], net: dict[str, Any], said: Settings,
                 user: Settings, *, n_bands: int, n_outputs: int, source: dict[str, Any],
                 where: Path) -> Model:
    merged = _merge(said, user)
    if "architecture" in user.values or "encoder" in user.values:
        net = {**net, **{k: user.values[k] for k in ("architecture", "encoder")
                         if k in user.values}}
    values = _spec_values(merged, n_bands=n_bands, n_outputs=n_outputs, path=where,
                          name=default_name(source["origin"]))
    n_classes = len(values["classes"])
    options = dict(net.get("network_options", {}))
    if n_outputs != n_classes:  # one sigmoid channel for two classes: the network keeps 1
        options["classes"] = n_outputs
    runtime = user.get("runtime", DEFAULT_CPU_RUNTIME)
    spec = ModelSpec(architecture=net["architecture"], encoder=net["encoder"],
                     encoder_depth=net.get("encoder_depth", 5),
                     decoder_channels=tuple(net.get("decoder_channels", ())),
                     network_options=options, runtime=runtime, source=source,
                     **{**values, "tile_size": values.get("tile_size") or 512})
    model = model_from_state(spec, state, where)
    if runtime == "onnxruntime":
        from geoseg.model_export import with_onnx

        return with_onnx(model)
    return Model(model.network, spec)


def _finish(network: Any, graph: bytes | None, spec: ModelSpec, user: Settings,
            source: dict[str, Any]) -> Model:
    """A geoseg model imported again: the caller's settings over its card."""
    values = {k: v for k, v in user.values.items() if k not in ("architecture", "encoder")}
    if "classes" in values:
        values["classes"] = tuple(_classes(values["classes"]))
    for key in ("mean", "std", "scale", "offset"):
        if key in values:
            values[key] = _per_band(values[key], len(spec.bands), key)
    if "bands" in values:
        values["bands"] = tuple(values["bands"])
    spec = replace(spec, source=spec.source or source, **values)
    if spec.runtime == "onnxruntime" and graph is None and network is not None:
        from geoseg.model_export import with_onnx

        return with_onnx(Model(network, spec))
    return Model(network, spec, onnx=graph)


# --- settings ------------------------------------------------------------------------

def card_settings(card: ModelSpec) -> dict[str, Any]:
    """What a geoseg card says of a model's use, as import settings (its network is the
    source's own: architecture, encoder and runtime are left out)."""
    return {k: list(card.classes) if k == "classes" else getattr(card, k) for k in SETTINGS
            if k not in ("architecture", "encoder", "runtime")}


def _merge(said: Settings, user: Settings) -> Settings:
    merged = Settings(dict(said.values))
    merged.values.update(user.values)
    return merged


def default_name(origin: str) -> str:
    """A model's name from where it came from: the file or folder name without its suffix
    (and a hub reference's revision)."""
    return Path(origin.rstrip("/")).stem.split("@")[0] or "model"


def _spec_values(merged: Settings, *, n_bands: int, n_outputs: int, path: Path | str,
                 name: str) -> dict[str, Any]:
    """The card's fields from the merged settings, with defaults for what nobody said
    (and a warning for the normalization, which decides whether the model sees anything)."""
    bands = tuple(merged.get("bands") or (f"band_{i + 1}" for i in range(n_bands)))
    if len(bands) != n_bands:
        raise ModelError(f"the network reads {n_bands} bands but {len(bands)} were named", path)
    n_classes = 2 if n_outputs == 1 else n_outputs
    classes = _classes(merged.get("classes") or [f"class_{i}" for i in range(n_classes)])
    if len(classes) != n_classes:
        raise ModelError(f"the network gives {n_outputs} output channel{'s' * (n_outputs != 1)} "
                         f"({n_classes} classes) but {len(classes)} class names were given", path)
    if "mean" not in merged.values and "std" not in merged.values:
        warn("no normalization given or found: the network sees the values as they are "
             "(mean 0, std 1); give the mean and std it was trained with", path)
    values: dict[str, Any] = {
        "name": merged.get("name") or name,
        "description": merged.get("description") or "",
        "bands": bands, "classes": tuple(classes),
        "mean": _per_band(merged.get("mean", 0.0), n_bands, "mean"),
        "std": _per_band(merged.get("std", 1.0), n_bands, "std"),
        "scale": _per_band(merged.get("scale", ()), n_bands, "scale"),
        "offset": _per_band(merged.get("offset", ()), n_bands, "offset"),
        "units": str(merged.get("units") or ""),
        "outputs": merged.get("outputs", "logits"),
        "resolution": merged.get("resolution"),
        "overlap": merged.get("overlap"),
        "tile_size": merged.get("tile_size"),
    }
    return values


def _per_band(value: Any, n: int, name: str) -> tuple[float, ...]:
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return ()
    values = [value] if isinstance(value, (int, float)) else list(value)
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers, not {value!r}") from None
    if len(floats) == 1:
        floats *= n
    if len(floats) != n:
        raise InputError(f"{len(floats)} {name} values for {n} bands")
    if not all(math.isfinite(v) for v in floats):
        raise InputError(f"{name} values must be finite")
    return tuple(floats)


def _classes(values: Any) -> list[ClassInfo]:
    """Classes from names, ``name=#rrggbb``, ``{name: color}`` or ClassInfo objects."""
    if isinstance(values, dict):
        values = [f"{k}={v}" if v is not None else k for k, v in values.items()]
    out = []
    for i, v in enumerate(values):
        if isinstance(v, ClassInfo):
            out.append(v)
            continue
        if isinstance(v, dict):
            out.append(ClassInfo(str(v["name"]), tuple(v["color"])))
            continue
        name, _, color = str(v).partition("=")
        out.append(ClassInfo(name.strip(), parse_color(color) if color else
                             maskfile.default_color(i)))
    return out


def parse_color(text: str) -> tuple[int, int, int]:
    """``#rrggbb`` or ``r,g,b`` → an RGB triple."""
    text = text.strip()
    if re.fullmatch(r"#?[0-9A-Fa-f]{6}", text):
        h = text.lstrip("#")
        return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    parts = text.split(",")
    if len(parts) == 3 and all(p.strip().isdigit() and int(p) <= 255 for p in parts):
        return (int(parts[0]), int(parts[1]), int(parts[2]))
    raise InputError(f"colour {text!r} is not #rrggbb or r,g,b")


def read_settings_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A YAML (or JSON) card of import settings, with the keys of :func:`import_model`."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"is not a readable YAML card ({first})", path) from None
    if not isinstance(data, dict):
        raise InputError("a YAML card must be a mapping of settings", path)
    data = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(SETTINGS))
    if unknown:
        raise InputError(f"unknown setting {unknown[0]!r} (known: {', '.join(SETTINGS)})", path)
    return data


# --- ONNX ----------------------------------------------------------------------------

def read_onnx(path: Path) -> tuple[bytes, dict[str, str], str | None]:
    """An ONNX file as self-contained bytes (external data, which must lie in the file's
    own folder, read in), its metadata, and the op type that makes its first output."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ModelError(f"is not an ONNX model ({type(exc).__name__})", path) from None
    base = path.parent.resolve()
    external = False
    for tensor in _all_tensors(proto):
        if uses_external_data(tensor):
            external = True
            location = ExternalDataInfo(tensor).location
            target = (base / location).resolve()
            if os.path.isabs(location) or not target.is_relative_to(base):
                raise ModelError(f"its external data {location!r} lies outside the model's "
                                 f"folder: refused", path)
            if not target.is_file():
                raise ModelError(f"its external data {location!r} is missing", path)
    if external:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(proto, str(base))
    metadata = {p.key: p.value for p in proto.metadata_props}
    producers = {o: n.op_type for n in proto.graph.node for o in n.output}
    inputs_of = {o: list(n.input) for n in proto.graph.node for o in n.output}
    name = proto.graph.output[0].name if proto.graph.output else None
    final = producers.get(name) if name else None
    while final in ("Identity", "Cast") and name in inputs_of:  # look through a cast
        name = inputs_of[name][0]
        final = producers.get(name)
    try:
        graph = bytes(proto.SerializeToString())
    except ValueError:
        raise ModelError("is over 2 GB with its external data: too large to import", path) from None
    return graph, metadata, final


def _all_tensors(proto: Any) -> list[Any]:
    """Every tensor of a model: initializers and constant attributes, in subgraphs too."""
    found: list[Any] = []

    def walk(graph: Any) -> None:
        found.extend(graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    found.append(attr.t)
                found.extend(attr.tensors)
                if attr.HasField("g"):
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(proto.graph)
    return found


def _probe_onnx(sess: Any, sig: Any, n_bands: int, size: int, path: Path | str) -> int:
    """Run the graph once on zeros: its output must be one map per class at the input's
    size; returns the number of output channels."""
    import numpy as np

    dtype = np.float16 if sig.input_type == "tensor(float16)" else np.float32
    x = np.zeros((sig.fixed_batch or 1, n_bands, size, size), dtype)
    try:
        out = sess.run([sig.output_name], {sig.input_name: x})[0]
    except Exception as exc:  # onnxruntime's own exception types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"the ONNX graph does not run on a {size} px tile of {n_bands} bands "
                         f"({first[:200]})", path) from None
    if out.ndim != 4 or tuple(out.shape[2:]) != (size, size):
        raise ModelError(f"the ONNX graph gives {list(out.shape)} for a {size} px tile: not a "
                         f"map per class at the input's size", path)
    return int(out.shape[1])


def _deepness_keys(metadata: dict[str, str]) -> bool:
    return any(k in metadata for k in ("model_type", "class_names", "names", "tile_size",
                                       "standardization_mean", "resolution"))


def _json_value(metadata: dict[str, str], key: str, path: Path) -> Any:
    text = metadata[key]
    try:
        return json.loads(text)
    except ValueError:
        try:  # as Deepness does for {0: 'name'} written with Python's repr
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ModelError(f"its metadata {key!r} is not JSON: {text[:60]!r}", path) from None


def _deepness_settings(metadata: dict[str, str], path: Path) -> dict[str, Any]:
    """What Deepness metadata says, in geoseg's terms (its inputs are raw / 255)."""
    said: dict[str, Any] = {}
    if "model_type" in metadata:
        kind = str(_json_value(metadata, "model_type", path)).capitalize()
        if kind != "Segmentor":
            raise ModelError(f"is a Deepness {kind} model; geoseg runs segmentation models "
                             f"(Segmentor)", path)
    for key in ("class_names", "names"):
        if key in metadata:
            names = _json_value(metadata, key, path)
            if isinstance(names, dict):
                ordered = sorted(names.items(), key=lambda kv: int(kv[0]))
                if [int(k) for k, _ in ordered] != list(range(len(ordered))):
                    raise ModelError("its class_names are not numbered 0, 1, 2…", path)
                said["classes"] = [str(v) for _, v in ordered]
            elif isinstance(names, list):
                said["classes"] = [str(v) for v in names]
            break
    if "resolution" in metadata:
        said["resolution"] = float(_json_value(metadata, "resolution", path)) / 100
    if "tile_size" in metadata:
        said["tile_size"] = int(_json_value(metadata, "tile_size", path))
    if "tiles_overlap" in metadata and "tile_size" in said:
        percent = float(_json_value(metadata, "tiles_overlap", path))
        said["overlap"] = round(said["tile_size"] * percent / 100)
    said["scale"] = 1 / 255
    mean = _json_value(metadata, "standardization_mean", path) if (
        "standardization_mean" in metadata) else 0.0
    std = _json_value(metadata, "standardization_std", path) if (
        "standardization_std" in metadata) else 1.0
    said["mean"], said["std"] = mean, std
    said["outputs"] = "probabilities"  # the plugin takes a Segmentor's output as 0-1
    return said


def _sidecar_settings(path: Path) -> dict[str, Any] | None:
    """A JSON beside an ONNX file: a geoseg card, or ukis-csmask's model JSON."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("format") == CARD_FORMAT:
        card = ModelSpec.from_dict(data)
        found = card_settings(card)
        return {**found, "_format": "onnx + geoseg card"}
    stats = data.get("data", {}).get("dataset_statistics") if isinstance(data.get("data"), dict) else None
    if isinstance(stats, dict) and isinstance(stats.get("img"), list) and len(stats["img"]) == 2:
        found = {"mean": stats["img"][0], "std": stats["img"][1],
                 "bands": stats.get("band_names"), "_format": "onnx + ukis json"}
        size = data["data"].get("target_size")
        if isinstance(size, list) and size and isinstance(size[0], int):
            found["tile_size"] = size[0]
        model = data.get("model")
        if isinstance(model, dict) and model.get("version"):
            found["description"] = (f"{model.get('decoder_name', '')} / "
                                    f"{model.get('encoder_name', '')}, version {model['version']}")
        return found
    return None

