"""One place that turns ``--scheduler`` into a way of computing Dask collections.

``threads`` (default), ``processes`` and ``sync`` use Dask's local schedulers; ``local``
starts a :class:`distributed.LocalCluster`; ``tcp://host:port`` connects to a running
``dask-scheduler``. Workers of the last two must see the same file system as this process.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

from geoseg.errors import InputError

LOCAL_SCHEDULERS = ("threads", "processes", "sync")
SCHEDULERS: tuple[str, ...] = (*LOCAL_SCHEDULERS, "local")


def check_scheduler(name: str) -> str:
    if name in SCHEDULERS or name.startswith("tcp://"):
        return name
    raise InputError(f"unknown scheduler {name!r} (use {', '.join(SCHEDULERS)} or tcp://host:port)")


def compute(*collections: Any, scheduler: str = "threads", workers: int | None = None,
            progress: bool = False) -> tuple[Any, ...]:
    """Compute Dask collections on the chosen scheduler, optionally with a progress bar."""
    import dask

    check_scheduler(scheduler)
    if scheduler in LOCAL_SCHEDULERS:
        with _local_progress(progress):
            return dask.compute(*collections, scheduler=scheduler, num_workers=workers)
    with client_for(scheduler, workers=workers) as client:
        futures = client.compute(list(collections))
        if progress:
            from distributed import progress as dist_progress

            dist_progress(futures)
            print(file=sys.stderr)
        return tuple(client.gather(futures))


@contextlib.contextmanager
def session(scheduler: str = "threads", workers: int | None = None, *, total: int = 0,
            progress: bool = False, desc: str = "") -> Iterator[Callable[[list[Any]], list[Any]]]:
    """A function that computes a list of Dask objects, to call many times on one pool of
    workers (one LocalCluster, one process pool), with one progress bar over ``total``."""
    import dask

    check_scheduler(scheduler)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="task", desc=desc, file=sys.stderr, leave=False)

    def done(n: int) -> None:
        if bar is not None:
            bar.update(n)

    try:
        if scheduler in LOCAL_SCHEDULERS:
            with _pool(scheduler, workers) as pool:
                extra = {} if pool is None else {"pool": pool}
                # The scheduler's own function: naming it by string makes dask import
                # distributed (0.2 s) to look for a client first.
                get = _local_get(scheduler)

                def run_local(items: list[Any]) -> list[Any]:
                    out = list(dask.compute(*items, scheduler=get, **extra))
                    done(len(items))
                    return out

                yield run_local
        else:
            with client_for(scheduler, workers=workers) as client:
                def run_remote(items: list[Any]) -> list[Any]:
                    out = list(client.gather(client.compute(items)))
                    done(len(items))
                    return out

                yield run_remote
    finally:
        if bar is not None:
            bar.close()


def _local_get(scheduler: str) -> Callable[..., Any]:
    if scheduler == "threads":
        from dask.threaded import get
    elif scheduler == "processes":
        from dask.multiprocessing import get
    else:
        from dask.local import get_sync as get
    return get


@contextlib.contextmanager
def _pool(scheduler: str, workers: int | None) -> Iterator[Any]:
    if scheduler == "sync":
        yield None
    elif scheduler == "threads":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers or os.cpu_count()) as pool:
            yield pool
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")  # as dask's own default: no forked locks
        with ProcessPoolExecutor(workers or os.cpu_count(), mp_context=context) as pool:
            yield pool


@contextlib.contextmanager
def client_for(scheduler: str, *, workers: int | None = None) -> Iterator[Any]:
    """A distributed Client: a new LocalCluster (``local``) or an existing scheduler (``tcp://``)."""
    from distributed import Client, LocalCluster

    if scheduler == "local":
        n = workers or max(1, (os.cpu_count() or 1))
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          dashboard_address=":0") as cluster, Client(cluster) as client:
            print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
            yield client
        return
    try:
        client = Client(scheduler, timeout="10s")
    except OSError as exc:
        raise InputError(f"cannot reach Dask scheduler {scheduler} ({exc})") from None
    with client:
        yield client


@contextlib.contextmanager
def _local_progress(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from dask.callbacks import Callback
    from tqdm import tqdm

    class TqdmCallback(Callback):
        def _start_state(self, dsk: Any, state: Any) -> None:
            total = sum(len(state[k]) for k in ("ready", "waiting", "running"))
            self.bar = tqdm(total=total, unit="task", desc="predict", file=sys.stderr,
                            leave=False)

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            self.bar.update(1)

        def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
            self.bar.close()

    with TqdmCallback():
        yield
