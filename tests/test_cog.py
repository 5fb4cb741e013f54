"""Raster outputs: scratch files filled window by window, read back, and made COGs."""

import numpy as np
import pytest
import rasterio

from geoseg import cog
from geoseg.errors import OutputError
from geoseg.sources import open_source


def test_window_writer_fills_a_scratch_file(make_raster, tmp_path):
    src = open_source(make_raster())
    scratch = tmp_path / "scratch.tif"
    cog.create_scratch(scratch, src.grid, count=1, dtype="uint8", nodata=255, name="out.tif")
    writer = cog.WindowWriter(scratch, "out.tif")
    writer[slice(0, 64), slice(0, 40)] = np.full((64, 40), 3, np.uint8)
    writer[slice(0, 64), slice(40, 80)] = np.full((64, 40), 7, np.uint8)
    with rasterio.open(scratch) as ds:
        out = ds.read(1)
    assert (out[:, :40] == 3).all() and (out[:, 40:] == 7).all()


def test_a_late_block_after_a_failed_run_leaves_no_file(make_raster, tmp_path):
    writer = cog.WindowWriter(tmp_path / "gone.scratch.tif", "out.tif")
    with pytest.raises(OutputError, match=r"out\.tif"):
        writer[slice(0, 4), slice(0, 4)] = np.zeros((4, 4), np.uint8)
    assert list(tmp_path.iterdir()) == []
