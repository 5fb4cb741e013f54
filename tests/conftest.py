"""Fixtures that write small, real rasters into tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from geoseg.cli import cli
from geoseg.synthetic import sample_scene

UTM = "EPSG:32633"
TRANSFORM = Affine(2.0, 0.0, 500_000.0, 0.0, -2.0, 5_200_000.0)


def write_raster(path: Path, data: np.ndarray, *, crs: str | None = UTM,
                 transform: Affine = TRANSFORM, nodata: float | None = None,
                 tiled: bool = True) -> Path:
    """Write ``data`` (bands, rows, cols) as a GeoTIFF."""
    if data.ndim == 2:
        data = data[None]
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": data.shape[0], "dtype": data.dtype, "crs": crs, "transform": transform,
               "nodata": nodata}
    if tiled and data.shape[1] >= 16 and data.shape[2] >= 16:
        profile.update(tiled=True, blockxsize=16 * max(1, min(16, data.shape[2] // 16)),
                       blockysize=16 * max(1, min(16, data.shape[1] // 16)))
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


@pytest.fixture
def make_raster(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``make_raster(name, data=..., crs=..., transform=..., nodata=...)``."""

    def make(name: str = "image.tif", data: np.ndarray | None = None, **kwargs: object) -> Path:
        if data is None:
            data = np.random.default_rng(0).integers(1, 4000, (4, 64, 80), dtype=np.uint16)
        return write_raster(tmp_path / name, data, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def make_scene(tmp_path: Path) -> Callable[..., tuple[Path, np.ndarray]]:
    """Factory: a synthetic scene of ``height × width`` written as GeoTIFF, plus its labels."""

    def make(height: int, width: int, seed: int = 1234, name: str = "scene.tif",
             nodata_corner: bool = True) -> tuple[Path, np.ndarray]:
        scene = sample_scene(max(height, width), seed=seed, nodata_corner=nodata_corner)
        image, labels = scene.render(0, 0, height, width)
        path = write_raster(tmp_path / name, image, transform=scene.transform, nodata=0)
        return path, labels

    return make


def invoke(*args: object, catch_exceptions: bool = True):
    """The real CLI (click's runner) on ``args`` (paths and numbers are made strings)."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=catch_exceptions)


def assert_one_line_error(result, *words: str, named: object = None) -> None:
    """Exit code 1 and one line ``Error: …`` holding every word (starting
    ``Error: <named>: `` when ``named`` is given), and no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    assert named is None or lines[0].startswith(f"Error: {named}: "), lines[0]
    for w in words:
        assert w in lines[0], lines[0]
