"""Pretrained encoder weights for training: ``imagenet`` (the encoder's own, from the
model hub), a local file, or a URL/``hf://`` reference, through the download cache of
:mod:`geoseg.downloads` (nothing is fetched unless asked; a cached file is used offline).

A first convolution made for 3 bands is adapted to the model's band count as TorchGeo
and timm do (``timm.models.adapt_input_conv``): its RGB filters repeated over the bands
and scaled by 3 / bands, so that a 4-band input gives the layer the response an RGB one
gave it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import InputError, ModelError

if TYPE_CHECKING:
    import torch

PREFIXES = ("module.", "model.", "encoder.", "backbone.", "state_dict.")
MIN_MATCHED = 0.5  # of the encoder's tensors, or the file is not weights for this encoder


def reference(encoder: str, weights: str) -> str:
    """Where ``weights`` are: ``imagenet`` → the encoder's ImageNet weights on the model
    hub (``hf://…/model.safetensors``); a path or a reference as given."""
    if weights != "imagenet":
        return weights
    if encoder.startswith("tu-"):
        import timm

        cfg = timm.models.get_pretrained_cfg(encoder[3:])
        if cfg is None or not cfg.hf_hub_id:
            raise InputError(f"encoder {encoder!r} has no ImageNet weights on the model hub "
                             f"(give a weights file or URL)")
        return f"hf://{cfg.hf_hub_id}/model.safetensors"
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder, {}).get("pretrained_settings", {}).get("imagenet")
    if not settings or "repo_id" not in settings:
        raise InputError(f"encoder {encoder!r} has no ImageNet weights geoseg knows of "
                         f"(give a weights file or URL)")
    revision = f"@{settings['revision']}" if settings.get("revision") else ""
    return f"hf://{settings['repo_id']}{revision}/model.safetensors"


def fetch(encoder: str, weights: str) -> tuple[Path, str]:
    """The local file of ``weights`` (downloaded into the cache when a reference) and
    what it was asked as."""
    from geoseg.downloads import fetch_reference, is_reference

    ref = reference(encoder, weights)
    if is_reference(ref):
        path = fetch_reference(ref)
    else:
        path = Path(ref)
        if not path.is_file():
            raise InputError("no such file" if not path.exists() else "is not a file", path)
    return path, ref


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors, or a torch checkpoint read without
    unpickling code (``weights_only``), unwrapped from ``state_dict``/``model`` keys."""
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and torch raise many unrelated types here
        raise ModelError(f"is not a weights file ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''})", path) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError("holds no tensors by name (a state dict)", path)
    return state


def load_encoder(network: torch.nn.Module, path: Path, shown: str) -> dict[str, int]:
    """Load the encoder tensors in ``path`` into ``network``'s encoder, adapting a 3-band
    first convolution to the network's bands; ``{"matched": …, "adapted": …, "of": …}``.
    Fewer than half of the encoder's tensors matching by name and shape is an error."""
    from timm.models import adapt_input_conv

    state = read_state(path)
    encoder: Any = network.encoder
    target: Any = encoder.model if hasattr(encoder, "model") else encoder
    want = target.state_dict()
    matched: dict[str, torch.Tensor] = {}
    adapted = 0
    for key, tensor in state.items():
        name = key
        while name not in want and name.startswith(PREFIXES):
            name = name.split(".", 1)[1]
        if name not in want:
            continue
        expected = want[name]
        if (tensor.ndim == 4 and expected.ndim == 4 and tensor.shape[1] != expected.shape[1]
                and tensor.shape[0] == expected.shape[0] and tensor.shape[2:] == expected.shape[2:]):
            tensor = adapt_input_conv(expected.shape[1], tensor.float()).to(expected.dtype)
            adapted += 1
        if tensor.shape == expected.shape:
            matched[name] = tensor.to(expected.dtype)
    if len(matched) < MIN_MATCHED * len(want):
        raise ModelError(f"fits the {type(target).__name__} encoder in {len(matched)} of its "
                         f"{len(want)} tensors: weights for another encoder?", shown)
    target.load_state_dict(matched, strict=False)
    return {"matched": len(matched), "adapted": adapted, "of": len(want)}


def describe(path: Path, ref: str) -> dict[str, str]:
    """What the card records of the weights a training started from."""
    from geoseg.downloads import file_sha256

    return {"encoder_weights": ref if not os.path.isabs(ref) else Path(ref).name,
            "encoder_weights_sha256": file_sha256(path)}
