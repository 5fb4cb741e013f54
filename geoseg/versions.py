"""What geoseg runs on: its own version, Python's, the platform's, GDAL's and PROJ's, and
the installed version of every package geoseg depends on (read from geoseg's own package
metadata, so the list is pyproject.toml's). ``geoseg --show-versions`` prints it, for bug
reports and to see what `make test-latest` or `make test-oldest` installed."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import sys

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
    table = versions()
    width = max(map(len, table))
    return "\n".join(f"{name:<{width}}  {value or '-'}" for name, value in table.items())
