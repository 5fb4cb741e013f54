"""Which device runs a model: ``auto`` (CUDA when a GPU is visible), ``cpu`` or ``cuda``.

Light on purpose: the command line takes its choices from :data:`DEVICES` without loading
a model's machinery, and torch (over a second to import) is asked only where an NVIDIA
driver could give it a GPU.
"""

from __future__ import annotations

import glob
import os
import sys
from typing import Literal, get_args

from geoseg.errors import DeviceError, InputError

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)


def select_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda:N`` is accepted."""
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise InputError(f"unknown device {device!r} (use auto, cpu or cuda)")
    if device == "cpu":
        return device
    available = cuda_available()
    if device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise DeviceError("${device=cuda} asked for, but no CUDA GPU is available")
    return device


def cuda_available() -> bool:
    """Whether torch sees a CUDA GPU; without asking torch where none can be there: on
    Linux with no NVIDIA driver loaded (no ``/proc/driver/nvidia``, ``/dev/nvidia*`` nor
    WSL's ``/dev/dxg``), or with ``CUDA_VISIBLE_DEVICES`` hiding every GPU."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    if sys.platform == "linux" and not (os.path.exists("/proc/driver/nvidia/version")
                                        or os.path.exists("/dev/dxg")
                                        or glob.glob("/dev/nvidia[0-9]*")):
        return False
    import torch

    return bool(torch.cuda.is_available())
