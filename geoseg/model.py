"""Models: a declarative :class:`ModelSpec` plus torch weights, stored as JSON + safetensors.

The spec is the single source of truth for the bands a model reads, how they are
normalized, which classes it predicts (names and colors), the tile size it was trained on
and the ground resolution it expects. Loading never unpickles anything: the card is JSON
and the weights are safetensors. A torch pickle checkpoint (``.pt``, ``.pth``, ``.ckpt``…)
can run code when it is loaded: it is refused unless the caller trusts it
(``trust_pickle=True``, ``--trust-pickle``), and even then it is read in this process only
and travels on as safetensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import ModelError

if TYPE_CHECKING:
    import torch

CARD_FORMAT = "geoseg-model/1"
BUNDLED = ("default",)
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its name and display color (RGB, 0-255)."""

    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a network and feed it the right pixels.

    ``mean``/``std`` are per input band, in the raster's own units (e.g. reflectance × 10000);
    ``resolution`` is the nominal ground sampling distance in metres (informational).
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
        if not 1 <= self.encoder_depth <= 8:  # and so size_multiple is small
            found.append("encoder_depth must be 1 to 8")
        else:
            if len(self.decoder_channels) != self.encoder_depth:
                found.append("decoder_channels must have encoder_depth entries")
            if not 0 < self.tile_size <= 8192 or self.tile_size % self.size_multiple:
                found.append(f"tile_size must be a multiple of {self.size_multiple} "
                             f"up to 8192")
        if self.resolution is not None and not (math.isfinite(self.resolution)
                                                and self.resolution > 0):
            found.append("resolution must be positive and finite")
        return found

    @property
    def size_multiple(self) -> int:
        """Tile sizes must be multiples of this (the encoder's total stride)."""
        return 2**self.encoder_depth

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
    "metrics": _mapping,
    "bands": lambda v: tuple(_text(b) for b in _list(v)),
    "mean": lambda v: tuple(_number(x) for x in _list(v)),
    "std": lambda v: tuple(_number(x) for x in _list(v)),
    "decoder_channels": lambda v: tuple(_integer(x) for x in _list(v)),
    "classes": lambda v: tuple(_class(c) for c in _list(v)),
}


@dataclass
class Model:
    """A torch network together with the spec that describes its inputs and outputs."""

    network: torch.nn.Module
    spec: ModelSpec
    path: Path | None = None

    def to_bytes(self) -> tuple[bytes, bytes]:
        """The model as ``(card JSON, safetensors weights)``, ready to travel or to hash."""
        from safetensors.torch import save

        card = json.dumps(self.spec.to_dict(), sort_keys=True).encode()
        return card, save(_contiguous_state(self.network))

    @property
    def fingerprint(self) -> str:
        """A short content hash of card + weights (stable across processes)."""
        return fingerprint_of(*self.to_bytes())

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``PATH.json`` (card) and ``PATH.safetensors`` (weights); returns the card path."""
        from safetensors.torch import save_file

        from geoseg.atomic import atomic_path

        card, weights = card_and_weights(path)
        card.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(weights, overwrite=True) as tmp:
            save_file(_contiguous_state(self.network), str(tmp))
        with atomic_path(card, overwrite=True) as tmp:
            tmp.write_text(json.dumps(self.spec.to_dict(), indent=2) + "\n")
        return card


def fingerprint_of(card: bytes, weights: bytes) -> str:
    """A short content hash of a serialized model (see :meth:`Model.to_bytes`)."""
    return hashlib.sha256(card + weights).hexdigest()[:16]


def _contiguous_state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}


def build_network(spec: ModelSpec) -> torch.nn.Module:
    """A freshly initialised network for ``spec`` (never downloads pretrained weights)."""
    import segmentation_models_pytorch as smp

    try:
        arch = getattr(smp, spec.architecture)
    except AttributeError:
        raise ModelError(f"unknown architecture {spec.architecture!r}") from None
    try:
        return arch(
            encoder_name=spec.encoder,
            encoder_weights=None,
            encoder_depth=spec.encoder_depth,
            decoder_channels=list(spec.decoder_channels),
            in_channels=len(spec.bands),
            classes=len(spec.classes),
        )
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise ModelError(f"cannot build {spec.architecture} with encoder {spec.encoder!r}: {exc}") from None


def card_and_weights(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The card and weights paths for a model path given as a folder, a .json or a .safetensors."""
    p = Path(path)
    if p.is_dir():
        return p / "model.json", p / "model.safetensors"
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".safetensors")


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
    if text in BUNDLED and not Path(text).exists():
        return bundled_path(text) / "model.json"
    p = Path(text)
    if is_pickle(p):
        raise ModelError("is a pickle checkpoint, which can run code when loaded: use "
                         "safetensors weights with a JSON model card (if you trust this file, "
                         "convert it once with geoseg.load_model(path, trust_pickle=True)"
                         ".save(new_path); predict and evaluate also take ${trust_pickle=True})", p)
    card, weights = card_and_weights(p)
    if not card.exists() and not weights.exists():
        raise ModelError(f"no such model (bundled models: {', '.join(BUNDLED)})", p)
    return card


def is_pickle(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a torch pickle checkpoint (by its suffix)."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def load_model(name_or_path: str | os.PathLike[str] | Model = "default", *,
               trust_pickle: bool = False) -> Model:
    """Load a bundled model by name or a saved model by path; weights are checked against the card.

    A pickle checkpoint is loaded only with ``trust_pickle`` (see :func:`load_pickle`).
    """
    if isinstance(name_or_path, Model):
        return name_or_path
    if trust_pickle and is_pickle(name_or_path):
        return load_pickle(name_or_path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card, weights = card_and_weights(resolve_model_path(name_or_path))
    spec = read_spec(card)
    if not weights.exists():
        raise ModelError("weights file not found", weights)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"not a readable safetensors file ({exc})", weights) from None
    return model_from_state(spec, state, weights, path=card)


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
    return model_from_state(spec, _state_dict_of(obj, p), p, path=card_path)


def _state_dict_of(obj: Any, where: Path) -> dict[str, torch.Tensor]:
    import torch

    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model", "network"):
            if key in obj:
                return _state_dict_of(obj[key], where)
    if not (isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in obj.items())):
        raise ModelError("holds no state dict of tensors", where)
    for prefix in ("module.", "model.", "network."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k.removeprefix(prefix): v for k, v in obj.items()}
    return obj


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
    return (text in BUNDLED and not p.exists()) or p.suffix in (".json", ".safetensors") or (
        p.is_dir() and (p / "model.json").exists())


def describe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What ``geoseg info`` shows about a model: its card, plus where it lives."""
    card = resolve_model_path(path)
    return {"model_card": str(card), **read_spec(card).to_dict()}
