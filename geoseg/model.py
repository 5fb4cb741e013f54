"""Models: a declarative :class:`ModelSpec` plus torch weights, stored as JSON + safetensors.

The spec is the single source of truth for the bands a model reads, how they are
normalized, which classes it predicts (names and colors), the tile size it was trained on
and the ground resolution it expects. Loading never unpickles anything: the card is JSON
and the weights are safetensors.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
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
        if len(self.decoder_channels) != self.encoder_depth:
            found.append("decoder_channels must have encoder_depth entries")
        if self.tile_size <= 0 or self.tile_size % self.size_multiple:
            found.append(f"tile_size must be a positive multiple of {self.size_multiple}")
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
        try:
            classes = tuple(
                ClassInfo(str(c["name"]), tuple(int(v) for v in c["color"]))  # type: ignore[arg-type]
                for c in data.pop("classes")
            )
            for key in ("bands", "mean", "std", "decoder_channels"):
                if key in data:
                    data[key] = tuple(data[key])
            data["bands"] = tuple(str(b) for b in data["bands"])
            data["mean"] = tuple(float(v) for v in data["mean"])
            data["std"] = tuple(float(v) for v in data["std"])
            return cls(classes=classes, **data)
        except ModelError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed model card ({type(exc).__name__}: {exc})") from None


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
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelError("pickle checkpoints are not loaded (they can run code); "
                         "use a safetensors file with its JSON model card", p)
    card, weights = card_and_weights(p)
    if not card.exists() and not weights.exists():
        raise ModelError(f"no such model (bundled models: {', '.join(BUNDLED)})", p)
    return card


def load_model(name_or_path: str | os.PathLike[str] | Model = "default") -> Model:
    """Load a bundled model by name or a saved model by path; weights are checked against the card."""
    if isinstance(name_or_path, Model):
        return name_or_path
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


def model_from_state(spec: ModelSpec, state: dict[str, torch.Tensor], where: str | os.PathLike[str],
                     *, path: Path | None = None) -> Model:
    """Build the network for ``spec`` and load ``state`` into it, strictly (``where`` names
    the weights in errors)."""
    network = build_network(spec)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise ModelError(f"weights do not match the model card ({first[0].strip()})", where) from None
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
