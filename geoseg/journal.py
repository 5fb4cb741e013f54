"""The journal of a batch run: what finished, so that ``--resume`` can skip it safely.

``OUT_DIR/geoseg-journal.jsonl`` is append-only JSON lines, one fsync'd line per event:
the run's settings when it starts or resumes, then one ``done`` (with the size and SHA-256
of every output) or ``failed`` line per scene. A line cut short by a crash is ignored. A
scene counts as done only when its outputs still have the recorded bytes and its source is
unchanged, so a half-written or edited file is never mistaken for a finished one. While a
run holds the journal (an exclusive ``flock``) no second run can write into the folder.

A run into object storage (``s3://bucket/prefix``) keeps its journal in the bucket, as one
small object per event under ``PREFIX/geoseg-journal/`` (numbered in order; S3 has no
append), each created only where none is (a conditional PUT). No ``flock`` reaches a
bucket: a run holds the prefix by a lease instead, the object ``geoseg-journal/lock``,
created only where none is, renewed every minute while the run goes on and deleted when
it ends; a second run finds it and stops before any work. A lock not renewed for
:data:`LEASE_S` is a run's that was killed outright, and the next run takes it over. The
outputs are checked by size and ETag, which S3 changes whenever an object is written
again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from geoseg.errors import GeoSegError, InputError, OutputError, OutputExistsError

if TYPE_CHECKING:
    from geoseg.storage import ObjectInfo

JOURNAL = "geoseg-journal.jsonl"
BUCKET_JOURNAL = "geoseg-journal"  # the folder of a bucket journal's event objects


def sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(paths: Mapping[str, str | os.PathLike[str]]) -> dict[str, dict[str, Any]]:
    """``{kind: {path, bytes, sha256}}`` of written outputs (what ``done`` records);
    ``{kind: {path, bytes, etag}}`` of those in object storage."""
    from geoseg import storage

    prints: dict[str, dict[str, Any]] = {}
    for kind, p in paths.items():
        if not storage.is_url(p):
            prints[kind] = {"path": str(p), "bytes": os.path.getsize(p), "sha256": sha256(p)}
            continue
        info = storage.stat(str(p))
        if info is None:
            raise OutputError("is missing right after it was written", p)
        prints[kind] = {"path": str(p), "bytes": info.size, "etag": info.etag}
    return prints


def source_stamp(source: str | os.PathLike[str]) -> list[list[Any]]:
    """Size and modification time of a scene's files (:func:`geoseg.scenes.scene_files`),
    or of each file in its folder; of its objects in object storage."""
    from geoseg import storage
    from geoseg.scenes import scene_files, stack_parts

    stamp: list[list[Any]] = []
    for part in stack_parts(stac_href(os.fspath(source))):
        if storage.is_url(part):
            with contextlib.suppress(GeoSegError):
                info = storage.stat(part, reading=True)
                if info is not None:
                    stamp.append([part.rpartition("/")[2], info.size, info.modified_ns])
    try:
        files = [f for p in scene_files(os.fspath(source))
                 for f in (sorted(c for c in p.iterdir() if c.is_file()) if p.is_dir() else [p])]
        return stamp + [[f.name, st.st_size, st.st_mtime_ns] for f in files for st in [f.stat()]]
    except OSError:
        return stamp


def stac_href(source: str) -> str:
    from geoseg.stac import split

    return split(source)[0]


def source_path(source: str | os.PathLike[str]) -> str:
    """How the journal names a scene's source: absolute for local files, as it is for a
    URL (which no working directory changes)."""
    from geoseg.gdal import is_gdal_path

    text = os.fspath(source)
    return text if is_gdal_path(text) else os.path.abspath(text)


class Journal:
    """An open journal (use :func:`open_journal`): in a local folder (``path`` is the
    journal file, held open with a lock) or in object storage (``path`` is the URL
    prefix of its event objects)."""

    def __init__(self, path: Path | str, sink: _FileSink | _BucketSink,
                 records: list[dict[str, Any]], *, replace: bool = False,
                 objects: Mapping[str, ObjectInfo] | None = None) -> None:
        self.path = path
        self._sink = sink
        self._objects = objects  # a bucket prefix's listing, when the run began
        self.kept = False  # kept even if no scene ends (see keep)
        self.records = records
        self.started = False
        self._replace = replace  # an earlier run's journal, to be emptied on start (overwrite)

    @property
    def folder(self) -> Path | str:
        """Where the run's outputs are: the journal's folder, or its prefix's folder."""
        if isinstance(self.path, Path):
            return self.path.parent
        return self.path.rstrip("/").rpartition("/")[0]

    def start(self, settings: dict[str, Any], scenes: list[str]) -> None:
        """Record that a run (or a resumed one) begins, with the scenes it will compute."""
        self._sink.begin(replace=self._replace)
        self.started = True
        self.write("run", settings=settings, scenes=scenes)

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, **fields}
        self.records.append(record)
        self._sink.append(json.dumps(record, separators=(",", ":")))

    def keep(self) -> None:
        """Keep a journal this run created even if no scene ends in it: scenes it began
        may still write their outputs (on a cluster the run does not own), which its
        planned scenes let ``resume`` replace."""
        self.kept = True

    def finished_any(self) -> bool:
        """Whether any scene ended (done or failed) in this journal."""
        return any(r.get("event") in ("done", "failed") for r in self.records)

    def planned(self) -> set[str]:
        """Scenes an earlier run of this journal set out to compute (its outputs are ours)."""
        return {n for r in self.records if r.get("event") == "run" for n in r.get("scenes", [])}

    def finished(self) -> dict[str, dict[str, Any]]:
        """The last ``done`` record of each scene not failed or redone since."""
        last: dict[str, dict[str, Any]] = {}
        for r in self.records:
            if r.get("event") in ("done", "failed") and "scene" in r:
                last[r["scene"]] = r
        return {name: r for name, r in last.items() if r["event"] == "done"}

    def still_done(self, record: dict[str, Any], source: str) -> str | None:
        """None when a ``done`` scene's outputs and source are as recorded, else why not."""
        if (record.get("source_path") != source_path(source)
                or record.get("source_stamp") != source_stamp(source)):
            return "its source changed"
        for kind, out in record.get("outputs", {}).items():
            name = os.path.basename(out["path"])  # outputs live beside the journal
            if isinstance(self.folder, Path):
                path = self.folder / name
                try:
                    if os.path.getsize(path) != out["bytes"] or sha256(path) != out["sha256"]:
                        return f"its {kind} output changed"
                except OSError:
                    return f"its {kind} output is missing"
                continue
            from geoseg import storage

            url = f"{self.folder}/{name}"
            info = (self._objects.get(url) if self._objects is not None
                    else storage.stat(url))
            if info is None:
                return f"its {kind} output is missing"
            if info.size != out["bytes"] or info.etag is None or info.etag != out.get("etag"):
                return f"its {kind} output changed"
        return None


class _FileSink:
    """A journal file: one fsync'd line per event."""

    def __init__(self, path: Path, handle: TextIO, torn: bool) -> None:
        self._path = path
        self._handle = handle
        self._torn = torn  # the last line was cut short by a crash

    def begin(self, *, replace: bool) -> None:
        if replace:
            self._handle.truncate(0)
        elif self._torn:
            self._handle.write("\n")  # so the next line starts clean

    def append(self, line: str) -> None:
        self._handle.write(line + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self._path.unlink()


class _BucketSink:
    """A journal in object storage: event N is the object ``PREFIX/NNNNNNNNNN.json``,
    created only where none is."""

    def __init__(self, prefix: str, keys: list[str]) -> None:
        self.prefix = prefix
        self._keys = keys  # the event objects there when the run began, in order
        self._next = 1 + max((int(_EVENT.fullmatch(k.rpartition("/")[2])[1])  # type: ignore[index]
                              for k in keys), default=-1)

    def begin(self, *, replace: bool) -> None:
        from geoseg import storage

        if replace:
            for url in reversed(self._keys):
                storage.delete(url)
            self._next = 0

    def append(self, line: str) -> None:
        from geoseg import storage

        url = f"{self.prefix}/{self._next:010d}.json"
        try:
            storage.put_bytes(url, line.encode(), overwrite=False)
        except OutputExistsError:
            raise OutputError("another geoseg run is writing into this folder",
                              self.prefix.rpartition("/")[0]) from None
        self._next += 1

    def remove(self) -> None:
        from geoseg import storage

        with contextlib.suppress(GeoSegError):
            for url in _events(storage.listing(self.prefix)):
                storage.delete(url)


_EVENT = re.compile(r"(\d{10})\.json")


def _events(urls: Iterable[str]) -> list[str]:
    """The event objects of a bucket journal among ``urls``, in order."""
    return sorted(u for u in urls if _EVENT.fullmatch(u.rpartition("/")[2]))


LEASE_S = 600  # a lock not renewed for this long is a killed run's
RENEW_S = 60


@contextlib.contextmanager
def _leased(lock: str, folder: str) -> Iterator[None]:
    """Hold the bucket prefix ``folder`` by its lock object ``lock`` (see the module's
    text) while the block runs; another run's live lock is an :class:`OutputError`."""
    import datetime
    import socket
    import threading
    import time

    from geoseg import storage

    held = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                       "since": datetime.datetime.now(datetime.UTC).isoformat()})
    busy = OutputError("another geoseg run is writing into this folder (a run killed "
                       f"outright leaves its lock {lock} for {LEASE_S // 60} minutes)", folder)
    try:
        storage.put_bytes(lock, held.encode(), overwrite=False)
    except OutputExistsError:
        info = storage.stat(lock)
        if info is not None and time.time() - info.modified_ns / 1e9 < LEASE_S:
            raise busy from None
        storage.delete(lock)  # not renewed: its run is gone
        try:
            storage.put_bytes(lock, held.encode(), overwrite=False)
        except OutputExistsError:
            raise busy from None  # another run took it over first
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(RENEW_S):
            with contextlib.suppress(GeoSegError):
                storage.put_bytes(lock, held.encode())

    renewing = threading.Thread(target=renew, name="geoseg-journal-lease", daemon=True)
    renewing.start()
    try:
        yield
    finally:
        stop.set()
        renewing.join()
        with contextlib.suppress(GeoSegError):
            storage.delete(lock)


@contextlib.contextmanager
def open_journal(out_dir: str | os.PathLike[str], settings: dict[str, Any], *, resume: bool,
                 overwrite: bool, objects: Mapping[str, ObjectInfo] | None = None
                 ) -> Iterator[Journal]:
    """Open the journal of ``out_dir`` (a folder, or an ``s3://`` prefix), for this run;
    call :meth:`Journal.start` once the run's outputs are checked.

    With ``resume`` an earlier journal is continued if its settings equal ``settings``;
    without it an earlier journal is an existing output (replaced only with ``overwrite``).
    A journal this run created but never wrote to is removed again. ``objects``, the
    listing of an ``s3://`` prefix (:func:`geoseg.storage.listing`) when the caller has
    it, spares a second one: finished outputs are checked against it, not one by one.
    """
    from geoseg import storage

    if storage.is_url(os.fspath(out_dir)):
        folder = os.fspath(out_dir).rstrip("/")
        prefix = f"{folder}/{BUCKET_JOURNAL}"
        if objects is None:
            objects = storage.listing(folder)
        with _leased(f"{prefix}/lock", folder):
            urls = _events(storage.listing(prefix))  # as the last run holding it left them
            records = _parse("\n".join(_read_events(urls)))
            journal = _checked(prefix, _BucketSink(prefix, urls), records, settings,
                               resume=resume, overwrite=overwrite, objects=objects)
            with _removed_unless_used(journal, created=not urls):
                yield journal
        return
    path = Path(out_dir) / JOURNAL
    try:
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 (held for the whole run)
    except OSError as exc:
        raise OutputError(f"cannot write the run journal ({exc.strerror})", path) from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise OutputError("another geoseg run is writing into this folder", out_dir) from None
        handle.seek(0)
        text = handle.read()
        sink = _FileSink(path, handle, torn=bool(text) and not text.endswith("\n"))
        journal = _checked(path, sink, _parse(text), settings, resume=resume,
                           overwrite=overwrite)
        with _removed_unless_used(journal, created=not text):
            yield journal


@contextlib.contextmanager
def _removed_unless_used(journal: Journal, *, created: bool) -> Iterator[None]:
    """A journal this run ``created`` goes again if the run ended before any scene did."""
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        if (created and not journal.kept and not journal.finished_any()
                and (failed or not journal.started)):
            journal._sink.remove()


def _checked(path: Path | str, sink: _FileSink | _BucketSink, records: list[dict[str, Any]],
             settings: dict[str, Any], *, resume: bool, overwrite: bool,
             objects: Mapping[str, ObjectInfo] | None = None) -> Journal:
    """The journal of ``records``, once the rules of resuming and overwriting allow it."""
    if records and not resume and not overwrite:
        raise OutputExistsError("exists already: this folder holds an earlier run "
                                "(use ${resume=True} to finish it, ${overwrite=True} to redo it)",
                                path)
    earlier = _settings(records) if resume else None
    if earlier is not None and earlier != settings:
        if not overwrite:
            changed = sorted(k for k in {*earlier, *settings}
                             if earlier.get(k) != settings.get(k))
            raise InputError(f"was started with other settings ({', '.join(changed)} "
                             f"differ); resume with the same options, or use ${{overwrite=True}}",
                             path)
        resume = False  # other settings and --overwrite: start again
    return Journal(path, sink, records if resume else [], replace=bool(records) and not resume,
                   objects=objects)


def _read_events(urls: list[str]) -> list[str]:
    """The texts of a bucket journal's event objects, in order (fetched 16 at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    from geoseg import storage

    with ThreadPoolExecutor(16) as pool:
        return [b.decode("utf-8", "replace") for b in pool.map(storage.get_bytes, urls)]


def _settings(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The settings of the run that wrote a journal (its first ``run`` line)."""
    return next((r["settings"] for r in records
                 if r.get("event") == "run" and "settings" in r), None)


def _parse(text: str) -> list[dict[str, Any]]:
    records = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a crash: that event never happened
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
