"""One place that turns ``--scheduler`` into a way of computing Dask collections.

``threads`` (default), ``processes`` and ``sync`` use Dask's local schedulers; ``local``
starts a :class:`distributed.LocalCluster`, or on a machine with GPUs one worker per GPU
(dask-cuda's ``LocalCUDACluster`` when installed, else one nanny per GPU with its own
``CUDA_VISIBLE_DEVICES``), each declaring the resource ``GPU=1``; ``tcp://host:port``
connects to a running ``dask-scheduler``. Workers of the last two must see the same file
system as this process, unless the scenes are read from and the outputs written to object
storage: ``run`` then writes each scene in its worker's temp folder and uploads it, a
scene's tiles travel through the bucket (:mod:`geoseg.parts`), and the model travels as
bytes; :func:`check_workers_see` says so up front when they cannot see a path. Workers
that declare a ``GPU`` resource (``dask worker --resources GPU=1``) run one model task at
a time per GPU: see :func:`model_resources`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from geoseg.devices import visible_gpus
from geoseg.errors import ClusterError, InputError

log = logging.getLogger(__name__)

LOCAL_SCHEDULERS = ("threads", "processes", "sync")
IN_PROCESS = ("threads", "sync")  # schedulers whose tasks run in the calling process
SCHEDULERS: tuple[str, ...] = (*LOCAL_SCHEDULERS, "local")
ADDRESS_SCHEMES = ("tcp://", "tls://", "ucx://", "inproc://")


def check_scheduler(name: str) -> str:
    """A scheduler's name, or the address of a running one: tcp:// (or tls://, ucx://;
    inproc:// within this process)."""
    if name in SCHEDULERS or name.startswith(ADDRESS_SCHEMES):
        return name
    raise InputError(f"unknown scheduler {name!r} (use {', '.join(SCHEDULERS)} or tcp://host:port)")


def tasks_at_once(scheduler: str, workers: int | None) -> int | None:
    """How many tasks a local scheduler runs at once (the size of dask's own pools, which
    is cgroup-aware, unless ``workers`` says); None for a cluster, whose size can change."""
    from dask.system import CPU_COUNT

    if scheduler not in LOCAL_SCHEDULERS:
        return None
    return 1 if scheduler == "sync" else workers or CPU_COUNT


def wait_for_workers(client: Any, scheduler: str, timeout_s: int) -> None:
    """Wait until the cluster of ``scheduler`` has a worker: none within ``timeout_s`` is
    a ClusterError."""
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except TimeoutError:
        raise ClusterError(f"no Dask worker joined the scheduler {scheduler} within "
                           f"{timeout_s // 60} minutes") from None


def compute(*collections: Any, scheduler: str = "threads", workers: int | None = None,
            progress: bool = False, client: Any = None) -> tuple[Any, ...]:
    """Compute Dask collections on the chosen scheduler, optionally with a progress bar;
    on ``client`` when given (a distributed scheduler already connected)."""
    import dask

    check_scheduler(scheduler)
    if scheduler in LOCAL_SCHEDULERS:
        with _local_progress(progress):  # by function: a name makes dask import distributed
            return dask.compute(*collections, scheduler=_local_get(scheduler),
                                num_workers=workers)
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(client_for(scheduler, workers=workers))
        # The scheduler's optimization merges an annotated layer (the model tasks' GPU
        # resource) into its unannotated neighbours: such graphs go as they are.
        if not any(map(annotated, collections)):
            collections = dask.optimize(*collections)
        keys = graph_keys(collections)  # the tasks sent
        futures = client.compute(list(collections), optimize_graph=False)
        try:
            if progress:
                _distributed_progress(futures, client)
            return tuple(client.gather(futures))
        except BaseException:
            settle(client, futures, keys)
            raise


SETTLE_TIMEOUT_S = 120


def settle(client: Any, futures: list[Any], keys: set[Any],
           timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """After a failed computation: cancel what is left of it and return once no worker
    still executes one of its tasks (``keys``), or after ``timeout_s``; a task a worker
    had begun runs to its end even when cancelled, and what it writes (a part object, a
    window of a scratch file) must be there before a cleanup, not after it."""
    try:
        client.cancel(futures)
        client.run(_settled, keys, timeout_s)
    except Exception:  # the cluster is gone or unreachable: nothing runs there any more
        log.debug("could not wait for the workers to settle", exc_info=True)


async def _settled(keys: set[Any], timeout_s: float, dask_worker: Any) -> None:
    """On a worker (``client.run``): wait until it executes none of ``keys``."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    while (any(ts.key in keys for ts in dask_worker.state.executing)
           and time.monotonic() < deadline):
        await asyncio.sleep(0.05)


def graph_keys(collection: Any) -> set[Any]:
    """The keys of every task in a Dask collection's graph (or in a list or tuple of them)."""
    from dask import is_dask_collection

    if isinstance(collection, list | tuple):
        return set().union(*map(graph_keys, collection))
    return set(collection.__dask_graph__()) if is_dask_collection(collection) else set()


def annotated(collection: Any) -> bool:
    """Whether a layer of a Dask collection's graph (or of one in a list or tuple of them)
    carries annotations."""
    from dask import is_dask_collection

    if isinstance(collection, list | tuple):
        return any(map(annotated, collection))
    if not is_dask_collection(collection):
        return False
    layers = getattr(collection.__dask_graph__(), "layers", {})
    return any(layer.annotations for layer in layers.values())


@contextlib.contextmanager
def session(scheduler: str = "threads", workers: int | None = None, *, total: int = 0,
            progress: bool = False, desc: str = "") -> Iterator[Callable[[list[Any]], list[Any]]]:
    """A function that computes a list of Dask objects, to call many times on one pool of
    workers (one LocalCluster, one process pool), with one progress bar over ``total``."""
    import dask

    check_scheduler(scheduler)
    bar = None
    if progress:
        from geoseg.progress import bar as progress_bar

        bar = progress_bar(total, desc)

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
        from dask.threaded import get as threaded

        return threaded
    if scheduler == "processes":
        from dask.multiprocessing import get as processes

        return processes
    from dask.local import get_sync

    return get_sync


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
def client_for(scheduler: str, *, workers: int | None = None, threads_per_worker: int = 1,
               device: str = "auto") -> Iterator[Any]:
    """A distributed Client: a new LocalCluster (``local``: one worker per GPU unless
    ``device`` is ``cpu`` or there is none) or an existing scheduler (``tcp://``)."""
    from distributed import Client

    from geoseg.workers import GeosegWorker

    with contextlib.ExitStack() as stack:
        # Not the default client: geoseg passes it around and leaves dask's config alone.
        if scheduler == "local":
            cluster = stack.enter_context(_local_cluster(workers, threads_per_worker, device))
            client = stack.enter_context(Client(cluster, set_as_default=False))
            log.info("Dask dashboard: %s", client.dashboard_link)
        else:
            try:
                client = Client(scheduler, timeout="10s", set_as_default=False)
            except OSError as exc:
                raise ClusterError(f"cannot reach Dask scheduler {scheduler} ({exc})") from None
            stack.enter_context(client)
        client.register_plugin(GeosegWorker())
        yield client


def _local_cluster(workers: int | None, threads_per_worker: int, device: str = "auto") -> Any:
    """One process per worker (torch and GDAL do not share a GIL well); with GPUs (unless
    ``device`` is ``cpu``) one worker per GPU (the first ``workers`` of them), each seeing
    only its own and declaring the resource ``GPU=1``: dask-cuda's ``LocalCUDACluster``
    when installed, else :func:`gpu_workers`."""
    import importlib.util

    gpus = [] if device == "cpu" else visible_gpus()
    if gpus:
        gpus = gpus[:workers] if workers else gpus
        if importlib.util.find_spec("dask_cuda") is not None:
            from dask_cuda import LocalCUDACluster

            return LocalCUDACluster(CUDA_VISIBLE_DEVICES=gpus,
                                    threads_per_worker=threads_per_worker,
                                    resources={"GPU": 1}, dashboard_address=":0")
        from distributed import Scheduler, SpecCluster

        return SpecCluster(workers=gpu_workers(gpus, threads_per_worker),
                           scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
                           silence_logs=logging.ERROR)
    from distributed import LocalCluster

    return LocalCluster(n_workers=workers or max(1, os.cpu_count() or 1),
                        threads_per_worker=threads_per_worker, processes=True,
                        dashboard_address=":0")


def gpu_workers(gpus: list[str], threads_per_worker: int) -> dict[str, dict[str, Any]]:
    """A :class:`distributed.SpecCluster` worker spec: a nanny per GPU (named as
    ``CUDA_VISIBLE_DEVICES`` names it), its worker process seeing only that GPU, declaring
    ``GPU=1`` and an equal share of this machine's memory (bytes)."""
    from distributed import Nanny
    from distributed.system import MEMORY_LIMIT

    return {f"gpu-{gpu}": {"cls": Nanny, "options": {
        "nthreads": threads_per_worker, "resources": {"GPU": 1},
        "env": {"CUDA_VISIBLE_DEVICES": gpu}, "memory_limit": MEMORY_LIMIT // len(gpus)}}
        for gpu in gpus}


def blind_workers(client: Any, path: str | os.PathLike[str]) -> list[str]:
    """The addresses of ``client``'s workers that do not see the file ``path`` (an absolute
    path on this machine): workers elsewhere, without this machine's file system."""
    seen = client.run(os.path.exists, os.path.abspath(path))
    return sorted(address for address, there in seen.items() if not there)


def check_workers_see(client: Any, scheduler: str, path: str | os.PathLike[str],
                      name: str | os.PathLike[str], *, reading: bool) -> None:
    """Before any work: every worker of ``client`` sees ``path``, a file or folder on this
    machine that its tasks are to read (``reading``: an :class:`InputError`) or write
    (an :class:`OutputError`); if one does not, the error names ``name`` and says what
    to do instead: use a bucket, or give the workers the folder."""
    from geoseg.errors import OutputError

    blind = blind_workers(client, path)
    if not blind:
        return
    workers = f"the Dask workers at {scheduler} ({len(blind)} of " \
              f"{len(client.scheduler_info(n_workers=-1)['workers'])})"
    if reading:
        raise InputError(f"{workers} cannot see this file: put the scenes in a bucket "
                         f"(s3://…) or give the workers this folder", name)
    raise OutputError(f"{workers} cannot see this folder: write to an s3:// output (its "
                      f"tiles then travel through the bucket) or give the workers this "
                      f"folder", name)


def worker_threads(client: Any) -> int:
    """Threads across the cluster's workers now (at least 1)."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    return max(1, sum(w.get("nthreads", 1) for w in info.values()))


def model_resources(client: Any, device: str) -> dict[str, float] | None:
    """``{"GPU": 1}`` when the model is to run on a GPU and the cluster's workers declare GPUs,
    so that each GPU runs one model task at a time; None otherwise (a task restricted to a
    resource no worker has would wait forever). See :func:`resources_for`."""
    return resources_for(client.scheduler_info(n_workers=-1)["workers"].values(), device)


def resources_for(workers: Iterable[dict[str, Any]], device: str) -> dict[str, float] | None:
    """:func:`model_resources` given the workers' info (as the scheduler reports it)."""
    if device == "cpu":
        return None
    if any(w.get("resources", {}).get("GPU", 0) >= 1 for w in workers):
        return {"GPU": 1}
    return None


def _distributed_progress(futures: list[Any], client: Any) -> None:
    """Wait for ``futures`` with distributed's bar, or with JSON events of the share of
    their tasks done, as the scheduler counts them (``--progress-json``)."""
    from geoseg import progress

    if not progress.JSON:
        from distributed import progress as dist_progress

        dist_progress(futures)
        sys.stderr.write("\n")  # the bar's line ends
        return
    from distributed.diagnostics.progressbar import TextProgressBar

    bar = progress.JsonBar(0, "predict")

    class JsonTasks(TextProgressBar):  # the scheduler's task counts, drawn as events
        def _draw_bar(self, remaining: int, all: int, **kwargs: Any) -> None:
            bar.set(all - remaining, all)

        def _draw_stop(self, **kwargs: Any) -> None:
            pass

    JsonTasks(futures, scheduler=client.scheduler.address, complete=True)
    bar.close()


@contextlib.contextmanager
def _local_progress(enabled: bool) -> Iterator[None]:
    if not enabled:
        yield
        return
    from dask.callbacks import Callback

    from geoseg.progress import bar as progress_bar

    class TqdmCallback(Callback):
        def _start_state(self, dsk: Any, state: Any) -> None:
            total = sum(len(state[k]) for k in ("ready", "waiting", "running"))
            self.bar = progress_bar(total, "predict")

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            self.bar.update(1)

        def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
            self.bar.close()

    with TqdmCallback():
        yield
