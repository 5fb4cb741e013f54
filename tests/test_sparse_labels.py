"""Training on the labels people have: a rare class digitised in one corner, labels in
part of an image, float class rasters, labels in a datum variant of the image's CRS,
validation that scores every labelled class, class weights and losses."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import invoke, run_cli, write_classes, write_raster

import geoseg
from geoseg.errors import GeoSegWarning, InputError
from geoseg.maskfile import NODATA

TRANSFORM = Affine(2.0, 0.0, 500_000.0, 0.0, -2.0, 5_200_000.0)
FAST = {"chip_size": 64, "epochs": 1, "steps_per_epoch": 2, "batch_size": 2}


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 512² synthetic scene; its built-up class (4) labelled only in the top-left
    256² corner, as a class raster: 1 there, 0 (background) elsewhere in the corner, and
    nodata outside it."""
    folder = tmp_path_factory.mktemp("sparse")
    image, truth_path = geoseg.write_sample_data(folder, size=512, seed=4, nodata_corner=False)
    with rasterio.open(truth_path) as ds:
        truth = ds.read(1)
    sparse = np.full(truth.shape, NODATA, np.uint8)
    sparse[:256, :256] = (truth[:256, :256] == 4).astype(np.uint8)
    labels = write_classes(folder / "corner.tif", sparse, ["background", "built_up"],
                           transform=TRANSFORM, crs="EPSG:32633")
    return {"image": image, "truth": truth, "labels": labels, "folder": folder}


def test_chips_are_drawn_around_a_rare_class(scene):
    """A class on about 1 % of the labelled pixels is in most chips drawn around the
    labels, and in few drawn around any labelled pixel."""
    from geoseg.chips import LabelChips, census, open_pairs, split_blocks

    pairs = open_pairs([scene["image"]], [scene["labels"]], ["background", "built_up"])
    censuses = [census(p, 16, 2) for p in pairs]
    counts = censuses[0].counts.sum(axis=(0, 1))
    assert counts[1] / counts.sum() < 0.02 and counts.sum() == 256 * 256
    rng = np.random.default_rng(0)
    split = split_blocks(pairs, censuses, 64, 0.2, rng, ["background", "built_up"])
    assert split.val_pixels[1] > 0 and split.train_pixels[1] > 0  # both sides have the class
    shares = {}
    for ratio in (0.25, 1.0):
        chips = LabelChips(pairs, censuses, split, 64, background_ratio=ratio, background=0)
        drawn = [chips.chip(rng)[1] for _ in range(60)]
        shares[ratio] = np.mean([(y == 1).any() for y in drawn])
        for y in drawn:  # validation labels never reach a training chip
            assert (y[y != NODATA] <= 1).all()
    assert shares[0.25] >= 0.7 and shares[0.25] > shares[1.0] + 0.2
    # No chip holds a label of a validation block.
    val = np.zeros((512, 512), bool)
    for r, c, h, w in split.val[0]:
        val[r:r + h, c:c + w] = True
    chips = LabelChips(pairs, censuses, split, 64, background=0)
    for _ in range(40):
        _, row, col, _, y = chips.draw(rng)
        assert not (y != NODATA)[val[row:row + 64, col:col + 64]].any()


def test_validation_scores_every_labelled_class_or_says_which_it_cannot(scene, tmp_path):
    from geoseg.chips import census, open_pairs, split_blocks

    names = ["background", "built_up", "pond"]
    labels = np.full((512, 512), NODATA, np.uint8)
    labels[:256, :256] = 0
    labels[10:20, 10:20] = 1  # built-up: two places, far apart
    labels[200:210, 200:210] = 1
    labels[100:104, 100:104] = 2  # a pond: one place only
    path = write_classes(tmp_path / "l.tif", labels, names, transform=TRANSFORM)
    pairs = open_pairs([scene["image"]], [path], names)
    censuses = [census(p, 16, 3) for p in pairs]
    for seed in range(5):
        split = split_blocks(pairs, censuses, 64, 0.2, np.random.default_rng(seed), names)
        assert split.val_pixels[1] > 0 and split.train_pixels[1] > 0
        assert split.val_pixels[2] == 0 and split.train_pixels[2] == 16
        assert any("'pond' is labelled in one block only" in n for n in split.notes)
        assert any("'built_up' has 100 labelled pixels" in n for n in split.notes)
    with pytest.warns(GeoSegWarning, match="'pond' is labelled in one block only"):
        geoseg.train([scene["image"]], [path], tmp_path / "m", **FAST)


def test_a_short_run_learns_a_rare_class_from_one_corner(scene, tmp_path):
    result = run_cli("train", scene["image"], "--labels", scene["labels"], "-o",
                     tmp_path / "model", "--chip-size", "64", "--epochs", "4",
                     "--steps-per-epoch", "25", "--batch-size", "8", "--class-weights", "auto",
                     "--loss", "focal+dice")
    assert result.exit_code == 0, result.output
    assert "IoU: background" in result.output and "an epoch" in result.output
    spec = geoseg.load_model(tmp_path / "model").spec
    training = spec.metrics["training"]
    assert training["loss"] == "focal+dice" and len(training["class_weights"]) == 2
    assert training["class_weights"][1] > training["class_weights"][0]
    assert training["labelled_pixels"]["validation"]["built_up"] > 0
    # Held out: the three quarters of the scene no label touched.
    mask = geoseg.predict(scene["image"], model=tmp_path / "model", tile_size=128).values
    held_out = np.ones((512, 512), bool)
    held_out[:256, :256] = False
    p, t = (mask == 1) & held_out, (scene["truth"] == 4) & held_out
    iou = (p & t).sum() / (p | t).sum()
    assert iou > 0.2  # chance, and "background everywhere", are 0


def test_labels_in_part_of_an_image_train_only_there(scene, tmp_path):
    import geopandas as gpd
    import shapely

    from geoseg.labels import open_labels
    from geoseg.sources import open_source

    grid = open_source(scene["image"]).grid
    x0, y1 = TRANSFORM * (0, 0)
    x1, y0 = TRANSFORM * (256, 256)
    area = tmp_path / "area.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(x0, y0, x1, y1)], crs="EPSG:32633").to_file(area)
    houses = tmp_path / "houses.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(x0 + 20, y1 - 40, x0 + 40, y1 - 20),
                               shapely.box(x1 + 100, y0 - 100, x1 + 120, y0 - 80)],
                     crs="EPSG:32633").to_file(houses)
    whole = open_labels(houses, grid, ["background", "foreground"]).read(0, 0, 512, 512)
    part = open_labels(houses, grid, ["background", "foreground"],
                       labelled_area=area).read(0, 0, 512, 512)
    assert (whole != NODATA).all()  # without an area: background everywhere
    assert (part[:256, :256] != NODATA).all() and (part[:256, :256] == 1).sum() == 100
    assert (part[256:, 256:] == NODATA).sum() == 256 * 256 - 100  # only the house outside
    result = invoke("train", scene["image"], "--labels", houses, "--labelled-area", area, "-o",
                    tmp_path / "m", "--chip-size", "64", "--epochs", "1", "--steps-per-epoch",
                    "2", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    with pytest.raises(InputError, match="give the background class"):
        open_labels(scene["labels"], grid, ["background", "built_up"], labelled_area=area)


def test_float_class_rasters_with_a_nodata_are_classes(scene, tmp_path):
    labels = np.full((512, 512), -99999.0, np.float32)
    labels[:256, :256] = (scene["truth"][:256, :256] == 4).astype(np.float32)
    path = write_raster(tmp_path / "float_labels.tif", labels, transform=TRANSFORM,
                        nodata=-99999.0)
    model = geoseg.train([scene["image"]], [path], tmp_path / "m", **FAST)
    assert model.spec.class_names == ["class_0", "class_1"]
    labels[5, 5] = 0.5
    bad = write_raster(tmp_path / "fraction.tif", labels, transform=TRANSFORM, nodata=-99999.0)
    result = invoke("train", scene["image"], "--labels", bad, "-o", tmp_path / "m2",
                    "--chip-size", "64")
    assert result.exit_code == 1 and "holds the value 0.5; labels are whole" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_labels_in_a_datum_variant_of_the_images_crs_on_its_grid(tmp_path):
    """EPSG:3358 (NAD83(HARN) / North Carolina) labels on an EPSG:32119 (NAD83 / North
    Carolina) image, same transform: pixel for pixel, with a warning."""
    transform = Affine(1.0, 0, 600_000.0, 0, -1.0, 200_000.0)
    image = write_raster(tmp_path / "img.tif", np.random.default_rng(0).integers(
        1, 4000, (4, 128, 128)).astype(np.uint16), crs="EPSG:32119", transform=transform)
    labels = np.zeros((128, 128), np.uint8)
    labels[40:60, 40:60] = 1
    path = write_classes(tmp_path / "labels.tif", labels, ["a", "b"], crs="EPSG:3358",
                         transform=transform)
    from geoseg.labels import open_labels
    from geoseg.sources import open_source

    with pytest.warns(GeoSegWarning, match="EPSG:3358 and the image in EPSG:32119, on the "
                                           "same pixel grid"):
        read = open_labels(path, open_source(image).grid, ["a", "b"]).read(0, 0, 128, 128)
    np.testing.assert_array_equal(read, labels)


def test_bad_weights_and_the_never_predicted_verdict(scene, tmp_path):
    result = invoke("train", scene["image"], "--labels", scene["labels"], "-o", tmp_path / "m",
                    "--class-weights", "1,2,3", "--chip-size", "64")
    assert result.exit_code == 1 and "give 2 class weights, one per class" in result.output
    assert len(result.output.strip().splitlines()) == 1
    from geoseg.model import ClassInfo, ModelSpec
    from geoseg.training import _verdict

    spec = ModelSpec(name="m", bands=("a",), mean=(0.0,), std=(1.0,),
                     classes=(ClassInfo("background", (0, 0, 0)), ClassInfo("pond", (0, 0, 9))),
                     metrics={"validation": {"per_class": {
                         "background": {"pixels": 900, "precision": 0.9},
                         "pond": {"pixels": 40, "precision": None}}}})
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        _verdict(spec)
    assert [str(w.message) for w in said] == [
        "the model never predicts 'pond' (40 labelled pixels) on the validation blocks: it "
        "has not learnt it (label more of it, train longer, or weight the loss: "
        "class_weights=auto)"]


def test_losses_and_weights(scene):
    import torch

    from geoseg.fitting import class_weights, loss_function

    w = class_weights(np.array([0.99, 0.01]))
    assert w[1] > w[0] and abs(0.99 * w[0] + 0.01 * w[1] - 1) < 1e-3
    logits = torch.randn(2, 2, 8, 8)
    target = torch.randint(0, 2, (2, 8, 8))
    target[0, :2] = NODATA
    for kind in ("ce", "focal", "dice", "ce+dice", "focal+dice"):
        value = loss_function(kind, 2, w, "cpu")(logits, target)
        assert torch.isfinite(value) and value > 0, kind
    perfect = torch.nn.functional.one_hot(target.clamp(max=1), 2).permute(0, 3, 1, 2) * 20.0
    assert loss_function("focal", 2, (), "cpu")(perfect, target) < 1e-6
    with pytest.raises(InputError, match="loss 'l2' is not one of"):
        loss_function("l2", 2, (), "cpu")


def test_train_reports_json_safe_training_settings(scene, tmp_path):
    model = geoseg.train([scene["image"]], [scene["labels"]], tmp_path / "m",
                         background_ratio=0.5, **FAST)
    card = json.loads((Path(tmp_path / "m") / "model.json").read_text())
    assert card["metrics"]["training"]["background_ratio"] == 0.5
    assert card["metrics"]["training"]["sampling"] == "around labels"
    assert model.spec.metrics["training"]["validation_block"] in (32, 64, 128)


def test_scattered_labelled_pixels_train_as_polygons_do(scene, tmp_path):
    """A label raster of a few hundred labelled pixels scattered over nodata (field survey
    points) trains: chips are drawn around them, however few they are per chip."""
    rng = np.random.default_rng(3)
    labels = np.full((512, 512), NODATA, np.uint8)
    rows, cols = rng.integers(0, 512, 300), rng.integers(0, 512, 300)
    labels[rows, cols] = (scene["truth"][rows, cols] == 4).astype(np.uint8)
    path = write_classes(tmp_path / "points.tif", labels, ["other", "built_up"],
                         transform=TRANSFORM)
    model = geoseg.train([scene["image"]], [path], tmp_path / "m", **FAST)
    drawn = model.spec.metrics["training"]["labelled_pixels"]
    assert sum(drawn["training"].values()) + sum(drawn["validation"].values()) == (
        labels != NODATA).sum()
