"""Run by tests/test_qgis.py with the system python3 that has PyQGIS (not by pytest).

``qgis_render.py [--size=WxH] OUT.png LAYER...``: loads each layer in headless QGIS as a user opening
the file would (a raster with its default .qml style; a GeoPackage layer, given as
``file.gpkg|layername=NAME``, with the style QGIS finds in the file itself), prints what
QGIS sees as JSON, and renders all layers together to the PNG.
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
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize

app = QgsApplication([], False)
app.initQgis()
args = sys.argv[1:]
size = (256, 256)
if args[0].startswith("--size="):  # --size=WIDTHxHEIGHT of the picture
    size = tuple(int(v) for v in args.pop(0)[7:].split("x"))
png_path, paths = args[0], args[1:]
layers, report = [], []
for path in paths:
    if ".gpkg" in path:
        layer = QgsVectorLayer(path, "polygons", "ogr")  # loads the default style itself
        renderer = layer.renderer()
        categorized = renderer is not None and renderer.type() == "categorizedSymbol"
        info = {
            "kind": "vector",
            "renderer": renderer.type() if renderer else None,
            "field": renderer.classAttribute() if categorized else None,
            "classes": [[int(c.value()), c.label(), c.symbol().color().name()]
                        for c in renderer.categories()] if categorized else [],
            "features": layer.featureCount(),
        }
    else:
        layer = QgsRasterLayer(path, "mask")
        _, style_loaded = layer.loadDefaultStyle()
        renderer = layer.renderer()
        info = {
            "kind": "raster",
            "style_loaded": style_loaded,
            "renderer": renderer.type(),
            "classes": [[int(c.value), c.label, c.color.name()] for c in renderer.classes()],
        }
    info.update(valid=layer.isValid(), crs=layer.crs().authid())
    layers.append(layer)
    report.append(info)
settings = QgsMapSettings()
settings.setLayers(layers)
settings.setExtent(layers[0].extent())
settings.setOutputSize(QSize(*size))
settings.setDestinationCrs(layers[0].crs())
job = QgsMapRendererParallelJob(settings)
job.start()
job.waitForFinished()
print(json.dumps({"layers": report, "saved": job.renderedImage().save(png_path)}))
sys.stdout.flush()
os._exit(0)  # QgsApplication.exitQgis() crashes headless
