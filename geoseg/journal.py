"""The journal of a batch run: what finished, so that ``--resume`` can skip it safely.

``OUT_DIR/geoseg-journal.jsonl`` is append-only JSON lines, one fsync'd line per event:
the run's settings when it starts or resumes, then one ``done`` (with the size and SHA-256
of every output) or ``failed`` line per scene. A line cut short by a crash is ignored. A
scene counts as done only when its outputs still have the recorded bytes and its source is
unchanged, so a half-written or edited file is never mistaken for a finished one. While a
run holds the journal (an exclusive ``flock``) no second run can write into the folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from geoseg.errors import InputError, OutputError, OutputExistsError

JOURNAL = "geoseg-journal.jsonl"


def sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(paths: Mapping[str, str | os.PathLike[str]]) -> dict[str, dict[str, Any]]:
    """``{kind: {path, bytes, sha256}}`` of written outputs (what ``done`` records)."""
    return {kind: {"path": str(p), "bytes": os.path.getsize(p), "sha256": sha256(p)}
            for kind, p in paths.items()}


def source_stamp(source: str | os.PathLike[str]) -> list[list[Any]]:
    """Size and modification time of a scene's files (:func:`geoseg.scenes.scene_files`),
    or of each file in its folder."""
    from geoseg.scenes import scene_files

    try:
        files = [f for p in scene_files(os.fspath(source))
                 for f in (sorted(c for c in p.iterdir() if c.is_file()) if p.is_dir() else [p])]
        return [[f.name, st.st_size, st.st_mtime_ns] for f in files for st in [f.stat()]]
    except OSError:
        return []


class Journal:
    """An open journal (use :func:`open_journal`)."""

    def __init__(self, path: Path, handle: TextIO, records: list[dict[str, Any]], *,
                 replace: bool = False, torn: bool = False) -> None:
        self.path = path
        self._handle = handle
        self.records = records
        self.started = False
        self._replace = replace  # an earlier run's journal, to be emptied on start (overwrite)
        self._torn = torn  # the last line was cut short by a crash

    def start(self, settings: dict[str, Any], scenes: list[str]) -> None:
        """Record that a run (or a resumed one) begins, with the scenes it will compute."""
        if self._replace:
            self._handle.truncate(0)
        elif self._torn:
            self._handle.write("\n")  # so the next line starts clean
        self.started = True
        self.write("run", settings=settings, scenes=scenes)

    def write(self, event: str, **fields: Any) -> None:
        record = {"event": event, **fields}
        self.records.append(record)
        line = json.dumps(record, separators=(",", ":"))
        self._handle.write(line + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

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
        if (record.get("source_path") != os.path.abspath(source)
                or record.get("source_stamp") != source_stamp(source)):
            return "its source changed"
        for kind, out in record.get("outputs", {}).items():
            path = self.path.parent / Path(out["path"]).name  # outputs live beside the journal
            try:
                if os.path.getsize(path) != out["bytes"] or sha256(path) != out["sha256"]:
                    return f"its {kind} output changed"
            except OSError:
                return f"its {kind} output is missing"
        return None


@contextlib.contextmanager
def open_journal(out_dir: str | os.PathLike[str], settings: dict[str, Any], *, resume: bool,
                 overwrite: bool) -> Iterator[Journal]:
    """Open the journal of ``out_dir`` (creating it), locked for this run; call
    :meth:`Journal.start` once the run's outputs are checked.

    With ``resume`` an earlier journal is continued if its settings equal ``settings``;
    without it an earlier journal is an existing output (replaced only with ``overwrite``).
    A journal this run created but never wrote to is removed again.
    """
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
        records = _parse(text)
        if records and not resume and not overwrite:
            raise OutputExistsError("exists already: this folder holds an earlier run "
                                    "(use ${resume=True} to finish it, ${overwrite=True} to redo it)", path)
        earlier = _settings(records) if resume else None
        if earlier is not None and earlier != settings:
            if not overwrite:
                changed = sorted(k for k in {*earlier, *settings}
                                 if earlier.get(k) != settings.get(k))
                raise InputError(f"was started with other settings ({', '.join(changed)} "
                                 f"differ); resume with the same options, or use ${{overwrite=True}}",
                                 path)
            resume = False  # other settings and --overwrite: start again
        journal = Journal(path, handle, records if resume else [],
                          replace=bool(records) and not resume,
                          torn=bool(text) and not text.endswith("\n"))
        failed = False
        try:
            yield journal
        except BaseException:
            failed = True
            raise
        finally:
            # A journal this run created goes again if the run ended before any scene did.
            if not text and not journal.finished_any() and (failed or not journal.started):
                with contextlib.suppress(OSError):
                    path.unlink()


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
