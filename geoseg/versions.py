"""What geoseg runs on: its own version, Python's, the platform's, GDAL's and PROJ's, and
the installed version of every package geoseg depends on (read from geoseg's own package
metadata, so the list is pyproject.toml's). ``geoseg --show-versions`` prints it, for bug
reports and to see what `make test-latest` or `make test-oldest` installed."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import sys
from collections.abc import Iterable

from geoseg import __version__

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def dependency_versions() -> dict[str, str | None]:
    """Each package geoseg requires, by its name in the metadata, with the installed
    version (None where it is missing), then those of its extras (``dev``, ``bench``…)
    that are installed; sorted by name."""
    found: dict[str, str | None] = {}
    for requirement in importlib.metadata.requires("geoseg") or []:
        spec, _, marker = requirement.partition(";")
        name = _NAME.match(spec)
        if name is None:
            continue
        key = re.sub(r"[-_.]+", "-", name[1]).lower()  # the name's normalized form
        try:
            found[key] = importlib.metadata.version(name[1])
        except importlib.metadata.PackageNotFoundError:
            if "extra" not in marker:
                found[key] = None
    return dict(sorted(found.items()))


def versions() -> dict[str, str | None]:
    """geoseg, Python, the platform, GDAL and PROJ (as rasterio and pyproj were built
    with), then :func:`dependency_versions`."""
    out: dict[str, str | None] = {"geoseg": __version__, "python": sys.version.split()[0],
                                  "platform": platform.platform()}
    try:
        import rasterio

        out["gdal"] = rasterio.__gdal_version__
    except ImportError:
        out["gdal"] = None
    try:
        import pyproj

        out["proj"] = pyproj.proj_version_str
    except ImportError:
        out["proj"] = None
    return {**out, **dependency_versions()}


def show_versions() -> str:
    """:func:`versions` as aligned lines (``name  version``; ``-`` where missing)."""
    return "\n".join(_aligned(versions().items()))


def _aligned(rows: Iterable[tuple[str, str | None]]) -> list[str]:
    """``name  value`` lines, the values in one column (``-`` where missing)."""
    rows = list(rows)
    width = max(len(name) for name, _ in rows)
    return [f"{name:<{width}}  {value or '-'}" for name, value in rows]


def doctor() -> tuple[list[str], list[str]]:
    """What ``geoseg doctor`` reports: lines on geoseg's environment (versions of the
    pieces that do the work, CUDA and its GPUs, ONNX Runtime's providers, the bundled
    models, the download cache and the temporary folder, each writable or not), and the
    problems found (empty when all is well)."""
    import importlib.metadata
    import os
    import tempfile
    from pathlib import Path

    table = versions()
    rows: list[tuple[str, str | None]] = []
    for name in ("geoseg", "python", "platform", "gdal", "proj", "rasterio", "numpy",
                 "torch", "onnxruntime", "dask", "distributed", "segmentation-models-pytorch"):
        value = table.get(name)
        if value is None and name not in table:
            try:
                value = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                value = None
        rows.append((name, value))
    problems = [f"{name} is not installed" for name, version in dependency_versions().items()
                if version is None]
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            rows.append(("cuda", f"{torch.version.cuda} ({len(names)} GPU: {', '.join(names)})"))
        else:
            rows.append(("cuda", "- (no GPU visible to torch: models run on the CPU)"))
    except ImportError:
        problems.append("torch cannot be imported")
    try:
        import onnxruntime

        rows.append(("onnxruntime providers", ", ".join(onnxruntime.get_available_providers())))
    except ImportError:
        problems.append("onnxruntime cannot be imported")
    from geoseg.model import BUNDLED, bundled_path

    rows.append(("bundled models", ", ".join(BUNDLED)))
    problems += [f"the bundled model {name} is missing its files" for name in BUNDLED
                 if not (bundled_path(name) / "model.json").exists()]
    from geoseg.downloads import cache_dir

    for label, folder, variable in (("download cache", cache_dir(), "$GEOSEG_CACHE"),
                                    ("temporary folder", Path(tempfile.gettempdir()),
                                     "$TMPDIR")):
        writable = _writable(folder)
        rows.append((label, f"{folder} ({'writable' if writable else 'NOT writable'})"))
        if not writable:
            problems.append(f"the {label} {folder} is not writable (set {variable})")
    rows.append(("cpus", str(os.cpu_count())))
    return _aligned(rows), problems


def _writable(folder: object) -> bool:
    """Whether a file can be made in ``folder`` (made if missing)."""
    import tempfile
    from pathlib import Path

    path = Path(str(folder))
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".geoseg-doctor-"):
            return True
    except OSError:
        return False
