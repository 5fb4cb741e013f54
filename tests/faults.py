"""Faults on cue: geoseg stops at a chosen call and says so, so that a test kills or
signals it exactly there, with no sleeping and no polling.

As a script, ``python tests/faults.py --pause-at MODULE:FUNCTION:N --notify FD -- ARGS…``
runs ``geoseg ARGS…``; the N-th call of ``MODULE.FUNCTION`` writes ``paused`` to the file
descriptor FD and then waits for a signal (SIGINT, SIGTERM), whose handler raises there.

In Dask workers (``client.run``), :func:`pause_model_tasks` makes the next model task of
each worker put its process id on a queue and wait for an event; :class:`CountModelTasks`
counts the model tasks a worker runs at once. Workers import this module by name, so the
tests start them with this folder on their ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import select
import signal
from collections.abc import Callable, Iterator
from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin, WorkerPlugin


def pause_at(target: str, notify_fd: int) -> None:
    """Patch ``MODULE:FUNCTION:N`` so that its N-th call tells ``notify_fd`` and waits."""
    module_name, function, nth = target.split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, function)
    calls = [0]

    def paused(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == int(nth):
            # Python writes each signal it gets, in whichever thread, to its wakeup file:
            # waiting on that misses none (a signal that came between Python's check for
            # signals and a plain blocking wait would be lost).
            woken, wakeup = os.pipe()
            os.set_blocking(wakeup, False)
            before = signal.set_wakeup_fd(wakeup)
            try:
                os.write(notify_fd, b"paused\n")
                os.close(notify_fd)
                select.select([woken], [], [])
                signal.set_wakeup_fd(before)  # the signal's handler raises by this call
            finally:
                signal.set_wakeup_fd(before)
                os.close(woken)
                os.close(wakeup)
        return original(*args, **kwargs)

    setattr(module, function, paused)


def pause_model_tasks(name: str) -> None:
    """In a worker: its model tasks wait, each after putting the worker's process id on the
    Dask queue ``name``, until the Dask event ``name`` is set."""
    from distributed import Event, Queue

    from geoseg import pipeline

    infer = getattr(pipeline._infer_batch, "unpaused", pipeline._infer_batch)

    def paused(*args: Any, **kwargs: Any) -> Any:
        if not Event(name).is_set():
            Queue(name).put(os.getpid())
            Event(name).wait()
        return infer(*args, **kwargs)

    paused.unpaused = infer  # type: ignore[attr-defined]
    pipeline._infer_batch = paused


@contextlib.contextmanager
def model_tasks_paused(client: Any) -> Iterator[Callable[[], int]]:
    """On every worker of ``client``, the next model task waits (:func:`pause_model_tasks`)
    while the block runs; the block gets a function that returns the process id of the
    first worker to pause, once one has. When the block ends, the tasks go on and model
    tasks are no longer paused."""
    import uuid

    from distributed import Event, Queue

    cue = f"geoseg-test-{uuid.uuid4().hex}"
    client.run(pause_model_tasks, cue)
    try:
        yield lambda: int(Queue(cue, client=client).get(timeout=300))
    finally:
        Event(cue, client=client).set()


def announce_uploads(name: str) -> None:
    """In a worker: each scene's upload to object storage, once done, puts the URLs it
    uploaded on the Dask queue ``name`` (undone by :func:`unannounce_uploads`)."""
    from distributed import Queue

    from geoseg import storage

    upload_all = getattr(storage.upload_all, "unannounced", storage.upload_all)

    def announced(pairs: Any, **kwargs: Any) -> Any:
        etags = upload_all(pairs, **kwargs)
        Queue(name).put([url for _, url in pairs])
        return etags

    announced.unannounced = upload_all  # type: ignore[attr-defined]
    storage.upload_all = announced


def unannounce_uploads() -> None:
    from geoseg import storage

    storage.upload_all = getattr(storage.upload_all, "unannounced", storage.upload_all)


def unpause_model_tasks() -> None:
    """In a worker: model tasks run as they were before :func:`pause_model_tasks`."""
    from geoseg import pipeline

    pipeline._infer_batch = getattr(pipeline._infer_batch, "unpaused", pipeline._infer_batch)


class CountModelTasks(WorkerPlugin):
    """A worker plugin: how many scene model tasks execute at once, at most, and in all."""

    name = "count-model-tasks"

    def __init__(self) -> None:
        self.now = self.most = self.seen = 0

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if not str(key).startswith("geoseg-predict"):
            return
        if finish == "executing":
            self.now += 1
            self.seen += 1
            self.most = max(self.most, self.now)
        elif start == "executing":
            self.now -= 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pause-at", required=True)
    parser.add_argument("--notify", type=int, required=True)
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    pause_at(options.pause_at, options.notify)
    import sys

    from geoseg.cli import main as geoseg

    sys.argv = ["geoseg", *options.args[1:]]  # after the "--"
    geoseg()


if __name__ == "__main__":
    main()


class RecordRestrictions(SchedulerPlugin):
    """A scheduler plugin: the resource restrictions of each geoseg task as it starts."""

    name = "record-restrictions"

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, float] | None] = {}

    async def start(self, scheduler: Any) -> None:
        self.scheduler = scheduler

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        name = str(key[0] if isinstance(key, tuple) else key)
        if finish == "processing" and name.startswith("geoseg-"):
            self.seen[str(key)] = self.scheduler.tasks[key].resource_restrictions
