"""How geoseg talks to GDAL: its configuration, what a path is to it, and its failures as
geoseg's one-line errors.

Paths: :func:`is_gdal_path` tells a GDAL path (a URL or a ``/vsi…`` virtual file system
path, local or not) from a plain file path; :func:`reads_over_network` tells whether GDAL
reads it over a network (``/vsicurl/``, ``/vsis3/``, ``https://``…), which sets how it is
read (retries, one thread).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError

from geoseg.errors import OutputError, RasterReadError

# What GDAL failures surface as: rasterio's own errors and GDAL's CPLE_* classes.
GDAL_ERRORS = (RasterioError, CPLE_BaseError)

# GDAL configuration geoseg reads and writes with, each unless the environment sets it:
# - a fixed 128 MB block cache per process, whatever the raster's size (the sweep re-reads
#   only a tile row's overlap, so more buys no speed; GDAL reads a value below 100000 as MB);
# - network paths (/vsicurl/, /vsis3/, /vsigs/, /vsiaz/, https://…) retry a request that
#   failed transiently (HTTP 429, 5xx, dropped connection) up to 4 times, 1 s apart and
#   growing; GDAL_HTTP_MAX_RETRY and GDAL_HTTP_RETRY_DELAY in the environment change that.
GDAL_DEFAULTS = {"GDAL_CACHEMAX": 128, "GDAL_NUM_THREADS": "ALL_CPUS",
                 "GDAL_HTTP_MAX_RETRY": "4", "GDAL_HTTP_RETRY_DELAY": "1"}

# GDAL's file systems that read over a network (a local /vsizip/ or /vsigzip/ does not).
NETWORK_VSI = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss", "/vsiswift",
               "/vsiwebhdfs", "/vsihdfs")


def gdal_env(remote: bool = False) -> dict[str, Any]:
    """The options for ``rasterio.Env``: :data:`GDAL_DEFAULTS` less those the environment
    sets. A ``remote`` raster is read by one GDAL thread: with GDAL_NUM_THREADS, GDAL 3.10
    fills a window with wrong pixels, raising nothing, when an HTTP request of its parallel
    block reads fails (tests/test_sources.py shows it on a server failing 1 request in 3)."""
    env: dict[str, Any] = {k: v for k, v in GDAL_DEFAULTS.items() if k not in os.environ}
    env.update(s3_options())
    if remote:
        env["GDAL_NUM_THREADS"] = "1"
    return env


def s3_options() -> dict[str, str]:
    """GDAL's /vsis3/ options for the endpoint the standard AWS environment names
    (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else the profile's
    ``endpoint_url``), which GDAL 3.10 does not read:
    ``AWS_S3_ENDPOINT`` (host[:port][/path]), ``AWS_HTTPS`` (NO for http://) and
    ``AWS_VIRTUAL_HOSTING=FALSE`` (path-style requests, which MinIO and moto need), each
    unless the environment sets it; and ``CPL_AWS_CREDENTIALS_FILE`` from the AWS CLI's
    ``AWS_SHARED_CREDENTIALS_FILE``. Credentials and region GDAL reads itself (the
    environment, ``~/.aws/credentials`` and ``config``, ``AWS_PROFILE``, instance roles)."""
    from geoseg.storage import profile_config

    options: dict[str, str] = {}
    if os.environ.get("AWS_SHARED_CREDENTIALS_FILE"):  # GDAL's own name for it differs
        options["CPL_AWS_CREDENTIALS_FILE"] = os.environ["AWS_SHARED_CREDENTIALS_FILE"]
    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                or profile_config().get("endpoint"))
    if endpoint:
        url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options.update({"AWS_S3_ENDPOINT": url.netloc + url.path.rstrip("/"),
                        "AWS_HTTPS": "NO" if url.scheme == "http" else "YES",
                        "AWS_VIRTUAL_HOSTING": "FALSE"})
    return {k: v for k, v in options.items() if k not in os.environ}


def is_gdal_path(path: str) -> bool:
    """A URL or a GDAL virtual file system path (``/vsicurl/``, ``/vsizip/``…): a name
    only GDAL understands, not a file on this machine's disk."""
    return "://" in path or path.startswith("/vsi")


# URL schemes and the GDAL file system that reads each (as rasterio maps them).
VSI_SCHEMES = {"http://": "/vsicurl/http://", "https://": "/vsicurl/https://", "s3://": "/vsis3/",
               "gs://": "/vsigs/", "az://": "/vsiaz/", "file://": ""}


def vsi_path(path: str) -> str:
    """``path`` as GDAL itself opens it (in a VRT, say): a URL becomes its ``/vsicurl/``,
    ``/vsis3/``… path; anything else stays as it is."""
    for scheme, prefix in VSI_SCHEMES.items():
        if path.startswith(scheme):
            return prefix + path[len(scheme):]
    return path


def reads_over_network(path: str) -> bool:
    """Whether GDAL reads ``path`` over a network (/vsicurl/, /vsis3/, https://…, also
    inside a chain such as /vsizip//vsicurl/…)."""
    return "://" in path or any(prefix in path for prefix in NETWORK_VSI)


@contextlib.contextmanager
def read_errors(name: str) -> Iterator[None]:
    """Turn GDAL/rasterio failures into one-line RasterReadErrors naming the file."""
    try:
        yield
    except GDAL_ERRORS as exc:
        raise RasterReadError(read_message(exc, remote=reads_over_network(name)), name) from None


@contextlib.contextmanager
def write_errors(name: str | os.PathLike[str]) -> Iterator[None]:
    """Turn GDAL/OS write failures (disk full, file too large…) into OutputErrors naming ``name``."""
    try:
        yield
    except OutputError:
        raise
    except (*GDAL_ERRORS, OSError) as exc:
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else gdal_text(exc)
        raise OutputError(f"could not be written ({text})", name) from None


def gdal_text(exc: BaseException) -> str:
    """GDAL's own words for a failure (rasterio often wraps them in a generic message)."""
    text = str(exc).strip()
    cause = exc.__cause__ or exc.__context__
    if cause is not None and ("previous exception" in text or not text):
        text = str(cause).strip() or text
    return text.splitlines()[0] if text else type(exc).__name__


def read_message(exc: BaseException, *, remote: bool = False) -> str:
    """What a failed read means to the user, in a few words."""
    text = gdal_text(exc)
    if "not recognized as" in text or "not a supported file format" in text:
        return "not a raster GDAL can read"
    if "No such file" in text or "HTTP response code: 404" in text:
        return "no such file"
    if remote or "HTTP response code" in text:  # retried by GDAL already
        retries = os.environ.get("GDAL_HTTP_MAX_RETRY", GDAL_DEFAULTS["GDAL_HTTP_MAX_RETRY"])
        return f"cannot be read over the network ({text}; GDAL_HTTP_MAX_RETRY={retries})"
    return f"cannot be read ({text})"
