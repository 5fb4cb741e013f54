"""Which device runs a model: ``auto`` (CUDA when a GPU is visible), ``cpu`` or ``cuda``.

Light on purpose (torch is imported only to choose): the command line takes its choices
from :data:`DEVICES` without loading a model's machinery.
"""

from __future__ import annotations

from typing import Literal, get_args

from geoseg.errors import DeviceError, InputError

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)


def select_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda:N`` is accepted."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError("${device=cuda} asked for, but no CUDA GPU is available")
    if device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r} (use auto, cpu or cuda)")
    return device
