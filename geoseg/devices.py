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


def visible_gpus() -> list[str]:
    """The GPUs this process may use, each as ``CUDA_VISIBLE_DEVICES`` names it to a child
    process (an index or a UUID: the names this process's own ``CUDA_VISIBLE_DEVICES``
    gives, else ``0``, ``1`` …); none, without importing torch, where no NVIDIA driver is
    (see :func:`cuda_available`)."""
    if not cuda_available():
        return []
    import torch

    count = torch.cuda.device_count()  # NVML where it can: no CUDA context made here
    names = os.environ.get("CUDA_VISIBLE_DEVICES")
    if names is None:
        return [str(i) for i in range(count)]
    return [n.strip() for n in names.split(",") if n.strip()][:count]
