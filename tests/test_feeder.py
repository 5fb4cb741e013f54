"""The device feeder on the CPU: the same results as a direct call, a bounded queue, a
stalled batch reported with its stacks, errors back in the task, no threads left over.
Every wait on another thread is on an Event (the timeouts only keep a broken feeder from
hanging the suite)."""

from __future__ import annotations

import copy
import dataclasses
import logging
import queue
import threading
from collections.abc import Callable

import numpy as np
import pytest

import geoseg
from geoseg import feeder as feeders
from geoseg.feeder import DeviceFeeder, StallLimit, StallReport
from geoseg.inference import Predictor
from geoseg.pipeline import TILE_DTYPE, read_tiles
from geoseg.sources import open_source
from geoseg.tiling import TileGrid

GUARD_S = 120  # a broken feeder fails the test instead of hanging it


@pytest.fixture
def tiles(make_scene):
    """Six real 64 px tiles of a scene (nodata corner included), their valid masks and
    blend weights."""
    path, _ = make_scene(160, 160)
    source = open_source(path)
    grid = TileGrid(160, 160, 64, 16)
    ids = [(i, j) for i in range(2) for j in range(3)]
    data, valid = read_tiles(source, grid, ids)
    weights = np.stack([grid.blend_weights(grid.tile(i, j)) for i, j in ids])
    return data, valid, weights


def gated(predictor: Predictor, before: Callable[[], None]) -> list[str]:
    """Make ``predictor``'s runtime call ``before()`` first on every batch; the names of
    the threads that ran it, in order."""
    callers: list[str] = []
    base = type(predictor.runtime)

    class Gated(base):  # type: ignore[valid-type,misc]
        def __call__(self, x, threads=None):
            callers.append(threading.current_thread().name)
            before()
            return base.__call__(self, x, threads)

    runtime = copy.copy(predictor.runtime)
    runtime.__class__ = Gated
    predictor.runtime = runtime
    return callers


def test_results_equal_a_direct_call_and_only_the_owner_runs_the_model(default_model, tiles):
    data, valid, weights = tiles
    direct = Predictor(default_model, "cpu")
    expected = [direct.predict_proba(data[k:k + 3], valid[k:k + 3], weights[k:k + 3],
                                     dtype=TILE_DTYPE) for k in (0, 3)]
    predictor = Predictor(default_model, "cpu")
    callers = gated(predictor, lambda: None)
    with DeviceFeeder(predictor, pad=True) as feeder:
        got: dict[tuple[int, int], np.ndarray] = {}

        def task(k: int, pad_to: int | None) -> None:
            got[k, pad_to or 0] = feeder.predict_proba(
                data[k:k + 3], valid[k:k + 3], weights[k:k + 3], dtype=TILE_DTYPE, pad_to=pad_to)

        threads = [threading.Thread(target=task, args=(k, pad)) for k in (0, 3)
                   for pad in (None, 4, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(GUARD_S)
        assert feeder.owner is not None
        owner = feeder.owner.name
        # Padding buffers (tiles, valid, weights) are made once and reused.
        assert feeder.buffers.allocations == 3
    for (k, _), probs in got.items():
        assert probs.dtype == TILE_DTYPE and probs.shape == expected[k // 3].shape
        np.testing.assert_array_equal(probs, expected[k // 3])
    assert len(got) == 4 and len(callers) == 6 and set(callers) == {owner}
    assert not [t for t in threading.enumerate() if t.name.startswith("geoseg-")]


class CountingQueue(queue.Queue):
    """A queue that remembers the most items it held, and says when it is full."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.most = 0
        self.filled = threading.Event()

    def _put(self, item: object) -> None:
        super()._put(item)
        self.most = max(self.most, self._qsize())
        if self._qsize() == self.maxsize:
            self.filled.set()


class CountingFeeder(DeviceFeeder):
    def _new_queue(self, maxsize: int) -> queue.Queue:
        return CountingQueue(maxsize)


def test_the_queue_is_bounded_and_producers_wait(default_model, tiles):
    data, valid, weights = tiles
    predictor = Predictor(default_model, "cpu")
    held, release = threading.Event(), threading.Event()

    def hold_first() -> None:
        if not held.is_set():
            held.set()
            release.wait(GUARD_S)

    gated(predictor, hold_first)
    producers, passed, lock = 6, [], threading.Lock()
    with CountingFeeder(predictor, queue_size=2) as feeder:
        futures = [feeder.submit(data[:1], valid[:1], weights[:1])]
        assert held.wait(GUARD_S)  # the owner holds the first batch

        def produce(k: int) -> None:
            future = feeder.submit(data[k:k + 1], valid[k:k + 1], weights[k:k + 1])
            with lock:
                passed.append(future)

        threads = [threading.Thread(target=produce, args=(k % 6,)) for k in range(producers)]
        for t in threads:
            t.start()
        counting = feeder._queue
        assert isinstance(counting, CountingQueue)
        assert counting.filled.wait(GUARD_S)
        # The owner is held: 2 batches wait in the queue, every other producer in put.
        assert counting.qsize() == 2
        with lock:
            assert len(passed) <= 2
        release.set()
        for t in threads:
            t.join(GUARD_S)
        results = [f.result(GUARD_S) for f in futures + passed]
    assert counting.most == 2 and len(results) == producers + 1
    assert all(r.shape == (1, len(predictor.spec.classes), 64, 64) for r in results)


def test_a_stalled_batch_is_reported_once_with_the_stacks_involved(default_model, tiles):
    data, valid, weights = tiles
    predictor = Predictor(default_model, "cpu")
    release, reported = threading.Event(), threading.Event()
    reports: list[StallReport] = []

    def stalled_in_the_runtime() -> None:
        release.wait(GUARD_S)

    gated(predictor, stalled_in_the_runtime)

    def hook(report: StallReport) -> None:
        reports.append(report)
        reported.set()

    with DeviceFeeder(predictor, stall=StallLimit(factor=2, floor_s=0.01),
                      report=hook) as feeder:
        result: list[np.ndarray] = []
        task = threading.Thread(target=lambda: result.append(
            feeder.predict_proba(data[:2], valid[:2], weights[:2])), name="model-task")
        task.start()
        assert reported.wait(GUARD_S)  # the report arrives while the batch is stalled
        release.set()
        task.join(GUARD_S)
    assert len(reports) == 1 and len(result) == 1  # then the batch finishes as usual
    report = reports[0]
    assert report.batch == 0 and report.tiles == 2 and report.median_s is None
    owner = [s for who, s in report.stacks.items() if who.startswith("the owner of cpu")]
    assert len(owner) == 1 and "stalled_in_the_runtime" in owner[0]
    waiting = [s for who, s in report.stacks.items() if "model-task" in who]
    assert len(waiting) == 1 and "predict_proba" in waiting[0]
    assert "batch 0 (2 tiles) on cpu has run" in report.text()


class Records(logging.Handler):
    """Every record a logger emits, in a list."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_default_report_logs_the_stacks():
    # A handler on the logger itself: what reaches pytest's own capture depends on what ran
    # before (a command makes geoseg's logger print its own lines and stop propagating).
    report = StallReport("cuda:1", 7, 16, 300.0, 120.0, 0.25,
                         {"the owner of cuda:1: thread geoseg-feeder": '  File "x.py", line 1'})
    logger, seen = logging.getLogger("geoseg.feeder"), Records()
    level = logger.level
    logger.setLevel(logging.WARNING)  # whatever -q or -v set before
    logger.addHandler(seen)
    try:
        feeders.report_stall(report)
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)
    (record,) = seen.records
    assert "batch 7 (16 tiles) on cuda:1 has run 300.0 s, past its limit of 120.0 s" in \
        record.getMessage() and 'File "x.py", line 1' in record.getMessage()


def test_the_stall_limit_follows_the_batches_before():
    limit = StallLimit(factor=10, floor_s=5)
    assert limit.seconds([]) == 5  # nothing to compare with yet: the floor
    assert limit.seconds([0.1, 0.2, 9.0]) == 5  # 10 × the median 0.2 is under the floor
    assert limit.seconds([1.0, 2.0, 3.0, 50.0]) == 25  # a slow outlier does not move it much


def test_an_error_in_the_runtime_reaches_the_task_and_the_feeder_goes_on(default_model,
                                                                         tiles):
    data, valid, weights = tiles
    predictor = Predictor(default_model, "cpu")
    fail = threading.Event()
    fail.set()

    def maybe_fail() -> None:
        if fail.is_set():
            fail.clear()
            raise RuntimeError("device lost")

    gated(predictor, maybe_fail)
    with DeviceFeeder(predictor) as feeder:
        with pytest.raises(RuntimeError, match="device lost"):
            feeder.predict_proba(data[:1], valid[:1], weights[:1])
        assert feeder.predict_proba(data[:1], valid[:1], weights[:1]).shape[0] == 1
    with pytest.raises(geoseg.errors.EnvError, match="feeder of cpu is closed"):
        feeder.submit(data[:1])


def test_predict_through_the_feeder_writes_the_same_mask(make_scene, monkeypatch, tmp_path):
    from geoseg import prediction

    path, _ = make_scene(200, 230)
    options = dict(tile_size=64, overlap=16, batch_size=3)
    direct = geoseg.predict(path, tmp_path / "direct.tif", **options).values
    made = prediction.prediction_options

    def with_feeder(*args, **kwargs):
        return dataclasses.replace(made(*args, **kwargs), feeder=True)

    monkeypatch.setattr(prediction, "prediction_options", with_feeder)
    try:
        fed = geoseg.predict(path, tmp_path / "fed.tif", **options).values
        used = [f.batches_done for f in feeders._feeders.values()]
    finally:
        feeders.close_feeders()
    assert used and used[0] > 0
    assert (tmp_path / "fed.tif").read_bytes() == (tmp_path / "direct.tif").read_bytes()
    np.testing.assert_array_equal(fed, direct)
    assert not [t for t in threading.enumerate() if t.name.startswith("geoseg-")]
