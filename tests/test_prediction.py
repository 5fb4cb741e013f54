import json

import numpy as np
import pytest
import rasterio
from conftest import write_raster
from PIL import Image
from rio_cogeo.cogeo import cog_validate

import geoseg
from geoseg import cog, prediction
from geoseg.errors import InputError, OutputError, OutputExistsError
from geoseg.inference import Predictor
from geoseg.scores import confusion_matrix, scores


def whole_image_prediction(path, model):
    """One forward pass over the whole image (reflect-padded to the encoder's stride)."""
    with rasterio.open(path) as ds:
        data = ds.read().astype(np.float32)
        valid = ds.dataset_mask() > 0
    predictor = Predictor(model, "cpu")
    m = model.spec.size_multiple
    h, w = data.shape[1:]
    pad = ((0, -h % m), (0, -w % m))
    x = np.pad(data, ((0, 0), *pad), mode="reflect")[None]
    ok = np.pad(valid, pad, mode="reflect")[None]
    classes = predictor.predict_proba(x, ok)[0, :, :h, :w].argmax(axis=0).astype(np.uint8)
    classes[~valid] = 255
    return classes


def test_tiled_prediction_matches_one_whole_image_pass_without_seams(make_scene, default_model):
    path, _ = make_scene(1000, 1300)
    tiled = geoseg.predict(path, model=default_model, tile_size=256).values
    whole = whole_image_prediction(path, default_model)
    assert tiled.shape == whole.shape == (1000, 1300)
    agree = (tiled == whole).mean()
    assert agree >= 0.999, agree
    # No seams: disagreement on tile-border rows/columns is not above the rest.
    grid = geoseg.TileGrid(1000, 1300, 256, 32)
    borders = np.zeros(tiled.shape, bool)
    for k in range(1, grid.shape[0]):
        start = k * grid.stride - grid.margin
        borders[start - 2:start + grid.overlap + 2] = True
    for k in range(1, grid.shape[1]):
        start = k * grid.stride - grid.margin
        borders[:, start - 2:start + grid.overlap + 2] = True
    assert (tiled != whole)[borders].mean() <= 0.002


def test_mask_keeps_georeferencing_nodata_and_is_a_valid_cog(make_scene, default_model, tmp_path):
    path, _ = make_scene(1040, 1100)
    dst = tmp_path / "out" / "mask.tif"
    dst.parent.mkdir()
    lazy = geoseg.predict(path, dst, model=default_model, probabilities_path=tmp_path / "out" / "p.tif",
                          quicklook=tmp_path / "out" / "q.png")
    valid, errors, warnings = cog_validate(str(dst), strict=True)
    assert valid, (errors, warnings)
    with rasterio.open(path) as src, rasterio.open(dst) as out:
        assert (out.crs, out.transform, out.width, out.height) == (
            src.crs, src.transform, src.width, src.height)
        assert out.dtypes[0] == "uint8" and out.nodata == 255
        mask = out.read(1)
        source_nodata = src.dataset_mask() == 0
        assert source_nodata.any()
        np.testing.assert_array_equal(mask == 255, source_nodata)
        assert mask[~source_nodata].max() < len(default_model.spec.classes)
        assert out.colormap(1)[0][:3] == default_model.spec.classes[0].color
        assert json.loads(out.tags()["CLASS_NAMES"]) == default_model.spec.class_names
        assert out.overviews(1)
    np.testing.assert_array_equal(lazy.values, mask)
    assert lazy.rio.crs == src.crs and lazy.rio.transform() == src.transform
    qml = (tmp_path / "out" / "mask.qml").read_text()
    assert all(f'label="{n}"' in qml for n in default_model.spec.class_names)
    with rasterio.open(tmp_path / "out" / "p.tif") as p:
        probs = p.read()
        assert p.count == len(default_model.spec.classes) and p.scales[0] == pytest.approx(1 / 254)
        assert (probs[:, source_nodata] == 255).all()
        sums = probs[:, ~source_nodata].astype(int).sum(axis=0)
        assert np.abs(sums - 254).max() <= len(default_model.spec.classes)
        same = probs[:, ~source_nodata].argmax(axis=0) == mask[~source_nodata]
        assert same.mean() > 0.99  # only near-ties may differ after rounding to 1/254
    with Image.open(tmp_path / "out" / "q.png") as q:
        assert q.mode == "RGBA" and max(q.size) <= 1024
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "mask.qml", "mask.tif", "p.tif", "q.png"]


def test_lazy_result_is_dask_backed_and_georeferenced(make_scene, default_model):
    path, _ = make_scene(200, 300)
    mask = geoseg.predict(path, model=default_model, tile_size=128)
    assert mask.chunks is not None and mask.dtype == np.uint8
    with rasterio.open(path) as src:
        assert mask.rio.crs == src.crs and mask.rio.transform() == src.transform
    assert mask.shape == (200, 300)


def test_default_model_is_accurate_on_a_held_out_scene(make_scene, default_model):
    path, labels = make_scene(768, 768, seed=4321)
    mask = geoseg.predict(path, model=default_model).values
    result = scores(confusion_matrix(mask, labels, len(default_model.spec.classes)))
    assert result["miou"] >= 0.90, result


@pytest.mark.parametrize("scheduler", ["processes", "local"])
def test_schedulers_give_identical_masks(make_scene, default_model, tmp_path, scheduler):
    path, _ = make_scene(300, 260)
    reference = tmp_path / "threads.tif"
    geoseg.predict(path, reference, model="default", tile_size=128, scheduler="threads")
    other = tmp_path / f"{scheduler}.tif"
    geoseg.predict(path, other, model="default", tile_size=128, scheduler=scheduler, workers=2)
    with rasterio.open(reference) as a, rasterio.open(other) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_mosaic_tiles_predict_like_the_single_file(make_scene, default_model, tmp_path):
    path, _ = make_scene(256, 256)
    with rasterio.open(path) as ds:
        data, transform = ds.read(), ds.transform
    from affine import Affine

    parts = []
    for k, (r, c) in enumerate([(0, 0), (0, 128), (128, 0), (128, 128)]):
        part = data[:, r:r + 128, c:c + 128]
        parts.append(write_raster(tmp_path / f"t{k}.tif", part, nodata=0,
                                  transform=transform @ Affine.translation(c, r)))
    whole = geoseg.predict(path, model=default_model, tile_size=128).values
    mosaic = geoseg.predict(parts, model=default_model, tile_size=128).values
    np.testing.assert_array_equal(whole, mosaic)


def test_tiny_image_smaller_than_one_tile(make_raster, default_model):
    data = np.random.default_rng(3).integers(200, 3000, (4, 20, 30), dtype=np.uint16)
    mask = geoseg.predict(make_raster(data=data), model=default_model).values
    assert mask.shape == (20, 30) and mask.max() < len(default_model.spec.classes)


def test_wrong_band_count_is_refused_and_bands_option_fixes_it(make_raster, default_model, tmp_path):
    data = np.random.default_rng(3).integers(200, 3000, (6, 40, 40), dtype=np.uint16)
    path = make_raster(data=data)
    with pytest.raises(InputError, match="6 bands but the model needs 4"):
        geoseg.predict(path, tmp_path / "m.tif", model=default_model)
    assert not (tmp_path / "m.tif").exists()
    assert geoseg.predict(path, model=default_model, bands=[3, 2, 1, 4]).shape == (40, 40)


def test_existing_output_is_kept_without_overwrite(make_scene, default_model, tmp_path):
    path, _ = make_scene(64, 64)
    dst = tmp_path / "mask.tif"
    dst.write_text("keep me")
    with pytest.raises(OutputExistsError):
        geoseg.predict(path, dst, model=default_model)
    assert dst.read_text() == "keep me"
    geoseg.predict(path, dst, model=default_model, overwrite=True)
    with rasterio.open(dst) as ds:
        assert ds.read(1).shape == (64, 64)


def test_a_failure_while_writing_leaves_no_output(make_scene, default_model, tmp_path, monkeypatch):
    path, _ = make_scene(64, 64)
    out = tmp_path / "out"
    out.mkdir()

    def disk_full(scratch, dst, **kwargs):
        dst.write_bytes(b"II*\x00 half a file")
        raise OutputError("could not be written (No space left on device)", dst)

    monkeypatch.setattr(cog, "write_cog", disk_full)
    with pytest.raises(OutputError, match="No space left"):
        geoseg.predict(path, out / "mask.tif", model=default_model, probabilities_path=out / "p.tif")
    assert list(out.iterdir()) == []


def test_probabilities_without_mask_path_is_refused(make_scene, default_model):
    path, _ = make_scene(32, 32)
    with pytest.raises(InputError, match="need a mask path"):
        prediction.predict(path, None, model=default_model, quicklook="q.png")


def test_an_existing_scheduler_address_gives_the_same_mask(make_scene, tmp_path):
    from distributed import LocalCluster

    path, _ = make_scene(200, 180)
    reference = geoseg.predict(path, model="default", tile_size=128).values
    with LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        out = geoseg.predict(path, tmp_path / "m.tif", model="default", tile_size=128,
                             scheduler=cluster.scheduler_address)
        np.testing.assert_array_equal(out.values, reference)


def test_an_in_memory_model_is_used_as_it_is_not_reloaded_from_its_file(make_scene):
    import torch

    path, _ = make_scene(64, 64, nodata_corner=False)
    changed = geoseg.load_model("default")
    with torch.no_grad():
        head = changed.network.segmentation_head[0]
        head.weight.zero_()
        head.bias.copy_(torch.arange(len(changed.spec.classes), dtype=head.bias.dtype))
    mask = geoseg.predict(path, model=changed).values
    assert (mask == len(changed.spec.classes) - 1).all()  # the biggest bias wins everywhere


def test_prediction_leaves_torch_threads_as_they_were(make_scene, tmp_path):
    """Tasks give torch one thread each (the pool shares the cores) but put the count
    back: torch keeps it per thread and as the default for threads made later."""
    import threading

    import torch

    path, _ = make_scene(300, 300)
    before = torch.get_num_threads()
    geoseg.predict(path, tmp_path / "m.tif", tile_size=128, workers=2)
    geoseg.predict(path, tile_size=128).compute(scheduler="sync")  # tasks in this thread
    seen = []
    thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    assert torch.get_num_threads() == before and seen == [before]
