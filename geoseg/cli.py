"""The ``geoseg`` command line: thin wrappers that parse options, call the API, report.

Errors from geoseg are printed as one line (``Error: <file>: <problem>``) with exit code 1;
bad arguments exit 2 (click's usage errors). ``--debug`` shows the traceback instead.
Heavy imports (torch, dask) happen inside the commands so ``geoseg --help`` is instant.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from geoseg import __version__
from geoseg.errors import GeoSegError, GeoSegWarning
from geoseg.inference import DEVICES

F = TypeVar("F", bound=Callable[..., Any])


class GeoSegGroup(click.Group):
    """A click group that turns exceptions into one-line errors (unless ``--debug``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            hint = " (run it again with --resume to finish)" if ctx.invoked_subcommand == "run" else ""
            click.echo(f"Error: interrupted{hint}", err=True)
            ctx.exit(130)
        except BrokenPipeError:  # e.g. `geoseg info x.tif | head`: the reader left, not an error
            _stdout_to_devnull()
            ctx.exit(0)
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            text = str(exc) if isinstance(exc, GeoSegError) else (
                f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)")
            click.echo("Error: " + " ".join(text.split()), err=True)
            ctx.exit(1)


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
        raise click.BadParameter(exc.message) from None


def overwrite_option(f: F) -> F:
    return click.option("--overwrite", is_flag=True, help="Replace existing outputs.")(f)


def scheduler_options(f: F) -> F:
    f = click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Parallel workers (threads, processes or LocalCluster workers).")(f)
    return click.option("--scheduler", default="threads", show_default=True, callback=_scheduler,
                        help="Dask scheduler: threads, processes, sync, local "
                             "(a LocalCluster) or tcp://HOST:PORT.")(f)


def model_options(f: F) -> F:
    f = click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                     help="Where the model runs; auto picks CUDA when available.")(f)
    f = click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Tiles per model call [default: 1 on CPU, 16 on CUDA].")(f)
    f = click.option("--overlap", type=click.IntRange(min=0), default=None,
                     help="Overlap between tiles in pixels, at most half a tile "
                          "[default: 32, more for deeper models, at most a quarter tile].")(f)
    f = click.option("--tile-size", type=click.IntRange(min=1), default=None,
                     help="Tile size in pixels [default: the model's].")(f)
    return click.option("--model", "model", default="default", show_default=True,
                        help="A bundled model name or a saved model (folder, .json or "
                             ".safetensors).")(f)


def trust_pickle_option(f: F) -> F:
    return click.option("--trust-pickle", is_flag=True,
                        help="Load a torch pickle checkpoint (.pt, .pth, .ckpt, .bin, .pkl) given as "
                             "--model, with its card MODEL.json beside it. Unpickling can "
                             "run code: only for files you trust.")(f)


def _model(model: str | None, trust_pickle: bool) -> Any:
    """``--model`` as the API takes it: a trusted pickle is loaded here, once, and travels
    on as safetensors bytes (workers never unpickle)."""
    from geoseg.model import is_pickle, load_model

    if model is not None and trust_pickle and is_pickle(model):
        return load_model(model, trust_pickle=True)
    return model


def prediction_options(f: F) -> F:
    """The model, how to tile the input, and which of its bands to use."""
    f = click.option("--tta", is_flag=True,
                     help="Test-time augmentation: average over flips (4× slower).")(f)
    f = click.option("--bands", callback=_bands,
                     help="Input bands in model order, e.g. 3,2,1,4.")(f)
    return model_options(f)


def job_options(f: F) -> F:
    """CRS tolerance, progress bar, scheduler and overwriting: every command that computes."""
    f = overwrite_option(f)
    f = scheduler_options(f)
    f = click.option("--progress/--no-progress", default=None,
                     help="Show a progress bar [default: when stderr is a terminal].")(f)
    return click.option("--allow-no-crs", is_flag=True, help="Accept inputs without a CRS.")(f)


@click.group(cls=GeoSegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="geoseg")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", count=True, help="More messages.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int, quiet: bool) -> None:
    """geoseg: land-cover maps from large satellite and aerial GeoTIFFs.

    \b
    Quick start:
      geoseg sample-data data/ --size 2048
      geoseg predict data/scene_0.tif -o out/scene_0.mask.tif
    """
    import logging
    import warnings

    ctx.obj = {"quiet": quiet}
    if not (verbose or debug):  # GDAL default handler lines; its errors still reach us as exceptions
        os.environ.setdefault("CPL_LOG", os.devnull)
        # Dask distributed logs every worker start and stop at INFO; read at its import.
        os.environ.setdefault("DASK_DISTRIBUTED__LOGGING__DISTRIBUTED", "warning")
    level = logging.ERROR if quiet else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    if not verbose:
        warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.showwarning = _show_warning
    if quiet:
        warnings.filterwarnings("ignore", category=GeoSegWarning)


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """geoseg's own warnings as one line ``Warning: <file>: <problem>``; others as Python does."""
    import warnings

    if isinstance(message, GeoSegWarning):
        click.echo("Warning: " + " ".join(str(message).split()), err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno, line).rstrip(),
                   err=True)


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
            known[opt.lstrip("-").replace("-", "_")] = p.name  # type: ignore[assignment]
    options, unknown = {}, []
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


def _say(ctx: click.Context, text: str) -> None:
    if not (ctx.obj or {}).get("quiet"):
        click.echo(text)


def _say_on(ctx: click.Context, text: str) -> None:
    """Report progress; if the reader went away (``geoseg run ... | head``), the run goes on
    silently rather than stopping half done."""
    try:
        _say(ctx, text)
    except BrokenPipeError:
        _stdout_to_devnull()


def _stdout_to_devnull() -> None:
    """After the reader of stdout left: later output goes nowhere instead of failing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _show_progress(flag: bool | None) -> bool:
    """``--progress/--no-progress``, by default on when stderr is a terminal."""
    return sys.stderr.isatty() if flag is None else flag


@cli.command()
@click.argument("src", nargs=-1, required=True)
@click.option("-o", "--output", "dst", required=True, type=click.Path(dir_okay=False),
              help="The class mask to write (Cloud-Optimized GeoTIFF).")
@prediction_options
@click.option("--probabilities", type=click.Path(dir_okay=False), default=None,
              help="Also write per-class probabilities (uint8, value / 254) to this COG.")
@click.option("--quicklook", type=click.Path(dir_okay=False), default=None,
              help="Also write a colored PNG preview of the mask.")
@trust_pickle_option
@job_options
@click.pass_context
def predict(ctx: click.Context, src: tuple[str, ...], dst: str, model: str,
            tile_size: int | None, overlap: int | None, batch_size: int | None, device: str,
            bands: tuple[int, ...] | None, tta: bool, probabilities: str | None,
            quicklook: str | None, trust_pickle: bool, allow_no_crs: bool,
            progress: bool | None, scheduler: str, workers: int | None,
            overwrite: bool) -> None:
    """Predict a land-cover mask for SRC (one raster, a VRT, or several GeoTIFF tiles of a
    mosaic, or a folder of them) and write it as a Cloud-Optimized GeoTIFF.

    \b
    Example:
      geoseg predict scene.tif -o scene.mask.tif --probabilities scene.prob.tif
    """
    from geoseg.pipeline import predict as run_predict

    started = time.perf_counter()
    mask = run_predict(
        list(src), dst, _model(model, trust_pickle), tile_size=tile_size, overlap=overlap,
        batch_size=batch_size,
        device=device, bands=bands, tta=tta, probabilities_path=probabilities,
        quicklook=quicklook, overwrite=overwrite, scheduler=scheduler, workers=workers,
        allow_no_crs=allow_no_crs, progress=_show_progress(progress),
    )
    seconds = time.perf_counter() - started
    height, width = mask.shape
    _say(ctx, f"mask: {dst} ({width} x {height} px, {width * height / 1e6 / seconds:.2f} Mpx/s, "
              f"{seconds:.1f} s)")
    _say(ctx, f"style: {Path(dst).with_suffix('.qml')}")
    for label, path in (("probabilities", probabilities), ("quicklook", quicklook)):
        if path:
            _say(ctx, f"{label}: {path}")


def _classes(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names:
        raise click.BadParameter("name classes by id or name, separated by commas")
    return names


def vector_options(f: F) -> F:
    f = click.option("--classes", callback=_classes,
                     help="Keep only these classes (ids or names, comma-separated).")(f)
    f = click.option("--simplify", type=click.FloatRange(min=0), default=0.0,
                     help="Simplify outlines by this tolerance in map units, all polygons "
                          "together (no gaps or overlaps appear).")(f)
    return click.option("--min-area", type=click.FloatRange(min=0), default=0.0,
                        help="Merge polygons smaller than this (m²) into the neighbour they "
                             "share most border with (dropped if they have none).")(f)


@cli.command()
@click.argument("mask")
@click.option("-o", "--output", "dst", required=True, type=click.Path(dir_okay=False),
              help="The GeoPackage to write (.gpkg).")
@click.option("--probabilities", type=click.Path(dir_okay=False), default=None,
              help="The probabilities raster from predict: adds a confidence column.")
@vector_options
@click.option("--layer", default=None, help="Layer name [default: the output's file name].")
@click.option("--chunk-size", type=click.IntRange(min=16), default=2048, show_default=True,
              help="Pixels per chunk side (memory per worker grows with its square).")
@job_options
@click.pass_context
def vectorize(ctx: click.Context, mask: str, dst: str, probabilities: str | None,
              min_area: float, simplify: float, classes: list[str] | None, layer: str | None,
              chunk_size: int, allow_no_crs: bool, progress: bool | None, scheduler: str,
              workers: int | None, overwrite: bool) -> None:
    """Turn a class mask into polygons in a GeoPackage, styled for QGIS.

    Every connected region of one class becomes one polygon (holes kept) with its
    class_id, class_name, area_m2, perimeter_m and, with --probabilities, confidence.

    \b
    Example:
      geoseg vectorize scene.mask.tif -o scene.gpkg --min-area 500
    """
    from geoseg import vector as vec

    started = time.perf_counter()
    with vec.check_outputs(mask, dst, overwrite=overwrite):
        batches = vec.iter_layers(
            mask, probabilities=probabilities, min_area=min_area, simplify=simplify,
            classes=classes, chunk_size=chunk_size, allow_no_crs=allow_no_crs,
            scheduler=scheduler, workers=workers,
            progress=_show_progress(progress))
        tally = vec.write_gpkg(batches, dst, layer_name=layer, overwrite=overwrite)
    seconds = time.perf_counter() - started
    _say(ctx, f"polygons: {dst} ({tally.polygons.sum()} polygons, {seconds:.1f} s)")
    _say(ctx, f"style: {vec.qml_path(dst)}")


@cli.command()
@click.argument("src", nargs=-1, required=True)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the outputs (created if missing).")
@click.option("--config", callback=_config, is_eager=True, expose_value=False,
              help="A YAML file of options (e.g. workflows/batch.yaml); `scenes:` lists the "
                   "SRC. Flags given here win.")
@prediction_options
@click.option("--probabilities", is_flag=True,
              help="Also write NAME.prob.tif, and give each polygon its confidence.")
@click.option("--quicklook", is_flag=True, help="Also write NAME.png, a colored preview.")
@vector_options
@click.option("--resume/--no-resume", default=False,
              help="Finish an earlier run into OUT_DIR: scenes it finished (outputs intact, "
                   "source unchanged) are skipped, the rest computed. With --overwrite and "
                   "other options than that run's, start again instead.")
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads of each LocalCluster worker (--scheduler local).")
@job_options
@click.pass_context
def run(ctx: click.Context, src: tuple[str, ...], out_dir: str, model: str,
        tile_size: int | None, overlap: int | None, batch_size: int | None, device: str,
        bands: tuple[int, ...] | None, tta: bool, probabilities: bool, quicklook: bool,
        min_area: float, simplify: float, classes: list[str] | None, resume: bool,
        threads_per_worker: int, allow_no_crs: bool, progress: bool | None, scheduler: str,
        workers: int | None, overwrite: bool) -> None:
    """Predict and vectorize each scene SRC into OUT_DIR: NAME.mask.tif, NAME.gpkg
    (QGIS-styled, with .qml files) and summary.json with the area of every class.

    A scene is a GeoTIFF, a VRT or a folder of mosaic tiles; SRC may also be a quoted glob
    ('tiles/*.tif') or a text file listing scenes, one per line. On a Dask cluster
    (--scheduler local or tcp://HOST:PORT) scenes run in parallel on its workers. A
    journal in OUT_DIR records each finished scene: --resume skips them. A scene that
    fails is reported and the others go on; the exit code is 1 if any failed.

    \b
    Examples:
      geoseg run data/scene_0.tif data/tiles/ -o out/ --min-area 200
      geoseg run 'archive/**/*.tif' -o out/ --scheduler local --workers 4 --resume
      geoseg run --config workflows/batch.yaml
    """
    from geoseg.batch import SUMMARY, format_summary
    from geoseg.batch import run as run_scenes

    summary = run_scenes(
        list(src), out_dir, model, probabilities=probabilities, quicklook=quicklook,
        min_area=min_area, simplify=simplify, classes=classes, overwrite=overwrite,
        resume=resume, scheduler=scheduler, workers=workers,
        threads_per_worker=threads_per_worker,
        progress=_show_progress(progress),
        report=lambda text: _say_on(ctx, text), tile_size=tile_size, overlap=overlap,
        batch_size=batch_size, device=device, bands=bands, tta=tta, allow_no_crs=allow_no_crs)
    _say_on(ctx, format_summary(summary))
    kinds = ["NAME.mask.tif", "NAME.gpkg"] + ["NAME.prob.tif"] * probabilities + \
        ["NAME.png"] * quicklook
    _say_on(ctx, f"outputs: {Path(out_dir)}/ ({', '.join(kinds)}, with .qml styles)")
    _say_on(ctx, f"summary: {Path(out_dir) / SUMMARY}")
    failed = [s for s in summary["scenes"] if s["status"] == "failed"]
    if failed:
        first = f"{failed[0]['name']}: {failed[0]['error']}"
        raise GeoSegError(f"{len(failed)} of {len(summary['scenes'])} scenes failed "
                          f"(first: {first}); fix them and rerun with --resume")


@cli.command()
@click.argument("src")
@click.option("--labels", required=True,
              help="Reference labels: a class raster, or polygons (GeoPackage, GeoJSON, "
                   "shapefile...) in any CRS.")
@click.option("--class-field", default=None,
              help="The polygons' class column (class ids or names) [default: every "
                   "polygon is class 1 against background 0].")
@click.option("--background", default=None,
              help="Score unlabelled pixels as this class (id or name) instead of skipping them.")
@click.option("--model", default=None,
              help="SRC is an image: predict it with this model first (bundled name or path).")
@click.option("--tile-size", type=click.IntRange(min=1), default=None,
              help="With --model: tile size in pixels [default: the model's].")
@click.option("--bands", callback=_bands, help="With --model: image bands in model order.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="With --model: where the model runs.")
@click.option("-o", "--output", "report", type=click.Path(dir_okay=False), default=None,
              help="Write the scores as JSON.")
@click.option("--confusion-png", type=click.Path(dir_okay=False), default=None,
              help="Draw the confusion matrix to this PNG.")
@click.option("--compare-png", type=click.Path(dir_okay=False), default=None,
              help="Draw image | prediction | reference side by side to this PNG.")
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="The image behind the mask, for the first panel of --compare-png.")
@trust_pickle_option
@overwrite_option
@click.pass_context
def evaluate(ctx: click.Context, src: str, labels: str, class_field: str | None,
             background: str | None, model: str | None, tile_size: int | None,
             bands: tuple[int, ...] | None, device: str, report: str | None,
             confusion_png: str | None, compare_png: str | None, image: str | None,
             trust_pickle: bool, overwrite: bool) -> None:
    """Score a predicted mask SRC (or, with --model, the prediction for image SRC) against
    reference labels: per-class IoU, F1, precision and recall, mIoU and overall accuracy.

    \b
    Examples:
      geoseg evaluate scene.mask.tif --labels truth.gpkg --class-field class -o scores.json
      geoseg evaluate scene.tif --model default --labels labels.tif --confusion-png cm.png
    """
    from geoseg.metrics import evaluate as run_evaluation

    options = ({"tile_size": tile_size, "bands": bands, "device": device}
               if model is not None else {})
    result = run_evaluation(src, labels, class_field=class_field, background=background,
                            model=_model(model, trust_pickle), report=report, confusion_png=confusion_png,
                            compare_png=compare_png, image=image, overwrite=overwrite,
                            **options)
    _say(ctx, result.table())
    for label, path in (("report", report), ("confusion matrix", confusion_png),
                        ("comparison", compare_png)):
        if path:
            _say(ctx, f"{label}: {path}")


@cli.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--labels", multiple=True, required=True,
              help="Labels of each image, in the same order (repeat the option): a class "
                   "raster or polygons in any CRS.")
@click.option("-o", "--output", "out", required=True, type=click.Path(file_okay=False),
              help="Folder for the model (model.json + model.safetensors) and checkpoints.")
@click.option("--config", callback=_config, is_eager=True, expose_value=False,
              help="Read option values from this YAML file (flags given here win).")
@click.option("--classes", callback=_classes,
              help="Class names in id order [default: from the labels].")
@click.option("--class-field", default=None,
              help="The polygons' class column (class ids or names) [default: every "
                   "polygon is class 1 against background 0].")
@click.option("--background", default=None,
              help="Train unlabelled pixels as this class instead of ignoring them.")
@click.option("--bands", callback=_bands, help="Image bands to use, e.g. 3,2,1,4.")
@click.option("--chip-size", "--tile-size", "chip_size", type=click.IntRange(min=16),
              default=256, show_default=True,
              help="Training chip size in pixels (validation blocks are twice that).")
@click.option("--encoder", default="tu-mobilenetv3_small_100", show_default=True,
              help="smp encoder name (weights start random: nothing is downloaded).")
@click.option("--encoder-depth", type=click.IntRange(3, 5), default=3, show_default=True)
@click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2,
              show_default=True, help="Share of the image blocks kept for validation.")
@click.option("--jitter", type=click.FloatRange(0, 0.5), default=0.1, show_default=True,
              help="Per-band brightness/contrast augmentation; lower it when classes "
                   "hinge on band ratios.")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--steps-per-epoch", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3,
              show_default=True, help="Peak learning rate (AdamW, one-cycle schedule).")
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True,
              help="Stop after this many epochs without a better validation mIoU.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.")
@click.option("--progress/--no-progress", default=None,
              help="Show a progress bar [default: when stderr is a terminal].")
@overwrite_option
@click.pass_context
def train(ctx: click.Context, images: tuple[str, ...], labels: tuple[str, ...], out: str,
          classes: list[str] | None, class_field: str | None, background: str | None,
          bands: tuple[int, ...] | None, chip_size: int, encoder: str, encoder_depth: int,
          val_fraction: float, jitter: float, epochs: int, steps_per_epoch: int,
          batch_size: int, lr: float,
          patience: int, seed: int, device: str, resume: bool, progress: bool | None,
          overwrite: bool) -> None:
    """Train a model on IMAGES and their labels; predict with it by `--model OUT`.

    Training chips come from most of each image; spatially separate blocks are kept for
    validation after every epoch. The best model is kept, training stops early when
    validation stops improving, and every epoch is checkpointed (--resume).

    \b
    Examples:
      geoseg train ortho.tif --labels fields.gpkg --class-field crop -o models/crops
      geoseg predict ortho2.tif --model models/crops -o ortho2.mask.tif
    """
    from geoseg.training import train as run_training

    model = run_training(
        list(images), list(labels), out, classes=classes, class_field=class_field,
        background=background, bands=bands, chip_size=chip_size, encoder=encoder,
        encoder_depth=encoder_depth, val_fraction=val_fraction, jitter=jitter, epochs=epochs,
        steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, patience=patience,
        seed=seed, device=device, resume=resume, overwrite=overwrite,
        progress=_show_progress(progress))
    metrics = model.spec.metrics
    _say(ctx, f"model: {Path(out) / 'model.json'} (validation mIoU {metrics['val_miou']:.4f}, "
              f"epoch {metrics['best_epoch']})")


@cli.command("sample-data")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--size", type=click.IntRange(min=16), default=2048, show_default=True,
              help="Scene width and height in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the scene.")
@click.option("--nodata/--no-nodata", default=True, show_default=True,
              help="Cut a nodata corner into the scene.")
@overwrite_option
@click.pass_context
def sample_data(ctx: click.Context, folder: str, size: int, seed: int, nodata: bool,
                overwrite: bool) -> None:
    """Write a synthetic 4-band scene (blue, green, red, NIR; uint16) and its exact labels.

    \b
    Example:
      geoseg sample-data data/ --size 2048 --seed 7
    """
    from geoseg.synthetic import write_sample_data

    image, labels = write_sample_data(folder, size=size, seed=seed, nodata_corner=nodata,
                                      overwrite=overwrite)
    _say(ctx, f"scene: {image}")
    _say(ctx, f"labels: {labels}")


@cli.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path: str, as_json: bool) -> None:
    """Describe a raster (size, bands, CRS, nodata, classes) or a model (card).

    \b
    Examples:
      geoseg info scene.tif
      geoseg info default
    """
    from geoseg import model, raster

    data = model.describe(path) if model.is_model_reference(path) else raster.describe(path)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for key, value in data.items():
        if isinstance(value, (list, tuple, dict)):
            value = json.dumps(value, default=str)
        click.echo(f"{key + ':':<18} {value}")


@cli.command()
def models() -> None:
    """List the bundled models with their bands, classes and held-out scores."""
    from geoseg.model import BUNDLED, bundled_path, read_spec

    for name in BUNDLED:
        spec = read_spec(bundled_path(name))
        miou = spec.metrics.get("heldout_miou")
        click.echo(f"{name}: {spec.architecture}/{spec.encoder}, tile {spec.tile_size} px, "
                   f"resolution {spec.resolution} m"
                   + (f", held-out mIoU {miou:.3f}" if miou is not None else ""))
        click.echo(f"  bands:   {', '.join(spec.bands)}")
        click.echo(f"  classes: {', '.join(spec.class_names)}")
        if spec.description:
            click.echo(f"  {spec.description}")


def main() -> None:
    import signal

    # A batch system stops jobs with SIGTERM: unwind like Ctrl-C, so no temp file stays.
    signal.signal(signal.SIGTERM, _interrupt)
    sys.unraisablehook = _redeliver_interrupts(sys.unraisablehook)
    cli(prog_name="geoseg")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _redeliver_interrupts(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """An interrupt that lands in a ``__del__`` is swallowed there (Python prints "Exception
    ignored in …" and a traceback): send it again instead, to be raised in ordinary code."""
    import signal

    signal.signal(signal.SIGALRM, _interrupt)

    def handle(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            signal.setitimer(signal.ITIMER_REAL, 0.01)  # after this hook has returned
        else:
            hook(unraisable)

    return handle


if __name__ == "__main__":
    main()
