"""Drive geoseg's QGIS plugin in real QGIS, headless (run by the system python3 that has
PyQGIS; ``tests/test_qgis_plugin.py`` calls it). Prints one JSON object.

    qgis_plugin_run.py run ALGORITHM PARAMETERS_JSON [--cancel-at-progress]
    qgis_plugin_run.py layer PATH            # how QGIS loads and styles a file
    qgis_plugin_run.py model OUT.model3      # save predict → vectorize as a model
"""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterRasterLayer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "qgis_plugin")


class Recorder(QgsProcessingFeedback):
    """Keeps what the algorithm reports; cancels at its first progress above 0 when asked."""

    def __init__(self, cancel_at_progress: bool) -> None:
        super().__init__()
        self.values: list[float] = []
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.cancel_at_progress = cancel_at_progress
        self.progressChanged.connect(self.on_progress)

    def on_progress(self, value: float) -> None:
        self.values.append(round(value, 2))
        if self.cancel_at_progress and value > 0 and not self.isCanceled():
            self.cancel()

    def pushInfo(self, info: str) -> None:
        self.lines.append(info)

    def reportError(self, error: str, fatalError: bool = False) -> None:
        self.errors.append(error)


def start() -> QgsApplication:
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.insert(0, PLUGINS)
    sys.path.insert(0, "/usr/share/qgis/python/plugins")
    from processing.core.Processing import Processing

    Processing.initialize()
    from geoseg_qgis.provider import GeosegProvider

    app.geoseg_provider = GeosegProvider()  # kept: PyQGIS does not own it
    assert QgsApplication.processingRegistry().addProvider(app.geoseg_provider)
    return app


def run(algorithm: str, parameters: dict, cancel: bool) -> dict:
    import processing
    from qgis.core import QgsProcessingException

    feedback = Recorder(cancel)
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    out = {"progress": feedback.values, "log": feedback.lines, "warnings": feedback.errors}
    try:
        out["results"] = {k: v for k, v in processing.run(
            algorithm, parameters, context=context, feedback=feedback).items()
            if isinstance(v, (str, int, float, type(None)))}
    except QgsProcessingException as exc:
        out["error"] = str(exc)
    out["cancelled"] = feedback.isCanceled()
    return out


def layer(path: str) -> dict:
    if path.endswith(".gpkg"):
        vector = QgsVectorLayer(path, "polygons", "ogr")
        renderer = vector.renderer()
        return {"valid": vector.isValid(), "renderer": renderer.type(),
                "categories": [c.label() for c in renderer.categories()]
                if renderer.type() == "categorizedSymbol" else [],
                "features": vector.featureCount()}
    raster = QgsRasterLayer(path, "mask")
    renderer = raster.renderer()
    classes = renderer.classes() if renderer.type() == "paletted" else []
    return {"valid": raster.isValid(), "renderer": renderer.type(),
            "classes": [c.label for c in classes],
            "colors": [c.color.name() for c in classes]}


def model(path: str) -> dict:
    """predict → vectorize, with the image as the model's one input."""
    m = QgsProcessingModelAlgorithm("map land cover", "geoseg")
    image = QgsProcessingModelParameter("image")
    m.addModelParameter(QgsProcessingParameterRasterLayer("image", "Image"), image)
    predict = QgsProcessingModelChildAlgorithm("geoseg:predict")
    predict.setChildId("predict")
    predict.addParameterSources("INPUT", [
        QgsProcessingModelChildParameterSource.fromModelParameter("image")])
    predict.addParameterSources("MODEL", [
        QgsProcessingModelChildParameterSource.fromStaticValue("default")])
    predict.addParameterSources("TILE_SIZE", [
        QgsProcessingModelChildParameterSource.fromStaticValue(256)])
    vectorize = QgsProcessingModelChildAlgorithm("geoseg:vectorize")
    vectorize.setChildId("vectorize")
    vectorize.addParameterSources("INPUT", [
        QgsProcessingModelChildParameterSource.fromChildOutput("predict", "OUTPUT")])
    polygons = QgsProcessingModelOutput("polygons")
    polygons.setChildOutputName("OUTPUT")
    polygons.setChildId("vectorize")
    vectorize.setModelOutputs({"polygons": polygons})
    m.addChildAlgorithm(predict)
    m.addChildAlgorithm(vectorize)
    m.updateDestinationParameters()
    return {"saved": m.toFile(path), "parameters": [p.name() for p in m.parameterDefinitions()]}


def main() -> None:
    app = start()
    command = sys.argv[1]
    if command == "run":
        out = run(sys.argv[2], json.loads(sys.argv[3]), "--cancel-at-progress" in sys.argv)
    elif command == "layer":
        out = layer(sys.argv[2])
    else:
        out = model(sys.argv[2])
    print(json.dumps(out))
    app.exitQgis()


if __name__ == "__main__":
    main()
