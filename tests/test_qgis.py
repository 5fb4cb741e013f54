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


pytestmark = pytest.mark.skipif(
    not qgis_available(),
    reason="PyQGIS is not installed for /usr/bin/python3 (apt-get install -y python3-qgis)")


def test_mask_opens_paletted_with_class_names_and_renders(make_scene, tmp_path):
    path, _ = make_scene(300, 400)
    dst = tmp_path / "scene.mask.tif"
    geoseg.predict(path, dst, tile_size=128)
    png = tmp_path / "render.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run([SYSTEM_PYTHON, str(Path(__file__).with_name("qgis_render.py")),
                          str(dst), str(png)], capture_output=True, text=True, env=env,
                         timeout=300)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    spec = geoseg.load_model("default").spec
    assert report["valid"] and report["crs"] == "EPSG:32633"
    assert report["style_loaded"] and report["renderer"] == "paletted"
    assert report["classes"] == [
        [i, c.name, "#{:02x}{:02x}{:02x}".format(*c.color)] for i, c in enumerate(spec.classes)]
    assert report["saved"]
    rgb = np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)
    colors = {tuple(c.color) for c in spec.classes}
    drawn = [tuple(p) for p in rgb if tuple(p) != (255, 255, 255)]  # white: background, nodata
    assert len(drawn) > 0.5 * len(rgb)
    assert np.mean([p in colors for p in drawn]) > 0.99  # drawn in exactly the class colors
