"""The ``geoseg`` commands: each parses its options, makes one API call and reports.

Heavy imports (torch, dask) happen inside the commands so ``geoseg --help`` is instant.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from geoseg.cli import options as opt
from geoseg.cli.app import cli, say, say_on
from geoseg.devices import Device
from geoseg.errors import BatchError
from geoseg.fitting import LOSSES
from geoseg.teacher import MIN_CONFIDENCE

if TYPE_CHECKING:
    from geoseg.labels import LabelMap


def _model(model: str | None, trust_pickle: bool) -> Any:
    """``--model`` as the API takes it: a trusted pickle is loaded here, once, and travels
    on as safetensors bytes (workers never unpickle)."""
    from geoseg.model import is_pickle, load_model

    if model is not None and trust_pickle and is_pickle(model):
        return load_model(model, trust_pickle=True)
    return model


@cli.command()
@click.argument("src", nargs=-1, required=True)
@opt.output("The class mask to write (Cloud-Optimized GeoTIFF), a file or "
            "s3://BUCKET/KEY.", name="dst")
@opt.prediction_choosing
@opt.scene
@opt.file("--probabilities", "Also write per-class probabilities (uint8, value / 254) to this COG.")
@opt.file("--quicklook", "Also write a colored PNG preview of the mask.")
@opt.mask_with
@opt.trust_pickle
@opt.job
@click.pass_context
def predict(ctx: click.Context, src: tuple[str, ...], dst: str, model: str,
            tile_size: int | None, overlap: int | None, batch_size: int | None, device: Device,
            bands: tuple[int, ...] | None, tta: bool, assets: list[str] | None,
            resolution: float | None, resampling: str, probabilities: str | None,
            quicklook: str | None, mask_with: tuple[str, ...], trust_pickle: bool, allow_no_crs: bool,
            progress: bool | None, scheduler: str, workers: int | None,
            overwrite: bool) -> None:
    """Predict a land-cover mask for SRC and write it as a Cloud-Optimized GeoTIFF.

    SRC is one raster or VRT; several GeoTIFF tiles of a mosaic, or a folder of them; a
    scene stored one file per band (B02.tif+B03.tif+…, red=a.tif+nir=b.tif, band files
    whose names say their band, or a product folder of them); or a STAC Item (JSON file
    or URL). Bands are matched to the model's by name wherever the scene names them;
    bands of other pixel sizes are resampled onto the finest band's grid.

    Without --model, a Sentinel-2 scene that has the nine bands Dynamic World reads gets
    dynamic-world; any other scene gets the demonstration model, with a warning.

    \b
    Examples:
      geoseg predict S2B_MSIL1C_20240611T100559_N0510_R022_T33UUP_20240611T130000.SAFE -o lc.tif
      geoseg predict scene.tif -o scene.mask.tif --probabilities scene.prob.tif
      geoseg predict B02_10m.jp2+B03_10m.jp2+B04_10m.jp2+B8A_20m.jp2 -o m.tif --model rgbn/
      geoseg predict S2B_33UUP_20240611_0_L2A.json -o s2.mask.tif
    """
    from geoseg.prediction import predict as run_predict
    from geoseg.styles import style_name

    started = time.perf_counter()
    mask = run_predict(
        list(src), dst, _model(model, trust_pickle), tile_size=tile_size, overlap=overlap,
        batch_size=batch_size,
        device=device, bands=bands, assets=assets, resolution=resolution,
        resampling=resampling, tta=tta, probabilities_path=probabilities,
        quicklook=quicklook, overwrite=overwrite, scheduler=scheduler, workers=workers,
        allow_no_crs=allow_no_crs, progress=opt.show_progress(progress), mask_with=mask_with,
    )
    seconds = time.perf_counter() - started
    height, width = mask.shape
    if "model_choice" in mask.attrs:
        say(ctx, f"model: {mask.attrs['model']} ({mask.attrs['model_choice']}; --model names "
                 f"another)")
    say(ctx, f"mask: {dst} ({width} x {height} px, {width * height / 1e6 / seconds:.2f} Mpx/s, "
             f"{seconds:.1f} s)")
    say(ctx, f"style: {style_name(dst)}")
    for label, path in (("probabilities", probabilities), ("quicklook", quicklook)):
        if path:
            say(ctx, f"{label}: {path}")


@cli.command()
@click.argument("mask")
@opt.output("The GeoPackage to write (.gpkg), a file or s3://BUCKET/KEY.", name="dst")
@opt.file("--probabilities", "The probabilities raster from predict: adds a confidence column.")
@opt.vectorizing
@click.option("--layer", default=None, help="Layer name [default: the output's file name].")
@click.option("--chunk-size", type=click.IntRange(min=16), default=2048, show_default=True,
              help="Pixels per chunk side (memory per worker grows with its square).")
@opt.job
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
    from geoseg.styles import style_name
    from geoseg.vector import vectorize_to_gpkg

    started = time.perf_counter()
    tally = vectorize_to_gpkg(
        mask, dst, layer=layer, overwrite=overwrite, probabilities=probabilities,
        min_area=min_area, simplify=simplify, classes=classes, chunk_size=chunk_size,
        allow_no_crs=allow_no_crs, scheduler=scheduler, workers=workers,
        progress=opt.show_progress(progress))
    seconds = time.perf_counter() - started
    say(ctx, f"polygons: {dst} ({tally.polygons.sum()} polygons, {seconds:.1f} s)")
    say(ctx, f"style: {style_name(dst)}")


@cli.command()
@click.argument("src", nargs=-1, required=True)
@opt.output("Folder for the outputs (created if missing), or s3://BUCKET/PREFIX.",
            name="out_dir", folder=True)
@opt.config("A YAML file of options (e.g. workflows/batch.yaml); `scenes:` lists the SRC. "
            "Flags given here win.")
@opt.prediction_choosing
@opt.scene
@click.option("--probabilities", is_flag=True,
              help="Also write NAME.prob.tif, and give each polygon its confidence.")
@click.option("--quicklook", is_flag=True, help="Also write NAME.png, a colored preview.")
@opt.mask_with
@opt.vectorizing
@click.option("--resume/--no-resume", default=False,
              help="Finish an earlier run into OUT_DIR: scenes it finished (outputs intact, "
                   "source unchanged) are skipped, the rest computed. With --overwrite and "
                   "other options than that run's, start again instead.")
@click.option("--threads-per-worker", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads of each LocalCluster worker (--scheduler local).")
@opt.job
@click.pass_context
def run(ctx: click.Context, src: tuple[str, ...], out_dir: str, model: str,
        tile_size: int | None, overlap: int | None, batch_size: int | None, device: Device,
        bands: tuple[int, ...] | None, tta: bool, assets: list[str] | None,
        resolution: float | None, resampling: str, probabilities: bool, quicklook: bool,
        mask_with: tuple[str, ...], min_area: float, simplify: float,
        classes: list[str] | None, resume: bool,
        threads_per_worker: int, allow_no_crs: bool, progress: bool | None, scheduler: str,
        workers: int | None, overwrite: bool) -> None:
    """Predict and vectorize each scene SRC into OUT_DIR: NAME.mask.tif, NAME.gpkg
    (QGIS-styled, with .qml files) and summary.json with the area of every class.

    A scene is a GeoTIFF, a VRT, a folder of mosaic tiles or of one product's band files,
    a band stack (B02.tif+B03.tif+…) or a STAC Item; a STAC ItemCollection or a folder of
    Items is one scene per Item, named by its id. SRC may also be a quoted glob
    ('tiles/*.tif', 's3://bucket/scenes/**/*.tif') or a text file listing scenes, one per
    line. On a Dask cluster (--scheduler local or tcp://HOST:PORT) scenes run in parallel
    on its workers; with scenes from and outputs to a bucket the workers need no shared
    disk. A journal in OUT_DIR records each finished scene: --resume skips them. A scene
    that fails is reported and the others go on; the exit code is 1 if any failed.

    \b
    Examples:
      geoseg run data/scene_0.tif data/tiles/ -o out/ --min-area 200
      geoseg run 'archive/**/*.tif' -o out/ --scheduler local --workers 4 --resume
      geoseg run search-results.json -o out/ --resume
      geoseg run 's3://imagery/**/*.tif' -o s3://maps/2026 --scheduler tcp://head:8786
      geoseg run --config workflows/batch.yaml
    """
    from geoseg.batch import SUMMARY, format_summary
    from geoseg.batch import run as run_scenes
    from geoseg.storage import is_url

    summary = run_scenes(
        list(src), out_dir, model, probabilities=probabilities, quicklook=quicklook,
        min_area=min_area, simplify=simplify, classes=classes, overwrite=overwrite,
        resume=resume, scheduler=scheduler, workers=workers,
        threads_per_worker=threads_per_worker,
        progress=opt.show_progress(progress), report=lambda text: say_on(ctx, text),
        speaker="cli", tile_size=tile_size, overlap=overlap,
        batch_size=batch_size, device=device, bands=bands, tta=tta, allow_no_crs=allow_no_crs,
        assets=assets, resolution=resolution, resampling=resampling,
        **({"mask_with": mask_with} if mask_with else {}))
    say_on(ctx, format_summary(summary))
    kinds = ["NAME.mask.tif", "NAME.gpkg"] + ["NAME.prob.tif"] * probabilities + \
        ["NAME.png"] * quicklook
    folder = out_dir.rstrip("/") if is_url(out_dir) else str(Path(out_dir))  # keep s3://
    say_on(ctx, f"outputs: {folder}/ ({', '.join(kinds)}, with .qml styles)")
    say_on(ctx, f"summary: {folder}/{SUMMARY}")
    failed = [s for s in summary["scenes"] if s["status"] == "failed"]
    if failed:
        first = f"{failed[0]['name']}: {failed[0]['error']}"
        raise BatchError(f"{len(failed)} of {len(summary['scenes'])} scenes failed "
                          f"(first: {first}); fix them and rerun with --resume")


@cli.command()
@click.argument("src")
@click.option("--labels", required=True,
              help="Reference labels: a class raster, or polygons (GeoPackage, GeoJSON, "
                   "shapefile...) in any CRS.")
@opt.class_field
@opt.label_map
@opt.background("Score unlabelled pixels as this class (id or name) instead of skipping them.")
@opt.model(None, "SRC is an image: predict it with this model first (bundled name or path).")
@opt.tile_size("With --model: tile size in pixels [default: the model's].")
@opt.bands("With --model: image bands in model order.")
@opt.scene
@opt.device("With --model: where the model runs.")
@opt.file("-o/--output", "Write the scores as JSON.", name="report")
@opt.file("--confusion-png", "Draw the confusion matrix to this PNG.")
@opt.file("--compare-png", "Draw image | prediction | reference side by side to this PNG.")
@opt.file("--image", "The image behind the mask, for the first panel of --compare-png.")
@opt.trust_pickle
@opt.overwrite
@click.pass_context
def evaluate(ctx: click.Context, src: str, labels: str, class_field: str | None,
             label_map: LabelMap | None, background: str | None, model: str | None, tile_size: int | None,
             bands: tuple[int, ...] | None, assets: list[str] | None,
             resolution: float | None, resampling: str, device: str, report: str | None,
             confusion_png: str | None, compare_png: str | None, image: str | None,
             trust_pickle: bool, overwrite: bool) -> None:
    """Score a predicted mask SRC (or, with --model, the prediction for image SRC) against
    reference labels: per-class IoU, F1, precision and recall, mIoU and overall accuracy.

    \b
    Examples:
      geoseg evaluate scene.mask.tif --labels truth.gpkg --class-field class -o scores.json
      geoseg evaluate scene.tif --model default --labels labels.tif --confusion-png cm.png
    """
    from geoseg.evaluation import evaluate as run_evaluation

    options = ({"tile_size": tile_size, "bands": bands, "device": device, "assets": assets,
                "resolution": resolution, "resampling": resampling}
               if model is not None else {})
    result = run_evaluation(src, labels, class_field=class_field, background=background,
                            label_map=label_map,
                            model=_model(model, trust_pickle), report=report, confusion_png=confusion_png,
                            compare_png=compare_png, image=image, overwrite=overwrite,
                            **options)
    say(ctx, result.table())
    for label, path in (("report", report), ("confusion matrix", confusion_png),
                        ("comparison", compare_png)):
        if path:
            say(ctx, f"{label}: {path}")


@cli.command()
@click.argument("images", nargs=-1, required=True)
@click.option("--labels", multiple=True,
              help="Labels of each image, in the same order (repeat the option): a class "
                   "raster or polygons in any CRS.")
@click.option("--labels-from", "labels_from", metavar="MODEL",
              help="No labels: this model (bundled name or saved model) maps each image, "
                   "and its confident pixels are the labels, the rest unlabelled (weak "
                   "supervision; its maps stay in OUT/teacher).")
@click.option("--teacher-image", "teacher_images", multiple=True,
              help="With --labels-from: the scene the teacher maps in place of each image "
                   "(repeat in order), of the same place and time, e.g. a whole Sentinel-2 "
                   "product where the image is four of its bands.")
@click.option("--min-confidence", type=click.FloatRange(0, 1), default=MIN_CONFIDENCE,
              show_default=True,
              help="With --labels-from: the least probability of the teacher's top class "
                   "that makes a pixel a label.")
@opt.mask_with
@opt.output("Folder for the model (model.json + model.safetensors) and checkpoints.",
            name="out", folder=True)
@opt.config()
@opt.classes("Class names in id order [default: from the labels].")
@opt.class_field
@opt.label_map
@opt.background("Train unlabelled pixels as this class instead of ignoring them "
                "[polygons without --class-field: 0, the background].")
@opt.labelled_area
@opt.bands("Image bands to use, e.g. 3,2,1,4.")
@opt.scene
@click.option("--chip-size", "--tile-size", "chip_size", type=click.IntRange(min=16),
              default=256, show_default=True,
              help="Training chip size in pixels (validation blocks are twice that, or as "
                   "small as half of it where a class is labelled in one such block only).")
@click.option("--background-ratio", type=click.FloatRange(0, 1), default=0.25,
              show_default=True,
              help="Share of chips drawn around any labelled pixel (in sparse labels: mostly "
                   "background); the rest are drawn around a class chosen uniformly among "
                   "the labelled ones, so rare classes are in most batches.")
@click.option("--loss", type=click.Choice(LOSSES), default="ce+dice", show_default=True,
              help="Cross-entropy or focal loss (γ 2), each optionally + soft Dice.")
@click.option("--class-weights", default="auto", show_default=True,
              help="Per-class loss weights: auto (1/√share of the labelled pixels drawn), "
                   "none, or one number per class (comma-separated).")
@click.option("--encoder", default="tu-mobilenetv3_small_100", show_default=True,
              help="smp encoder name (weights start random unless --encoder-weights).")
@click.option("--encoder-weights", default=None,
              help="Start the encoder from these weights: imagenet (the encoder's own, from "
                   "the model hub), a file (.safetensors, .pth) or a URL/hf:// reference; "
                   "downloaded once into the cache. A 3-band first layer is adapted to the "
                   "images' bands.")
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
@opt.device()
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint.")
@opt.progress
@opt.overwrite
@click.pass_context
def train(ctx: click.Context, images: tuple[str, ...], labels: tuple[str, ...],
          labels_from: str | None, teacher_images: tuple[str, ...], min_confidence: float,
          mask_with: tuple[str, ...], out: str, classes: list[str] | None,
          class_field: str | None, label_map: LabelMap | None, background: str | None,
          labelled_area: str | None, bands: tuple[int, ...] | None, assets: list[str] | None,
          resolution: float | None, resampling: str, chip_size: int, background_ratio: float,
          loss: str, class_weights: str, encoder: str, encoder_weights: str | None,
          encoder_depth: int,
          val_fraction: float, jitter: float, epochs: int, steps_per_epoch: int,
          batch_size: int, lr: float,
          patience: int, seed: int, device: Device, resume: bool, progress: bool | None,
          overwrite: bool) -> None:
    """Train a model on IMAGES and their labels; predict with it by `--model OUT`.

    IMAGES take every form `geoseg predict` takes (band stacks, STAC Items). Spatially
    separate blocks are kept for validation, stratified so that every class labelled in
    two places or more is scored; training chips are drawn around the labels elsewhere,
    class by class. Each epoch prints its per-class validation IoU. The best model is
    kept, training stops early when validation stops improving, and every epoch is
    checkpointed (--resume).

    Without labels, --labels-from lets a model teach: Dynamic World's confident pixels
    of a Sentinel-2 product train a U-Net on four of its bands (--mask-with leaves its
    clouds out), or on an aerial image of the same place and time.

    \b
    Examples:
      geoseg train ortho.tif --labels fields.gpkg --class-field crop -o models/crops
      geoseg predict ortho2.tif --model models/crops -o ortho2.mask.tif
      geoseg train scene.tif --labels worldcover.tif --label-map 10=trees,40=crops,50=built -o m
      geoseg train B02.tif+B03.tif+B04.tif+B08.tif --teacher-image S2.SAFE \\
          --labels-from dynamic-world --min-confidence 0.6 -o models/s2-rgbn
    """
    from geoseg.training import train as run_training

    model = run_training(
        list(images), list(labels), out, labels_from=labels_from,
        teacher_images=list(teacher_images) or None, min_confidence=min_confidence,
        mask_with=mask_with, label_map=label_map, classes=classes, class_field=class_field,
        background=background, labelled_area=labelled_area, bands=bands, assets=assets,
        resolution=resolution, resampling=resampling, chip_size=chip_size,
        background_ratio=background_ratio, loss=loss,
        class_weights=_weights(class_weights), encoder=encoder,
        encoder_weights=encoder_weights,
        encoder_depth=encoder_depth, val_fraction=val_fraction, jitter=jitter, epochs=epochs,
        steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, patience=patience,
        seed=seed, device=device, resume=resume, overwrite=overwrite,
        progress=opt.show_progress(progress))
    metrics = model.spec.metrics
    say(ctx, f"model: {Path(out) / 'model.json'} (validation mIoU {metrics['val_miou']:.4f}, "
              f"epoch {metrics['best_epoch']})")


def _weights(text: str) -> str | list[float]:
    """``--class-weights``: auto, none, or numbers."""
    if text in ("auto", "none"):
        return text
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"auto, none or numbers, not {text!r}",
                                 param_hint="--class-weights") from None


@cli.command("sample-data")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--size", type=click.IntRange(min=16), default=2048, show_default=True,
              help="Scene width and height in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the scene.")
@click.option("--nodata/--no-nodata", default=True, show_default=True,
              help="Cut a nodata corner into the scene.")
@opt.overwrite
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
    say(ctx, f"scene: {image}")
    say(ctx, f"labels: {labels}")


@cli.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check geoseg's environment: versions of geoseg, Python, GDAL, PROJ, rasterio,
    torch, ONNX Runtime and Dask, CUDA and its GPUs, the bundled models, and whether the
    download cache and the temporary folder are writable. Exits 1 when something is wrong.
    """
    from geoseg.errors import InputError
    from geoseg.versions import doctor as check

    lines, problems = check()
    for line in lines:
        say(ctx, line)
    if problems:
        raise InputError("; ".join(problems))
    say(ctx, "ok: geoseg can run here")


@cli.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path: str, as_json: bool) -> None:
    """Describe a raster (size, bands, CRS, nodata, classes), a band stack or STAC Item
    (its grid, and each band's name, file, scale and offset) or a model (card).

    \b
    Examples:
      geoseg info scene.tif
      geoseg info S2B_33UUP_20240611_0_L2A.json
      geoseg info default
    """
    from geoseg import model, sources, stac

    is_model = model.is_model_reference(path) and not stac.is_item_document(path)
    data = model.describe(path) if is_model else sources.describe(path)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    for key, value in data.items():
        if isinstance(value, (list, tuple, dict)):
            value = json.dumps(value, default=str)
        click.echo(f"{key + ':':<18} {value}")


@cli.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """The bundled models (list), models from elsewhere (import), geoseg's models for
    other tools (export), and int8 models for faster CPUs (quantize). Alone: list."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(models_list)


@models.command("list")
def models_list() -> None:
    """List the bundled models with their bands, classes and held-out scores."""
    from geoseg.model import BUNDLED, band_labels, bundled_path, read_spec

    for name in BUNDLED:
        spec = read_spec(bundled_path(name))
        miou = spec.metrics.get("heldout_miou")
        network = f"{spec.architecture}/{spec.encoder}" if spec.encoder else spec.architecture
        level = f", Sentinel-2 {spec.processing_level}" if spec.processing_level else ""
        click.echo(f"{name}: {network}, tile {spec.tile_size} px, "
                   f"resolution {spec.resolution} m{level}, runs on {spec.runtime}"
                   f"{' int8' if spec.quantization else ''} (CPU)"
                   + (f", held-out mIoU {miou:.3f}" if miou is not None else ""))
        click.echo(f"  bands:   {', '.join(band_labels(spec.bands))}")
        click.echo(f"  classes: {', '.join(spec.class_names)}")
        if spec.description:
            click.echo(f"  {spec.description}")


@models.command("import")
@click.argument("src")
@opt.output("The geoseg model folder to write.", name="out", folder=True)
@click.option("--card", type=click.Path(dir_okay=False),
              help="A YAML file of the settings below (the flags given here win).")
@click.option("--sha256", help="The expected SHA-256 of SRC's file (checked, also in the cache).")
@click.option("--bands", callback=opt.names,
              help="The network's input bands by name, in order, e.g. blue,green,red,nir.")
@click.option("--classes", callback=opt.names,
              help="Class names in output order, each optionally =#rrggbb, e.g. "
                   "clear,cloud=#ffffff,shadow=#404040.")
@click.option("--mean", callback=opt.numbers, help="Per-band mean in the model's units (one "
              "value for all bands, or one per band).")
@click.option("--std", callback=opt.numbers, help="Per-band std in the model's units.")
@click.option("--scale", callback=opt.numbers, help="Raw pixel value × scale + offset = the "
              "model's units (e.g. 0.0001 for reflectance × 10000).")
@click.option("--offset", callback=opt.numbers, help="See --scale.")
@click.option("--units", help="What the network reads, e.g. reflectance: a scene's own declared "
              "scale and offset (STAC raster:bands, GeoTIFF) then turn its values into these.")
@opt.tile_size("The tile size the model works best at [default: what the source says, "
               "else 512].")
@click.option("--resolution", type=click.FloatRange(min=0, min_open=True),
              help="The ground resolution the model expects, in metres.")
@click.option("--overlap", type=click.IntRange(min=0), help="Recommended tile overlap in pixels.")
@click.option("--outputs", type=click.Choice(["logits", "probabilities"]),
              help="What the network gives [default: probabilities after a final Softmax or "
                   "Sigmoid, else logits].")
@click.option("--arch", "architecture", help="For a bare state dict: the smp architecture "
              "[default: Unet].")
@click.option("--encoder", help="For a bare state dict: the smp encoder, e.g. resnet34.")
@click.option("--runtime", type=click.Choice(["torch", "onnxruntime"]),
              help="What runs a torch network on a CPU [default: onnxruntime, measured faster].")
@click.option("--name", help="The model's name [default: the source's].")
@click.option("--trust-pickle", is_flag=True, help="Load a checkpoint that needs full "
              "unpickling (can run code: only for files you trust).")
@opt.overwrite
@click.pass_context
def models_import(ctx: click.Context, src: str, out: str, card: str | None, sha256: str | None,
                  trust_pickle: bool, overwrite: bool, **settings: Any) -> None:
    """Import the model at SRC into a geoseg model folder that works wherever --model does.

    SRC is an ONNX file (Deepness metadata and a ukis-csmask JSON beside it are read), an
    smp save_pretrained folder, a state-dict checkpoint (.pth .pt .ckpt .bin .safetensors:
    TorchGeo, Lightning), or a reference: https://..., file://... or hf://ORG/REPO[@REV][/FILE],
    downloaded once into the cache ($GEOSEG_CACHE).

    \b
    Example:
      geoseg models import model_4b_l1c.onnx -o csmask --classes clear,cloud,shadow
    """
    from geoseg.model_import import import_model

    model = import_model(src, out, sha256=sha256, card=card, trust_pickle=trust_pickle,
                         overwrite=overwrite, **settings)
    spec = model.spec
    say(ctx, f"{out}: {spec.source.get('format')} model, {len(spec.bands)} bands "
             f"({', '.join(spec.bands)}) -> {len(spec.classes)} classes "
             f"({', '.join(spec.class_names)}), "
             + (f"input {spec.input_size} px" if spec.input_size else f"tile {spec.tile_size} px")
             + f", {spec.outputs}, runs on {spec.runtime}")


@models.command("quantize")
@click.argument("model")
@click.argument("calibration", nargs=-1, required=True)
@opt.output("The int8 model folder to write.", name="out", folder=True)
@click.option("--tiles", type=click.IntRange(min=1), default=64, show_default=True,
              help="Calibration tiles drawn from the scenes (at the model's tile size).")
@click.option("--check", type=click.IntRange(min=0), default=16, show_default=True,
              help="Further tiles on which the int8 graph is compared with the float one.")
@click.option("--seed", type=int, default=0, show_default=True, help="Where tiles are drawn.")
@opt.bands()
@opt.overwrite
@click.pass_context
def models_quantize(ctx: click.Context, model: str, calibration: tuple[str, ...], out: str,
                    tiles: int, check: int, seed: int, bands: tuple[int, ...] | None,
                    overwrite: bool) -> None:
    """Quantize MODEL's CPU graph to int8, calibrated on tiles of the CALIBRATION scenes.

    Use scenes like those the model will see (same sensor, season mix and processing):
    the int8 ranges are measured on them. The new model runs on ONNX Runtime on CPUs
    (weights int8 per channel, activations uint8); on GPUs its float network, as before.

    \b
    Example:
      geoseg models quantize my-model scene_a.tif scene_b.tif -o my-model-int8
    """
    from geoseg.quantize import quantize_model

    done = quantize_model(model, list(calibration), out, tiles=tiles, check=check, seed=seed,
                          bands=bands, overwrite=overwrite)
    agree = (f", same class as the float graph on {100 * done.agreement:.2f} % of the "
             f"pixels of {done.check_tiles} other tiles" if done.check_tiles else "")
    say(ctx, f"{out}: int8, calibrated on {done.calibration_tiles} tiles{agree}")


@models.command("export")
@click.argument("model")
@click.option("-o", "--output", "out", required=True, type=click.Path(),
              help="The file to write (.onnx), or the folder for --format smp.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "deepness", "smp"]), default="onnx",
              show_default=True, help="onnx: dynamic sizes, the card in its metadata; deepness: "
              "for the Deepness QGIS plugin; smp: a save_pretrained folder.")
@opt.overwrite
@click.pass_context
def models_export(ctx: click.Context, model: str, out: str, fmt: str, overwrite: bool) -> None:
    """Export MODEL (a bundled name or a model folder) for other tools.

    \b
    Examples:
      geoseg models export default -o default.onnx
      geoseg models export default -o default_deepness.onnx --format deepness
      geoseg models export default -o default-smp --format smp
    """
    from geoseg.model import load_model
    from geoseg.model_export import export_model

    path = export_model(load_model(model), out, fmt, overwrite=overwrite)
    say(ctx, f"{path}: {fmt}")
