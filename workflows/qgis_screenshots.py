"""README's QGIS screenshots, taken in real QGIS (run inside it by qgis_screenshots.sh).

It maps the first real Sentinel-2 sample with the plugin's "Predict land cover" and
"Vectorize a class mask" (the geoseg CLI out of process, as for any user), loads both
outputs styled, and saves:

* ``qgis-map.png``: the main window, the Processing toolbox filtered to geoseg, the map;
* ``qgis-predict.png``: the "Predict land cover" dialog.

Environment: ``SHOT_DIR`` (where the pictures go), ``SHOT_SCENE`` (the product folder).
"""

import os
import tempfile

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface

OUT = os.environ["SHOT_DIR"]
SCENE = os.environ["SHOT_SCENE"]
WORK = tempfile.mkdtemp(prefix="geoseg-shots-")


def fail(message: str) -> None:
    with open(os.path.join(OUT, "screenshots.error"), "w") as f:
        f.write(message + "\n")
    QgsApplication.exit(1)


def run_algorithms() -> None:
    import processing

    try:
        mask = processing.run("geoseg:predict", {
            "SCENE": SCENE, "OUTPUT": os.path.join(WORK, "t33uub.mask.tif")})["OUTPUT"]
        polygons = processing.run("geoseg:vectorize", {
            "INPUT": mask, "MIN_AREA": 2000,
            "OUTPUT": os.path.join(WORK, "t33uub.gpkg")})["OUTPUT"]
    except Exception as exc:
        fail(f"the algorithms failed: {exc}")
        return
    window = iface.mainWindow()
    window.resize(1400, 860)
    raster = QgsRasterLayer(mask, "t33uub.mask")
    vector = QgsVectorLayer(polygons, "t33uub polygons", "ogr")
    vector.setOpacity(0.6)  # the polygons over the paletted mask
    for layer in (raster, vector):
        QgsProject.instance().addMapLayer(layer)
    iface.mapCanvas().setExtent(raster.extent())
    toolbox = window.findChild(object, "ProcessingToolbox")
    if toolbox is not None:
        toolbox.show()
        search = toolbox.findChild(object, "searchBox")
        if search is not None:
            search.setText("geoseg")
    iface.mapCanvas().refreshAllLayers()
    QTimer.singleShot(4000, shoot)


def shoot() -> None:
    import processing

    iface.mainWindow().grab().save(os.path.join(OUT, "qgis-map.png"))
    dialog = processing.createAlgorithmDialog("geoseg:predict", {"SCENE": SCENE})
    dialog.resize(900, 640)
    dialog.show()

    def grab() -> None:
        dialog.grab().save(os.path.join(OUT, "qgis-predict.png"))
        QgsApplication.exit(0)

    QTimer.singleShot(1500, grab)


QTimer.singleShot(3000, run_algorithms)
