"""The one exception hierarchy of geoseg, and its warnings.

Every error that reaches a user is a :class:`GeoSegError`; the CLI prints it as one line
(``Error: <file>: <problem>``) and exits 1. Subclasses also inherit the matching builtin so
that ``except ValueError`` / ``except OSError`` callers keep working. Whose problem it is
shows in the class: the input (:class:`InputError`, :class:`RasterReadError`,
:class:`ModelError`), the output (:class:`OutputError`), or the machine and cluster the
work runs on (:class:`EnvError`: :class:`ClusterError`, :class:`DeviceError`).

A message names an option as ``${name}`` or ``${name=value}`` (``${min_area}``,
``${overwrite=True}``): in Python it reads as the parameter (``min_area``,
``overwrite=True``), on the command line as the flag (``--min-area``, ``--overwrite``):
see :func:`option_text`.
"""

from __future__ import annotations

import os
import re
from typing import Literal

Speaker = Literal["python", "cli"]
_OPTION = re.compile(r"\$\{([a-z_]+)(=[^}]*)?\}")


def option_text(message: str, speaker: Speaker = "python") -> str:
    """``message`` with its option references as ``speaker`` says them: ``${name}`` is
    ``name`` in Python and ``--name`` on the command line; ``${name=value}`` is
    ``name=value`` in Python and ``--name value`` on the command line (``--name`` alone
    for ``True``: a flag)."""

    def say(match: re.Match[str]) -> str:
        name, value = match[1], (match[2] or "")[1:]
        if speaker == "python":
            return f"{name}={value}" if match[2] else name
        flag = "--" + name.replace("_", "-")
        return flag if value in ("", "True") else f"{flag} {value}"

    return _OPTION.sub(say, message)


_CONTEXT = BaseException.__dict__["__context__"]


class _AboutFile(Exception):
    """A problem, and the file it is about (``path``, if any): reads ``<file>: <problem>``."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.message = message
        self.path = None if path is None else os.fspath(path)
        super().__init__(self.text("python"))

    # A context that ``raise … from None`` suppressed is not this error's to carry: a Dask
    # worker pickles an error with its context (tblib), and a library's own exception
    # there (rasterio's CPLE errors have a read-only ``args``) fails to unpickle, which
    # turns the error into a bare ``Exception`` on the client. Python's own chaining
    # reads the C field, not this attribute.
    @property
    def __context__(self) -> BaseException | None:
        return None if self.__suppress_context__ else _CONTEXT.__get__(self)

    @__context__.setter
    def __context__(self, value: BaseException | None) -> None:
        _CONTEXT.__set__(self, value)

    def text(self, speaker: Speaker = "python") -> str:
        """The one line ``<file>: <problem>``, options named as ``speaker`` says them (in the
        problem only: a file's name is never rewritten)."""
        message = option_text(self.message, speaker)
        return f"{self.path}: {message}" if self.path else message


class GeoSegError(_AboutFile):
    """Root of all geoseg errors. ``path`` names the file the problem is about, if any."""


class InputError(GeoSegError, ValueError):
    """An input (raster, option, label) that geoseg cannot use as it is."""


class MissingBandsError(InputError):
    """A scene that lacks bands a model reads (by name)."""


class RasterReadError(GeoSegError, OSError):
    """A raster that is missing, unreadable, truncated or not a raster at all."""


class ModelError(GeoSegError, ValueError):
    """A model card or weights file that is missing, malformed or inconsistent."""


class OutputError(GeoSegError, OSError):
    """An output that cannot be written (folder missing or read-only, disk full)."""


class OutputExistsError(OutputError, FileExistsError):
    """An output exists already and ``overwrite`` was not asked for."""


class EnvError(GeoSegError, RuntimeError):
    """The machine or cluster cannot do what was asked, whatever the inputs."""


class ClusterError(EnvError):
    """A Dask scheduler that cannot be reached, or a cluster without workers."""


class DeviceError(EnvError):
    """A device that was asked for and is not there (no CUDA GPU)."""


class DownloadError(GeoSegError, OSError):
    """A download the user asked for failed: unreachable, refused, cut short or not the
    bytes its checksum names (nothing is left in the cache). ``status``: the HTTP status,
    when a server answered with an error."""

    status: int | None = None


class BatchError(GeoSegError):
    """Some scenes of a batch run failed; each one's own error is in the run's summary."""


class GeoSegWarning(_AboutFile, UserWarning):
    """Something valid but worth knowing (e.g. an all-nodata input); the CLI prints it as
    one line ``Warning: <file>: <problem>``."""


def warn(message: str, path: str | os.PathLike[str] | None = None) -> None:
    """Warn about ``path`` (see :class:`GeoSegWarning`), attributed to geoseg's caller."""
    import warnings

    warnings.warn(GeoSegWarning(message, path), stacklevel=3)
