"""Run by tests/test_qgis.py with the system python3 that has PyQGIS (not by pytest).

Loads a geoseg mask in headless QGIS with its default (.qml) style, prints what QGIS sees
as JSON, and renders the layer to a PNG.
"""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QSize

app = QgsApplication([], False)
app.initQgis()
mask_path, png_path = sys.argv[1], sys.argv[2]
layer = QgsRasterLayer(mask_path, "mask")
_, style_loaded = layer.loadDefaultStyle()
renderer = layer.renderer()
settings = QgsMapSettings()
settings.setLayers([layer])
settings.setExtent(layer.extent())
settings.setOutputSize(QSize(256, 256))
settings.setDestinationCrs(layer.crs())
job = QgsMapRendererParallelJob(settings)
job.start()
job.waitForFinished()
print(json.dumps({
    "valid": layer.isValid(),
    "crs": layer.crs().authid(),
    "style_loaded": style_loaded,
    "renderer": renderer.type(),
    "classes": [[int(c.value), c.label, c.color.name()] for c in renderer.classes()],
    "saved": job.renderedImage().save(png_path),
}))
sys.stdout.flush()
os._exit(0)  # QgsApplication.exitQgis() crashes headless
