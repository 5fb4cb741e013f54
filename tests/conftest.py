"""What the tests share: small real rasters written into tmp_path, the bundled model, the
real CLI (in process and as a subprocess), and the fault helpers. Tests import the plain
helpers with ``from conftest import …``; fixtures come by name."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner, Result

from geoseg.cli import cli
from geoseg.maskfile import NODATA, colormap
from geoseg.synthetic import SYNTHETIC_TAG, sample_scene

UTM = "EPSG:32633"
TRANSFORM = Affine(2.0, 0.0, 500_000.0, 0.0, -2.0, 5_200_000.0)


def write_raster(path: Path, data: np.ndarray, *, crs: str | None = UTM,
                 transform: Affine = TRANSFORM, nodata: float | None = None,
                 tiled: bool = True, tags: dict[str, str] | None = None) -> Path:
    """Write ``data`` (bands, rows, cols) as a GeoTIFF (with dataset ``tags``)."""
    if data.ndim == 2:
        data = data[None]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": data.shape[0], "dtype": data.dtype, "crs": crs, "transform": transform,
               "nodata": nodata}
    if tiled and data.shape[1] >= 16 and data.shape[2] >= 16:
        profile.update(tiled=True, blockxsize=16 * max(1, min(16, data.shape[2] // 16)),
                       blockysize=16 * max(1, min(16, data.shape[1] // 16)))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if tags:
            ds.update_tags(**tags)
    return path


def write_classes(path: Path, data: Any, names: Sequence[str],
                  colors: Sequence[tuple[int, int, int]] | None = None, **kwargs: Any) -> Path:
    """A class raster (uint8, nodata 255) naming its classes as a geoseg mask does, with a
    colour table when ``colors`` are given."""
    write_raster(path, np.asarray(data, np.uint8), nodata=NODATA, **kwargs)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(CLASS_NAMES=json.dumps(list(names)))
        if colors is not None:
            ds.write_colormap(1, colormap(colors))
    return path


@pytest.fixture
def make_raster(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_raster(name, data=..., crs=..., transform=..., nodata=...)``."""

    def make(name: str = "image.tif", data: np.ndarray | None = None, **kwargs: Any) -> Path:
        if data is None:
            data = np.random.default_rng(0).integers(1, 4000, (4, 64, 80), dtype=np.uint16)
        return write_raster(tmp_path / name, data, **kwargs)

    return make


@pytest.fixture
def make_scene(tmp_path: Path) -> Callable[..., tuple[Path, np.ndarray]]:
    """Factory: a synthetic scene of ``height × width`` written as GeoTIFF, plus its labels."""

    def make(height: int, width: int, seed: int = 1234, name: str = "scene.tif",
             nodata_corner: bool = True) -> tuple[Path, np.ndarray]:
        scene = sample_scene(max(height, width), seed=seed, nodata_corner=nodata_corner)
        image, labels = scene.render(0, 0, height, width)
        path = write_raster(tmp_path / name, image, transform=scene.transform, nodata=0,
                            tags={SYNTHETIC_TAG: f"seed {seed}"})  # a geoseg synthetic scene
        return path, labels

    return make


@pytest.fixture(scope="session")
def default_model() -> Any:
    """The bundled model, loaded once for the whole session (tests only read it)."""
    import geoseg

    return geoseg.load_model("default")


@pytest.fixture
def flaky_http() -> Iterator[Callable[[Path], tuple[str, Callable[[], int]]]]:
    """Factory: ``serve(folder)`` → ``(base URL, request counter)`` of tests/flaky_http.py
    serving ``folder`` on 127.0.0.1 (the first of every three requests for a URL fails
    with 503); the servers stop when the test ends."""
    import urllib.request

    servers: list[subprocess.Popen[str]] = []

    def serve(folder: Path) -> tuple[str, Callable[[], int]]:
        server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("flaky_http.py")),
                                   str(folder)], stdout=subprocess.PIPE, text=True)
        servers.append(server)
        assert server.stdout is not None
        url = f"http://127.0.0.1:{server.stdout.readline().strip()}"

        def requests() -> int:
            return int(urllib.request.urlopen(f"{url}/count", timeout=10).read())

        return url, requests

    yield serve
    for server in servers:
        server.kill()
        server.wait()


def invoke(*args: object, catch_exceptions: bool = True) -> Result:
    """The real CLI (click's runner) on ``args`` (paths and numbers are made strings)."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=catch_exceptions)


def run_cli(*args: object) -> Result:
    """:func:`invoke`, letting an unexpected exception through to the test."""
    return invoke(*args, catch_exceptions=False)


def geoseg_process(*args: object, preexec: Callable[[], None] | None = None,
                   **popen: Any) -> subprocess.Popen[str]:
    """``geoseg ARGS`` in a process of its own (``python -m geoseg.cli``), with pipes."""
    return subprocess.Popen([sys.executable, "-m", "geoseg.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=preexec, **popen)


def geoseg_done(*args: object, preexec: Callable[[], None] | None = None,
                **popen: Any) -> subprocess.CompletedProcess[str]:
    """``geoseg ARGS`` in a process of its own, run to its end."""
    process = geoseg_process(*args, preexec=preexec, **popen)
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.fixture
def geoseg_paused() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Factory: ``geoseg_paused(pause_at, *args)`` starts ``geoseg ARGS`` in a process of its
    own and returns it once it has made the call ``pause_at`` (``MODULE:FUNCTION:N``, see
    tests/faults.py), where it now waits for a signal; it fails, with the process's output,
    if the process ends without getting there. A process still running when the test
    ends is killed."""
    import os
    import select

    started: list[subprocess.Popen[str]] = []

    def start(pause_at: str, *args: object, timeout_s: float = 300) -> subprocess.Popen[str]:
        read, write = os.pipe()
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("faults.py")), "--pause-at",
             pause_at, "--notify", str(write), "--", *map(str, args)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, pass_fds=(write,),
            preexec_fn=interruptible)
        started.append(process)
        os.close(write)  # the process holds the only writer now: its end is our end of file
        try:
            ready, _, _ = select.select([read], [], [], timeout_s)
            said = os.read(read, 64) if ready else b""
        finally:
            os.close(read)
        if said != b"paused\n":
            process.kill()
            out, err = process.communicate()
            raise AssertionError(f"geoseg never reached {pause_at}:\n{out}\n{err}")
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


def own_lines(stderr: str) -> list[str]:
    """geoseg's lines of a process's stderr: libtiff (inside GDAL) prints a failed write
    straight to the file descriptor, from whichever thread meets it, before or after
    geoseg's own line, and in three writes (``_tiffWriteProc: ``, ``File too large``,
    ``.\n``) that geoseg's line can fall between; its pieces are taken out wherever they
    landed."""

    reason = r"(File too large|No space left on device)"
    text = re.sub(rf"_tiff\w+: {reason}?", "", stderr)
    text = re.sub(rf"(?m)^{reason}\.?$", "", text)  # its reason, when geoseg came before
    return [line for line in text.splitlines() if line.strip() not in ("", ".")]


def interruptible() -> None:
    """A ``preexec_fn``: SIGINT does what Ctrl-C does in a terminal, even when the tests
    themselves run where it is ignored (a background job of a script ignores it, and a
    Python started so keeps ignoring it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def file_size_limit(max_bytes: int) -> Callable[[], None]:
    """A ``preexec_fn`` after which no file of the process grows past ``max_bytes``, as
    on a nearly full disk (writes fail with EFBIG instead of killing it)."""

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return limit


def assert_one_line_error(result: Any, *words: str, named: object = None) -> None:
    """Exit code 1 and one line ``Error: …`` holding every word (starting
    ``Error: <named>: `` when ``named`` is given), and no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    assert named is None or lines[0].startswith(f"Error: {named}: "), lines[0]
    for w in words:
        assert w in lines[0], lines[0]


# A real S3 API for tests of object storage: moto's server, reached over HTTP.

_buckets = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 API in a process of its own on 127.0.0.1 (tests/s3server.py); its URL."""
    from s3server import s3_server as server

    with server() as endpoint:
        yield endpoint


def aws_env(monkeypatch: pytest.MonkeyPatch, endpoint: str, key: str = "testing",
            secret: str = "testing") -> None:
    """The standard AWS variables for ``endpoint`` only (geoseg passes the endpoint on to
    GDAL itself); no instance metadata service or config files to fall back on."""
    closed = f"http://127.0.0.1:{free_port()}"
    for name, value in {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret,
                        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                        "AWS_METADATA_ENDPOINT": closed,
                        "AWS_EC2_METADATA_DISABLED": "true",
                        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
                        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
                        "CPL_AWS_CREDENTIALS_FILE": "/nonexistent/aws-credentials"}.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_S3_ENDPOINT",
                 "AWS_HTTPS", "AWS_VIRTUAL_HOSTING",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The AWS environment pointing at the server, and a new empty bucket of this test's
    own: a boto3 client with ``.bucket`` set."""
    import boto3

    aws_env(monkeypatch, s3_server)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.bucket = f"geoseg-test-{next(_buckets)}"
    client.create_bucket(Bucket=client.bucket)
    return client


@pytest.fixture
def s3_auth(s3_server: str) -> Iterator[Callable[[bool], None]]:
    """Switch moto's signature and IAM checks on (``True``) or off, in the server's own
    process (moto's ``/moto-api/reset-auth``); off again after the test."""
    import urllib.request

    def switch(on: bool) -> None:
        before = "0" if on else "inf"  # requests served before the checks begin
        urllib.request.urlopen(urllib.request.Request(
            f"{s3_server}/moto-api/reset-auth", data=before.encode(), method="POST",
            headers={"Content-Type": "text/plain"}),  # a form's body Flask would parse away
            timeout=10).close()

    yield switch
    switch(False)


def _can_hide_folders() -> bool:
    """Whether this machine lets a process mount a tmpfs in a mount namespace of its own
    (root in a container that allows it; with user namespaces as anyone)."""
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs none /mnt"], capture_output=True)
    return probe.returncode == 0


class ShareNothingCluster:
    """A ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1 that share no
    folder with the test: each worker starts in an empty folder of its own with a
    ``TMPDIR`` of its own, outside pytest's temp root; where the machine allows it, that
    root (the test's scenes, outputs, models and temp files) is hidden from the workers
    under an empty tmpfs (:attr:`hidden`). They reach the S3 server through the standard
    AWS variables only, and can import tests/faults.py."""

    def __init__(self, address: str, folders: list[Path], hidden: bool) -> None:
        self.address = address
        self.folders = folders  # each worker's working folder (its TMPDIR is folder/tmp)
        self.hidden = hidden


@pytest.fixture(scope="module")
def share_nothing_cluster(s3_server: str, tmp_path_factory: pytest.TempPathFactory
                          ) -> Iterator[ShareNothingCluster]:
    import shutil
    import tempfile

    from s3server import aws_env as worker_env

    base = Path(tempfile.mkdtemp(prefix="geoseg-cluster-"))  # not under pytest's root
    hide = tmp_path_factory.getbasetemp()
    hidden = _can_hide_folders()
    info = base / "scheduler.json"
    tests = str(Path(__file__).resolve().parent)
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
    env = {**worker_env(s3_server), "PYTHONPATH": path,
           "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "error"}
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", str(info)],
                              env=env, cwd=base, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    folders = []
    for k in range(2):
        folder = base / f"worker-{k}"
        (folder / "tmp").mkdir(parents=True)
        folders.append(folder)
        command = [sys.executable, "-m", "dask", "worker", "--scheduler-file", str(info),
                   "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1",
                   "--local-directory", str(folder / "dask")]
        if hidden:
            command = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                       'mount -t tmpfs none "$0" && exec "$@"', str(hide), *command]
        procs.append(subprocess.Popen(command, env={**env, "TMPDIR": str(folder / "tmp")},
                                      cwd=folder, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    try:
        with dask_processes(info, procs, workers=2) as address:
            yield ShareNothingCluster(address, folders, hidden)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def dask_processes(info: Path, procs: list[subprocess.Popen[Any]], *,
                   workers: int) -> Iterator[str]:
    """The address of the cluster whose scheduler writes ``info`` (its scheduler file),
    once ``workers`` workers joined; the processes ``procs`` (scheduler and workers) are
    shut down, or killed, when the block ends."""
    from distributed import Client

    try:  # the client waits for the scheduler's file, then for the workers to join
        with Client(scheduler_file=str(info), timeout=60, set_as_default=False) as client:
            client.wait_for_workers(workers, timeout=60)
            yield client.scheduler.address
            client.shutdown()  # scheduler and workers stop at once
    finally:
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
