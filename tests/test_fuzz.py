"""Fuzz: random small rasters (size, dtype, nodata pattern, tiling) through predict and
vectorize, asserting the invariants of DESIGN.md on every one."""

from __future__ import annotations

import os
import warnings

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from conftest import write_raster
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rasterio.features import rasterize

import geoseg
from geoseg.errors import GeoSegWarning

DTYPES = ["uint8", "int16", "uint16", "int32", "float32", "float64"]


@st.composite
def rasters(draw):
    height, width = draw(st.integers(1, 90)), draw(st.integers(1, 90))
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        data = rng.normal(1500, 800, (4, height, width)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        data = rng.integers(max(info.min, -5000), min(info.max, 5000), (4, height, width),
                            endpoint=True).astype(dtype)
    # Nodata: none, a value, NaN (floats); in scattered pixels, a block, one band, or all.
    kinds = ["none", "value"] + (["nan"] if dtype.kind == "f" else [])
    kind = draw(st.sampled_from(kinds))
    pattern = draw(st.sampled_from(["scattered", "block", "one band", "all"]))
    hole = np.zeros((height, width), bool)
    if pattern == "scattered":
        hole = rng.random((height, width)) < 0.1
    elif pattern == "block":
        hole[: height // 2, : width // 3] = True
    elif pattern == "all":
        hole[:] = True
    nodata = None
    if kind != "none":
        nodata = float("nan") if kind == "nan" else 0
        bands = [draw(st.integers(0, 3))] if pattern == "one band" else range(4)
        if pattern == "one band":
            hole = rng.random((height, width)) < 0.2
        for b in bands:
            data[b][hole] = nodata
        # A random value may equal nodata elsewhere too: it is nodata then.
        hole = (data == 0).any(axis=0) if kind == "value" else np.isnan(data).any(axis=0)
    else:
        hole[:] = False
    size = draw(st.sampled_from([16, 24, 32, 64, 128]))
    overlap = draw(st.integers(0, size // 2))
    return data, nodata, hole, size, overlap


# GEOSEG_FUZZ_EXAMPLES=1000 for a longer hunt than make test's.
@settings(max_examples=int(os.environ.get("GEOSEG_FUZZ_EXAMPLES", 100)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=rasters())
@pytest.mark.slow
def test_random_rasters_keep_shape_georeferencing_nodata_and_the_round_trip(case, tmp_path_factory):
    data, nodata, hole, size, overlap = case
    folder = tmp_path_factory.mktemp("fuzz")
    src = write_raster(folder / "in.tif", data, nodata=nodata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeoSegWarning)  # all-nodata rasters warn
        geoseg.predict(src, folder / "mask.tif", tile_size=size, overlap=overlap)
        layer = geoseg.vectorize(folder / "mask.tif", folder / "polygons.gpkg")
    with rasterio.open(folder / "mask.tif") as got, rasterio.open(src) as want:
        assert (got.crs, got.transform, got.shape) == (want.crs, want.transform, want.shape)
        mask = got.read(1)
    assert got.nodata == 255
    np.testing.assert_array_equal(mask == 255, hole)  # nodata exactly where the input has none
    assert (mask[~hole] < 6).all()
    stored = gpd.read_file(folder / "polygons.gpkg", layer="polygons")
    assert len(stored) == len(layer)
    back = np.full(mask.shape, 255, np.uint8)
    if len(stored):
        back = rasterize(zip(stored.geometry, stored.class_id, strict=True), out_shape=mask.shape,
                         transform=got.transform, fill=255, dtype="uint8")
    np.testing.assert_array_equal(back, mask)
