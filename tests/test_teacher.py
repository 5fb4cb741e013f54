"""Weak supervision: ``geoseg train --labels-from MODEL`` on a real Sentinel-2 L1C product.

Dynamic World maps the whole product (nine bands); its pixels of a top probability of at
least ``--min-confidence`` become the labels of a U-Net that reads four of the product's
bands; the rest is unlabelled. The labels are checked against the original SavedModel's
own answer on the product (``tests/data/sentinel2-l1c``).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import assert_one_line_error, run_cli
from test_dynamic_world import PRODUCTS, cloudy_stack, interior, reference

import geoseg
from geoseg import dynamic_world

pytestmark = pytest.mark.slow

FAST = ["--chip-size", "64", "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "2"]
PRODUCT = PRODUCTS[0]
FOUR = "+".join(str(next(PRODUCT.glob(f"*_{b}_10m.tif"))) for b in ("B02", "B03", "B04", "B08"))


def teacher_files(out: Path, kind: str) -> Path:
    [path] = (out / "teacher").glob(f"1-*.{kind}.tif")
    return path


def test_dynamic_world_teaches_a_four_band_unet_its_confident_pixels(tmp_path):
    out = tmp_path / "student"
    result = run_cli("train", FOUR, "--teacher-image", PRODUCT, "--labels-from",
                     "dynamic-world", "--min-confidence", "0.4", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    with rasterio.open(teacher_files(out, "labels")) as ds:
        labels, tags = ds.read(1), ds.tags()
    with rasterio.open(teacher_files(out, "mask")) as ds:
        mask = ds.read(1)
    with rasterio.open(teacher_files(out, "probabilities")) as ds:
        top = ds.read().max(axis=0) / 254
    # The labels are the teacher's map where its top class is ≥ 0.4 likely, else nodata.
    confident = top >= 0.4 - 1e-9
    np.testing.assert_array_equal(labels, np.where(confident, mask, 255))
    assert 0.2 < confident.mean() < 0.5  # Dynamic World's probabilities are soft
    assert json.loads(tags["CLASS_NAMES"]) == [c for c, _ in dynamic_world.CLASSES]
    # The original SavedModel, whole image: the same confident pixels, the same classes.
    ref_mask, ref_probs = reference(PRODUCT)
    inside = interior(mask.shape)
    ref_confident = ref_probs.max(axis=0) >= 0.4
    assert (confident == ref_confident)[inside].mean() > 0.99
    both = inside & confident & ref_confident
    assert (labels == ref_mask)[both].mean() >= 0.999

    spec = geoseg.load_model(out).spec
    assert spec.bands == ("blue", "green", "red", "nir")
    assert [(c.name, c.color) for c in spec.classes] == [
        (name, tuple(int(color[i:i + 2], 16) for i in (0, 2, 4)))
        for name, color in dynamic_world.CLASSES]
    teacher = spec.metrics["training"]["teacher"]
    assert teacher["model"] == "dynamic-world" and teacher["min_confidence"] == 0.4
    [scene] = teacher["scenes"]
    assert scene["scene"] == PRODUCT.name and scene["mapped_pixels"] == mask.size
    assert scene["labelled_share"] == pytest.approx(confident.mean(), abs=1e-4)
    assert sum(scene["labelled_pixels"].values()) == confident.sum()
    assert spec.description.startswith("Taught by dynamic-world")
    assert f"labelled {100 * confident.mean():.1f} % of {PRODUCT.name}" in result.output

    # The student then runs alone on the four bands, on the product's 10 m grid.
    student_mask = tmp_path / "student.tif"
    result = run_cli("predict", FOUR, "--model", out, "-o", student_mask)
    assert result.exit_code == 0, result.output
    with rasterio.open(student_mask) as ds, rasterio.open(teacher_files(out, "mask")) as t:
        assert (ds.crs, ds.transform, ds.shape) == (t.crs, t.transform, t.shape)

    # A label map merges the teacher's classes: its ids are codes like any raster's.
    merged = tmp_path / "merged"
    result = run_cli("train", FOUR, "--teacher-image", PRODUCT, "--labels-from",
                     "dynamic-world", "--min-confidence", "0.4", "--label-map",
                     "0=water,1..5=vegetation,6=built,7..8=bare", "-o", merged, *FAST)
    assert result.exit_code == 0, result.output
    merged_spec = geoseg.load_model(merged).spec
    assert merged_spec.class_names == ["water", "vegetation", "built", "bare"]
    assert merged_spec.colors[0] == spec.colors[0] and merged_spec.colors[1] == spec.colors[1]
    pixels = merged_spec.metrics["training"]["labelled_pixels"]
    assert sum(pixels["training"].values()) + sum(pixels["validation"].values()) == (
        confident.sum())


def test_a_teacher_needs_its_bands_and_one_scene_per_image(tmp_path):
    # Without --teacher-image the teacher reads the four bands: its missing bands, in one
    # line, before any output.
    out = tmp_path / "student"
    result = run_cli("train", FOUR, "--labels-from", "dynamic-world", "-o", out, *FAST)
    assert_one_line_error(result, "lacks", "B05")
    assert not out.exists()
    for args, words in (
            (["--labels-from", "dynamic-world", "--teacher-image", PRODUCT,
              "--teacher-image", PRODUCT], "give one teacher image per image (1 images, "
                                           "2 teacher images)"),
            (["--labels-from", "dynamic-world", "--labels", FOUR.split("+")[0]],
             "give labels (--labels) or a teacher (--labels-from), not both"),
            ([], "give labels (--labels) or a teacher model (--labels-from)"),
            (["--teacher-image", PRODUCT, "--labels", FOUR.split("+")[0]],
             "teacher images serve a teacher (--labels-from)")):
        result = run_cli("train", FOUR, *args, "-o", out, *FAST)
        assert_one_line_error(result, words)
        assert not out.exists()


def test_what_a_mask_model_masks_is_never_a_label(tmp_path):
    """Dynamic World calls clouds snow: with a cloud model beside the teacher, cloudy
    pixels are nodata in its map and unlabelled, whatever its confidence."""
    from test_model_formats import ukis_folder

    folder = ukis_folder()
    if folder is None:
        pytest.skip("ukis-csmask is not installed (make install adds it as test data)")
    assert run_cli("models", "import", folder / "model_4b_l1c.onnx", "-o", tmp_path / "clouds",
                   "--classes", "clear,cloud,shadow", "--scale", "0.0001").exit_code == 0
    scene = cloudy_stack(tmp_path / "cloudy.tif")
    out = tmp_path / "student"
    result = run_cli("train", scene, "--bands", "1,2,3,7", "--labels-from", "dynamic-world",
                     "--min-confidence", "0.3", "--mask-with",
                     f"{tmp_path / 'clouds'}:cloud,shadow", "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    with rasterio.open(teacher_files(out, "labels")) as ds:
        labels = ds.read(1)
    with rasterio.open(teacher_files(out, "mask")) as ds:
        masked = int(ds.tags()["MASKED_PIXELS"])
    clouds = np.isin(geoseg.predict(scene, model=tmp_path / "clouds", overlap=64).values, (1, 2))
    assert masked > 0.02 * labels.size
    assert (labels[clouds] == 255).mean() > 0.98
    spec = geoseg.load_model(out).spec
    assert spec.bands == ("blue", "green", "red", "nir")
    assert spec.metrics["training"]["teacher"]["mask_with"] == [
        f"{tmp_path / 'clouds'}:cloud,shadow"]


def test_resume_keeps_the_teachers_labels_made_alike(tmp_path):
    out = tmp_path / "student"
    args = ["train", FOUR, "--teacher-image", PRODUCT, "--labels-from", "dynamic-world",
            "--min-confidence", "0.4", "-o", out, "--chip-size", "64",
            "--steps-per-epoch", "2", "--batch-size", "2"]
    assert run_cli(*args, "--epochs", "1").exit_code == 0
    labels = teacher_files(out, "labels")
    made = labels.stat().st_mtime_ns
    result = run_cli(*args, "--epochs", "1", "--resume")
    assert result.exit_code == 0, result.output
    assert labels.stat().st_mtime_ns == made  # not made again
    # Another threshold: made again, not taken from the first.
    changed = [a if a != "0.4" else "0.5" for a in args]
    result = run_cli(*changed, "--epochs", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    with rasterio.open(labels) as ds:
        assert ds.tags()["MIN_CONFIDENCE"] == "0.5"
