"""Blocks of an output that travel through the bucket: tile mode on a cluster whose
workers share no file system with this process, only the scheduler and object storage.

Each block task puts its block as one *part object* under a hidden prefix beside the
output (``s3://bucket/folder/.geoseg-parts-<token>/<array>/<row>-<col>.npy.z``: the
block as ``np.save`` writes it, zlib-compressed, so a mask block of a few classes is a
few kB); this process then reads the parts back one at a time, in block order, into its
local scratch GeoTIFF (:func:`stream_into`), so its memory holds one block, never the
raster. The bytes read back are those the worker wrote: the outputs are the bytes of a
run on one machine. The prefix is deleted when the run ends, well or not (see
:func:`geoseg.prediction.write_outputs`).
"""

from __future__ import annotations

import contextlib
import io
import itertools
import secrets
import zlib
from collections.abc import Iterable, Iterator

import numpy as np

from geoseg import storage
from geoseg.cog import WindowWriter
from geoseg.errors import OutputError

PREFIX = ".geoseg-parts-"
COMPRESSION = 6  # zlib's level: mask blocks shrink ~100x, probability blocks ~3x


def parts_prefix(dst: str) -> str:
    """A new hidden prefix for the parts of a run, beside the output URL ``dst`` and named
    after it (``.geoseg-parts-NAME-TOKEN``), so that a later run into the same place can
    tell the parts a killed run left of its own outputs (:func:`stale_parts`)."""
    folder, _, name = dst.rpartition("/")
    return f"{folder}/{PREFIX}{name}-{secrets.token_hex(8)}"


def stale_parts(outputs: Iterable[str], objects: Iterable[str]) -> list[str]:
    """Of ``objects`` (URLs), the parts of the output URLs ``outputs`` that a run killed
    outright (``kill -9``, a lost machine) left behind; other objects never."""
    heads = tuple(f"{folder}/{PREFIX}{name}-" for folder, _, name in
                  (o.rpartition("/") for o in outputs))
    return [url for url in objects if url.startswith(heads)] if heads else []


def part_url(prefix: str, array: str, key: tuple[slice, ...]) -> str:
    """The URL of the part holding block ``key`` (its slices; rows and columns last) of
    ``array`` (``mask``, ``probabilities``)."""
    rows, cols = key[-2], key[-1]
    return f"{prefix}/{array}/{rows.start}-{cols.start}.npy.z"


def encode(block: np.ndarray) -> bytes:
    """A block as the bytes of its part: ``np.save``'s format, zlib-compressed."""
    buffer = io.BytesIO()
    np.save(buffer, block, allow_pickle=False)
    return zlib.compress(buffer.getvalue(), COMPRESSION)


def decode(data: bytes) -> np.ndarray:
    """The block a part's bytes hold (never unpickles)."""
    return np.load(io.BytesIO(zlib.decompress(data)), allow_pickle=False)


class PartWriter:
    """A picklable ``target[key] = block`` sink for :func:`dask.array.store` that puts
    each block as a part object under ``prefix`` (see :func:`part_url`); ``name`` is the
    output it is for (errors name it)."""

    def __init__(self, prefix: str, array: str, name: str) -> None:
        self.prefix = prefix
        self.array = array
        self.name = name

    def __setitem__(self, key: tuple[slice, ...], block: np.ndarray) -> None:
        storage.put_bytes(part_url(self.prefix, self.array, key), encode(block), name=self.name)


def block_keys(chunks: tuple[tuple[int, ...], ...]) -> Iterator[tuple[slice, ...]]:
    """The slices of every block of an array with dask ``chunks``, row by row."""
    edges = [list(itertools.accumulate(c, initial=0)) for c in chunks]
    for starts in itertools.product(*(range(len(c)) for c in chunks)):
        yield tuple(slice(e[i], e[i + 1]) for e, i in zip(edges, starts, strict=True))


def stream_into(scratch: WindowWriter, prefix: str, array: str,
                chunks: tuple[tuple[int, ...], ...]) -> None:
    """Read every part of ``array`` back, one at a time, into the scratch file; a part
    missing or of another shape than its block is an :class:`OutputError`."""
    for key in block_keys(chunks):
        url = part_url(prefix, array, key)
        data = storage.get_bytes(url, name=scratch.name)
        try:
            block = decode(data)
        except (zlib.error, ValueError) as exc:
            raise OutputError(f"a part object is unreadable ({url}: {exc})",
                              scratch.name) from None
        shape = tuple(s.stop - s.start for s in key)
        if block.shape != shape:
            raise OutputError(f"a part object holds a block of {block.shape}, not {shape} "
                              f"({url})", scratch.name)
        scratch[key] = block


@contextlib.contextmanager
def removed_after(prefix: str, *, name: str) -> Iterator[None]:
    """Delete every part under ``prefix`` when the block ends, however it ends: a failure
    to delete after a failure does not hide the first one (``name``: the output the parts
    are for)."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            storage.delete_prefix(prefix, name=name)
        raise
    storage.delete_prefix(prefix, name=name)
