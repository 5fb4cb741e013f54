"""Training on the user's labels: vector or raster, in any CRS; resume; config files."""

import json

import numpy as np
import pytest
import rasterio
from conftest import run_cli, write_classes, write_raster

import geoseg
from geoseg.errors import InputError

pytestmark = pytest.mark.slow

FAST = ["--chip-size", "64", "--epochs", "2", "--steps-per-epoch", "15", "--batch-size", "4"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """A synthetic scene, its label raster, and the same labels as polygons in EPSG:4326."""
    folder = tmp_path_factory.mktemp("scene")
    image, label_path = geoseg.write_sample_data(folder, size=256, seed=21)
    polygons = geoseg.vectorize(label_path).to_crs("EPSG:4326")
    polygons.to_file(folder / "labels_4326.gpkg", layer="labels")
    return image, label_path, folder / "labels_4326.gpkg"


def test_vector_labels_in_another_crs_train_a_model_that_predicts_well(scene, tmp_path):
    image, label_path, gpkg = scene
    result = run_cli("train", image, "--labels", gpkg, "--class-field", "class_name",
                 "-o", tmp_path / "model", *FAST)
    assert result.exit_code == 0, result.output
    assert "validation mIoU" in result.output
    assert "epoch 2/2  loss " in result.output  # each epoch's line, from geoseg's logger
    model = geoseg.load_model(tmp_path / "model")
    spec = model.spec
    assert spec.bands == ("blue", "green", "red", "nir") and spec.resolution == 2.0
    assert sorted(spec.class_names) == spec.class_names  # names from the text column
    assert len(spec.metrics["history"]) == 2 and 0 < spec.metrics["val_miou"] <= 1
    assert all(s > 0 for s in spec.std)
    mask = tmp_path / "mask.tif"
    assert run_cli("predict", image, "--model", tmp_path / "model", "-o", mask, "--tile-size", 64
               ).exit_code == 0
    scores = geoseg.evaluate(mask, label_path).metrics  # classes matched by name
    assert scores["miou"] > 0.35  # six classes: chance is about 0.1

    # The same run with the label raster learns about as well.
    result = run_cli("train", image, "--labels", label_path, "-o", tmp_path / "from_raster", *FAST)
    assert result.exit_code == 0, result.output
    raster_model = geoseg.load_model(tmp_path / "from_raster")
    assert raster_model.spec.class_names == geoseg.load_model("default").spec.class_names
    assert abs(raster_model.spec.metrics["val_miou"] - spec.metrics["val_miou"]) < 0.2


def test_resume_continues_an_interrupted_run_where_it_stopped(scene, tmp_path, monkeypatch):
    from geoseg.chips import LabelChips

    image, label_path, _ = scene
    out = tmp_path / "model"
    options = {"chip_size": 64, "epochs": 3, "steps_per_epoch": 5, "batch_size": 2,
               "patience": 10}
    calls = {"n": 0}
    real = LabelChips.__call__

    def interrupted(self, rng, n):
        calls["n"] += 1
        if calls["n"] == 8:  # during the second epoch
            raise KeyboardInterrupt
        return real(self, rng, n)

    monkeypatch.setattr(LabelChips, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        geoseg.train([image], [label_path], out, **options)
    monkeypatch.setattr(LabelChips, "__call__", real)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["epoch"] == 1
    assert not (out / "model.json").exists()
    with pytest.raises(InputError, match=r"other settings \(epochs\)"):
        geoseg.train([image], [label_path], out, resume=True, **{**options, "epochs": 4})
    model = geoseg.train([image], [label_path], out, resume=True, **options)
    assert [h["epoch"] for h in model.spec.metrics["history"]] == [1, 2, 3]
    assert geoseg.load_model(out).spec.metrics == model.spec.metrics
    result = run_cli("train", image, "--labels", label_path, "-o", tmp_path / "fresh", "--resume",
                 *FAST)
    assert result.exit_code == 1 and "no checkpoint to resume from" in result.output


def test_a_yaml_config_sets_options_and_flags_win(scene, tmp_path):
    image, label_path, _ = scene
    config = tmp_path / "train.yaml"
    config.write_text("chip-size: 64\nepochs: 1\nsteps_per_epoch: 3\nbatch-size: 2\n")
    result = run_cli("-q", "train", image, "--labels", label_path, "-o", tmp_path / "m",
                     "--config", config, "--epochs", "2")
    assert result.exit_code == 0 and result.output == "", result.output  # -q: not a line
    assert len(geoseg.load_model(tmp_path / "m").spec.metrics["history"]) == 2
    config.write_text("epochz: 3\n")
    result = run_cli("train", image, "--labels", label_path, "-o", tmp_path / "m2",
                 "--config", config)
    assert result.exit_code == 2 and "unknown option(s) epochz" in result.output


def test_labels_that_do_not_fit_are_refused_before_training(scene, tmp_path):
    import geopandas as gpd
    import shapely

    image, label_path, _ = scene
    far = gpd.GeoDataFrame({"kind": ["water"]}, geometry=[shapely.box(0, 0, 1, 1)],
                           crs="EPSG:4326")
    far.to_file(tmp_path / "far.gpkg")
    with pytest.raises(InputError, match="labels do not overlap the image"):
        geoseg.train([image], [tmp_path / "far.gpkg"], tmp_path / "m", class_field="kind")
    with pytest.raises(InputError, match="one labels file per image"):
        geoseg.train([image, image], [label_path], tmp_path / "m")
    tiny = write_raster(tmp_path / "tiny.tif", np.ones((4, 40, 40), np.uint16) * 100)
    tiny_labels = write_classes(tmp_path / "tiny_labels.tif", np.zeros((40, 40)), ["a", "b"])
    with pytest.raises(InputError, match="no block is left for validation"):
        geoseg.train([tiny], [tiny_labels], tmp_path / "m", chip_size=64)


@pytest.mark.parametrize("total", [1, 3, 6, 7, 10, 40])
def test_the_learning_rate_schedule_runs_for_any_number_of_steps(total):
    import torch

    from geoseg.fitting import one_cycle

    weight = torch.nn.Parameter(torch.zeros(1))
    optimiser = torch.optim.AdamW([weight], lr=1e-3)
    schedule = one_cycle(optimiser, 1e-3, total)
    rates = []
    for _ in range(total):
        optimiser.step()
        schedule.step()
        rates.append(optimiser.param_groups[0]["lr"])
    assert all(0 < r <= 1e-3 + 1e-12 for r in rates)


def test_label_rasters_on_another_grid_are_warped_onto_the_image(scene, tmp_path):
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    image, label_path, _ = scene
    with rasterio.open(label_path) as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:4326", src.width // 2, src.height, *src.bounds[:2],
            src.bounds[0] + (src.bounds[2] - src.bounds[0]) / 2, src.bounds[3])
        data = np.full((height, width), 255, np.uint8)
        reproject(src.read(1), data, src_transform=src.transform, src_crs=src.crs,
                  dst_transform=transform, dst_crs="EPSG:4326", resampling=Resampling.nearest)
        profile = {**src.profile, "crs": "EPSG:4326", "transform": transform, "width": width,
                   "height": height, "nodata": None}  # no nodata: outside must still be ignored
        tags = src.tags()
    half = tmp_path / "west_half_4326.tif"
    with rasterio.open(half, "w", **{k: v for k, v in profile.items()
                                      if k not in ("blockxsize", "blockysize", "tiled")}) as ds:
        ds.write(data, 1)
        ds.update_tags(**tags)
    mask = tmp_path / "mask.tif"
    geoseg.predict(image, mask, tile_size=64)
    full = geoseg.evaluate(mask, label_path)
    west = geoseg.evaluate(mask, half)
    assert 0.3 < west.confusion.sum() / full.confusion.sum() < 0.6  # about half the image
    assert west.metrics["overall_accuracy"] == pytest.approx(
        full.metrics["overall_accuracy"], abs=0.03)
    model = geoseg.train([image], [half], tmp_path / "m", chip_size=64, epochs=1,
                         steps_per_epoch=3, batch_size=2)
    assert model.spec.class_names == geoseg.load_model("default").spec.class_names


def test_nodata_in_float_images_never_reaches_the_network(scene, tmp_path):
    image, label_path, _ = scene
    with rasterio.open(image) as ds:
        data = ds.read().astype(np.float32)
        profile = {**ds.profile, "dtype": "float32", "nodata": np.nan}
    data[:, :40, :] = np.nan
    floats = tmp_path / "floats.tif"
    with rasterio.open(floats, "w", **profile) as ds:
        ds.write(data)
    model = geoseg.train([floats], [label_path], tmp_path / "m", chip_size=64, epochs=1,
                         steps_per_epoch=5, batch_size=4)
    weights = model.network.state_dict().values()
    assert all(np.isfinite(w.numpy()).all() for w in weights)
    assert np.isfinite(model.spec.mean).all()


def test_class_columns_of_digits_mixed_label_kinds_and_colours_by_name(scene, tmp_path):
    image, label_path, gpkg = scene
    import geopandas as gpd

    names = geoseg.load_model("default").spec.class_names
    polygons = gpd.read_file(gpkg, layer="labels")
    polygons["code"] = (polygons.class_id + 1).astype(str)  # "1".."6": names, not ids
    polygons.loc[polygons.index[:3], "code"] = None  # unlabelled polygons
    coded = tmp_path / "coded.gpkg"
    polygons.to_file(coded)
    spec = geoseg.train([image], [coded], tmp_path / "m", class_field="code", chip_size=64,
                        epochs=1, steps_per_epoch=2, batch_size=2).spec
    assert spec.class_names == ["1", "2", "3", "4", "5", "6"]
    # A raster for one image and polygons for another; the class field is the polygons'.
    reordered = list(reversed(names))
    spec = geoseg.train([image, image], [label_path, gpkg], tmp_path / "m2",
                        class_field="class_name", classes=reordered, chip_size=64, epochs=1,
                        steps_per_epoch=2, batch_size=2).spec
    assert spec.class_names == reordered
    default = {c.name: c.color for c in geoseg.load_model("default").spec.classes}
    assert [c.color for c in spec.classes] == [default[n] for n in reordered]


def test_yaml_lists_and_long_option_names(scene, tmp_path):
    image, label_path, _ = scene
    names = geoseg.load_model("default").spec.class_names
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({"output": str(tmp_path / "m"), "classes": names,
                                  "bands": [1, 2, 3, 4], "chip-size": 64, "epochs": 1,
                                  "steps-per-epoch": 2, "batch-size": 2}))  # JSON is YAML
    result = run_cli("train", image, "--labels", label_path, "--config", config)
    assert result.exit_code == 0, result.output
    assert geoseg.load_model(tmp_path / "m").spec.class_names == names
    # DESIGN's spelling of the command works too.
    result = run_cli("train", image, "--labels", label_path, "-o", tmp_path / "d", "--tile-size",
                 "64", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
                 "--encoder", "tu-mobilenetv3_small_100", "--device", "cpu")
    assert result.exit_code == 0, result.output


def test_unreadable_or_missing_labels_are_one_line_errors(scene, tmp_path):
    image, _, _ = scene
    notes = tmp_path / "notes.tif"
    notes.write_text("not a raster")
    result = run_cli("train", image, "--labels", notes, "-o", tmp_path / "m")
    assert result.exit_code == 1 and "notes.tif: not a raster GDAL can read" in result.output
    result = run_cli("evaluate", image, "--model", "default", "--labels", tmp_path / "no.gpkg")
    assert result.exit_code == 1 and "no.gpkg: no such file" in result.output
    assert "Traceback" not in result.output
