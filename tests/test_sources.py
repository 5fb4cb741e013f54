import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import TRANSFORM, write_raster

from geoseg import sources
from geoseg.errors import InputError, RasterReadError
from geoseg.gdal import gdal_env


def test_open_source_reads_geometry_and_bands(make_raster):
    path = make_raster(nodata=0)
    src = sources.open_source(path)
    assert (src.grid.width, src.grid.height, src.bands, src.dtype) == (80, 64, (1, 2, 3, 4), "uint16")
    assert src.grid.transform == TRANSFORM and src.grid.crs.to_epsg() == 32633 and src.nodata == 0
    assert sources.open_source(path, bands=[3, 2, 1]).bands == (3, 2, 1)


@pytest.mark.parametrize(("setup", "error", "words"), [
    (lambda d: d / "missing.tif", RasterReadError, "no such file"),
    (lambda d: (d / "text.tif").write_text("hello, not a raster") and d / "text.tif",
     RasterReadError, "not a raster"),
    (lambda d: (d / "empty.tif").write_bytes(b"") or d / "empty.tif", RasterReadError, "empty"),
    (lambda d: d, RasterReadError, "directory without GeoTIFF"),
])
def test_unreadable_inputs_name_the_file(tmp_path, setup, error, words):
    path = setup(tmp_path)
    with pytest.raises(error) as info:
        sources.open_source(path)
    assert words in str(info.value) and str(path.name) in str(info.value)


def test_no_crs_is_refused_unless_allowed(make_raster):
    path = make_raster(crs=None)
    with pytest.raises(InputError, match="no CRS"):
        sources.open_source(path)
    assert sources.open_source(path, allow_no_crs=True).grid.crs is None


def test_rotated_transform_is_refused(make_raster):
    path = make_raster(transform=TRANSFORM @ Affine.rotation(10))
    with pytest.raises(InputError, match="rotated"):
        sources.open_source(path)


def test_complex_dtype_is_refused(make_raster):
    path = make_raster(data=np.ones((1, 32, 32), np.complex64))
    with pytest.raises(InputError, match="complex64"):
        sources.open_source(path)


def test_band_outside_raster_is_refused(make_raster):
    with pytest.raises(InputError, match="band 5 does not exist"):
        sources.open_source(make_raster(), bands=[1, 5])


def test_truncated_geotiff_fails_up_front(tmp_path):
    data = np.random.default_rng(1).integers(0, 60000, (2, 256, 256), dtype=np.uint16)
    path = write_raster(tmp_path / "full.tif", data)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(RasterReadError, match="truncated or corrupt"):
        sources.open_source(path)


def test_read_window_reflects_outside_and_marks_nodata(make_raster):
    data = np.arange(4 * 64 * 80, dtype=np.uint16).reshape(4, 64, 80) + 1
    data[:, 10, 10] = 0
    src = sources.open_source(make_raster(data=data, nodata=0))
    with src.open() as ds:
        tile, valid = sources.read_window(ds, src, -4, -4, 32, 32)
    assert tile.shape == (4, 32, 32) and tile.dtype == np.float32
    np.testing.assert_array_equal(tile[:, 4:, 4:], data[:, :28, :28])
    np.testing.assert_array_equal(tile[:, 3, 4:], data[:, 1, :28])  # reflected row
    assert not valid[:4].any() and not valid[:, :4].any()
    assert not valid[14, 14] and valid[4:, 4:].sum() == 28 * 28 - 1


def test_nan_in_float_bands_is_nodata(make_raster):
    data = np.ones((4, 32, 32), np.float32)
    data[2, 5, 6] = np.nan
    data[0, 7, 8] = np.inf
    src = sources.open_source(make_raster(data=data))
    with src.open() as ds:
        _, valid = sources.read_window(ds, src, 0, 0, 32, 32)
    assert not valid[5, 6] and not valid[7, 8] and valid.sum() == 32 * 32 - 2


def _split(tmp_path, data, gap=False):
    """Four tiles of ``data`` (each with its own transform), optionally dropping one."""
    h, w = data.shape[1] // 2, data.shape[2] // 2
    paths = []
    for i in range(2):
        for j in range(2):
            if gap and (i, j) == (1, 1):
                continue
            t = TRANSFORM @ Affine.translation(j * w, i * h)
            part = data[:, i * h:(i + 1) * h, j * w:(j + 1) * w]
            paths.append(write_raster(tmp_path / f"tile_{i}{j}.tif", part, transform=t))
    return paths


def test_mosaic_of_tiles_reads_like_the_whole(tmp_path):
    data = np.random.default_rng(2).integers(1, 5000, (4, 64, 96), dtype=np.uint16)
    paths = _split(tmp_path, data, gap=True)
    src = sources.open_source(list(reversed(paths)))
    assert src.grid.shape == (64, 96) and src.grid.transform == TRANSFORM
    with src.open() as ds:
        tile, valid = sources.read_window(ds, src, 0, 0, 64, 96)
    np.testing.assert_array_equal(tile[:, :32], data[:, :32])
    np.testing.assert_array_equal(tile[:, 32:, :48], data[:, 32:, :48])
    assert valid[:32].all() and valid[32:, :48].all() and not valid[32:, 48:].any()
    # A folder of tiles is the same mosaic.
    assert sources.open_source(tmp_path).grid.width == 96


def test_mosaic_with_mismatched_tiles_is_refused(tmp_path):
    a = write_raster(tmp_path / "a.tif", np.ones((4, 16, 16), np.uint16))
    b = write_raster(tmp_path / "b.tif", np.ones((3, 16, 16), np.uint16),
                     transform=TRANSFORM @ Affine.translation(16, 0))
    with pytest.raises(InputError, match="band count"):
        sources.open_source([a, b])
    c = write_raster(tmp_path / "c.tif", np.ones((4, 16, 16), np.uint16), crs="EPSG:32632",
                     transform=TRANSFORM @ Affine.translation(16, 0))
    with pytest.raises(InputError, match="CRS"):
        sources.open_source([a, c])
    d = write_raster(tmp_path / "d.tif", np.ones((4, 16, 16), np.uint16),
                     transform=TRANSFORM @ Affine.translation(16.5, 0))
    with pytest.raises(InputError, match="pixel grid"):
        sources.open_source([a, d])


def test_vrt_file_input_reads_like_its_tiles(tmp_path):
    data = np.random.default_rng(4).integers(1, 5000, (4, 64, 96), dtype=np.uint16)
    mosaic = sources.open_source(_split(tmp_path, data))
    vrt = tmp_path / "mosaic.vrt"
    vrt.write_text(mosaic.vrt_xml)
    src = sources.open_source(vrt)
    assert (src.grid.width, src.grid.height, src.grid.transform) == (96, 64, TRANSFORM)
    with src.open() as ds:
        tile, valid = sources.read_window(ds, src, 0, 0, 64, 96)
    np.testing.assert_array_equal(tile, data.astype(np.float32))
    assert valid.all()


def test_internal_mask_band_marks_nodata(tmp_path):
    data = np.full((4, 32, 32), 500, np.uint16)
    path = tmp_path / "masked.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(
            path, "w", driver="GTiff", width=32, height=32, count=4, dtype="uint16",
            crs="EPSG:32633", transform=TRANSFORM) as ds:
        ds.write(data)
        mask = np.full((32, 32), 255, np.uint8)
        mask[:, :10] = 0
        ds.write_mask(mask)
    src = sources.open_source(path)
    with src.open() as ds:
        _, valid = sources.read_window(ds, src, 0, 0, 32, 32)
    assert not valid[:, :10].any() and valid[:, 10:].all()


def test_network_reads_retry_transient_errors_as_gdal_options_say(make_raster, tmp_path,
                                                                   flaky_http, monkeypatch):
    import geoseg

    url, requests = flaky_http(tmp_path)
    base = f"/vsicurl/{url}"
    image = make_raster(data=np.random.default_rng(3).integers(1, 4000, (4, 300, 260), np.uint16))
    monkeypatch.setenv("GDAL_HTTP_RETRY_DELAY", "0.01")
    remote = geoseg.predict(f"{base}/{image.name}?run=1", tmp_path / "remote.tif", tile_size=128)
    local = geoseg.predict(image, tmp_path / "local.tif", tile_size=128)
    np.testing.assert_array_equal(remote.values, local.values)
    assert requests() > 6  # windows were read over HTTP, and a third of the requests failed
    # Without retries the first 503 is a one-line error naming the URL.
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    url = f"{base}/{image.name}?run=2"
    with pytest.raises(RasterReadError, match="cannot be read over the network") as info:
        sources.open_source(url)
    assert str(info.value).startswith(url)


def test_the_block_cache_is_bounded_whatever_the_raster_and_the_environment_wins(
        make_raster, monkeypatch):
    from rasterio.env import getenv

    for name in ("GDAL_CACHEMAX", "GDAL_HTTP_MAX_RETRY"):
        monkeypatch.delenv(name, raising=False)
    src = sources.open_source(make_raster())
    with src.open():
        assert getenv()["GDAL_CACHEMAX"] == 128 and getenv()["GDAL_HTTP_MAX_RETRY"] == "4"
    monkeypatch.setenv("GDAL_CACHEMAX", "64")
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "9")
    assert "GDAL_CACHEMAX" not in gdal_env() and "GDAL_HTTP_MAX_RETRY" not in gdal_env()
    assert gdal_env(remote=True)["GDAL_NUM_THREADS"] == "1"


def test_an_alpha_band_read_as_data_is_no_mask(tmp_path):
    """GDAL writes 4 uint8 bands as RGBA: read as a model's NIR, band 4 is data, not alpha;
    left out of the bands read, it is the alpha mask it says it is."""
    data = np.random.default_rng(0).integers(1, 255, (4, 16, 16)).astype(np.uint8)
    data[3, 2, 3] = 0
    path = write_raster(tmp_path / "rgbn.tif", data, tiled=False)
    with rasterio.open(path) as ds:
        assert ds.colorinterp[3] == rasterio.enums.ColorInterp.alpha
    for bands, valid_there in (((1, 2, 3, 4), True), ((1, 2, 3), False)):
        src = sources.open_source(path, bands=list(bands))
        with src.open() as ds:
            _, valid = sources.read_window(ds, src, 0, 0, 16, 16)
        assert valid[2, 3] == valid_there and valid.sum() == 16 * 16 - (not valid_there)
