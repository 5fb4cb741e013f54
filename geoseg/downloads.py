"""Downloads the user asks for (model references), into a cache they can be used from
offline.

A reference is ``https://…`` (or ``http://``), ``file://…`` or ``hf://ORG/REPO[@REV][/PATH]``
(a model hub repository, served by ``$HF_ENDPOINT``, https://huggingface.co by default; its
``$HF_TOKEN`` is sent when set and never shown). Each file is fetched once into
``$GEOSEG_CACHE`` (by default ``geoseg`` in the user's cache folder): into a temporary file
beside its place, checked against the ``sha256`` when one is given, and only then renamed
into place, under a lock, so that a cut download, an error page or a wrong checksum leaves
nothing behind and two processes fetching one URL leave one good copy (the second waits,
then finds it). A cached file is used without any request.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import DownloadError, InputError

SCHEMES = ("https", "http", "file", "hf")
CHUNK = 1 << 20
TIMEOUT_S = 60
HF_FILES = ("config.json", "model.safetensors")  # an smp save_pretrained repository
HF_OPTIONAL = ("geoseg.json",)  # the card geoseg's smp export puts beside them


def cache_dir() -> Path:
    """``$GEOSEG_CACHE``, else ``geoseg`` in ``$XDG_CACHE_HOME`` (``~/.cache``) or, on
    Windows, ``%LOCALAPPDATA%``."""
    if os.environ.get("GEOSEG_CACHE"):
        return Path(os.environ["GEOSEG_CACHE"]).expanduser()
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "geoseg" / "cache"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "geoseg"


def is_reference(text: str) -> bool:
    """Whether ``text`` is a URL-like reference (``scheme://``) rather than a path."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text) is not None


@dataclass(frozen=True)
class HubReference:
    """``hf://ORG/REPO[@REV][/PATH]``."""

    repo: str
    revision: str
    path: str | None

    @classmethod
    def parse(cls, text: str) -> HubReference:
        rest = text[len("hf://"):]
        parts = rest.split("/")
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise InputError(f"{text!r} is not hf://ORG/REPO[@REVISION][/PATH]")
        name, _, revision = parts[1].partition("@")
        path = "/".join(parts[2:]) or None
        if not name or ".." in parts or (path is not None and path.startswith("/")):
            raise InputError(f"{text!r} is not hf://ORG/REPO[@REVISION][/PATH]")
        return cls(f"{parts[0]}/{name}", revision or "main", path)

    def url(self, filename: str) -> str:
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
        quoted = "/".join(urllib.parse.quote(p) for p in filename.split("/"))
        return f"{endpoint}/{self.repo}/resolve/{urllib.parse.quote(self.revision, safe='')}/{quoted}"


def fetch_reference(reference: str, *, sha256: str | None = None) -> Path:
    """The local path of a reference, downloaded into the cache if it is not there: a
    file, or for ``hf://ORG/REPO`` without a path a folder with the repository's
    ``config.json`` and ``model.safetensors``. ``sha256`` (of a single file) is checked."""
    scheme = reference.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise InputError(f"{reference!r}: only {', '.join(s + '://' for s in SCHEMES)} "
                         f"references are taken")
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(reference).path))
        if not path.exists():
            raise DownloadError("no such file", path)
        if sha256:
            check_sha256(path, sha256, path)
        return path
    if scheme == "hf":
        hub = HubReference.parse(reference)
        if hub.path is not None:
            return download(hub.url(hub.path), sha256=sha256, name=reference)
        if sha256:
            raise InputError("a sha256 names one file: give hf://ORG/REPO/FILE with it")
        files = [download(hub.url(f), name=f"{reference}/{f}") for f in HF_FILES]
        for optional in HF_OPTIONAL:
            download_if_there(hub.url(optional), name=f"{reference}/{optional}")
        return files[0].parent
    return download(reference, sha256=sha256)


def fetch_if_there(reference: str) -> Path | None:
    """The local path of a file that may sit beside a referenced model (its JSON), or
    ``None`` when there is none (remembered in the cache, see :func:`download_if_there`)."""
    scheme = reference.split("://", 1)[0].lower()
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(reference).path))
        return path if path.exists() else None
    if scheme == "hf":
        hub = HubReference.parse(reference)
        return None if hub.path is None else download_if_there(hub.url(hub.path), name=reference)
    return download_if_there(reference)


def cached_path(url: str) -> Path:
    """Where ``url`` lives in the cache: a folder per URL (a hash), the URL's file name
    in it (files of one hub repository and revision share a folder)."""
    parsed = urllib.parse.urlparse(url)
    folder_key = url.rsplit("/", 1)[0] if "/resolve/" in parsed.path else url
    key = hashlib.sha256(folder_key.encode()).hexdigest()[:24]
    name = Path(urllib.parse.unquote(parsed.path)).name or "download"
    return cache_dir() / "downloads" / key / name


def download(url: str, *, sha256: str | None = None, name: str | None = None) -> Path:
    """``url`` in the cache (see the module's text); ``name`` is what errors call it."""
    found = _fetch(url, sha256=sha256, label=name or url, optional=False)
    assert found is not None
    return found


def download_if_there(url: str, *, name: str | None = None) -> Path | None:
    """As :func:`download`, for a file that may not exist (a model's JSON beside it):
    ``None`` on HTTP 404, and the cache remembers that, so that the next import of the
    model makes no request either."""
    return _fetch(url, sha256=None, label=name or url, optional=True)


def _fetch(url: str, *, sha256: str | None, label: str, optional: bool) -> Path | None:
    target = cached_path(url)
    absent = target.with_name(f".{target.name}.absent")
    with _locked(target):
        if target.exists():
            if sha256:
                check_sha256(target, sha256, label)
            return target
        if optional and absent.exists():
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                digest = _stream(url, out, label)
                out.flush()
                os.fsync(out.fileno())
            if sha256 and digest != sha256.lower():
                raise DownloadError(f"sha256 mismatch: got {digest}, expected {sha256.lower()} "
                                    f"(nothing was kept)", label)
            os.replace(tmp, target)
        except DownloadError as exc:
            tmp.unlink(missing_ok=True)
            if optional and exc.status == 404:
                absent.touch()
                return None
            _remove_empty(target.parent)
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            _remove_empty(target.parent)
            raise
    return target


def _stream(url: str, out: object, label: str) -> str:
    """Copy ``url``'s body into ``out``; its sha256. A short body is an error."""
    request = urllib.request.Request(url, headers={"User-Agent": "geoseg"})
    token = os.environ.get("HF_TOKEN")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    if token and url.startswith(endpoint + "/"):
        request.add_header("Authorization", f"Bearer {token}")
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)  # type: ignore[attr-defined]
                received += len(chunk)
    except urllib.error.HTTPError as exc:
        error = DownloadError(f"download failed: HTTP {exc.code} {exc.reason} (nothing was kept)",
                              label)
        error.status = exc.code
        raise error from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"download failed: {exc.reason} (nothing was kept)", label) from None
    except (OSError, ValueError) as exc:  # http.client.IncompleteRead, a reset connection...
        raise DownloadError(f"download cut short after {received} bytes ({type(exc).__name__}; "
                            f"nothing was kept)", label) from None
    if expected is not None and expected.isdigit() and received != int(expected):
        raise DownloadError(f"download cut short: {received} of {expected} bytes (nothing was "
                            f"kept)", label)
    return digest.hexdigest()


def check_sha256(path: Path, sha256: str, label: str | os.PathLike[str]) -> None:
    digest = file_sha256(path)
    if digest != sha256.lower():
        raise DownloadError(f"sha256 mismatch: got {digest}, expected {sha256.lower()}", label)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _locked(target: Path) -> Iterator[None]:
    """An exclusive lock on ``target``'s download, across processes (POSIX ``flock``; on
    other systems the rename alone keeps the cache whole)."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = target.with_name(f".{target.name}.lock")
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_empty(folder: Path) -> None:
    """Drop a download's folder when only lock files are left in it."""
    with contextlib.suppress(OSError):
        if all(p.name.endswith(".lock") for p in folder.iterdir()):
            for p in folder.iterdir():
                p.unlink(missing_ok=True)
            folder.rmdir()
