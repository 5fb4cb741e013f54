"""One thread owns a device; model tasks hand it batches through a bounded queue.

On a GPU, model tasks used to call the network from every Dask pool thread at once, each
with its own CUDA stream and freshly pinned copies, and one such run printed nothing for
8 minutes. A :class:`DeviceFeeder` is the only thread that touches its device: a task
puts its batch (raw tiles, valid masks, blend weights, scale/offset, result dtype) into a
queue of at most ``queue_size`` batches (so producers block instead of piling batches up
in memory) and waits on its own future, which gets the probabilities or the owner's
exception. On CUDA the owner copies each batch into page-locked host buffers allocated
once per shape and reused, keeps :data:`IN_FLIGHT` batches launched so that copies
overlap compute, and pads a short batch to the size the graph asked for, so cuDNN's
autotuner sees one shape per row of tiles. A watchdog thread reports a batch that runs
far longer than the ones before it (:class:`StallLimit`), once, with the Python stacks
of the owner and of the tasks waiting on it (:func:`report_stall`), instead of letting
the run hang silently.

The same feeder runs on the CPU (plain numpy buffers, nothing launched ahead), which is
how it is tested; on a CPU, tasks calling :meth:`Predictor.predict_proba` directly stay
the default (two tasks of one thread beat one of two on 2 cores).
"""

from __future__ import annotations

import atexit
import logging
import queue
import statistics
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.errors import EnvError

if TYPE_CHECKING:
    from geoseg.inference import ModelHandle, Predictor

log = logging.getLogger(__name__)

QUEUE_BATCHES = 4  # batches waiting for the device, beyond those it runs (memory: raw tiles)
IN_FLIGHT = 2  # batches launched on a GPU before the oldest is fetched back


@dataclass(frozen=True)
class StallLimit:
    """When a running batch counts as stalled: after ``factor`` × the median duration of
    the last ``window`` finished batches, and never before ``floor_s`` seconds (the first
    batches on a GPU include CUDA's start-up and cuDNN's autotuning)."""

    factor: float = 20.0
    floor_s: float = 120.0
    window: int = 64

    def seconds(self, durations: Sequence[float]) -> float:
        """The limit in seconds, given the durations (seconds) of finished batches."""
        if not durations:
            return self.floor_s
        return max(self.floor_s, self.factor * statistics.median(durations))


@dataclass(frozen=True)
class StallReport:
    """A batch that ran past its :class:`StallLimit`: what it is, and the Python stack of
    each thread involved (the device's owner, and the tasks waiting on it), by thread."""

    device: str
    batch: int  # its number in the feeder's order, from 0
    tiles: int
    running_s: float
    limit_s: float
    median_s: float | None  # of the batches finished before it (None: none had)
    stacks: dict[str, str] = field(repr=False)

    def summary(self) -> str:
        """One line: which batch, how long, against what."""
        peers = (f"the median of the batches before it is {self.median_s:.2f} s"
                 if self.median_s is not None else "no batch finished before it")
        return (f"batch {self.batch} ({self.tiles} tiles) on {self.device} has run "
                f"{self.running_s:.1f} s, past its limit of {self.limit_s:.1f} s ({peers})")

    def text(self) -> str:
        """The summary and every involved thread's stack."""
        parts = [self.summary() + "; the threads involved:"]
        parts += [f"--- {who}\n{stack.rstrip()}" for who, stack in self.stacks.items()]
        return "\n".join(parts)


def report_stall(report: StallReport) -> None:
    """The default report: a warning on the ``geoseg.feeder`` logger, stacks included."""
    log.warning("%s", report.text())


class HostBuffers:
    """Host arrays that batches are copied into, allocated once per (role, shape, dtype)
    and reused: page-locked (pinned) torch tensors when ``pinned`` (a copy from them to a
    GPU is asynchronous and at full speed), plain numpy arrays otherwise."""

    def __init__(self, pinned: bool) -> None:
        self.pinned = pinned
        self._buffers: dict[tuple[str, tuple[int, ...], str], Any] = {}

    @property
    def allocations(self) -> int:
        """How many buffers exist (each was allocated once)."""
        return len(self._buffers)

    def get(self, role: str, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        """The buffer for ``role`` of this shape and dtype (contents undefined)."""
        key = (role, tuple(shape), np.dtype(dtype).str)
        buf = self._buffers.get(key)
        if buf is None:
            if self.pinned:
                import torch

                kind = torch.from_numpy(np.empty(0, dtype)).dtype
                buf = torch.empty(shape, dtype=kind, pin_memory=True)
            else:
                buf = np.empty(shape, dtype)
            self._buffers[key] = buf
        return buf

    def stage(self, role: str, a: np.ndarray, rows: int, fill: float | bool) -> Any:
        """``a`` copied into the first rows of ``role``'s buffer of ``rows`` rows, the rest
        ``fill``: the buffer (a pinned tensor, or a numpy array)."""
        buf = self.get(role, (rows, *a.shape[1:]), a.dtype)
        host = buf.numpy() if self.pinned else buf
        host[:len(a)] = a
        if rows > len(a):
            host[len(a):] = fill
        return buf


@dataclass(eq=False)
class _Batch:
    """A task's batch on its way to the device, and the future its task waits on."""

    tiles: np.ndarray
    valid: np.ndarray | None
    weights: np.ndarray | None
    dtype: Any
    threads: int | None
    scale: tuple[float, ...]
    offset: tuple[float, ...]
    pad_to: int | None
    submitter: int  # the waiting task's thread ident
    future: Future[np.ndarray] = field(default_factory=Future)
    number: int = -1


@dataclass(eq=False)
class _Launched:
    """A batch the owner has started: its output (on the host or on its way there)."""

    batch: _Batch
    output: Any
    done: Any = None  # a CUDA event, recorded once the copy back is queued


class DeviceFeeder:
    """The one thread that runs ``predictor`` on its device, fed through a bounded queue.

    ``queue_size``: batches that wait at most (a task putting one more blocks). ``pad``:
    pad short batches up to the ``pad_to`` their task asks for (default: on CUDA only,
    for cuDNN's one shape). ``stall``: when a batch counts as stalled; ``report``: what
    receives its :class:`StallReport` (default :func:`report_stall`). Threads start with
    the first batch; :meth:`close` stops them.
    """

    def __init__(self, predictor: Predictor, *, queue_size: int = QUEUE_BATCHES,
                 pad: bool | None = None, stall: StallLimit | None = None,
                 report: Callable[[StallReport], None] | None = None) -> None:
        self.predictor = predictor
        self.device = predictor.device
        self.pad = predictor.cuda if pad is None else pad
        self.stall = stall or StallLimit()
        self.report = report or report_stall
        self._torch_cuda = predictor.cuda and not predictor.on_host  # torch owns the copies
        self.buffers = HostBuffers(pinned=self._torch_cuda)
        self._queue: queue.Queue[_Batch | None] = self._new_queue(queue_size)
        self._cond = threading.Condition()
        self._running: dict[int, tuple[float, _Batch]] = {}  # launched, not yet fetched
        self._durations: deque[float] = deque(maxlen=self.stall.window)
        self._reported: set[int] = set()
        self._waiting: dict[int, int] = {}  # thread ident → its batches awaited
        self._submitted = 0
        self.batches_done = 0
        self._stopped = False  # the owner is gone: no batch will run
        self._closed = False
        self._owner: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def _new_queue(self, maxsize: int) -> queue.Queue[_Batch | None]:
        return queue.Queue(maxsize=maxsize)

    def __enter__(self) -> DeviceFeeder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def owner(self) -> threading.Thread | None:
        """The thread that owns the device (None before the first batch)."""
        return self._owner

    def predict_proba(self, tiles: np.ndarray, valid: np.ndarray | None = None,
                      weights: np.ndarray | None = None, dtype: Any = np.float32,
                      threads: int | None = None, scale: tuple[float, ...] = (),
                      offset: tuple[float, ...] = (), pad_to: int | None = None) -> np.ndarray:
        """:meth:`Predictor.predict_proba` run by the owner thread: blocks until this batch
        is done and returns its probabilities, or raises the owner's exception. ``pad_to``:
        the batch size this batch is padded to (with :attr:`pad`)."""
        me = threading.get_ident()
        with self._cond:
            self._waiting[me] = self._waiting.get(me, 0) + 1
        try:
            return self.submit(tiles, valid, weights, dtype, threads, scale, offset,
                               pad_to).result()
        finally:
            with self._cond:
                self._waiting[me] -= 1
                if not self._waiting[me]:
                    del self._waiting[me]

    def submit(self, tiles: np.ndarray, valid: np.ndarray | None = None,
               weights: np.ndarray | None = None, dtype: Any = np.float32,
               threads: int | None = None, scale: tuple[float, ...] = (),
               offset: tuple[float, ...] = (), pad_to: int | None = None
               ) -> Future[np.ndarray]:
        """Queue a batch (blocks while the queue is full); its future."""
        if self._closed or self._stopped:
            raise EnvError(f"the feeder of {self.device} is closed: no batch can run")
        self._start()
        batch = _Batch(tiles, valid, weights, dtype, threads, tuple(scale), tuple(offset),
                       pad_to, threading.get_ident())
        self._queue.put(batch)
        if self._stopped:  # the owner died after its last look at the queue
            self._fail_queued()
        return batch.future

    def _start(self) -> None:
        with self._start_lock:
            if self._owner is not None:
                return
            self._owner = threading.Thread(target=self._own, daemon=True,
                                           name=f"geoseg-feeder-{self.device}")
            self._watchdog = threading.Thread(target=self._watch, daemon=True,
                                              name=f"geoseg-watchdog-{self.device}")
            self._owner.start()
            self._watchdog.start()

    def close(self, timeout: float | None = 60.0) -> None:
        """Finish the queued batches, then stop the threads (waiting at most ``timeout``
        seconds for each: a stalled device must not hold up the process's exit)."""
        with self._start_lock:
            if self._closed:
                return
            self._closed = True
            owner, watchdog = self._owner, self._watchdog
        if owner is not None and owner.is_alive():
            self._queue.put(None)
            owner.join(timeout)
        with self._cond:
            self._cond.notify_all()
        if watchdog is not None:
            watchdog.join(timeout)

    # The owner thread.
    def _own(self) -> None:
        launched: deque[_Launched] = deque()
        try:
            while True:
                try:
                    batch = self._queue.get_nowait()
                except queue.Empty:
                    if launched:  # nothing new to launch: fetch the oldest meanwhile
                        self._fetch(launched.popleft())
                        continue
                    batch = self._queue.get()
                if batch is None:
                    break
                started = self._launch(batch)
                if started is not None:
                    launched.append(started)
                while len(launched) >= (IN_FLIGHT if self._torch_cuda else 1):
                    self._fetch(launched.popleft())
            while launched:
                self._fetch(launched.popleft())
        finally:
            with self._cond:
                self._stopped = True
                self._cond.notify_all()
            for rest in launched:
                _fail(rest.batch, EnvError(f"the feeder of {self.device} stopped"))
            self._fail_queued()

    def _fail_queued(self) -> None:
        while True:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                return
            if batch is not None:
                _fail(batch, EnvError(f"the feeder of {self.device} stopped"))

    def _launch(self, batch: _Batch) -> _Launched | None:
        """Start ``batch`` on the device (on a CPU: run it); None if it failed."""
        with self._cond:
            batch.number = self._submitted
            self._submitted += 1
            self._running[batch.number] = (time.monotonic(), batch)
            self._cond.notify_all()
        try:
            rows = len(batch.tiles)
            if self.pad and batch.pad_to is not None and batch.pad_to > rows:
                rows = batch.pad_to
            if self._torch_cuda:
                return self._launch_cuda(batch, rows)
            tiles, valid, weights = self._staged(batch, rows, "0")  # run now: one slot
            out = self.predictor.predict_proba(tiles, valid, weights, batch.dtype,
                                               batch.threads, batch.scale, batch.offset)
            return _Launched(batch, out)
        except BaseException as exc:
            self._finished(batch, exc)
            return None

    def _staged(self, batch: _Batch, rows: int, slot: str) -> tuple[Any, Any, Any]:
        """The batch's arrays as the device path takes them: in this slot's host buffers
        (pinned, or padded to ``rows``), or as they are when neither is needed."""
        if not self.buffers.pinned and rows == len(batch.tiles):
            return batch.tiles, batch.valid, batch.weights
        b = self.buffers
        # Padding: zeros that count as valid (no masked fill for them), weight 0.
        return (b.stage("tiles" + slot, batch.tiles, rows, 0),
                None if batch.valid is None else b.stage("valid" + slot, batch.valid, rows, True),
                None if batch.weights is None else b.stage("weights" + slot, batch.weights,
                                                           rows, 0))

    def _launch_cuda(self, batch: _Batch, rows: int) -> _Launched:
        import torch

        predictor = self.predictor
        # Buffers of a slot are reused IN_FLIGHT batches later, after that batch's fetch
        # waited for its event: its copies to and from them are over by then.
        slot = f"{batch.number % IN_FLIGHT}"
        with torch.inference_mode(), predictor.stream():
            tiles, valid, weights = self._staged(batch, rows, slot)
            out = predictor.launch(tiles, valid, weights, batch.dtype, batch.scale, batch.offset)
            host = self.buffers.get("out" + slot, tuple(out.shape),
                                    np.dtype(str(out.dtype).removeprefix("torch.")))
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
        return _Launched(batch, host, done)

    def _fetch(self, launched: _Launched) -> None:
        """Wait for a launched batch and hand its result to its task."""
        batch = launched.batch
        try:
            n = len(batch.tiles)
            if launched.done is not None:
                launched.done.synchronize()
                result = self.predictor.host_result(launched.output.numpy()[:n], batch.dtype)
                if np.shares_memory(result, launched.output.numpy()):
                    result = result.copy()  # the buffer is reused
            else:
                out = launched.output
                result = out if len(out) == n else out[:n].copy()  # padding's outputs dropped
        except BaseException as exc:
            self._finished(batch, exc)
            return
        self._finished(batch, result)

    def _finished(self, batch: _Batch, outcome: np.ndarray | BaseException) -> None:
        with self._cond:
            started, _ = self._running.pop(batch.number, (time.monotonic(), batch))
            if not isinstance(outcome, BaseException):
                self._durations.append(time.monotonic() - started)
                self.batches_done += 1
            self._cond.notify_all()
        if isinstance(outcome, BaseException):
            _fail(batch, outcome)
        else:
            batch.future.set_result(outcome)

    # The watchdog thread.
    def _watch(self) -> None:
        with self._cond:
            while not (self._stopped or (self._closed and not self._running)):
                if not self._running:
                    self._cond.wait()
                    continue
                number = min(self._running)
                started, batch = self._running[number]
                limit = self.stall.seconds(self._durations)
                remaining = started + limit - time.monotonic()
                if number in self._reported or remaining > 0:
                    # Until the limit passes, or something changes (None: until it ends).
                    self._cond.wait(None if number in self._reported else remaining)
                    continue
                self._reported.add(number)
                report = self._stall_report(batch, started, limit)
                self._cond.release()  # the report may take its time (and log, warn)
                try:
                    self.report(report)
                except Exception:  # a broken report must not stop the watching
                    log.exception("reporting a stalled batch failed")
                finally:
                    self._cond.acquire()

    def _stall_report(self, batch: _Batch, started: float, limit: float) -> StallReport:
        """The report on ``batch`` (called with the lock held)."""
        frames = sys._current_frames()
        names = {t.ident: t.name for t in threading.enumerate()}
        involved: dict[int, str] = {}
        if self._owner is not None and self._owner.ident is not None:
            involved[self._owner.ident] = f"the owner of {self.device}"
        involved.setdefault(batch.submitter, "the task waiting on this batch")
        for ident in self._waiting:
            involved.setdefault(ident, "a task waiting on the device")
        stacks = {f"{role}: thread {names.get(ident, ident)!s}":
                  "".join(traceback.format_stack(frames[ident]))
                  for ident, role in involved.items() if ident in frames}
        median = statistics.median(self._durations) if self._durations else None
        return StallReport(self.device, batch.number, len(batch.tiles),
                           time.monotonic() - started, limit, median, stacks)


def _fail(batch: _Batch, exc: BaseException) -> None:
    if not batch.future.done():
        batch.future.set_exception(exc)


_feeders: dict[tuple[ModelHandle, str, bool], DeviceFeeder] = {}
_feeders_lock = threading.Lock()


def feeder_for(handle: ModelHandle, device: str, tta: bool) -> DeviceFeeder:
    """One feeder per (model, device, tta) per process, on the process's cached
    predictor (see :func:`geoseg.inference.cached_predictor`)."""
    from geoseg.inference import cached_predictor

    key = (handle, device, tta)
    with _feeders_lock:
        feeder = _feeders.get(key)
        if feeder is None or feeder._closed or feeder._stopped:
            feeder = _feeders[key] = DeviceFeeder(cached_predictor(handle, device, tta))
        return feeder


def close_feeders(timeout: float | None = 10.0) -> None:
    """Close every feeder of this process (at exit; tests)."""
    with _feeders_lock:
        feeders = list(_feeders.values())
        _feeders.clear()
    for feeder in feeders:
        feeder.close(timeout)


atexit.register(close_feeders)
