"""Every option of the ``geoseg`` commands, defined once, so that each has one name, one
type and one check wherever it appears (as rasterio's ``rio/options.py`` does). Options
whose meaning shifts a little between commands take their help text as an argument.

Nothing heavy is imported here: ``geoseg --help`` stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from geoseg.devices import DEVICES
from geoseg.errors import GeoSegError
from geoseg.grid import RESAMPLING

F = TypeVar("F", bound=Callable[..., Any])


# ---- callbacks -------------------------------------------------------------------------

def _bands(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        bands = tuple(int(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        raise click.BadParameter("use 1-based band numbers separated by commas, e.g. 3,2,1,4") from None
    if not bands or min(bands) < 1:
        raise click.BadParameter("band numbers start at 1")
    return bands


def _scheduler(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from geoseg.cluster import check_scheduler

    try:
        return check_scheduler(value)
    except GeoSegError as exc:
        raise click.BadParameter(exc.text("cli")) from None


def names(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """A comma-separated list of names (empty items dropped)."""
    if value is None:
        return None
    found = [v.strip() for v in value.split(",") if v.strip()]
    if not found:
        raise click.BadParameter("give names separated by commas")
    return found


def numbers(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    """A comma-separated list of numbers."""
    if value is None:
        return None
    try:
        return [float(v) for v in value.replace(" ", "").split(",")]
    except ValueError:
        raise click.BadParameter("give numbers separated by commas, e.g. 0.28,0.26,0.27,0.33") from None


def _config(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--config FILE.yaml``: option values from a YAML mapping (command-line flags win)."""
    if value is None:
        return None
    import yaml

    try:
        data = yaml.safe_load(Path(value).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"{value}: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter(f"{value}: expected a mapping of option names to values")
    # Keys are option names (``chip-size``, ``chip_size``, ``output``...) or parameter names.
    known = {p.name: p.name for p in ctx.command.params if p.name}
    if "src" in known:
        known["scenes"] = "src"  # `geoseg run`: the scenes to process
    for p in ctx.command.params:
        for opt in p.opts:
            if p.name:
                known[opt.lstrip("-").replace("-", "_")] = p.name
    options: dict[str, Any] = {}
    unknown = []
    for key, v in data.items():
        name = known.get(str(key).replace("-", "_"))
        if name is None:
            unknown.append(str(key))
        elif name == "src":
            options[name] = [str(x) for x in (v if isinstance(v, list) else [v])]
        elif isinstance(v, list) and name in ("classes", "bands"):
            options[name] = ",".join(str(x) for x in v)  # the comma list the flag takes
        else:
            options[name] = v
    if unknown:
        raise click.BadParameter(f"{value}: unknown option(s) {', '.join(sorted(unknown))}")
    ctx.default_map = {**(ctx.default_map or {}), **options}
    return value


def show_progress(flag: bool | None) -> bool:
    """``--progress/--no-progress``, by default on when stderr is a terminal; always with
    ``geoseg --progress-json``."""
    from geoseg.progress import wanted

    return wanted(flag)


# ---- options ---------------------------------------------------------------------------

overwrite = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
allow_no_crs = click.option("--allow-no-crs", is_flag=True, help="Accept inputs without a CRS.")
progress = click.option("--progress/--no-progress", default=None,
                        help="Show a progress bar [default: when stderr is a terminal].")
workers = click.option("--workers", type=click.IntRange(min=1), default=None,
                       help="Parallel workers (threads, processes or LocalCluster workers).")
scheduler = click.option("--scheduler", default="threads", show_default=True,
                         callback=_scheduler,
                         help="Dask scheduler: threads, processes, sync, local "
                              "(a LocalCluster) or tcp://HOST:PORT.")
overlap = click.option("--overlap", type=click.IntRange(min=0), default=None,
                       help="Overlap between tiles in pixels, at most half a tile "
                            "[default: 32, more for deeper models, at most a quarter tile].")
batch_size = click.option("--batch-size", type=click.IntRange(min=1), default=None,
                          help="Tiles per model call [default: 1 on CPU, 16 on CUDA].")
tta = click.option("--tta", is_flag=True,
                   help="Test-time augmentation: average over flips (4× slower).")
trust_pickle = click.option(
    "--trust-pickle", is_flag=True,
    help="Load a torch pickle checkpoint (.pt, .pth, .ckpt, .bin, .pkl) given as --model, "
         "with its card MODEL.json beside it. Unpickling can run code: only for files you "
         "trust.")
class_field = click.option("--class-field", default=None,
                           help="The polygons' class column (class ids or names) [default: "
                                "every polygon is class 1 against background 0].")
min_area = click.option("--min-area", type=click.FloatRange(min=0), default=0.0,
                        help="Merge polygons smaller than this (m²) into the neighbour they "
                             "share most border with (dropped if they have none).")
simplify = click.option("--simplify", type=click.FloatRange(min=0), default=0.0,
                        help="Simplify outlines by this tolerance in map units, all polygons "
                             "together (no gaps or overlaps appear).")


def device(help: str = "Where the model runs; auto picks CUDA when available.") -> Callable[[F], F]:
    return click.option("--device", type=click.Choice(DEVICES), default="auto",
                        show_default=True, help=help)


def bands(help: str = "Input bands in model order, e.g. 3,2,1,4.") -> Callable[[F], F]:
    return click.option("--bands", callback=_bands, help=help)


def model(default: str | None = "default",
          help: str = "A bundled model name or a saved model (folder, .json or .safetensors)."
          ) -> Callable[[F], F]:
    return click.option("--model", "model", default=default, show_default=default is not None,
                        help=help)


def tile_size(help: str = "Tile size in pixels [default: the model's].") -> Callable[[F], F]:
    return click.option("--tile-size", type=click.IntRange(min=1), default=None, help=help)


def classes(help: str) -> Callable[[F], F]:
    return click.option("--classes", callback=names, help=help)


def _label_map(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    from geoseg.labels import parse_label_map

    return parse_label_map(value)  # an InputError: the CLI's one line


label_map = click.option(
    "--label-map", callback=_label_map, metavar="CODE=NAME,…",
    help="Read the labels' values (a class raster's, or the --class-field's) as codes of "
         "another product: CODE=NAME or LOW..HIGH=NAME entries, comma-separated, or a file "
         "of them; codes not named are unlabelled. E.g. ESA WorldCover: "
         "10=trees,30=grass,40=crops,50=built.")

labelled_area = click.option(
    "--labelled-area", type=click.Path(dir_okay=False),
    help="Polygons where the labels are complete: unlabelled pixels are background only "
         "there, and the rest of the image is unlabelled (labels digitised in part of it).")


def background(help: str) -> Callable[[F], F]:
    return click.option("--background", default=None, help=help)


def config(help: str = "Read option values from this YAML file (flags given here win)."
           ) -> Callable[[F], F]:
    return click.option("--config", callback=_config, is_eager=True, expose_value=False,
                        help=help)


def file(flag: str, help: str, *, name: str | None = None) -> Callable[[F], F]:
    """An optional file: an extra output (or ``--image``, an extra input) the command
    writes or reads only when it is given."""
    names = (flag,) if name is None else (*flag.split("/"), name)
    return click.option(*names, type=click.Path(dir_okay=False), default=None, help=help)


def output(help: str, *, name: str, folder: bool = False) -> Callable[[F], F]:
    """``-o/--output``, passed to the command as ``name``: a file, or a ``folder``."""
    kind = click.Path(file_okay=False) if folder else click.Path(dir_okay=False)
    return click.option("-o", "--output", name, required=True, type=kind, help=help)


def _with(f: F, *options: Callable[[Any], Any]) -> F:
    """``f`` with several options (listed in ``--help`` in this order)."""
    for option in reversed(options):
        f = option(f)
    return f


assets = click.option(
    "--assets", callback=names,
    help="A STAC Item's assets to read, by key (comma-separated) [default: its data assets, "
         "matched to the model's bands by common name].")
resolution = click.option(
    "--resolution", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Pixel size of the scene's grid, in its CRS units [default: the finest band's].")
resampling = click.option(
    "--resampling", type=click.Choice(RESAMPLING), default="bilinear", show_default=True,
    help="How bands of another pixel size are resampled (reflectance: bilinear or cubic).")


def scene(f: F) -> F:
    """How a scene of several files or a STAC Item becomes one raster."""
    return _with(f, assets, resolution, resampling)


def prediction(f: F) -> F:
    """The model, how to tile the input and run the model, and which of its bands to use."""
    return _with(f, model(), tile_size(), overlap, batch_size, device(), bands(), tta)


def prediction_choosing(f: F) -> F:
    """:func:`prediction`, where geoseg chooses a bundled model for the scene unless told."""
    chosen = model("auto", "A bundled model name or a saved model (folder, .json or "
                   ".safetensors); auto: dynamic-world for a Sentinel-2 scene's bands, else "
                   "the demonstration model, with a warning.")
    return _with(f, chosen, tile_size(), overlap, batch_size, device(), bands(), tta)


mask_with = click.option(
    "--mask-with", "mask_with", multiple=True, metavar="MODEL:CLASS,…",
    help="Run MODEL on the same tiles (one read of the scene) and make the pixels it calls "
         "CLASS nodata in the outputs, e.g. clouds:cloud,shadow (repeatable; the mask's "
         "MASKED_PIXELS tag and the polygons' layer description count them).")


def job(f: F) -> F:
    """CRS tolerance, progress bar, scheduler and overwriting: every command that computes."""
    return _with(f, allow_no_crs, progress, scheduler, workers, overwrite)


def vectorizing(f: F) -> F:
    """How polygons are generalized and which classes are kept."""
    return _with(f, min_area, simplify,
                 classes("Keep only these classes (ids or names, comma-separated)."))
