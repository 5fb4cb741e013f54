"""Models: a declarative :class:`ModelSpec` (the card, JSON) plus the network, stored as
safetensors weights of a segmentation-models-pytorch network, an ONNX graph, or both.

The spec is the single source of truth for the bands a model reads, how raw pixel values
become its input (scale and offset to its units, then mean and std), which classes it
predicts (names and colors), the tile size it was trained on (or the one size its input
takes), what its output is (logits or probabilities), the runtime that runs it on a CPU and
where it came from. Loading never unpickles anything: the card is JSON, the weights are
safetensors and an ONNX graph is protobuf data. A torch pickle checkpoint (``.pt``, ``.pth``, ``.ckpt``…)
can run code when it is loaded: it is refused unless the caller trusts it
(``trust_pickle=True``, ``--trust-pickle``), and even then it is read in this process only
and travels on as safetensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import ModelError

if TYPE_CHECKING:
    import torch

CARD_FORMAT = "geoseg-model/1"
BUNDLED = ("default", "dynamic-world")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")
ONNX = "onnx"  # the architecture of a model whose network is an ONNX graph (model.onnx)
RUNTIMES = ("torch", "onnxruntime")
OUTPUTS = ("logits", "probabilities")
PROCESSING_LEVELS = ("", "L1C", "L2A")


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its name and display color (RGB, 0-255)."""

    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network and feed it the right pixels.

    A raw pixel value ``v`` of band ``b`` reaches the network as
    ``(v * scale[b] + offset[b] - mean[b]) / std[b]``: ``scale``/``offset`` turn the raster's
    values into the model's units (e.g. digital numbers into reflectance; empty: the units
    are the raster's own) and ``mean``/``std`` are in those units. ``resolution`` is the
    nominal ground sampling distance in metres (informational).

    ``architecture`` is an smp class name (``Unet``…; ``network_options`` are its further
    keyword arguments) or ``"onnx"`` for a network that exists only as an ONNX graph.
    ``input_size`` is set when the network takes tiles of that one size only; ``overlap``
    is the tile overlap in pixels its author recommends; ``outputs`` says whether the
    network ends in logits or in probabilities (a softmax or sigmoid inside it); ``runtime``
    is what runs it on a CPU (``onnxruntime`` needs an ONNX graph beside or instead of the
    weights); ``source`` records where it came from (format, origin, sha256);
    ``quantization`` how its ONNX graph was quantized, when it was
    (:mod:`geoseg.quantize`), empty for a float graph. ``context`` is, for a network whose
    answer a tile's edge changes only so far in, that distance in pixels (its reach; 0:
    unknown): tiles then start on the network's stride and blend only beyond it, so that a
    tiled map is the whole-image one (:mod:`geoseg.tiling`). ``processing_level`` is the
    Sentinel-2 level the model was made for (``L1C`` or ``L2A``; empty: any), so that a
    scene of the other level is told it.

    ``units`` names what the network's input values are before ``mean``/``std`` (e.g.
    ``"reflectance"``). A model that names units, or has a ``scale``/``offset``, reads
    physical values: where a scene declares its own scale and offset (STAC
    ``raster:bands``, the GeoTIFF's), those turn its values into physical ones instead of
    the card's (:meth:`conversion`). A model without either reads values as stored.
    """

    name: str
    bands: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[ClassInfo, ...]
    architecture: str = "Unet"
    encoder: str = "tu-mobilenetv3_small_100"
    encoder_depth: int = 3
    decoder_channels: tuple[int, ...] = (64, 32, 16)
    tile_size: int = 512
    resolution: float | None = None
    description: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    input_size: int | None = None
    overlap: int | None = None
    outputs: str = "logits"
    scale: tuple[float, ...] = ()
    offset: tuple[float, ...] = ()
    network_options: dict[str, Any] = field(default_factory=dict)
    runtime: str = "torch"
    source: dict[str, Any] = field(default_factory=dict)
    units: str = ""
    quantization: dict[str, Any] = field(default_factory=dict)
    context: int = 0
    processing_level: str = ""

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ModelError("invalid model card: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """All inconsistencies of the card (an empty list when it is sound)."""
        found = []
        n = len(self.bands)
        if n == 0:
            found.append("no input bands")
        if len(self.mean) != n or len(self.std) != n:
            found.append(f"{n} bands but {len(self.mean)} means and {len(self.std)} stds")
        if any(not math.isfinite(s) or s <= 0 for s in self.std):
            found.append("std values must be positive and finite")
        if any(not math.isfinite(m) for m in self.mean):
            found.append("mean values must be finite")
        if not 1 <= len(self.classes) <= 255:
            found.append(f"{len(self.classes)} classes; a uint8 mask holds 1 to 255")
        if len({c.name for c in self.classes}) != len(self.classes):
            found.append("class names must be unique")
        for c in self.classes:
            if len(c.color) != 3 or any(not 0 <= v <= 255 for v in c.color):
                found.append(f"class {c.name!r} color must be three values 0-255")
        if any(not 0 < c <= 4096 for c in self.decoder_channels):
            found.append("decoder_channels must be 1 to 4096")
        if n > 1024:
            found.append(f"{n} input bands; at most 1024")
        for name, values in (("scale", self.scale), ("offset", self.offset)):
            if len(values) not in (0, n):
                found.append(f"{n} bands but {len(values)} {name} values")
            if any(not math.isfinite(v) for v in values):
                found.append(f"{name} values must be finite")
        if any(v == 0 for v in self.scale):
            found.append("scale values must not be 0")
        if self.outputs not in OUTPUTS:
            found.append(f"outputs must be one of {', '.join(OUTPUTS)}")
        if self.runtime not in RUNTIMES:
            found.append(f"runtime must be one of {', '.join(RUNTIMES)}")
        elif self.architecture == ONNX and self.runtime != "onnxruntime":
            found.append("an onnx model runs on onnxruntime")
        if not 1 <= self.encoder_depth <= 8:  # and so size_multiple is small
            found.append("encoder_depth must be 1 to 8")
        else:
            if self.decoder_channels and len(self.decoder_channels) != self.encoder_depth:
                found.append("decoder_channels must have encoder_depth entries")
            if self.input_size is not None:
                if self.tile_size != self.input_size:
                    found.append(f"tile_size must be the network's input size {self.input_size}")
                if not 0 < self.input_size <= 8192:
                    found.append("input_size must be 1 to 8192")
            elif not 0 < self.tile_size <= 8192 or self.tile_size % self.size_multiple:
                found.append(f"tile_size must be a multiple of {self.size_multiple} "
                             f"up to 8192")
        if self.overlap is not None and not 0 <= 2 * self.overlap < self.tile_size:
            found.append("overlap must be at least 0 and less than half the tile size")
        if self.processing_level not in PROCESSING_LEVELS:
            found.append(f"processing_level must be one of {', '.join(PROCESSING_LEVELS[1:])}"
                         f" or empty")
        if not 0 <= self.context <= 1024:
            found.append("context must be 0 to 1024 pixels")
        elif self.overlap is not None and self.overlap < 2 * self.context:
            found.append(f"overlap must hold the context on both sides (at least "
                         f"{2 * self.context})")
        if self.resolution is not None and not (math.isfinite(self.resolution)
                                                and self.resolution > 0):
            found.append("resolution must be positive and finite")
        return found

    @property
    def size_multiple(self) -> int:
        """Tile sizes must be multiples of this (the encoder's total stride; 1 for a
        network that takes one input size only)."""
        return 1 if self.input_size is not None else 2**self.encoder_depth

    @property
    def physical(self) -> bool:
        """Whether the model reads physical values (a product's scale and offset applied)
        rather than values as stored."""
        return bool(self.units or self.scale or self.offset)

    def conversion(self, scale: Sequence[float] = (), offset: Sequence[float] = ()
                   ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per band ``(scale, offset)`` that turn a scene's stored values into the model's
        units: the scene's own (``scale``/``offset``, empty when it declares none) for a
        model that reads physical values, else the card's."""
        n = len(self.bands)
        if self.physical and (scale or offset):
            return tuple(scale) or (1.0,) * n, tuple(offset) or (0.0,) * n
        return self.scale or (1.0,) * n, self.offset or (0.0,) * n

    def normalization(self, scale: Sequence[float] = (), offset: Sequence[float] = ()
                      ) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(mean, std)`` in the stored units of a scene that declares ``scale`` and
        ``offset`` (see :meth:`conversion`), so that ``(v - mean) / std`` is the network's
        input exactly and scale and offset cost nothing per pixel (a negative scale gives
        a negative std)."""
        sc, of = self.conversion(scale, offset)
        mean = tuple((m - o) / s for m, o, s in zip(self.mean, of, sc, strict=True))
        std = tuple(d / s for d, s in zip(self.std, sc, strict=True))
        return mean, std

    @property
    def raw_mean(self) -> tuple[float, ...]:
        """The mean in the raster's own units: ``(mean - offset) / scale`` per band."""
        if not self.scale and not self.offset:
            return self.mean
        return self.normalization()[0]

    @property
    def raw_std(self) -> tuple[float, ...]:
        """The std in the raster's own units (``std / scale``; negative for a negative
        scale, so that ``(v - raw_mean) / raw_std`` is the network's input exactly)."""
        if not self.scale:
            return self.std
        return self.normalization()[1]

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def colors(self) -> list[tuple[int, int, int]]:
        return [c.color for c in self.classes]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = [{"name": c.name, "color": list(c.color)} for c in self.classes]
        return {"format": CARD_FORMAT, **d}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        """Build a spec from a parsed card, raising :class:`ModelError` on any defect."""
        if not isinstance(data, dict):
            raise ModelError("model card must be a JSON object")
        data = dict(data)
        fmt = data.pop("format", None)
        if fmt != CARD_FORMAT:
            raise ModelError(f"model card format {fmt!r} is not {CARD_FORMAT!r}")
        missing = [k for k in ("name", "bands", "mean", "std", "classes") if k not in data]
        if missing:
            raise ModelError(f"malformed model card: {', '.join(missing)} missing")
        for key, convert in _FIELDS.items():
            if key in data:
                try:
                    data[key] = convert(data[key])
                except (KeyError, TypeError, ValueError, OverflowError) as exc:
                    what = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
                    raise ModelError(f"malformed model card: {key}: {what}") from None
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ModelError(f"malformed model card: unknown field {unknown[0]!r}")
        return cls(**data)


def _text(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{v!r} is not a string")
    return v


def _number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{v!r} is not a number")
    return float(v)


def _integer(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{v!r} is not an integer")
    return v


def _list(v: Any) -> list[Any]:
    if not isinstance(v, (list, tuple)):
        raise TypeError(f"{v!r} is not a list")
    return list(v)


def _optional_number(v: Any) -> float | None:
    return None if v is None else _number(v)


def _mapping(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TypeError(f"{v!r} is not an object")
    return v


def _class(v: Any) -> ClassInfo:
    if not isinstance(v, dict):
        raise TypeError(f"{v!r} is not an object")
    return ClassInfo(_text(v["name"]), tuple(_integer(c) for c in _list(v["color"])))  # type: ignore[arg-type]


# How each card field is read from JSON, which may give any type anywhere.
_FIELDS: dict[str, Any] = {
    "name": _text, "architecture": _text, "encoder": _text, "description": _text,
    "encoder_depth": _integer, "tile_size": _integer, "resolution": _optional_number,
    "metrics": _mapping, "network_options": _mapping, "source": _mapping,
    "quantization": _mapping,
    "outputs": _text, "runtime": _text, "units": _text,
    "input_size": lambda v: None if v is None else _integer(v),
    "overlap": lambda v: None if v is None else _integer(v),
    "context": _integer, "processing_level": _text,
    "bands": lambda v: tuple(_text(b) for b in _list(v)),
    "mean": lambda v: tuple(_number(x) for x in _list(v)),
    "std": lambda v: tuple(_number(x) for x in _list(v)),
    "scale": lambda v: tuple(_number(x) for x in _list(v)),
    "offset": lambda v: tuple(_number(x) for x in _list(v)),
    "decoder_channels": lambda v: tuple(_integer(x) for x in _list(v)),
    "classes": lambda v: tuple(_class(c) for c in _list(v)),
}


@dataclass
class Model:
    """A network together with the spec that describes its inputs and outputs.

    ``network`` is the torch network (``None`` for a model that exists only as an ONNX
    graph) and ``onnx`` the serialized ONNX graph (``None`` when there is none).
    """

    network: torch.nn.Module | None
    spec: ModelSpec
    path: Path | None = None
    onnx: bytes | None = field(default=None, repr=False)
    # The digest of the network's tensors the graph was made from (set when both are given).
    graph_of: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.network is None and self.onnx is None:
            raise ModelError("a model needs a torch network or an ONNX graph")
        if self.spec.architecture == ONNX and self.onnx is None:
            raise ModelError("an onnx model needs its ONNX graph")
        if self.network is not None and self.onnx is not None and self.graph_of is None:
            self.graph_of = state_digest(self.network)

    @property
    def graph(self) -> bytes | None:
        """The ONNX graph, as long as it is the torch network's: once the network's tensors
        change (fine-tuning, an edit in a notebook) the graph is stale and the network alone
        is the model."""
        if self.onnx is None or self.network is None:
            return self.onnx
        return self.onnx if state_digest(self.network) == self.graph_of else None

    def card(self, graph: bytes | None) -> ModelSpec:
        """The card of the model as saved with ``graph`` (:attr:`graph`): without one, a
        network changed since its graph was made runs on torch, and no quantization
        describes it any more."""
        if graph is not None or self.network is None:
            return self.spec
        return dataclasses.replace(self.spec, quantization={}, runtime="torch")

    def to_bytes(self) -> tuple[bytes, bytes, bytes]:
        """The model as ``(card JSON, safetensors weights, ONNX graph)`` (empty bytes for a
        form it lacks, or a graph gone stale), ready to travel or to hash."""
        from safetensors.torch import save

        graph = self.graph
        card = json.dumps(self.card(graph).to_dict(), sort_keys=True).encode()
        weights = save(_contiguous_state(self.network)) if self.network is not None else b""
        return card, weights, graph or b""

    @property
    def fingerprint(self) -> str:
        """A short content hash of card + weights + graph (stable across processes)."""
        return fingerprint_of(*self.to_bytes())

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = True) -> Path:
        """Write ``PATH.json`` (card), ``PATH.safetensors`` (weights, for a torch network)
        and ``PATH.onnx`` (for an ONNX graph), all or none; a folder holds ``model.*``.
        A form the model lacks is removed if an older save left it. Returns the card path."""
        from safetensors.torch import save_file

        from geoseg import atomic

        card, weights = card_and_weights(path)
        graph = onnx_path(card)
        card.parent.mkdir(parents=True, exist_ok=True)
        with atomic.together(overwrite=overwrite) as files:
            if self.network is not None:
                save_file(_contiguous_state(self.network), str(files.path(weights)))
            current = self.graph
            if current is not None:
                files.path(graph).write_bytes(current)
            text = json.dumps(self.card(current).to_dict(), indent=2)
            files.path(card).write_text(text + "\n")
        for stale, has in ((weights, self.network is not None), (graph, current is not None)):
            if not has:
                stale.unlink(missing_ok=True)
        return card


def fingerprint_of(*parts: bytes) -> str:
    """A short content hash of a serialized model (see :meth:`Model.to_bytes`)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()[:16]


def state_digest(network: torch.nn.Module) -> str:
    """A hash of a network's tensors (names, dtypes, shapes and values)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _contiguous_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}


def build_network(spec: ModelSpec) -> torch.nn.Module:
    """A freshly initialised network for ``spec`` (never downloads pretrained weights)."""
    import segmentation_models_pytorch as smp
    import torch

    if spec.architecture == ONNX:
        raise ModelError("this model is an ONNX graph: it has no torch network to build")
    if spec.architecture in OWN_ARCHITECTURES:
        return OWN_ARCHITECTURES[spec.architecture]()
    arch = getattr(smp, spec.architecture, None)
    if not (isinstance(arch, type) and issubclass(arch, torch.nn.Module)):
        raise ModelError(f"unknown architecture {spec.architecture!r}")
    options = {**({"decoder_channels": list(spec.decoder_channels)} if spec.decoder_channels
                  else {}), **spec.network_options}
    kwargs = {"encoder_name": spec.encoder, "encoder_depth": spec.encoder_depth,
              "in_channels": len(spec.bands), "classes": len(spec.classes), **options,
              "encoder_weights": None}  # never a download
    try:
        network: torch.nn.Module = arch(**kwargs)
        return network
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as exc:
        raise ModelError(f"cannot build {spec.architecture} with encoder {spec.encoder!r}: {exc}") from None


def _dynamic_world() -> torch.nn.Module:
    from geoseg import dynamic_world

    return dynamic_world.network()


# Networks geoseg writes itself (not segmentation-models-pytorch's), by card architecture.
OWN_ARCHITECTURES = {"DynamicWorld": _dynamic_world}


def card_and_weights(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The card and weights paths for a model path given as a folder, a .json or a .safetensors."""
    p = Path(path)
    if p.is_dir():
        return p / "model.json", p / "model.safetensors"
    if p.suffix in (".json", ".safetensors", ".onnx"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".safetensors")


def onnx_path(card: str | os.PathLike[str]) -> Path:
    """The ONNX graph beside a model card (``model.onnx`` in a model folder)."""
    return card_and_weights(card)[1].with_suffix(".onnx")


def model_files(card: str | os.PathLike[str]) -> list[Path]:
    """The files that hold a saved model's network (safetensors weights, ONNX graph or
    both), those that exist."""
    weights = card_and_weights(card)[1]
    return [p for p in (weights, onnx_path(card)) if p.exists()]


def bundled_path(name: str) -> Path:
    return Path(str(resources.files("geoseg") / "models" / name))


def read_spec(path: str | os.PathLike[str]) -> ModelSpec:
    """Read and validate a model card (JSON) without touching the weights."""
    card, _ = card_and_weights(path)
    try:
        text = card.read_text()
    except FileNotFoundError:
        raise ModelError("model card not found", card) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read model card ({exc})", card) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"model card is not valid JSON ({exc})", card) from None
    except RecursionError:
        raise ModelError("model card is nested too deeply", card) from None
    try:
        return ModelSpec.from_dict(data)
    except ModelError as exc:
        raise ModelError(exc.message, card) from None


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """``"default"`` (or another bundled name) or a path → the model's card path."""
    text = os.fspath(name_or_path)
    if text in BUNDLED and not _holds_model(Path(text)):
        # A bundled name; a folder of that name in the working directory that holds no
        # model (a folder of Dynamic World's outputs, say) does not hide it.
        return bundled_path(text) / "model.json"
    p = Path(text)
    if is_pickle(p):
        raise ModelError("is a pickle checkpoint, which can run code when loaded: use "
                         "safetensors weights with a JSON model card (if you trust this file, "
                         "convert it once with geoseg.load_model(path, trust_pickle=True)"
                         ".save(new_path); predict and evaluate also take ${trust_pickle=True})", p)
    card, weights = card_and_weights(p)
    if not card.exists() and not weights.exists() and not onnx_path(card).exists():
        raise ModelError(f"no such model (bundled models: {', '.join(BUNDLED)})", p)
    if p.suffix.lower() == ".onnx" and not is_card(card):
        raise ModelError("is an ONNX file without a geoseg model card: import it once with "
                         "'geoseg models import' (or geoseg.import_model), which reads what "
                         "its metadata says and asks for the rest", p)
    return card


def _holds_model(path: Path) -> bool:
    """Whether ``path`` exists and holds a model's card, weights or graph."""
    if not path.exists():
        return False
    card, weights = card_and_weights(path)
    return card.exists() or weights.exists() or onnx_path(card).exists()


def is_card(path: Path) -> bool:
    """Whether ``path`` is a geoseg model card (JSON with its format)."""
    try:
        return bool(json.loads(path.read_text()).get("format") == CARD_FORMAT)
    except (OSError, ValueError, AttributeError, RecursionError):
        return False


def is_pickle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a torch pickle checkpoint (by its suffix)."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def load_model(name_or_path: str | os.PathLike[str] | Model = "default", *,
               trust_pickle: bool = False, runtime: str | None = None) -> Model:
    """Load a bundled model by name or a saved model by path; weights are checked against the card.

    A model folder may hold safetensors weights, an ONNX graph or both; with ``runtime``
    ``"onnxruntime"`` a model that has a graph skips building its torch network. A pickle
    checkpoint is loaded only with ``trust_pickle`` (see :func:`load_pickle`).
    """
    if isinstance(name_or_path, Model):
        return name_or_path
    if trust_pickle and is_pickle(name_or_path):
        return load_pickle(name_or_path)
    card = resolve_model_path(name_or_path)
    spec = read_spec(card)
    graph, onnx = onnx_path(card), None
    if graph.exists():
        try:
            onnx = graph.read_bytes()
        except OSError as exc:
            raise ModelError(f"cannot read the ONNX graph ({exc.strerror})", graph) from None
    elif spec.architecture == ONNX or spec.runtime == "onnxruntime":
        raise ModelError("ONNX graph not found", graph)
    if spec.architecture == ONNX or (runtime == spec.runtime == "onnxruntime" and onnx is not None):
        return Model(None, spec, card, onnx)
    weights = card_and_weights(card)[1]
    network = model_from_state(spec, read_weights(weights), weights).network
    return Model(network, spec, card, onnx)


def read_weights(weights: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file (nothing is unpickled)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights.exists():
        raise ModelError("weights file not found", weights)
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"not a readable safetensors file ({exc})", weights) from None


def check_shapes(spec: ModelSpec, shapes: dict[str, tuple[int, ...]],
                 where: str | os.PathLike[str]) -> None:
    """Weights must have exactly the tensors the card's network has, checked on torch's
    meta device (nothing allocated: a card cannot make geoseg build a huge network for
    weights that do not fit it)."""
    import torch

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_network(spec).state_dict().items()}
    if shapes == expected:
        return
    missing, extra = sorted(set(expected) - set(shapes)), sorted(set(shapes) - set(expected))
    wrong = [k for k in expected if k in shapes and shapes[k] != expected[k]]
    what = (f"{wrong[0]} is {list(shapes[wrong[0]])}, the card makes it {list(expected[wrong[0]])}"
            if wrong else f"missing {missing[0]}" if missing else f"unexpected {extra[0]}")
    raise ModelError(f"weights do not match the model card ({what})", where)


def load_pickle(path: str | os.PathLike[str], card: str | os.PathLike[str] | None = None) -> Model:
    """Load a torch pickle checkpoint with its JSON model card (``card``, by default the
    checkpoint's name with ``.json``). Unpickling can run any code: only for files you trust.

    The checkpoint may hold a state dict, a module, or a dict with the state dict under
    ``state_dict``, ``model_state_dict``, ``model`` or ``network`` (as Lightning and most
    training loops save it); a ``module.``/``model.``/``network.`` prefix on every key is
    dropped. Save the result (:meth:`Model.save`) to get a safe safetensors copy.
    """
    import torch

    p = Path(path)
    card_path = Path(card) if card is not None else p.with_suffix(".json")
    spec = read_spec(card_path.with_suffix(".json"))
    if not p.is_file():
        raise ModelError("no such checkpoint", p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as exc:  # any unpickling failure: the file is not a torch checkpoint
        raise ModelError(f"cannot load the pickle checkpoint ({type(exc).__name__}: {exc})",
                         p) from None
    candidates = state_candidates(obj, p)
    for state in candidates[:-1]:  # a prefix's part that fits the card wins
        try:
            return model_from_state(spec, state, p, path=card_path)
        except ModelError:
            continue
    return model_from_state(spec, candidates[-1], p, path=card_path)


STATE_PREFIXES = ("model.", "module.", "network.", "net.")


def state_candidates(obj: Any, where: str | os.PathLike[str]) -> list[dict[str, torch.Tensor]]:
    """The state dicts a checkpoint may hold, most likely first: a module's, a training
    loop's (under ``state_dict``, ``model_state_dict``, ``model`` or ``network``), with a
    prefix all its keys share dropped; then each prefix's part (a Lightning module keeps
    its network under ``model.`` beside a loss's buffers); then the whole."""
    import torch

    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model", "network"):
            if key in obj:
                return state_candidates(obj[key], where)
    if not (isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in obj.items())):
        raise ModelError("holds no state dict of tensors", where)
    found = [obj]
    for prefix in STATE_PREFIXES:
        part = {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
        if part:
            found.insert(0 if len(part) == len(obj) else len(found) - 1, part)
    return found


def model_from_state(spec: ModelSpec, state: dict[str, torch.Tensor], where: str | os.PathLike[str],
                     *, path: Path | None = None) -> Model:
    """Build the network for ``spec`` and load ``state`` into it, once its tensors are
    known to fit the card exactly (:func:`check_shapes`; ``where`` names the weights in
    errors)."""
    check_shapes(spec, {k: tuple(v.shape) for k, v in state.items()}, where)
    network = build_network(spec)
    network.load_state_dict(state, strict=True)
    return Model(network=network.eval(), spec=spec, path=path)


def is_model_reference(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a model (bundled name, card, weights or model folder)."""
    text = os.fspath(path)
    p = Path(text)
    return (text in BUNDLED and not p.exists()) or p.suffix in (".json", ".safetensors",
                                                                ".onnx") or (
        p.is_dir() and (p / "model.json").exists())


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``geoseg info`` shows about a model: its card, where it lives, its files, the
    runtime that runs it on a CPU, and what its network takes and gives."""
    card = resolve_model_path(path)
    spec = read_spec(card)
    files = model_files(card)
    size = spec.input_size or f"H, W (multiples of {spec.size_multiple})"
    io: dict[str, Any] = {
        "input": f"[batch, {len(spec.bands)}, {size if spec.input_size else 'H'}, "
                 f"{size if spec.input_size else 'W'}] float32"
                 + ("" if spec.input_size else f", H and W multiples of {spec.size_multiple}"),
        "output": f"[batch, {len(spec.classes)}, H, W] {spec.outputs}"}
    graph = onnx_path(card)
    if graph.exists() and (spec.architecture == ONNX or spec.runtime == "onnxruntime"):
        from geoseg.runtimes import graph_signature

        signature = graph_signature(graph.read_bytes()).as_dict()
        io = {k: f"{v['name']} {v['shape']} {v['type']}" for k, v in signature.items()}
        io["output"] += f" ({spec.outputs})"
    form = "ONNX graph" if spec.architecture == ONNX else (
        (f"geoseg's {spec.architecture} network" if spec.architecture in OWN_ARCHITECTURES
         else f"segmentation-models-pytorch {spec.architecture}")
        + (" + ONNX graph" if graph.exists() else ""))
    return {"model_card": str(card), "files": [str(p) for p in files], "network": form,
            "runtime_cpu": spec.runtime, **io,
            "band_names": band_labels(spec.bands),
            **spec.to_dict()}


def band_labels(bands: Sequence[str]) -> list[str]:
    """A card's band names, each with the eo common name it denotes where that differs
    (``B05 rededge071``; ``blue`` stays ``blue``), ids read in the mission they imply."""
    from geoseg.bands import common_name, mission_of_ids

    mission = mission_of_ids(bands)
    labels = []
    for name in bands:
        common = common_name(name, mission=mission)
        labels.append(name if common in (None, name.lower()) else f"{name} {common}")
    return labels
