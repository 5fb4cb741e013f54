import numpy as np
import rasterio

from geoseg.synthetic import CLASSES, SPECTRA, sample_scene, write_sample_data


def test_scenes_are_reproducible_and_have_every_class():
    a_img, a_lab = sample_scene(1024, seed=11).render()
    b_img, b_lab = sample_scene(1024, seed=11).render()
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    present = set(np.unique(a_lab)) - {255}
    assert present == set(range(len(CLASSES)))
    other = sample_scene(1024, seed=12).render()[1]
    assert (other != a_lab).mean() > 0.3


def test_labels_do_not_depend_on_the_window():
    scene = sample_scene(300, seed=5)
    whole = scene.labels(0, 0, 300, 300)
    np.testing.assert_array_equal(scene.labels(100, 37, 120, 200), whole[100:220, 37:237])


def test_spectra_follow_the_labels():
    image, labels = sample_scene(512, seed=2, nodata_corner=False).render()
    ndvi = (image[3].astype(float) - image[2]) / (image[3].astype(float) + image[2])
    water, forest = ndvi[labels == 0].mean(), ndvi[labels == 1].mean()
    assert water < 0 < 0.5 < forest
    means = np.array([image[:, labels == k].mean(axis=1) for k in range(len(CLASSES))
                      if (labels == k).any()])
    assert np.corrcoef(means.ravel(), SPECTRA[: len(means)].ravel())[0, 1] > 0.9


def test_sample_data_files_are_georeferenced_with_nodata(tmp_path):
    image, labels = write_sample_data(tmp_path, size=200, seed=3)
    with rasterio.open(image) as img, rasterio.open(labels) as lab:
        assert img.count == 4 and img.dtypes[0] == "uint16" and img.nodata == 0
        assert img.crs == lab.crs and img.crs.is_projected
        assert img.transform == lab.transform
        assert img.descriptions == ("blue", "green", "red", "nir")
        nodata = lab.read(1) == 255
        assert nodata.any()
        np.testing.assert_array_equal(img.dataset_mask() == 0, nodata)
