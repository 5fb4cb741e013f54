"""``geoseg.predict``: a raster in, a class mask out (lazy, or written as a COG with its
style, probabilities and quicklook).

It checks the source, the model and every output before any work, builds the graph of
:mod:`geoseg.pipeline`, streams it into scratch GeoTIFFs (:mod:`geoseg.cog`) and puts the
finished files in place together (:mod:`geoseg.atomic`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg import atomic, cog, maskfile, parts, storage, synthetic
from geoseg.bands import processing_level
from geoseg.cluster import (
    IN_PROCESS,
    LOCAL_SCHEDULERS,
    check_scheduler,
    check_workers_see,
    client_for,
    model_resources,
    tasks_at_once,
)
from geoseg.devices import Device, select_device
from geoseg.errors import InputError, MissingBandsError, warn
from geoseg.gdal import vsi_path, write_errors
from geoseg.inference import ModelHandle, check_weights, model_reference, task_threads
from geoseg.model import Model, ModelSpec
from geoseg.pipeline import (
    MaskWith,
    PredictOptions,
    as_dataarray,
    class_mask,
    probabilities,
    scaled_probabilities,
)
from geoseg.sources import Source, open_source
from geoseg.styles import paletted_qml, style_name, style_path
from geoseg.tiling import TileGrid

if TYPE_CHECKING:
    import dask.array as da
    import xarray as xr

AUTO = "auto"  # the model argument that lets geoseg choose (choose_model)
SENTINEL2_CHOICE = "chosen for the scene's Sentinel-2 bands"
DEMONSTRATION = "the demonstration model"
# What a scene not geoseg's own is told when no model was named and the demonstration runs.
DEMONSTRATION_WARNING = (
    "no model named: the demonstration model 'default' runs, which was trained on geoseg's "
    "synthetic scenes and knows no real land cover (name one with ${model}; a Sentinel-2 "
    "scene with its B02-B12 bands gets dynamic-world)")
CONTEXT_STRIDES = 4  # default overlap: this many strides of the network's coarsest level
MAX_TILE = 8192


def predict(
    src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    dst: str | os.PathLike[str] | None = None,
    model: str | os.PathLike[str] | Model | ModelHandle = "auto",
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    device: Device = "auto",
    bands: Sequence[int] | None = None,
    assets: Sequence[str] | None = None,
    resolution: float | None = None,
    resampling: str = "bilinear",
    tta: bool = False,
    probabilities_path: str | os.PathLike[str] | None = None,
    quicklook: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    mask_with: Sequence[str] = (),
    scheduler: str = "threads",
    workers: int | None = None,
    allow_no_crs: bool = False,
    progress: bool = False,
) -> xr.DataArray:
    """Predict a land-cover class mask for a scene: a raster, a VRT, a mosaic of tiles, a
    band stack or a STAC Item (see :func:`geoseg.sources.open_source`, which takes
    ``bands``, ``assets``, ``resolution`` and ``resampling``).

    Returns a lazy, dask-backed ``xarray.DataArray`` (uint8, nodata 255) with the source's
    CRS and transform. With ``dst`` the mask is written as a Cloud-Optimized GeoTIFF (plus a
    ``.qml`` style beside it, and optionally per-class probabilities and a PNG quicklook) and
    the returned array reads that file lazily. ``device`` also takes ``cuda:N``.
    ``model="auto"`` chooses a bundled model for the scene (:func:`choose_model`).
    ``mask_with`` (``"MODEL:CLASS,CLASS"`` each) runs further models on the same tiles, one
    read of the scene: where one's most probable class is one of its CLASSes, the outputs
    are nodata (clouds and their shadows, say); the mask file records how many pixels.
    """
    check_scheduler(scheduler)
    if dst is None and (probabilities_path or quicklook):
        raise InputError("probabilities and quicklook outputs need a mask path (dst)")
    named = [] if dst is None else [dst, style_name(dst), probabilities_path, quicklook]
    with contextlib.ExitStack() as stack:
        # URLs are checked now and written locally, then uploaded when all are finished.
        targets = stack.enter_context(storage.staged(named, overwrite=overwrite))
        local_dst, _, local_probs, local_quicklook = targets or [None] * 4
        stack.enter_context(atomic.outputs(targets, overwrite=overwrite))  # a failure leaves no new folder
        choice = None
        if isinstance(model, str) and model == AUTO:
            model, choice = choose_model(src, bands=bands, assets=assets,
                                         resolution=resolution, resampling=resampling,
                                         allow_no_crs=allow_no_crs)
        spec, handle = model_reference(model)
        masking = [mask_model(text) for text in mask_with]
        if masking and bands is not None:
            raise InputError("${bands} chooses the bands of one model; with ${mask_with} the "
                             "scene's bands are matched to each model's by name")
        want = [*spec.bands, *(b for m, _ in masking for b in m.bands)]
        every = open_source(src, bands=bands, want=want, assets=assets, resolution=resolution,
                            resampling=resampling, allow_no_crs=allow_no_crs)
        source = band_subset(every, 0, len(spec.bands)) if masking else every
        fixed = sorted({m.input_size for m, _ in masking if m.input_size is not None})
        if fixed:  # a mask model of one input size: the tiles are that size
            if len(fixed) > 1 or tile_size not in (None, fixed[0]):
                raise InputError(f"the mask models take tiles of {' or '.join(map(str, fixed))}"
                                 f" px only: the tiles of all models must be one size")
            tile_size = fixed[0]
        options = prediction_options(spec, tile_size, overlap, batch_size, device, tta,
                                     scheduler, workers,
                                     scene=None if fixed else source.grid.shape)
        if dst is None:  # computed later by any scheduler: leave torch's threads as they are
            options = dataclasses.replace(options, threads=None)
        check_bands(source, spec)
        check_units(source, spec)
        check_level(source, spec)
        masks = []
        start = len(spec.bands)
        for mask_spec, (mask_handle, classes) in masking:
            part = band_subset(every, start, start + len(mask_spec.bands))
            check_bands(part, mask_spec)
            check_units(part, mask_spec)
            check_weights(mask_handle, options.device, False,
                          in_process=scheduler in IN_PROCESS, threads=options.threads)
            masks.append(MaskWith(mask_handle, classes, len(mask_spec.classes), start,
                                  start + len(mask_spec.bands), min(mask_spec.context,
                                                                    options.overlap // 2)))
            start += len(mask_spec.bands)
        if masks:
            options = dataclasses.replace(options, masks=tuple(masks), bands=len(spec.bands))
        if choice == DEMONSTRATION and not synthetic.is_synthetic(source.path):
            warn(DEMONSTRATION_WARNING, source.name)
        check_weights(handle, options.device, options.tta, in_process=scheduler in IN_PROCESS,
                      threads=options.threads)
        client, resources = None, None
        distributed = scheduler not in LOCAL_SCHEDULERS
        if dst is not None and distributed:
            # The cluster first: whether model tasks need a GPU worker depends on its workers.
            client = stack.enter_context(client_for(scheduler, workers=workers,
                                                    device=options.device))
            check_inputs_seen(client, scheduler, src)
            resources = model_resources(client, options.device)
        if distributed:
            # Workers need not see the model's files: they get its bytes (one graph key,
            # fetched once by each), as geoseg.run's scene tasks do (so one load each).
            handle = handle.carried()
            options = dataclasses.replace(options, masks=tuple(
                dataclasses.replace(m, handle=m.handle.carried()) for m in options.masks))
        probs = probabilities(every if masks else source, handle, len(spec.classes), options,
                              sweep=dst is not None, resources=resources)
        masked = None
        if masks:  # the last plane flags the pixels the mask models made nodata
            masked = MaskedBy(", ".join(mask_with), probs[-1].sum())
            probs = probs[:-1]
        mask = class_mask(probs)
        if local_dst is None:
            out = as_dataarray(mask, source.grid, name="class", nodata=maskfile.NODATA)
        else:
            write_outputs(source, spec, mask, probs, local_dst, overwrite=overwrite,
                          probabilities_path=local_probs, quicklook=local_quicklook,
                          scheduler=scheduler, workers=workers, progress=progress,
                          client=client, masked=masked,
                          parts_at=(parts.parts_prefix(str(dst))
                                    if distributed and storage.is_url(dst) else None))
    if dst is not None:
        out = maskfile.open_mask(vsi_path(os.fspath(dst)))  # an uploaded mask: via /vsis3/
    # What geoseg.vectorize (and a reader of the array) needs to name and colour classes.
    out = maskfile.with_classes(out, spec.class_names, spec.colors)
    out.attrs["model"] = spec.name
    if choice is not None:
        out.attrs["model_choice"] = choice
    return out


@dataclass(frozen=True)
class MaskedBy:
    """What the mask models of a run are (``MODEL:CLASS,…`` as given) and the lazy count
    of the pixels they made nodata."""

    by: str
    pixels: Any


def mask_model(text: str) -> tuple[ModelSpec, tuple[ModelHandle, tuple[int, ...]]]:
    """``MODEL:CLASS,CLASS`` (``--mask-with``) → the model's card, and its handle with the
    ids of the classes that become nodata."""
    ref, sep, names = text.rpartition(":")
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not sep or not ref or not wanted:
        raise InputError(f"${{mask_with}} takes MODEL:CLASS,CLASS (e.g. clouds:cloud,shadow), "
                         f"not {text!r}")
    spec, handle = model_reference(ref)
    unknown = [n for n in wanted if n not in spec.class_names]
    if unknown:
        raise InputError(f"the mask model has no class {unknown[0]!r} (it has "
                         f"{', '.join(spec.class_names)})", ref)
    return spec, (handle, tuple(spec.class_names.index(n) for n in wanted))


def band_subset(source: Source, start: int, stop: int) -> Source:
    """``source`` reading only its bands ``start:stop`` (as one model of several reads it)."""
    part = slice(start, stop)
    return dataclasses.replace(source, bands=source.bands[part],
                               band_names=source.band_names[part],
                               scale=source.scale[part], offset=source.offset[part])


def choose_model(src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                 bands: Sequence[int] | None = None, assets: Sequence[str] | None = None,
                 resolution: float | None = None, resampling: str = "bilinear",
                 allow_no_crs: bool = False) -> tuple[str, str]:
    """The bundled model for a scene when none is named, and why: ``dynamic-world`` for a
    scene that names its nine Sentinel-2 bands (an L1C or L2A product, its band files, a
    STAC Item); an :class:`InputError` naming the bands a Sentinel-2 scene lacks for it;
    else the demonstration model ``default`` (:func:`predict` warns that it knows no real
    land cover, unless the scene is one of geoseg's synthetic scenes)."""
    from geoseg import bands as band_names
    from geoseg.dynamic_world import BANDS

    wanted = [s2 for s2, _ in BANDS]
    try:
        source = open_source(src, bands=bands, want=wanted, assets=assets,
                             resolution=resolution, resampling=resampling,
                             allow_no_crs=allow_no_crs)
    except MissingBandsError as exc:
        name = os.fspath(exc.path or "")
        if band_names.mission_of(name) == "sentinel2" or processing_level(name):
            raise MissingBandsError(
                f"is a Sentinel-2 scene that {exc.message}: the bundled land-cover model "
                f"dynamic-world reads {', '.join(wanted)}; give the scene's other bands, or "
                f"name a model with ${{model}}", exc.path) from None
        return "default", DEMONSTRATION
    # Chosen by the bands' names only (a scene of nine unnamed bands is no Sentinel-2's).
    with contextlib.suppress(MissingBandsError):
        if bands is None and band_names.match(wanted, source.band_names, source.name):
            return "dynamic-world", SENTINEL2_CHOICE
    return "default", DEMONSTRATION


def prediction_options(spec: ModelSpec, tile_size: int | None, overlap: int | None,
                       batch_size: int | None, device: str, tta: bool,
                       scheduler: str = "threads", workers: int | None = None,
                       scene: tuple[int, int] | None = None) -> PredictOptions:
    """The prediction settings; ``scene`` (height, width) lets a scene smaller than a tile
    be one tile of its own size (rounded up to the model's stride) instead of a padded one."""
    device = select_device(device)
    if batch_size is None:  # CPUs are fastest on one tile at a time; GPUs want full batches
        batch_size = 1 if device == "cpu" else 16
    size = tile_size or spec.tile_size
    if spec.input_size is not None and size != spec.input_size:
        raise InputError(f"this model takes tiles of {spec.input_size} px only, not {size}")
    if size % spec.size_multiple:
        raise InputError(f"tile size {size} must be a multiple of {spec.size_multiple} "
                         f"for this model")
    if size > MAX_TILE:
        raise InputError(f"tile size {size} is too large (at most {MAX_TILE} pixels)")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {batch_size}")
    # Tile borders are poor for a few strides of the coarsest level, whatever the tile size
    # (unless the model's author recommends an overlap).
    strides = CONTEXT_STRIDES * 2**spec.encoder_depth
    if overlap is not None:
        ov = overlap
    elif spec.overlap is not None and (size == spec.tile_size or spec.context):
        ov = spec.overlap  # a model of known reach: its overlap holds it at any tile size
    else:
        ov = min(size // 4, max(32, strides))
    reach = 0
    if spec.context:
        # Exact tiling: tiles start on the network's stride (stride and margin multiples
        # of it) and blend only where both neighbours see all the network reaches.
        step = 2 * spec.size_multiple
        ov = -(-max(ov, 2 * spec.context) // step) * step
        reach = spec.context
    if (spec.input_size is None and scene is not None
            and max(scene) <= size - ov):  # one tile covers it all anyway
        size = -(-max(scene) // spec.size_multiple) * spec.size_multiple
        ov = reach = 0
    TileGrid(1, 1, size, ov, reach)  # validates tile size and overlap
    return PredictOptions(size, ov, batch_size, device, tta, task_threads(scheduler, workers),
                          tasks_at_once(scheduler, workers), context=reach)


def check_bands(source: Source, spec: ModelSpec) -> None:
    """The source must give the model as many bands as it reads."""
    want, have = len(spec.bands), len(source.bands)
    if have != want:
        raise InputError(
            f"has {have} band{'s' * (have != 1)} but the model needs {want} "
            f"({', '.join(spec.bands)}); choose them with ${{bands}}", source.name)


def check_level(source: Source, spec: ModelSpec) -> None:
    """Warn where a Sentinel-2 scene's processing level (from the product's, Item's or
    files' names) is not the one the model was made for: top-of-atmosphere and surface
    reflectance differ most where the atmosphere is thick (haze, water, shadows)."""
    level = processing_level(f"{source.name} {source.vrt_xml or source.path}")
    if spec.processing_level and level and level != spec.processing_level:
        warn(f"is a Sentinel-2 {level} scene, but the model {spec.name!r} was made for "
             f"{spec.processing_level}: it runs, with what that difference costs (give it "
             f"the {spec.processing_level} product for the model's own results)", source.name)


def check_units(source: Source, spec: ModelSpec) -> None:
    """Warn where the scene's stored values and the model's units disagree in a way that
    can be seen: a declared offset that a model reading stored values does not apply (the
    Sentinel-2 baseline 04.00 trap), a scale that differs from the card's (the scene's
    scale and offset win; an offset alone is the product's own zero point), or integers
    for a model that reads physical units with no scale to turn them into those."""
    if source.scale:
        declared = _affine_text(source.scale, source.offset)
        if not spec.physical:
            if any(o != 0 for o in source.offset):  # a scale alone: the numbers models know
                warn(f"declares its values as {declared}, but the model's card names no "
                     f"units (nor scale and offset): the model gets the values as stored, "
                     f"offset included", source.name)
        elif spec.scale and not _same((spec.conversion()[0],), (source.scale,)):
            # Another scale is another unit; an offset alone is the product's zero point
            # (Sentinel-2's -1000 from baseline 04.00), which the card cannot know.
            card = _affine_text(*spec.conversion())
            warn(f"declares its values as {declared}; the model's card says {card}: the "
                 f"scene's own scale and offset are used", source.name)
    elif spec.units and not (spec.scale or spec.offset) and source.dtype[0] in "iu":
        warn(f"stores integers and declares no scale or offset, but the model reads "
             f"{spec.units}: the model gets the values as stored", source.name)


def _same(a: tuple[Sequence[float], ...], b: tuple[Sequence[float], ...]) -> bool:
    return all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
               for u, v in zip(a, b, strict=True) for x, y in zip(u, v, strict=True))


def _affine_text(scale: Sequence[float], offset: Sequence[float]) -> str:
    """``value × 0.0001 − 0.1`` (one term per band where the bands differ)."""
    terms = [f"value × {s:g} {'−' if o < 0 else '+'} {abs(o):g}"
             for s, o in zip(scale, offset or [0.0] * len(scale), strict=True)]
    return terms[0] if len(set(terms)) == 1 else "(" + "; ".join(terms) + ")"


def write_outputs(source: Source, spec: ModelSpec, mask: da.Array, probs: da.Array,
                  dst: Path, *, overwrite: bool, probabilities_path: str | os.PathLike[str] | None,
                  quicklook: str | os.PathLike[str] | None, scheduler: str,
                  workers: int | None, progress: bool, client: object = None,
                  parts_at: str | None = None, masked: MaskedBy | None = None) -> None:
    """Compute the graph into scratch GeoTIFFs (on ``client`` when given), then turn them
    into COGs atomically.

    With ``parts_at`` (an ``s3://`` prefix: see :mod:`geoseg.parts`) the tasks put their
    blocks there instead of writing the scratch files, and this process streams them into
    the scratch files afterwards; the prefix is deleted however the run ends. Without it,
    a ``client``'s workers write the scratch files themselves: they must see them.
    """
    import dask.array as da

    from geoseg.cluster import compute

    pixels = source.grid.pixels  # a scratch file holds a byte per pixel and band
    needs: dict[Path, tuple[int, str | os.PathLike[str]]] = {dst.parent: (pixels, dst)}
    if probabilities_path:
        folder = Path(probabilities_path).parent
        before = needs.get(folder, (0, probabilities_path))[0]
        needs[folder] = (before + pixels * len(spec.classes), probabilities_path)
    cog.check_free_space(needs)
    scratch_mask = atomic.temp_sibling(dst, ".scratch.tif")
    scratch_probs = (atomic.temp_sibling(probabilities_path, ".scratch.tif")
                     if probabilities_path else None)
    try:
        cog.create_scratch(scratch_mask, source.grid, count=1, dtype="uint8",
                           nodata=maskfile.NODATA, name=dst)
        arrays, writers = [mask], [cog.WindowWriter(scratch_mask, dst)]
        if scratch_probs is not None and probabilities_path is not None:
            cog.create_scratch(scratch_probs, source.grid, count=len(spec.classes),
                               dtype="uint8", nodata=maskfile.PROB_NODATA,
                               name=probabilities_path)
            arrays.append(scaled_probabilities(probs))
            writers.append(cog.WindowWriter(scratch_probs, probabilities_path))
        names = ("mask", "probabilities")  # the parts of each array (a prefix per array)
        if parts_at is None:
            if client is not None:  # their tasks write the scratch files beside the outputs
                for writer in writers:
                    check_workers_see(client, scheduler, writer.path, writer.name,
                                      reading=False)
            targets: list[object] = list(writers)
        else:
            targets = [parts.PartWriter(parts_at, n, w.name)
                       for n, w in zip(names, writers, strict=False)]
        stored = da.store(arrays, targets, lock=False, compute=False)  # type: ignore[arg-type]
        with (contextlib.nullcontext() if parts_at is None
              else parts.removed_after(parts_at, name=str(dst))):
            counted = [] if masked is None else [masked.pixels]
            results = compute(stored, *counted, scheduler=scheduler, workers=workers,
                              progress=progress, client=client)
            if parts_at is not None:  # one block at a time: memory holds one block
                for n, array, writer in zip(names, arrays, writers, strict=False):
                    parts.stream_into(writer, parts_at, n, array.chunks)
        if not maskfile.has_data(scratch_mask, name=dst):
            warn("has no valid pixels (all nodata): the mask is all nodata", source.name)
        with write_errors(dst):
            maskfile.write_classes(scratch_mask, spec.class_names, spec.colors, model=spec.name,
                                   source=source.name,
                                   masked=None if masked is None else (masked.by, int(results[1])))
        if scratch_probs is not None and probabilities_path is not None:
            with write_errors(probabilities_path):
                maskfile.write_probability_tags(scratch_probs, spec.class_names)
        # All outputs are finished as temp files first and replaced together at the end.
        with atomic.together(overwrite=overwrite) as outputs:
            tmp_mask = outputs.path(dst)
            cog.write_cog(scratch_mask, tmp_mask)
            outputs.path(style_path(dst)).write_text(paletted_qml(spec.class_names, spec.colors))
            if scratch_probs is not None and probabilities_path is not None:
                cog.write_cog(scratch_probs, outputs.path(probabilities_path),
                              overview_resampling="average")
            if quicklook:
                maskfile.write_quicklook(tmp_mask, outputs.path(quicklook))
    finally:
        for p in (scratch_mask, scratch_probs):
            if p is not None:
                atomic.remove_with_sidecars(p)


def check_inputs_seen(client: Any, scheduler: str,
                      src: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> None:
    """Before any work: the workers of ``client`` see the scene's files on this machine's
    disk, which its tasks read (one file stands for all: one round trip); a scene in a
    bucket or behind a URL they read themselves."""
    from geoseg.scenes import scene_files

    items = [src] if isinstance(src, str | os.PathLike) else list(src)
    files = [f for item in items[:1] for f in scene_files(os.fspath(item))]
    if files:
        check_workers_see(client, scheduler, files[0], files[0], reading=True)
