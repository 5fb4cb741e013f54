"""geoseg masks open and render styled in real QGIS (headless, system python3)."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import geoseg

SYSTEM_PYTHON = "/usr/bin/python3"


def qgis_available() -> bool:
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not qgis_available(),
    reason="PyQGIS is not installed for /usr/bin/python3 (apt-get install -y python3-qgis)")]


def render(png, *layers, size=None):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    extra = [f"--size={size[0]}x{size[1]}"] if size else []
    out = subprocess.run([SYSTEM_PYTHON, str(Path(__file__).with_name("qgis_render.py")),
                          *extra, str(png), *map(str, layers)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.stdout.strip(), out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def drawn_colors(png):
    rgb = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    return [tuple(p) for p in rgb if tuple(p) != (255, 255, 255)], len(rgb)  # white: background


def test_mask_opens_paletted_with_class_names_and_renders(make_scene, tmp_path):
    path, _ = make_scene(300, 400)
    dst = tmp_path / "scene.mask.tif"
    geoseg.predict(path, dst, tile_size=128)
    png = tmp_path / "render.png"
    report = render(png, dst)
    layer = report["layers"][0]
    spec = geoseg.load_model("default").spec
    assert layer["valid"] and layer["crs"] == "EPSG:32633"
    assert layer["style_loaded"] and layer["renderer"] == "paletted"
    assert layer["classes"] == [
        [i, c.name, "#{:02x}{:02x}{:02x}".format(*c.color)] for i, c in enumerate(spec.classes)]
    assert report["saved"]
    drawn, total = drawn_colors(png)
    colors = {tuple(c.color) for c in spec.classes}
    assert len(drawn) > 0.5 * total
    assert np.mean([p in colors for p in drawn]) > 0.99  # drawn in exactly the class colors


def test_geopackage_opens_with_its_embedded_style_and_looks_like_the_mask(make_scene, tmp_path):
    path, _ = make_scene(300, 400)
    mask = tmp_path / "scene.mask.tif"
    geoseg.predict(path, mask, tile_size=128)
    gpkg = tmp_path / "scene.gpkg"
    gdf = geoseg.vectorize(mask, gpkg, chunk_size=128)
    gpkg.with_suffix(".qml").unlink()  # only the style inside the GeoPackage is left
    spec = geoseg.load_model("default").spec
    expected = [[i, c.name, "#{:02x}{:02x}{:02x}".format(*c.color)]
                for i, c in enumerate(spec.classes)]
    vector_png, raster_png = tmp_path / "vector.png", tmp_path / "raster.png"
    report = render(vector_png, f"{gpkg}|layername=scene", size=(400, 300))
    layer = report["layers"][0]
    assert layer["valid"] and layer["crs"] == "EPSG:32633" and layer["features"] == len(gdf)
    assert layer["renderer"] == "categorizedSymbol" and layer["field"] == "class_id"
    assert layer["classes"] == expected
    assert report["saved"] and render(raster_png, mask, size=(400, 300))["saved"]
    # At the mask's own resolution both render alike: the polygons in the mask's colours,
    # pixel for pixel (outlines are antialiased, so pixels on a border blend two colours).
    vector = np.asarray(Image.open(vector_png).convert("RGB")).astype(int)
    raster = np.asarray(Image.open(raster_png).convert("RGB")).astype(int)
    same = np.abs(vector - raster).sum(axis=-1) < 30
    inner = np.ones(same.shape, bool)  # pixels whose 3 x 3 neighbourhood is one class
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            inner &= (np.roll(raster, (dy, dx), (0, 1)) == raster).all(axis=-1)
    assert same.mean() > 0.9 and same[inner].mean() > 0.999
    drawn, total = drawn_colors(vector_png)
    assert len(drawn) > 0.5 * total
    # Both layers together, as a user would stack them.
    both = render(tmp_path / "both.png", mask, f"{gpkg}|layername=scene")
    assert [lay["valid"] for lay in both["layers"]] == [True, True] and both["saved"]
