"""The one exception hierarchy of geoseg.

Every error that reaches a user is a :class:`GeoSegError`; the CLI prints it as one line
(``Error: <file>: <problem>``) and exits 1. Subclasses also inherit the matching builtin so
that ``except ValueError`` / ``except OSError`` callers keep working.
"""

from __future__ import annotations

import os


class _AboutFile(Exception):
    """A problem, and the file it is about (``path``, if any): reads ``<file>: <problem>``."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.message = message
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class GeoSegError(_AboutFile):
    """Root of all geoseg errors. ``path`` names the file the problem is about, if any."""


class InputError(GeoSegError, ValueError):
    """An input (raster, option, label) that geoseg cannot use as it is."""


class RasterReadError(GeoSegError, OSError):
    """A raster that is missing, unreadable, truncated or not a raster at all."""


class ModelError(GeoSegError, ValueError):
    """A model card or weights file that is missing, malformed or inconsistent."""


class OutputError(GeoSegError, OSError):
    """An output that cannot be written (folder missing or read-only, disk full)."""


class OutputExistsError(OutputError, FileExistsError):
    """An output exists already and ``overwrite`` was not asked for."""


class GeoSegWarning(_AboutFile, UserWarning):
    """Something valid but worth knowing (e.g. an all-nodata input); the CLI prints it as
    one line ``Warning: <file>: <problem>``."""


def warn(message: str, path: str | os.PathLike[str] | None = None) -> None:
    """Warn about ``path`` (see :class:`GeoSegWarning`), attributed to geoseg's caller."""
    import warnings

    warnings.warn(GeoSegWarning(message, path), stacklevel=3)
