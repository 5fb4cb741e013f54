"""Object storage: ``s3://bucket/key`` URLs as targets of any geoseg output, and as
inputs (scenes GDAL reads through ``/vsis3/``, globs over a prefix, STAC Item JSON).

Inputs: a scene's object is checked here up front (:func:`check_readable`: the endpoint,
the credentials, the bucket, the object), a glob is listed here (:func:`glob`), an Item's
JSON is read here (:func:`read_text`); the pixels are read by GDAL itself, configured
from the same AWS environment by :func:`geoseg.gdal.s3_options`.

Outputs to a URL are written as usual into a local temp folder (``tempfile``, so the
process's ``TMPDIR``) and uploaded when all are finished: :func:`staged`. Each object
appears whole or not at all (one PUT, or a multipart upload that S3 only shows once
complete); without ``overwrite`` an object is created only if absent (a conditional PUT,
``If-None-Match: *``), so a concurrent writer is never overwritten either; if one upload
fails, the objects this run uploaded are deleted again.

The library is obstore (the Rust ``object_store`` crate behind a small wheel): it reads
the standard AWS environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION``/``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``, web
identity, ECS and EC2 instance credentials), retries with backoff, supports conditional
create and multipart uploads, and brings no botocore. The keys, region and endpoint of an
``AWS_PROFILE`` in ``~/.aws`` files, which obstore does not read, are read here
(:func:`profile_config`).
Credentials are never part of a message: errors name the URL and the problem only.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import EnvError, GeoSegError, InputError, OutputError, OutputExistsError

if TYPE_CHECKING:
    from obstore.store import S3Store

SCHEME = "s3://"
# Larger files go up in parts; a conditional PUT is one request holding the whole file in
# memory, so above this size "absent" is checked just before the upload instead.
MULTIPART_FROM = 256 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024
# Transient failures (5xx, dropped connections) are retried with backoff, this many times.
MAX_RETRIES = 4
CONNECT_TIMEOUT = "10s"
_CODE = re.compile(r"<Code>(\w+)</Code>")


@dataclass(frozen=True)
class ObjectURL:
    """``s3://bucket/key``, parsed."""

    bucket: str
    key: str

    def __str__(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"


def is_url(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` names an object in object storage (``s3://…``)."""
    return isinstance(path, str) and path.startswith(SCHEME)


def parse(url: str) -> ObjectURL:
    """``s3://bucket/key`` → bucket and key; a URL without a key is refused."""
    bucket, _, key = url[len(SCHEME):].partition("/")
    if not is_url(url) or not bucket or not key or key.endswith("/"):
        raise InputError("expected s3://BUCKET/KEY, a bucket and an object key", url)
    return ObjectURL(bucket, key)


def store(bucket: str) -> S3Store:
    """The bucket, configured from the standard AWS environment variables, else from the
    profile's shared files (:func:`profile_config`); an endpoint may be plain HTTP (a
    local S3-compatible server). One store per bucket and configuration in a process, so
    that requests share its connections and the credentials it fetched (from an instance
    or web-identity role: not once per request)."""
    return _store(bucket, _aws_environment(), os.getpid())


@functools.lru_cache(maxsize=32)
def _store(bucket: str, aws: tuple[tuple[str, str], ...], pid: int) -> S3Store:
    """:func:`store` for the AWS environment ``aws``, in the process ``pid`` (a forked
    child makes its own: the parent's connections are not its to use)."""
    from obstore.store import S3Store

    config: dict[str, Any] = profile_config()
    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                or config.pop("endpoint", None))
    if endpoint is not None:
        config["endpoint"] = endpoint
    return S3Store(bucket, config=config,  # type: ignore[arg-type]
                   client_options={"allow_http": bool(endpoint and endpoint.startswith("http:")),
                                   "connect_timeout": CONNECT_TIMEOUT},
                   retry_config={"max_retries": MAX_RETRIES,
                                 "retry_timeout": datetime.timedelta(minutes=3)})


def profile_config() -> dict[str, str]:
    """What the AWS CLI's shared files say for the profile ``AWS_PROFILE`` (else
    ``default``), where the environment does not say it itself: the keys of
    ``AWS_SHARED_CREDENTIALS_FILE`` (``~/.aws/credentials``) and the region and
    ``endpoint_url`` of ``AWS_CONFIG_FILE`` (``~/.aws/config``). obstore reads only the
    environment; GDAL reads these files too, so both see the same account. Read once per
    AWS environment in a process (GDAL's options are made for every window read)."""
    return dict(_profile_config(_aws_environment()))


def _aws_environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


@functools.lru_cache(maxsize=8)
def _profile_config(aws: tuple[tuple[str, str], ...]) -> dict[str, str]:
    import configparser

    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    home = Path("~/.aws").expanduser()

    def section(variable: str, default: Path, name: str) -> dict[str, str]:
        parser = configparser.RawConfigParser()
        try:
            parser.read(os.environ.get(variable) or default, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError, OSError):
            return {}
        return dict(parser[name]) if parser.has_section(name) else {}

    config: dict[str, str] = {}
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        keys = section("AWS_SHARED_CREDENTIALS_FILE", home / "credentials", profile)
        for ours, theirs in (("access_key_id", "aws_access_key_id"),
                             ("secret_access_key", "aws_secret_access_key"),
                             ("session_token", "aws_session_token")):
            if keys.get(theirs):
                config[ours] = keys[theirs]
    settings = section("AWS_CONFIG_FILE", home / "config",
                       profile if profile == "default" else f"profile {profile}")
    if settings.get("region") and not (os.environ.get("AWS_REGION")
                                       or os.environ.get("AWS_DEFAULT_REGION")):
        config["region"] = settings["region"]
    if settings.get("endpoint_url"):
        config["endpoint"] = settings["endpoint_url"]
    return config


def has_magic(url: str) -> bool:
    """Whether an ``s3://`` URL is a glob (``*``, ``?`` or ``[…]`` in its key)."""
    return is_url(url) and any(c in url[len(SCHEME):].partition("/")[2] for c in "*?[")


def glob(pattern: str) -> list[str]:
    """The ``s3://`` URLs of the objects matching ``pattern``, sorted: the prefix before
    the first wildcard is listed, then matched as a local glob would (``**`` crosses
    folders, ``*`` and ``?`` do not). Matching nothing is an :class:`InputError`."""

    target = parse(pattern)
    first = min(target.key.find(c) % (len(target.key) + 1) for c in "*?[")
    folder = target.key[:first].rpartition("/")[0]
    regex = re.compile(_translate(target.key))
    objects = listing(f"{SCHEME}{target.bucket}/{folder}", reading=True, name=pattern)
    found = sorted(url for url in objects
                   if regex.fullmatch(url[len(SCHEME) + len(target.bucket) + 1:]))
    if not found:
        raise InputError("matches no object", pattern)
    return found


def _translate(pattern: str) -> str:
    """A glob over keys as a regular expression (``**/`` is any number of folders)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            inside = pattern[i + 1:end]
            out.append("[" + ("^" + inside[1:] if inside.startswith("!") else inside) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def check_readable(url: str) -> None:
    """Before any work: the endpoint answers, the credentials work, the bucket and the
    object exist; each failure is one line naming ``url``."""
    if stat(url, reading=True) is None:
        raise InputError("no such object", url)


def read_text(url: str) -> str:
    """The text (UTF-8) of the object at ``url``."""
    return get_bytes(url, reading=True).decode("utf-8")


def exists(url: str) -> bool:
    """Whether the object at ``url`` exists (a missing bucket is an error, not False)."""
    return stat(url) is not None


def check_writable(url: str, *, overwrite: bool) -> None:
    """Before any work: the endpoint answers, the credentials work, the bucket exists and
    the object is absent (unless ``overwrite``). A denied write shows only on upload."""
    if exists(url) and not overwrite:
        raise OutputExistsError("exists already (use ${overwrite=True} to replace it)", url)


def upload(local: str | os.PathLike[str], url: str, *, overwrite: bool) -> str | None:
    """Upload a local file to ``url``: the object appears whole or not at all; without
    ``overwrite`` an existing object (even one that appeared meanwhile) is kept and this
    is an :class:`OutputExistsError`. Returns the object's ETag (None where the server
    gives none)."""
    import obstore

    target = parse(url)
    bucket = store(target.bucket)
    size = Path(local).stat().st_size
    try:
        if size < MULTIPART_FROM:
            result = obstore.put(bucket, target.key, Path(local).read_bytes(),
                                 mode="overwrite" if overwrite else "create",
                                 use_multipart=False)
            return _etag(result.get("e_tag"))
        if not overwrite:
            check_writable(url, overwrite=False)
        with open(local, "rb") as f:
            result = obstore.put(bucket, target.key, f, use_multipart=True,
                                 chunk_size=PART_SIZE)
        return _etag(result.get("e_tag"))
    except GeoSegError:
        raise
    except Exception as exc:
        raise failure(exc, url) from None


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or a HEAD says of an object: its size, ETag and time (ns)."""

    size: int
    etag: str | None
    modified_ns: int


def _info(meta: Any) -> ObjectInfo:
    modified = meta["last_modified"]
    return ObjectInfo(int(meta["size"]), _etag(meta.get("e_tag")),
                      int(modified.timestamp() * 1e9))


def _etag(tag: str | None) -> str | None:
    """An ETag without the quotes some stores put around it and others do not (and a
    listing and a HEAD of one store may differ in)."""
    return None if tag is None else tag.strip('"')


def stat(url: str, *, reading: bool = False) -> ObjectInfo | None:
    """The object at ``url``, or None when there is none (a missing bucket, refused
    credentials… are one-line errors: inputs' when ``reading``, else outputs')."""
    import obstore

    target = parse(url)
    try:
        return _info(obstore.head(store(target.bucket), target.key))
    except FileNotFoundError:
        _check_bucket(target, url, reading=reading)
        return None
    except Exception as exc:
        _check_bucket(target, url, reading=reading)
        raise failure(exc, url, reading=reading, probing=True) from None


def listing(prefix: str, *, reading: bool = False, name: str | None = None
            ) -> dict[str, ObjectInfo]:
    """Every object under the folder ``prefix`` (``s3://bucket/folder``; ``s3://bucket``
    for the whole bucket), by URL. A missing bucket, refused credentials or an unreachable
    endpoint are one-line errors (an input's when ``reading``; naming ``name`` when given,
    else ``prefix``), so this also checks a destination up front."""
    import obstore

    bucket, _, folder = prefix[len(SCHEME):].rstrip("/").partition("/")
    if not is_url(prefix) or not bucket:
        raise InputError("expected s3://BUCKET/FOLDER", prefix)
    try:
        return {f"{SCHEME}{bucket}/{meta['path']}": _info(meta)
                for page in obstore.list(store(bucket), prefix=folder or None)
                for meta in page}
    except Exception as exc:
        raise failure(exc, name or prefix, reading=reading, probing=True) from None


def put_bytes(url: str, data: bytes, *, overwrite: bool = True, name: str | None = None) -> None:
    """Store ``data`` at ``url`` in one request; without ``overwrite`` only where no
    object is (an :class:`OutputExistsError` otherwise, even for one that appeared after
    any check). Errors name ``name`` (the output it is for) when given, else ``url``."""
    import obstore

    target = parse(url)
    try:
        obstore.put(store(target.bucket), target.key, data,
                    mode="overwrite" if overwrite else "create", use_multipart=False)
    except Exception as exc:
        raise failure(exc, name or url) from None


def get_bytes(url: str, *, reading: bool = False, name: str | None = None) -> bytes:
    """The bytes of the object at ``url``; errors are an input's when ``reading``, and
    name ``name`` when given, else ``url``."""
    import obstore

    target = parse(url)
    try:
        return bytes(obstore.get(store(target.bucket), target.key).bytes())
    except FileNotFoundError:
        what = "no such object" if name is None else f"no such object ({url})"
        raise (InputError if reading else OutputError)(what, name or url) from None
    except Exception as exc:
        raise failure(exc, name or url, reading=reading, probing=True) from None


def download(url: str, local: str | os.PathLike[str]) -> None:
    """Copy the object at ``url`` to the local file ``local``, in chunks (memory holds one
    chunk, whatever the object's size)."""
    import obstore

    target = parse(url)
    try:
        result = obstore.get(store(target.bucket), target.key)
        with open(local, "wb") as f:
            for chunk in result.stream(PART_SIZE):
                f.write(chunk)
    except FileNotFoundError:
        raise OutputError("no such object", url) from None
    except Exception as exc:
        raise failure(exc, url) from None


def delete(url: str) -> None:
    """Delete the object at ``url`` (absent already is fine)."""
    import obstore

    target = parse(url)
    try:
        obstore.delete(store(target.bucket), target.key)
    except FileNotFoundError:
        pass
    except Exception as exc:
        raise failure(exc, url) from None


def delete_prefix(url: str, *, name: str | None = None) -> int:
    """Delete every object whose key lies under the folder ``url`` (``s3://bucket/folder``,
    with or without the ending ``/``); how many there were. Errors name ``name`` when
    given, else ``url``."""
    import obstore

    target = parse(url.rstrip("/"))
    bucket = store(target.bucket)
    deleted = 0
    try:
        for page in obstore.list(bucket, prefix=target.key + "/", chunk_size=1000):
            paths = [meta["path"] for meta in page]
            if paths:
                obstore.delete(bucket, paths)
                deleted += len(paths)
    except Exception as exc:
        raise failure(exc, name or url) from None
    return deleted


def _check_bucket(target: ObjectURL, url: str, *, reading: bool = False) -> None:
    """Listing one page of the key's folder proves the bucket is there and readable."""
    import obstore

    folder = target.key.rpartition("/")[0] or None
    try:
        next(iter(obstore.list(store(target.bucket), prefix=folder, chunk_size=1)), None)
    except Exception as exc:
        raise failure(exc, url, reading=reading, probing=True) from None


def failure(exc: BaseException, url: str, *, reading: bool = False,
            probing: bool = False) -> GeoSegError:
    """What a failed request means, as a one-line error about ``url`` (the library's text
    is long and multi-line; only the S3 error code or the kind of failure is kept): an
    :class:`InputError` for an input (``reading``), else an :class:`OutputError`.
    ``probing``: the request read or listed an output's place (a HEAD, a listing, a
    journal event) rather than wrote to it, so a denial says what was refused."""
    from obstore.exceptions import (
        AlreadyExistsError,
        PermissionDeniedError,
        UnauthenticatedError,
    )

    text = str(exc)
    code = _CODE.search(text)
    error = InputError if reading else OutputError
    denied = "access denied: the credentials may not " + (
        "read it" if reading else
        "read or list here (outputs are checked before any work)" if probing else "write here")
    if isinstance(exc, AlreadyExistsError):
        return OutputExistsError("exists already (use ${overwrite=True} to replace it)", url)
    if code and code[1] == "NoSuchBucket":
        return error(f"no such bucket ({url[len(SCHEME):].partition('/')[0]})", url)
    if code and code[1] in ("AccessDenied", "AllAccessDisabled"):
        return error(denied, url)
    if code and code[1] in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                            "InvalidToken"):
        return EnvError(f"the AWS credentials were refused ({code[1]})", url)
    if isinstance(exc, UnauthenticatedError):
        return EnvError("the AWS credentials were refused", url)
    if isinstance(exc, PermissionDeniedError):
        return error(denied, url)
    if "/latest/api/token" in text or "/latest/meta-data" in text or "credential" in text.lower():
        return EnvError("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                        "or AWS_PROFILE (or run where an instance or web identity role "
                        "provides them)", url)
    if "error sending request" in text or "Connect" in text:
        endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
                    or "AWS S3")
        return EnvError(f"cannot reach the endpoint {endpoint} (after {MAX_RETRIES} retries)",
                        url)
    summary = code[1] if code else text.splitlines()[0][:200]
    return error(f"object storage request failed ({summary})", url)


@contextlib.contextmanager
def staged(targets: Sequence[str | os.PathLike[str] | None], *,
           overwrite: bool) -> Iterator[list[Path | None]]:
    """Local stand-ins for ``targets`` (``None`` stays ``None``): a URL's is a file of the
    same name in a temp folder, one folder per URL folder, so that files written beside
    each other (a mask and its style) are uploaded beside each other. The URLs are
    checked now; when the block ends well, every URL's file is uploaded (in order); on any
    failure the objects uploaded so far go again. The temp folder always goes.

    Targets without a URL pass through as they are; URLs and local files together are
    refused (no one step could put both in place)."""
    urls = [t for t in targets if is_url(t)]
    if not urls:
        yield [None if t is None else Path(t) for t in targets]
        return
    if len(urls) != sum(t is not None for t in targets):
        plain = next(t for t in targets if t is not None and not is_url(t))
        raise InputError("outputs go either all to object storage or all to local files", plain)
    seen: set[str] = set()
    for url in map(str, urls):
        if url in seen:
            raise OutputError("named twice as an output", url)
        seen.add(url)
        check_writable(url, overwrite=overwrite)
    folder = Path(tempfile.mkdtemp(prefix="geoseg-upload-"))
    try:
        folders: dict[str, Path] = {}
        local: list[Path | None] = []
        for t in targets:
            if t is None:
                local.append(None)
                continue
            head, _, name = str(t).rpartition("/")
            sub = folders.setdefault(head, folder / str(len(folders)))
            sub.mkdir(exist_ok=True)
            local.append(sub / name)
        try:
            yield local
        except GeoSegError as exc:
            named = {str(p): str(t) for p, t in zip(local, targets, strict=True) if p is not None}
            if exc.path in named:  # the file the user named, not its local stand-in
                raise type(exc)(exc.message, named[exc.path]) from None
            raise
        upload_all([(p, str(t)) for p, t in zip(local, targets, strict=True)
                     if p is not None and t is not None], overwrite=overwrite)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def upload_all(pairs: Sequence[tuple[str | os.PathLike[str], str]], *,
               overwrite: bool) -> list[str | None]:
    """Upload each (file, URL), in order; if any upload fails, delete those done before
    it. Returns the ETags."""
    done: list[str] = []
    etags: list[str | None] = []
    try:
        for local, url in pairs:
            etags.append(upload(local, url, overwrite=overwrite))
            done.append(url)
    except BaseException:
        for url in reversed(done):
            with contextlib.suppress(Exception):
                delete(url)
        raise
    return etags
