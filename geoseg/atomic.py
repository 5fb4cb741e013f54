"""Atomic outputs: write to a temp file in the target's folder, then ``os.replace``.

Every file geoseg writes goes through :func:`atomic_path`, so a reader (or a crash) never
sees a half-written output, and an existing output is only replaced with ``overwrite``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from geoseg.errors import OutputError, OutputExistsError

# Files GDAL or SQLite may leave beside a dataset.
SIDECAR_SUFFIXES = (".aux.xml", ".ovr", ".msk", "-journal", "-wal", "-shm", ".lock")
# GDAL sidecars that describe a raster: stale once the raster is replaced (QGIS writes
# .aux.xml statistics, for example, and GDAL would apply them to the new file).
RASTER_SIDECARS = (".aux.xml", ".ovr", ".msk")


def check_output(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Fail early, before any work, if ``path`` exists (without overwrite) or cannot be written."""
    p = Path(path)
    if p.is_dir():
        raise OutputError("is a directory, expected a file name", p)
    if p.exists() and not overwrite:
        raise OutputExistsError("exists already (use ${overwrite=True} to replace it)", p)
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError("output folder does not exist", folder)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError("output folder is not writable", folder)
    return p


def check_outputs(paths: Iterable[str | os.PathLike[str] | None], *, overwrite: bool) -> list[Path]:
    """Check every output before any work; missing output folders are created (and
    returned, so that a failed run can remove them again: see :func:`outputs`)."""
    seen: set[Path] = set()
    created: list[Path] = []
    try:
        for p in paths:
            if p is None:
                continue
            created += make_folders(Path(p).parent, p)
            resolved = Path(p).resolve()
            if resolved in seen:
                raise OutputError("named twice as an output", p)
            seen.add(resolved)
            check_output(p, overwrite=overwrite)
    except BaseException:
        remove_empty_folders(created)
        raise
    return created


def make_folders(folder: Path, name: str | os.PathLike[str]) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, outermost first
    (errors name ``name``, the output they are for)."""
    missing = [f for f in (folder, *folder.parents) if not f.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_empty_folders(missing)
        raise OutputError(f"cannot create the output folder ({exc.strerror})", name) from None
    return missing


def remove_empty_folders(folders: Iterable[Path]) -> None:
    """Remove the ``folders`` (outermost first) that are still empty, innermost first."""
    for folder in reversed(list(folders)):
        with contextlib.suppress(OSError):
            folder.rmdir()


def outputs(paths: Iterable[str | os.PathLike[str] | None], *,
            overwrite: bool) -> contextlib.AbstractContextManager[None]:
    """:func:`check_outputs` (now, at the call); if the work in the ``with`` block that
    follows fails, the output folders it created go again (when still empty)."""
    return _FoldersRemovedOnError(check_outputs(paths, overwrite=overwrite))


class _FoldersRemovedOnError(contextlib.AbstractContextManager[None]):
    def __init__(self, created: list[Path]) -> None:
        self.created = created

    def __exit__(self, kind: type[BaseException] | None, *_: Any) -> None:
        if kind is not None:
            remove_empty_folders(self.created)


# ``.NAME.1a2b3c4d.tmp.SUFFIX`` (and GDAL/SQLite sidecars after it): see temp_sibling.
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}\.tmp")


def temp_sibling(path: str | os.PathLike[str], suffix: str = "") -> Path:
    """A new, empty temp file in the same folder as ``path`` (so os.replace is atomic)."""
    p = Path(path)
    # Again: another geoseg that failed may have removed a folder both of them created.
    make_folders(p.parent, p)
    for _ in range(100):
        name = p.with_name(f".{p.name}.{secrets.token_hex(4)}.tmp{suffix or p.suffix}")
        try:
            # Mode 0o666 filtered by the umask, like any new file (mkstemp would give 0o600).
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        except OSError as exc:
            raise OutputError(f"cannot create a file here ({exc.strerror})", p.parent) from None
        return name
    raise OutputError("cannot find a free temporary file name", p.parent)


def remove_sidecars(path: str | os.PathLike[str], suffixes: Iterable[str] = SIDECAR_SUFFIXES) -> None:
    """Delete the files beside ``path`` named ``path`` + suffix (those that exist)."""
    p = Path(path)
    for suffix in suffixes:
        with contextlib.suppress(FileNotFoundError):
            p.with_name(p.name + suffix).unlink()


def remove_with_sidecars(path: str | os.PathLike[str]) -> None:
    with contextlib.suppress(FileNotFoundError):
        Path(path).unlink()
    remove_sidecars(path)


class Files:
    """The temp files of outputs being written; :func:`together` puts them in place."""

    def __init__(self, overwrite: bool) -> None:
        self.overwrite = overwrite
        self.pending: list[tuple[Path, Path]] = []  # (target, its temp file)

    def path(self, target: str | os.PathLike[str]) -> Path:
        """A new temp file beside ``target`` (its folder made if missing), to be written
        instead of it."""
        make_folders(Path(target).parent, target)
        t = check_output(target, overwrite=self.overwrite)
        tmp = temp_sibling(t)
        self.pending.append((t, tmp))
        return tmp


@contextlib.contextmanager
def together(*, overwrite: bool) -> Iterator[Files]:
    """Write several outputs as temp files (``files.path(target)``); when the block ends
    well, all are checked and synced first, then replace their targets one after the other
    with SIGINT and SIGTERM held back, so an interrupt leaves either all new files or none.
    On any error every temp file vanishes."""
    files = Files(overwrite)
    try:
        yield files
        _put_in_place(files.pending, overwrite)
    except BaseException as exc:  # an interrupt too: the temp files go
        for _, tmp in files.pending:
            remove_with_sidecars(tmp)
        for target, tmp in files.pending:
            if isinstance(exc, OutputError) and exc.path == str(tmp):
                raise type(exc)(exc.message, target) from None  # the file the user named
        raise
    for _, tmp in files.pending:
        remove_sidecars(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it vanishes."""
    with together(overwrite=overwrite) as files:
        yield files.path(path)


def _put_in_place(pending: list[tuple[Path, Path]], overwrite: bool) -> None:
    for target, tmp in pending:
        if target.exists() and not overwrite:  # appeared while we worked
            raise OutputExistsError("exists already (use ${overwrite=True} to replace it)", target)
        _fsync(tmp, target)
    with _interrupts_held():
        for target, tmp in pending:
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise OutputError(f"could not be written ({exc.strerror or exc})", target) from exc
            remove_sidecars(target, RASTER_SIDECARS)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait (in the main thread) until the block is done."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _fsync(path: Path, target: Path) -> None:
    """Flush ``path`` to disk: a write error the kernel kept for now (NFS, a quota) is an
    OutputError about ``target``."""
    try:
        with open(path, "rb+") as f:
            os.fsync(f.fileno())
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.ENOTSUP):  # a file system without fsync
            return
        raise OutputError(f"could not be written ({exc.strerror or exc})", target) from None
