"""The plugin: registers the provider in ``initProcessing`` (so ``qgis_process`` sees it
with no GUI), and in the GUI a menu entry that checks geoseg's environment."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication

from .provider import GeosegProvider


class GeosegPlugin:
    def __init__(self, iface: Any) -> None:
        self.iface = iface
        self.provider: GeosegProvider | None = None
        self.action: Any = None

    def initProcessing(self) -> None:
        self.provider = GeosegProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        self.initProcessing()
        if self.iface is None:
            return
        from qgis.PyQt.QtGui import QIcon
        from qgis.PyQt.QtWidgets import QAction

        from .provider import ICON

        self.action = QAction(QIcon(ICON), "Check geoseg environment…",
                              self.iface.mainWindow())
        self.action.triggered.connect(self.check_environment)
        self.iface.addPluginToMenu("geoseg", self.action)

    def unload(self) -> None:
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        if self.action is not None and self.iface is not None:
            self.iface.removePluginMenu("geoseg", self.action)

    def check_environment(self) -> None:
        """Run the environment check and show its report."""
        from qgis.PyQt.QtWidgets import QMessageBox

        from . import runner
        from .settings import configured_executable

        try:
            executable = runner.find_geoseg(configured_executable())
            report = "\n".join([f"geoseg: {executable}", *runner.doctor(executable)])
        except runner.GeosegNotFound as exc:
            report = str(exc)
        QMessageBox.information(self.iface.mainWindow(), "geoseg environment", report)
