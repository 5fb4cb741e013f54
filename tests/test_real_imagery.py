"""A real Sentinel-2 scene, end to end: train on it, read the card, predict, evaluate.

The scene is the 200 x 300 px, 10 m Sentinel-2 subset (EPSG:32719) that the PyPI package
``xarray-spatial`` ships in its wheel (``xrspatial/datasets/sentinel-2/*.nc``), found
through the package's metadata (nothing downloads). There is no ground truth with it,
so the labels are derived, and honestly named so: the scene is arid (NDVI 0.04 to 0.14,
no open water), so its pixels are split into NDVI terciles: low, mid and high NDVI. The
test shows the pipeline works on real reflectances and a real UTM grid; its scores
measure how well a network learns that index, not land-cover accuracy.
"""

import importlib.metadata
import json

import numpy as np
import pytest
import rasterio
from affine import Affine

import geoseg

BANDS = ("blue", "green", "red", "nir")
CLASSES = ["low_ndvi", "mid_ndvi", "high_ndvi"]


def sentinel2_files() -> dict[str, str]:
    try:
        files = importlib.metadata.files("xarray-spatial") or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    found = {}
    for f in files:
        name = str(f)
        if "datasets/sentinel-2/" in name and name.endswith("_band.nc"):
            found[name.rsplit("/", 1)[1][:-len("_band.nc")]] = str(f.locate())
    return found


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not set(BANDS) <= set(sentinel2_files()),
                                 reason="xarray-spatial is not installed (make install adds "
                                        "it, without its dependencies, for this data)")]


@pytest.fixture(scope="module")
def sentinel2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s2")
    files = sentinel2_files()
    data = []
    for band in BANDS:
        with rasterio.open(files[band]) as ds:
            data.append(ds.read(1))
            tags = ds.tags()
    crs = tags["__xarray_dataarray_variable__#crs"].replace("+init=", "").upper()
    a, b, c, d, e, f = (float(v) for v in
                        tags["__xarray_dataarray_variable__#transform"].strip("{}").split(","))
    transform = Affine(a, b, c, d, e, f)
    stack = np.stack(data).astype(np.float32)
    image = folder / "sentinel2.tif"
    with rasterio.open(image, "w", driver="GTiff", width=stack.shape[2], height=stack.shape[1],
                       count=4, dtype="float32", crs=crs, transform=transform,
                       nodata=np.nan) as ds:
        ds.write(stack)
        ds.descriptions = BANDS
    _, _, red, nir = stack
    with np.errstate(divide="ignore", invalid="ignore"):
        ndvi = (nir - red) / (nir + red)
    valid = np.isfinite(ndvi)
    labels = np.digitize(ndvi, np.nanpercentile(ndvi, [100 / 3, 200 / 3])).astype(np.uint8)
    labels[~valid] = 255
    label_path = folder / "derived_labels.tif"
    with rasterio.open(label_path, "w", driver="GTiff", width=labels.shape[1],
                       height=labels.shape[0], count=1, dtype="uint8", crs=crs,
                       transform=transform, nodata=255) as ds:
        ds.write(labels, 1)
        ds.update_tags(CLASS_NAMES=json.dumps(CLASSES))
    return image, label_path, labels


def test_a_model_trained_on_real_sentinel2_reflectances_works_end_to_end(sentinel2, tmp_path):
    image, label_path, labels = sentinel2
    assert len(np.unique(labels[labels != 255])) == 3  # the scene has all three
    # Per-band jitter would move NDVI across the class limits: off for index labels.
    model = geoseg.train([image], [label_path], tmp_path / "s2model", chip_size=64, epochs=4,
                         steps_per_epoch=25, batch_size=4, val_fraction=0.25, jitter=0.0)
    spec = geoseg.load_model(tmp_path / "s2model").spec
    assert spec.bands == BANDS and spec.class_names == CLASSES
    assert spec.resolution == 10.0 and spec.tile_size == 512
    assert all(1 < m < 1e4 for m in spec.mean)  # reflectance x 10000, as stored
    assert spec.metrics["val_miou"] == model.spec.metrics["val_miou"]
    mask = tmp_path / "s2.mask.tif"
    geoseg.predict(image, mask, tmp_path / "s2model", tile_size=64)
    with rasterio.open(mask) as ds, rasterio.open(image) as src:
        assert ds.crs == src.crs and ds.transform == src.transform
    result = geoseg.evaluate(mask, label_path)
    assert result.metrics["overall_accuracy"] > 0.6  # three equal classes: chance is 1/3
    assert result.metrics["miou"] > 0.4
