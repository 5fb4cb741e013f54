"""The geoseg Processing provider: its algorithms in the toolbox, the Graphical Modeler,
batch mode and qgis_process."""

from __future__ import annotations

import contextlib
import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from . import settings
from .algorithms import ALGORITHMS

ICON = os.path.join(os.path.dirname(__file__), "icon.svg")


class GeosegProvider(QgsProcessingProvider):
    def id(self) -> str:
        return "geoseg"

    def name(self) -> str:
        return "geoseg"

    def longName(self) -> str:
        return "geoseg: land cover with deep learning"

    def icon(self) -> QIcon:
        return QIcon(ICON)

    def svgIconPath(self) -> str:
        return ICON

    def load(self) -> bool:
        with contextlib.suppress(ImportError):  # no Processing plugin: no settings page
            settings.register()
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        with contextlib.suppress(ImportError):
            settings.unregister()

    def supportedOutputVectorLayerExtensions(self) -> list[str]:
        return ["gpkg"]  # geoseg writes polygons as GeoPackages

    def loadAlgorithms(self) -> None:
        for algorithm in ALGORITHMS:
            self.addAlgorithm(algorithm())
