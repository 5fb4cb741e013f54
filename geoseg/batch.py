"""``geoseg run``: predict and vectorize many scenes into an output folder, resumably.

Each scene (see :mod:`geoseg.scenes`) gives ``NAME.mask.tif`` (+ its ``.qml``),
``NAME.gpkg`` (+ its ``.qml``) and on request ``NAME.prob.tif`` and ``NAME.png``.

How scenes run:

- On a local scheduler (``threads``, ``processes``, ``sync``) one scene after another,
  each spread over all workers tile by tile.
- On a Dask cluster (``local`` or ``tcp://``) each scene is two tasks, predict then
  vectorize, that run whole on one worker; at most two per worker thread are submitted at
  a time. If a worker dies, Dask runs its tasks again elsewhere; outputs are written
  atomically, so a killed task leaves no output. With fewer scenes than worker threads the
  scenes instead run one after another, each spread over the cluster tile by tile.

Outputs under an ``s3://`` prefix are written scene by scene in the temp folder of the
process that runs the scene and uploaded when all are finished (:func:`bucket_scene`), so
no worker needs a disk shared with the client or the others; the model then travels to
the workers as bytes.

The journal (:mod:`geoseg.journal`) records each finished scene with the checksums of its
outputs; ``resume`` skips exactly those scenes whose outputs and source are unchanged. A
scene that fails is recorded with its error and the others go on. ``summary.json`` lists
every scene and the area of each class over all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from geoseg.inference import ModelHandle

from geoseg import __version__, atomic, storage
from geoseg.cluster import (
    ADDRESS_SCHEMES,
    IN_PROCESS,
    LOCAL_SCHEDULERS,
    check_scheduler,
    wait_for_workers,
)
from geoseg.errors import (
    GeoSegError,
    GeoSegWarning,
    OutputError,
    OutputExistsError,
    Speaker,
    warn,
)
from geoseg.journal import (
    Journal,
    fingerprint,
    open_journal,
    sha256,
    source_path,
    source_stamp,
)
from geoseg.scenes import Output, SceneOutputs, absolute, expand_sources, join, plan

SUMMARY = "summary.json"
IN_FLIGHT_PER_THREAD = 2  # scenes submitted per worker thread: enough to keep it busy
WORKER_WAIT_S = 600  # how long a run waits for the first worker of a cluster to join
ALL_NODATA = "no valid pixels (all nodata): the mask is all nodata and the layer empty"


@dataclass(frozen=True)
class SceneJob:
    """All a worker needs to process one scene (small and picklable)."""

    scene: SceneOutputs
    model: str  # path of the model card: workers load it themselves, once each
    predict_options: dict[str, Any] = field(hash=False)
    vector_options: dict[str, Any] = field(hash=False)
    scheduler: str = "sync"  # how the scene's own tasks run (inside a worker: sync)
    workers: int | None = None
    progress: bool = False


# The two tasks of a scene return its error rather than raise it: one line of text travels
# back from any worker intact, where a pickled exception may lose its type and message.

@dataclass(frozen=True)
class Failed:
    """A scene's error as one line, as Python says it and as the command line does (they
    name options differently: see :func:`geoseg.errors.option_text`)."""

    python: str
    cli: str

    @classmethod
    def of(cls, exc: BaseException) -> Failed:
        if isinstance(exc, GeoSegError):
            return cls(_one_line(exc.text("python")), _one_line(exc.text("cli")))
        text = _one_line(f"{type(exc).__name__}: {exc}")
        return cls(text, text)

    def said(self, speaker: Speaker) -> str:
        return self.cli if speaker == "cli" else self.python


@dataclass(frozen=True)
class Predicted:
    """A scene whose mask is written: its size and the time it took."""

    pixels: int
    seconds: float


@dataclass(frozen=True)
class Finished:
    """A scene whose outputs are all written, as the journal records it (with the size
    and SHA-256 of every output, so that ``resume`` can check them)."""

    scene: str
    source_stamp: list[list[Any]]
    outputs: dict[str, dict[str, Any]]
    crs: str | None
    pixels: int
    seconds: float
    classes: list[dict[str, Any]]
    warning: str | None = None
    masked_pixels: int | None = None  # the pixels mask models made nodata (--mask-with)

    def record(self) -> dict[str, Any]:
        """The journal's fields (``warning`` and ``masked_pixels`` only when there are)."""
        fields = dataclasses.asdict(self)
        for optional in ("warning", "masked_pixels"):
            if fields[optional] is None:
                del fields[optional]
        return fields

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Finished:
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)
                      if f.name in record})


@dataclass(frozen=True)
class SceneEntry:
    """How a scene ended in this run: ``done``, ``skipped`` (an earlier run finished it)
    or ``failed``."""

    scene: str
    source: str
    status: Literal["done", "skipped", "failed"]
    finished: Finished | None = None
    error: str | None = None


def predict_scene(job: SceneJob, model: ModelHandle | None = None) -> Predicted | Failed:
    """Write the scene's mask (and probabilities, quicklook); returns its size and time.
    ``model``, when given, is the job's model as bytes (workers that share no disk)."""
    from geoseg.prediction import predict

    started = time.perf_counter()
    s = job.scene
    try:
        with _warnings_in_entry():
            mask = predict(s.source, s.mask, model if model is not None else job.model,
                           probabilities_path=s.probabilities,
                           quicklook=s.quicklook, overwrite=True, scheduler=job.scheduler,
                           workers=job.workers, progress=job.progress, **job.predict_options)
    except Exception as exc:
        return Failed.of(exc)
    return Predicted(int(mask.shape[0] * mask.shape[1]), time.perf_counter() - started)


@contextlib.contextmanager
def _warnings_in_entry() -> Iterator[None]:
    """geoseg's own warnings about a scene go into its journal entry and its line of the
    run's output, not to the warnings machinery of whichever process runs it. (Python's
    warning filters are global: a scene on another thread of the same worker may warn
    meanwhile, which the entry still records.)"""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeoSegWarning)
        yield


def vectorize_scene(job: SceneJob, predicted: Predicted | Failed, *,
                    record: bool = True) -> Finished | Failed:
    """Write the scene's GeoPackage; returns the scene's journal entry, with the size and
    SHA-256 of every output unless not ``record`` (outputs its caller records itself)."""
    from geoseg.maskfile import has_data
    from geoseg.vector import vectorize_to_gpkg

    if isinstance(predicted, Failed):
        return predicted
    started = time.perf_counter()
    s = job.scene
    try:
        stamp = source_stamp(s.source)
        # The GeoPackage's date is its source's: a rerun gives the same bytes.
        with _warnings_in_entry():
            tally = vectorize_to_gpkg(
                s.mask, s.gpkg, overwrite=True,
                timestamp=max((m for _, _, m in stamp), default=0) / 1e9,
                probabilities=s.probabilities, scheduler=job.scheduler, workers=job.workers,
                progress=job.progress, allow_no_crs=bool(job.predict_options.get("allow_no_crs")),
                **job.vector_options)
        outputs = fingerprint(s.files()) if record else {}
        empty = not tally.polygons.sum() and not has_data(s.mask)
    except Exception as exc:
        return Failed.of(exc)
    return Finished(s.name, stamp, outputs, tally.crs, predicted.pixels,
                    round(predicted.seconds + time.perf_counter() - started, 2),
                    class_areas(tally.class_names, tally.polygons, tally.area_m2),
                    ALL_NODATA if empty else None,
                    None if tally.masked is None else tally.masked[1])


VECTORS = ("gpkg", "gpkg_style")  # a scene's outputs that vectorizing writes
RASTERS = ("mask", "probabilities")  # those of predicting that vectorizing reads


def bucket_scene(job: SceneJob, model: ModelHandle | None = None) -> Finished | Failed:
    """Predict and vectorize a scene whose outputs are URLs in object storage: they are
    written in a temp folder of this process (its ``TMPDIR``) and uploaded once all are
    finished, so a worker needs no disk shared with anyone. A scene spread tile by tile
    over a cluster (``job.scheduler`` a distributed one) has its raster outputs sent to
    the bucket by :func:`geoseg.predict` itself (whose tiles travel through the bucket),
    then is vectorized by :func:`vectorize_from_bucket`. Each object appears whole; the
    journal records each one's size and ETag."""
    if job.scheduler not in LOCAL_SCHEDULERS:
        return vectorize_from_bucket(job, predict_scene(job, model))
    return _in_temp_folder(
        job, lambda local: vectorize_scene(local, predict_scene(local, model), record=False),
        fetch=(), send=tuple(job.scene.files()))


def vectorize_from_bucket(job: SceneJob, predicted: Predicted | Failed) -> Finished | Failed:
    """Vectorize a scene whose raster outputs are already in the bucket: they are fetched
    into this process's temp folder, vectorized by its threads, and the GeoPackage and its
    style uploaded; returns the scene's journal entry (every output by size and ETag)."""
    if isinstance(predicted, Failed):
        return predicted
    return _in_temp_folder(
        dataclasses.replace(job, scheduler="threads", workers=None),
        lambda local: vectorize_scene(local, predicted, record=False),
        fetch=tuple(k for k in RASTERS if k in job.scene.files()), send=VECTORS)


def _in_temp_folder(job: SceneJob, work: Callable[[SceneJob], Finished | Failed], *,
                    fetch: Sequence[str], send: Sequence[str]) -> Finished | Failed:
    """``work`` on the scene with its outputs in a temp folder of this process: the kinds
    ``fetch`` downloaded from the bucket first, those ``send`` uploaded after (all or none
    left there); the entry records every output in the bucket by size and ETag."""
    import tempfile

    s = job.scene
    with tempfile.TemporaryDirectory(prefix="geoseg-scene-") as tmp:
        local = dataclasses.replace(job, scene=s.in_folder(Path(tmp)))
        there, urls = local.scene.files(), s.files()
        try:
            for kind in fetch:
                storage.download(str(urls[kind]), there[kind])
            done = work(local)
            if isinstance(done, Failed):
                return done
            storage.upload_all([(there[k], str(urls[k])) for k in send], overwrite=True)
            outputs = fingerprint(urls)
        except Exception as exc:
            return Failed.of(exc)
    return dataclasses.replace(done, outputs=outputs)


def run(
    sources: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    model: str | os.PathLike[str] = "auto",
    *,
    probabilities: bool = False,
    quicklook: bool = False,
    min_area: float = 0.0,
    simplify: float = 0.0,
    classes: Sequence[int | str] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    scheduler: str = "threads",
    workers: int | None = None,
    threads_per_worker: int = 1,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    speaker: Speaker = "python",
    **predict_options: Any,
) -> dict[str, Any]:
    """Predict and vectorize every scene of ``sources`` into ``out_dir``, a folder or an
    ``s3://bucket/prefix`` (the journal and summary then in the bucket too).

    ``sources`` are paths, URLs, glob patterns (``s3://`` ones too) or text lists (see
    :func:`expand_sources`).
    ``predict_options`` go to :func:`geoseg.predict` (tile_size, overlap, batch_size,
    device, bands, tta, allow_no_crs, mask_with). ``model="auto"``: the model
    :func:`geoseg.prediction.choose_model` chooses for the first scene, for all of them.
    With ``resume`` the scenes an earlier run into ``out_dir`` finished (and whose outputs
    are intact) are skipped. Returns the summary also written to ``out_dir/summary.json``,
    whose ``failed`` count says whether every scene succeeded; ``report`` receives a line
    of text as each scene ends. Errors name options as ``speaker`` does (see
    :func:`geoseg.errors.option_text`).
    """
    from geoseg.inference import check_weights, model_reference, task_threads
    from geoseg.prediction import AUTO

    def say(line: str) -> None:
        if report is not None:
            report(line)

    check_scheduler(scheduler)
    started = time.perf_counter()
    bucket = storage.is_url(os.fspath(out_dir))
    out: Output = os.fspath(out_dir).rstrip("/") if bucket else Path(out_dir)
    # The bucket first: a missing one, or credentials it refuses, stop the run at once.
    existing = storage.listing(str(out)) if bucket else {}
    scenes = plan(expand_sources(sources), out, probabilities=probabilities,
                  quicklook=quicklook)
    demonstration = None  # said once the outputs are known to be writable
    if os.fspath(model) == AUTO:
        model, demonstration = auto_model([s.source for s in scenes], predict_options)
    spec, handle = model_reference(model)
    assert handle.path is not None  # a saved model: workers load it by its path
    # A bad model stops the run before any scene (and scenes run here reuse this load).
    check_weights(handle, predict_options.get("device", "auto"),
                  bool(predict_options.get("tta")), in_process=scheduler in IN_PROCESS,
                  threads=task_threads(scheduler, workers))
    vector_options = {"min_area": min_area, "simplify": simplify,
                      "classes": list(classes) if classes else None}
    settings = {"model": spec.name, "model_sha256": _model_digest(handle.path),
                "probabilities": probabilities, "quicklook": quicklook, **vector_options,
                **{k: list(v) if isinstance(v, tuple) else v for k, v in predict_options.items()}}
    created: list[Path] = []
    if isinstance(out, Path):
        if out.exists() and not out.is_dir():
            raise OutputError("is a file, not a folder", out)
        created = atomic.make_folders(out, out)
    entries: dict[str, SceneEntry] = {}
    try:
        with open_journal(out, settings, resume=resume, overwrite=overwrite,
                          objects=existing if bucket else None) as journal:
            if demonstration is not None:
                warn(demonstration, scenes[0].source)
            todo = _still_to_do(scenes, journal, entries, say)
            # A resumed run replaces what it wrote before; nothing else without --overwrite.
            ours = journal.planned()
            for scene in todo:
                _check_outputs(scene.all(), existing, overwrite=overwrite or scene.name in ours)
            _check_outputs([join(out, SUMMARY)], existing, overwrite=overwrite or bool(ours))
            journal.start(settings, [s.name for s in todo])
            _remove_stale_temps(scenes)
            _remove_stale_parts(scenes, existing)
            jobs = [SceneJob(s, handle.path, dict(predict_options), vector_options)
                    for s in todo]
            started_scenes: set[str] = set()
            by_name = {job.scene.name: job for job in jobs}
            results = _execute(jobs, handle, scheduler, workers, threads_per_worker,
                               predict_options.get("device", "auto"), progress, started_scenes)
            try:
                with contextlib.closing(results), _signals() as stop:
                    for job, result in _progress(results, len(jobs), progress):
                        # An interrupt may surface as another error from inside a library.
                        if stop.is_set() and not isinstance(result, Finished):
                            raise KeyboardInterrupt
                        job = by_name[job.scene.name]  # its paths as the user gave them
                        entries[job.scene.name] = entry = _record(journal, job, result,
                                                                  speaker)
                        say(_scene_line(entry))
                        if stop.is_set():
                            raise KeyboardInterrupt
            except BaseException:
                # A scene is in the folder whole or not at all: drop those left half done
                # (scenes not begun yet keep whatever an earlier run left).
                for scene in todo:
                    if scene.name in started_scenes and scene.name not in entries:
                        _discard(scene)
                if started_scenes and scheduler.startswith(ADDRESS_SCHEMES):
                    # Scenes running on a cluster of its own end in the background, and
                    # may write their outputs: the journal stays so that --resume may
                    # replace them (they are this run's).
                    journal.keep()
                raise
            finally:
                _remove_stale_temps(scenes)  # e.g. those of a task on a worker that was killed
    except BaseException:
        atomic.remove_empty_folders(created)  # leave no empty folder behind a run that did nothing
        raise
    summary = _summary(spec.name, settings, [entries[s.name] for s in scenes], out,
                       time.perf_counter() - started)
    text = json.dumps(summary, indent=2) + "\n"
    if isinstance(out, Path):
        with atomic.atomic_path(out / SUMMARY, overwrite=True) as tmp:
            tmp.write_text(text)
    else:
        storage.put_bytes(f"{out}/{SUMMARY}", text.encode(), overwrite=True)
    return summary


def _check_outputs(paths: Sequence[Output], existing: dict[str, Any], *,
                   overwrite: bool) -> None:
    """Before any work: local outputs as :func:`geoseg.atomic.check_outputs` checks them;
    URLs against the listing of the run's prefix (``existing``)."""
    local = [p for p in paths if not isinstance(p, str)]
    if local:
        atomic.check_outputs(local, overwrite=overwrite)
    for url in paths:
        if isinstance(url, str) and url in existing and not overwrite:
            raise OutputExistsError("exists already (use ${overwrite=True} to replace it)", url)


@contextlib.contextmanager
def _signals() -> Iterator[threading.Event]:
    """While a run goes on, SIGINT and SIGTERM raise KeyboardInterrupt and set an event, so
    that an interrupt a library turned into its own error is still seen as one."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def interrupt(signum: int, frame: Any) -> None:
        stop.set()
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _still_to_do(scenes: list[SceneOutputs], journal: Journal, entries: dict[str, SceneEntry],
                 say: Callable[[str], None]) -> list[SceneOutputs]:
    """The scenes to compute; those an earlier run finished intact go into ``entries``."""
    finished = journal.finished()
    todo = []
    for scene in scenes:
        record = finished.get(scene.name)
        if record is not None:
            why = journal.still_done(record, scene.source)
            if why is None:
                entries[scene.name] = SceneEntry(scene.name, record["source"], "skipped",
                                                  Finished.from_record(record))
                say(f"skipped {scene.name} (finished by an earlier run)")
                continue
            say(f"redo    {scene.name} ({why})")
        todo.append(scene)
    return todo


def _record(journal: Journal, job: SceneJob, result: Finished | Failed | BaseException,
            speaker: Speaker) -> SceneEntry:
    """Journal a scene's end; returns its entry for the summary (an error as ``speaker``
    says it). A failed scene's outputs are removed: what it wrote before failing is no
    finished scene."""
    scene = job.scene
    if not isinstance(result, Finished):
        error = (result if isinstance(result, Failed) else Failed.of(result)).said(speaker)
        _discard(scene)
        journal.write("failed", scene=scene.name, source=scene.source, error=error)
        return SceneEntry(scene.name, scene.source, "failed", error=error)
    journal.write("done", **result.record(), source=scene.source,
                  source_path=source_path(scene.source))
    return SceneEntry(scene.name, scene.source, "done", result)


def _discard(scene: SceneOutputs) -> None:
    for path in scene.all():
        if isinstance(path, str):
            with contextlib.suppress(GeoSegError):  # what cannot go now, --resume replaces
                storage.delete(path)
        else:
            atomic.remove_with_sidecars(path)


def _scene_line(entry: SceneEntry) -> str:
    if entry.finished is None:
        return f"failed  {entry.scene}: {entry.error}"
    done = entry.finished
    warning = f"; warning: {done.warning}" if done.warning else ""
    return f"done    {entry.scene} ({done.pixels / 1e6:.2f} Mpx, {done.seconds:.1f} s{warning})"


def _progress(items: Iterator[Any], total: int, enabled: bool) -> Iterator[Any]:
    if not enabled or total < 2:
        yield from items
        return
    from geoseg.progress import bar as progress_bar

    with progress_bar(total, "run", unit="scene") as bar:
        for item in items:
            yield item
            bar.update(1)


Outcome = tuple[SceneJob, Finished | Failed | BaseException]


def _execute(jobs: list[SceneJob], handle: ModelHandle, scheduler: str, workers: int | None,
             threads_per_worker: int, device: str, progress: bool,
             started: set[str]) -> Generator[Outcome, None, None]:
    """Run the jobs; yields ``(job, journal entry or error)`` as each ends. The names of the
    scenes begun so far are added to ``started``."""
    from geoseg.cluster import client_for, worker_threads
    from geoseg.prediction import check_inputs_seen
    from geoseg.scenes import scene_files

    if not jobs:
        return
    progress = progress and len(jobs) == 1  # a bar per scene; many scenes get one bar in all
    if scheduler in LOCAL_SCHEDULERS:
        yield from _one_by_one(jobs, scheduler, workers, progress, started)
        return
    # Workers may run in another directory: they get absolute paths.
    jobs = [dataclasses.replace(j, scene=absolute(j.scene)) for j in jobs]
    with client_for(scheduler, workers=workers, threads_per_worker=threads_per_worker,
                    device=device) as client:
        wait_for_workers(client, scheduler, WORKER_WAIT_S)
        # The first scene on this machine's disk stands for all (one round trip).
        local = next((j.scene.source for j in jobs if scene_files(j.scene.source)), None)
        if local is not None:
            check_inputs_seen(client, scheduler, local)
        # Too few scenes to fill the cluster: share out their tiles instead (on GPU
        # workers the model tasks keep to one per GPU: see geoseg.predict).
        if len(jobs) < worker_threads(client):
            yield from _one_by_one(jobs, client.scheduler.address, None, progress, started)
        else:
            yield from _on_cluster(client, jobs, handle, device, started)


def _one_by_one(jobs: list[SceneJob], scheduler: str, workers: int | None, progress: bool,
                started: set[str]) -> Iterator[Outcome]:
    for job in jobs:
        job = dataclasses.replace(job, scheduler=scheduler, workers=workers, progress=progress)
        started.add(job.scene.name)
        if storage.is_url(job.scene.mask):
            yield job, bucket_scene(job)
        else:
            yield job, vectorize_scene(job, predict_scene(job))


def _carry(handle: ModelHandle) -> ModelHandle:
    return handle


def _on_cluster(client: Any, jobs: list[SceneJob], handle: ModelHandle, device: str,
                started: set[str]) -> Iterator[Outcome]:
    """Scenes as tasks on a distributed cluster: as many in flight as keep its worker
    threads busy (counted again as workers come and go), no more.

    The model travels as bytes, not as a path: one task holds it, so each worker fetches
    it once, and the scheduler, which keeps that task, can make it again if the workers
    holding it are lost. A scene is two tasks, predict then vectorize, so that a GPU is
    free for the next scene while one is vectorized; on CPU workers a scene whose outputs
    go to object storage is one (it writes in its worker's temp folder and uploads all),
    while on GPU workers its raster outputs are uploaded by the first task and fetched
    by the second."""
    from distributed import as_completed

    from geoseg.cluster import model_resources, worker_threads

    resources = model_resources(client, device)
    # A GPU task reads tiles in a second thread while the GPU works; CPU tasks use one.
    inner = ("threads", 2) if resources else ("sync", None)
    carried = handle.carried()
    model = client.submit(_carry, carried, key=f"geoseg-model-{carried.fingerprint}",
                          pure=False)
    pending = iter(jobs)
    running: dict[Any, SceneJob] = {}
    finished = as_completed(loop=client.loop)

    def submit(job: SceneJob) -> None:
        remote = dataclasses.replace(job, scheduler=inner[0], workers=inner[1])
        token = f"{job.scene.name}-{os.urandom(4).hex()}"
        if storage.is_url(job.scene.mask) and not resources:
            entry = client.submit(bucket_scene, remote, model, key=f"geoseg-scene-{token}",
                                  pure=False)
        else:
            predicted = client.submit(predict_scene, remote, model,
                                      key=f"geoseg-predict-{token}", resources=resources,
                                      pure=False)
            vectorize = (vectorize_from_bucket if storage.is_url(job.scene.mask)
                         else vectorize_scene)
            entry = client.submit(vectorize, remote, predicted,
                                  key=f"geoseg-vectorize-{token}", pure=False)
        started.add(job.scene.name)
        running[entry] = job
        finished.add(entry)

    def top_up() -> None:
        limit = IN_FLIGHT_PER_THREAD * worker_threads(client)
        for job in itertools.islice(pending, max(0, limit - len(running))):
            submit(job)

    try:
        top_up()
        for future in finished:
            job = running.pop(future)
            result: Finished | Failed | BaseException
            try:
                result = future.result()
            except Exception as exc:  # the scene's error, KilledWorker, or a cancelled task
                result = exc
            future.release()
            yield job, result
            top_up()
    finally:  # stopped early: what has not started will not (what runs, runs to its end)
        if running:
            client.cancel(list(running), force=True)
        model.release()


def _remove_stale_temps(scenes: list[SceneOutputs]) -> None:
    """Temp files that an interrupted or killed run left beside this run's outputs (named
    as :func:`geoseg.atomic.temp_sibling` names them), in one listing of each folder."""
    wanted: dict[Path, set[str]] = {}
    for scene in scenes:
        for path in scene.all():
            if isinstance(path, Path):  # an object store has no temp files
                wanted.setdefault(path.parent, set()).add(path.name)
    for folder, names in wanted.items():
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                match = atomic.TEMP_NAME.match(entry.name)
                if match and match["name"] in names:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)


def _remove_stale_parts(scenes: list[SceneOutputs], existing: dict[str, Any]) -> None:
    """The block parts (:mod:`geoseg.parts`) that a run killed outright left beside this
    run's masks in the bucket (``existing``, the prefix's listing)."""
    from geoseg.parts import stale_parts

    masks = [str(s.mask) for s in scenes if isinstance(s.mask, str)]
    for url in stale_parts(masks, existing):
        with contextlib.suppress(GeoSegError):
            storage.delete(url)


def auto_model(sources: Sequence[str], predict_options: dict[str, Any]
               ) -> tuple[str, str | None]:
    """The bundled model for a run's scenes, chosen for the first that opens (see
    :func:`geoseg.prediction.choose_model`; one that does not fails on its own later, and a
    Sentinel-2 scene without Dynamic World's bands stops the run with the hint), and the
    warning to give where it is the demonstration model on scenes not geoseg's own."""
    from geoseg import synthetic
    from geoseg.errors import MissingBandsError
    from geoseg.prediction import DEMONSTRATION, DEMONSTRATION_WARNING, choose_model

    keys = ("bands", "assets", "resolution", "resampling", "allow_no_crs")
    options = {k: predict_options[k] for k in keys if predict_options.get(k) is not None}
    for source in sources:
        try:
            name, choice = choose_model(source, **options)
        except MissingBandsError:
            raise
        except GeoSegError:
            continue
        break
    else:
        return "default", None  # no scene opens: each fails with its own error
    if choice == DEMONSTRATION and not (os.path.isfile(source)
                                        and synthetic.is_synthetic(source)):
        return name, DEMONSTRATION_WARNING
    return name, None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _model_digest(card: str) -> str:
    """The SHA-256 of the model's weights, and of its ONNX graph when it has one too."""
    from geoseg.model import model_files

    return "+".join(sha256(p) for p in model_files(card))


def class_areas(names: Sequence[str], polygons: np.ndarray, area_m2: np.ndarray) -> list[dict[str, Any]]:
    """Polygons, area and share of the mapped area, per class (every class listed)."""
    total = float(np.sum(area_m2))
    rows = []
    for k, name in enumerate(names):
        area = float(area_m2[k]) if k < len(area_m2) else 0.0
        rows.append({"class_id": k, "class_name": name,
                     "polygons": int(polygons[k]) if k < len(polygons) else 0,
                     "area_m2": round(area, 2), "share": round(area / total, 6) if total else 0.0})
    return rows


def _summary(model: str, settings: dict[str, Any], entries: list[SceneEntry], out: Output,
             seconds: float) -> dict[str, Any]:
    ok = [e.finished for e in entries if e.finished is not None]
    names: list[str] = max(([c["class_name"] for c in f.classes] for f in ok),
                           key=len, default=[])
    polygons, area = np.zeros(len(names), np.int64), np.zeros(len(names))
    for f in ok:
        for c in f.classes:
            polygons[c["class_id"]] += c["polygons"]
            area[c["class_id"]] += c["area_m2"]
    scenes = []
    for e in entries:
        scene: dict[str, Any] = {"name": e.scene, "source": e.source, "status": e.status}
        if e.finished is None:
            scene["error"] = e.error
        else:
            f = e.finished
            if f.warning:
                scene["warning"] = f.warning
            scene.update(outputs={k: str(join(out, os.path.basename(v["path"])))
                                  for k, v in f.outputs.items()},
                         crs=f.crs, pixels=f.pixels, seconds=f.seconds, classes=f.classes)
            if f.masked_pixels is not None:
                scene["masked_pixels"] = f.masked_pixels
        scenes.append(scene)
    computed = [e.finished for e in entries if e.status == "done" and e.finished is not None]
    return {
        "geoseg": __version__, "model": model,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "options": settings,
        "totals": {"scenes": len(entries), "done": len(computed),
                   "skipped": sum(e.status == "skipped" for e in entries),
                   "failed": len(entries) - len(ok),
                   "pixels": int(sum(f.pixels for f in ok)),
                   "pixels_computed": int(sum(f.pixels for f in computed)),
                   **({"pixels_masked": int(sum(f.masked_pixels or 0 for f in ok))}
                      if any(f.masked_pixels is not None for f in ok) else {}),
                   "seconds": round(seconds, 2),
                   "classes": class_areas(names, polygons, area)},
        "scenes": scenes,
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The run's totals and class table as text (areas in hectares)."""
    t = summary["totals"]
    rate = t["pixels_computed"] / 1e6 / t["seconds"] if t["seconds"] else 0.0
    per_min = t["done"] / t["seconds"] * 60 if t["seconds"] else 0.0
    lines = [f"{t['scenes']} scene{'s' * (t['scenes'] != 1)}: {t['done']} done, {t['skipped']} skipped, "
             f"{t['failed']} failed; {t['pixels'] / 1e6:.2f} Mpx mapped, "
             f"{t['pixels_computed'] / 1e6:.2f} Mpx computed in {t['seconds']:.1f} s "
             f"({rate:.2f} Mpx/s, {per_min:.1f} scenes/min)"
             + (f"; {t['pixels_masked'] / 1e6:.2f} Mpx made nodata by mask models"
                if "pixels_masked" in t else "")]
    if t["classes"]:
        lines.append(f"  {'class':<16} {'polygons':>9} {'area (ha)':>12} {'share':>7}")
        for row in t["classes"]:
            lines.append(f"  {row['class_name']:<16} {row['polygons']:>9} "
                         f"{row['area_m2'] / 1e4:>12.2f} {row['share']:>7.1%}")
    return "\n".join(lines)
