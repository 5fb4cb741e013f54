"""Evaluating masks against raster or vector reference labels, on the mask's grid."""

import json

import numpy as np
import pytest
import rasterio
from conftest import TRANSFORM, run_cli, write_classes
from PIL import Image

import geoseg
from geoseg.errors import InputError
from geoseg.evaluation import evaluate

NAMES = ["water", "forest"]
COLORS = [(0, 0, 255), (0, 128, 0)]


def test_metrics_match_hand_computed_values(tmp_path):
    # Reference rows vs predicted columns: [[1, 1], [1, 2]]; 255 is not scored.
    pred = write_classes(tmp_path / "pred.tif", [[0, 0, 1, 1, 1, 255]], NAMES, COLORS)
    ref = write_classes(tmp_path / "ref.tif", [[0, 1, 1, 1, 0, 1]], NAMES, COLORS)
    result = evaluate(pred, ref, report=tmp_path / "r.json")
    assert result.confusion.tolist() == [[1, 1], [1, 2]]
    m = result.metrics
    water, forest = m["per_class"]["water"], m["per_class"]["forest"]
    assert water["iou"] == pytest.approx(1 / 3) and forest["iou"] == pytest.approx(2 / 4)
    assert water["precision"] == pytest.approx(1 / 2) and forest["precision"] == pytest.approx(2 / 3)
    assert water["recall"] == pytest.approx(1 / 2) and forest["recall"] == pytest.approx(2 / 3)
    assert water["f1"] == pytest.approx(1 / 2) and forest["f1"] == pytest.approx(4 / 6)
    assert m["miou"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert m["overall_accuracy"] == pytest.approx(3 / 5)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["confusion_matrix"] == [[1, 1], [1, 2]] and saved["class_names"] == NAMES


@pytest.fixture
def scene_and_labels(make_scene, default_model, tmp_path):
    path, labels = make_scene(200, 240)
    with rasterio.open(path) as ds:
        transform, crs = ds.transform, ds.crs
    label_path = write_classes(tmp_path / "labels.tif", labels, default_model.spec.class_names,
                               transform=transform, crs=crs)
    mask = tmp_path / "mask.tif"
    geoseg.predict(path, mask, tile_size=64)
    return path, label_path, mask


def test_vector_labels_score_like_the_raster_they_came_from(scene_and_labels, tmp_path):
    _, label_path, mask = scene_and_labels
    from_raster = evaluate(mask, label_path)
    polygons = geoseg.vectorize(label_path)
    same_crs = tmp_path / "labels.gpkg"
    polygons.to_file(same_crs, layer="labels")
    from_vector = evaluate(mask, same_crs, class_field="class_name")
    assert (from_vector.confusion == from_raster.confusion).all()
    other_crs = tmp_path / "labels_4326.geojson"
    polygons.to_crs("EPSG:4326").to_file(other_crs)
    reprojected = evaluate(mask, other_crs, class_field="class_id")
    assert reprojected.metrics["miou"] == pytest.approx(from_raster.metrics["miou"], abs=0.01)
    assert from_raster.metrics["miou"] > 0.8


def test_polygons_without_a_class_field_are_foreground_against_background(tmp_path):
    import geopandas as gpd
    import shapely

    mask = np.zeros((20, 20), np.uint8)
    mask[5:15, 5:15] = 1
    pred = write_classes(tmp_path / "pred.tif", mask, NAMES, COLORS)
    x0, y0 = TRANSFORM.c + 5 * 2, TRANSFORM.f - 15 * 2
    square = gpd.GeoDataFrame(geometry=[shapely.box(x0, y0, x0 + 20, y0 + 20)], crs="EPSG:32633")
    square.to_file(tmp_path / "square.gpkg")
    result = evaluate(pred, tmp_path / "square.gpkg")
    assert result.metrics["overall_accuracy"] == 1.0 and result.confusion.sum() == 400


def test_labels_that_do_not_fit_give_clear_errors(scene_and_labels, tmp_path):
    import geopandas as gpd
    import shapely

    *_, mask = scene_and_labels
    far = gpd.GeoDataFrame({"cls": [1]}, geometry=[shapely.box(0, 0, 10, 10)], crs="EPSG:4326")
    far.to_file(tmp_path / "far.gpkg")
    with pytest.raises(InputError, match="labels do not overlap the image"):
        evaluate(mask, tmp_path / "far.gpkg", class_field="cls")
    with pytest.raises(InputError, match="no field 'kind'"):
        evaluate(mask, tmp_path / "far.gpkg", class_field="kind")
    odd = gpd.read_file(tmp_path / "far.gpkg").assign(cls=["lava"])
    odd.to_file(tmp_path / "odd.gpkg")
    with pytest.raises(InputError, match="'lava', which the model does not know"):
        evaluate(mask, tmp_path / "odd.gpkg", class_field="cls")


def test_cli_evaluates_an_image_with_the_model_and_draws_pictures(scene_and_labels, tmp_path):
    path, label_path, _ = scene_and_labels
    out = tmp_path / "eval"
    result = run_cli("evaluate", path, "--model", "default", "--labels", label_path,
                     "--tile-size", 64, "-o", out / "report.json",
                     "--confusion-png", out / "cm.png", "--compare-png", out / "cmp.png")
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output and "forest" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["miou"] > 0.8
    cm, cmp = Image.open(out / "cm.png"), Image.open(out / "cmp.png")
    assert cm.size[0] > 200 and cmp.size[0] > 3 * 200  # image, prediction, reference
