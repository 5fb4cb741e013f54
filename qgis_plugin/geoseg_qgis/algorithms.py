"""geoseg's commands as Processing algorithms: predict, vectorize, run, train, evaluate,
models import and export, and an environment check.

Each algorithm turns its parameters into the command's flags and runs it out of process
(:mod:`.runner`). Layers given as inputs are read from their files; outputs are
destination parameters, and the mask and the polygons load styled as geoseg styles them
(the paletted classes, the categorized polygons, with class names).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputNumber,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMapLayer,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)

from . import runner

DEVICES = ["auto", "cpu", "cuda"]
EXPORT_FORMATS = ["onnx", "deepness", "smp"]


def layer_file(layer: Any) -> str:
    """A layer's file. geoseg reads whole files: a filtered layer, or one layer of a file
    that holds several, is refused in one line rather than read as another."""
    if layer is None:
        return ""
    path, _, options = layer.source().partition("|")
    if getattr(layer, "subsetString", lambda: "")():
        raise QgsProcessingException(
            f"{layer.name()}: is filtered ({layer.subsetString()}); geoseg reads whole "
            f"files: save the filtered features to a file of their own")
    if "layername=" in options or "layerid=" in options:
        from qgis.core import QgsProviderRegistry

        registry = QgsProviderRegistry.instance()
        if len(registry.querySublayers(path)) > 1:
            raise QgsProcessingException(
                f"{layer.name()}: is one of several layers of {path}; geoseg reads a "
                f"file's first layer: save this layer to a file of its own")
    return path


class Styler(QgsProcessingLayerPostProcessorInterface):
    """Loads the QGIS style geoseg wrote beside an output (``NAME.qml``) onto its layer."""

    kept: ClassVar[list[Styler]] = []  # QGIS holds no reference: they must outlive the run

    def __init__(self, qml: str) -> None:
        super().__init__()
        self.qml = qml

    def postProcessLayer(self, layer: Any, context: Any, feedback: Any) -> None:
        if layer is not None and os.path.exists(self.qml):
            layer.loadNamedStyle(self.qml)
            layer.triggerRepaint()

    @classmethod
    def attach(cls, context: QgsProcessingContext, output: str, qml: str) -> None:
        if context.willLoadLayerOnCompletion(output):
            styler = cls(qml)
            cls.kept.append(styler)
            context.layerToLoadOnCompletionDetails(output).setPostProcessor(styler)


def style_of(path: str) -> str:
    """The style geoseg writes beside ``path`` (``x.mask.tif`` → ``x.mask.qml``)."""
    return str(Path(path).with_suffix(".qml"))


class GeosegAlgorithm(QgsProcessingAlgorithm):
    """The common part: the geoseg group, and running the command."""

    NAME = ""
    TITLE = ""
    HELP = ""

    def name(self) -> str:
        return self.NAME

    def displayName(self) -> str:
        return self.TITLE

    def group(self) -> str:
        return "geoseg"

    def groupId(self) -> str:
        return "geoseg"

    def shortHelpString(self) -> str:
        return self.HELP

    def icon(self) -> Any:
        from qgis.PyQt.QtGui import QIcon

        return QIcon(os.path.join(os.path.dirname(__file__), "icon.svg"))

    def createInstance(self) -> GeosegAlgorithm:
        return type(self)()

    def geoseg(self, args: list[str], feedback: QgsProcessingFeedback) -> runner.Outcome:
        """Run ``geoseg ARGS``; its one-line error is this algorithm's error."""
        from .settings import configured_executable

        try:
            executable = runner.find_geoseg(configured_executable())
        except runner.GeosegNotFound as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback = feedback or QgsProcessingFeedback()
        outcome = runner.run(
            args, executable=executable,
            on_progress=lambda fraction, _stage: feedback.setProgress(100 * fraction),
            on_info=feedback.pushInfo, on_warning=feedback.reportError,
            is_cancelled=feedback.isCanceled)
        if outcome.cancelled:
            feedback.pushInfo("cancelled: geoseg stopped, and left no partial output")
        elif outcome.error:
            if outcome.returncode not in runner.OWN_EXIT_CODES:  # a crash, not a one-liner
                feedback.pushInfo("geoseg's environment, for a bug report:")
                for line in runner.doctor(executable):
                    feedback.pushInfo(line)
            raise QgsProcessingException(outcome.error)
        return outcome

    def add_running(self, *names: str) -> None:
        """The parameters of what runs where, by name: MODEL (a bundled name or a folder;
        auto chooses), DEVICE, SCHEDULER."""
        made = {
            "MODEL": lambda: QgsProcessingParameterString("MODEL", "Model",
                                                          defaultValue="auto"),
            "DEVICE": lambda: QgsProcessingParameterEnum("DEVICE", "Device", options=DEVICES,
                                                         defaultValue=0),
            "SCHEDULER": lambda: QgsProcessingParameterString("SCHEDULER", "Scheduler",
                                                              defaultValue="threads")}
        for name in names:
            self.addParameter(made[name]())

    def running(self, parameters: dict[str, Any], context: Any) -> list[tuple[str, Any]]:
        """The flags of the parameters :meth:`add_running` gave this algorithm."""
        flags = {
            "MODEL": ("--model", lambda: self.text(parameters, "MODEL", context) or "auto"),
            "DEVICE": ("--device",
                       lambda: DEVICES[self.parameterAsEnum(parameters, "DEVICE", context)]),
            "SCHEDULER": ("--scheduler",
                          lambda: self.text(parameters, "SCHEDULER", context) or "threads")}
        return [(flag, value()) for name, (flag, value) in flags.items()
                if self.parameterDefinition(name) is not None]

    def number(self, parameters: dict[str, Any], name: str, context: Any) -> int | None:
        """An optional whole-number parameter, None when not given (or 0)."""
        if parameters.get(name) in (None, ""):
            return None
        value = self.parameterAsInt(parameters, name, context)
        return value or None

    def text(self, parameters: dict[str, Any], name: str, context: Any) -> str:
        return (self.parameterAsString(parameters, name, context) or "").strip()


class Predict(GeosegAlgorithm):
    NAME, TITLE = "predict", "Predict land cover"
    HELP = ("Map the land cover of an image: a class mask (Cloud-Optimized GeoTIFF, its "
            "classes named and coloured) and optionally per-class probabilities. The "
            "image is a raster layer, or a scene given as text: a Sentinel-2 SAFE folder "
            "or zip, band files joined with +, or a STAC Item. Model: a bundled name "
            "(dynamic-world, default) or a model folder; auto chooses for the scene. "
            "Scheduler: threads, processes, local, or tcp://HOST:PORT for a Dask cluster.")

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer(
            "INPUT", "Image (raster layer)", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "SCENE", "Or a scene: SAFE folder or zip, band files joined with +, STAC Item",
            optional=True))
        self.add_running("MODEL")
        self.addParameter(QgsProcessingParameterNumber(
            "TILE_SIZE", "Tile size (px; 0: the model's)", QgsProcessingParameterNumber.Integer,
            defaultValue=0, minValue=0))
        self.addParameter(QgsProcessingParameterNumber(
            "OVERLAP", "Overlap (px; 0: the model's)", QgsProcessingParameterNumber.Integer,
            defaultValue=0, minValue=0))
        self.add_running("DEVICE", "SCHEDULER")
        self.addParameter(QgsProcessingParameterString(
            "MASK_WITH", "Mask with (MODEL:CLASS,…)", optional=True))
        self.addParameter(QgsProcessingParameterRasterDestination("OUTPUT", "Class mask"))
        self.addParameter(QgsProcessingParameterRasterDestination(
            "PROBABILITIES", "Probabilities", optional=True, createByDefault=False))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        scene = (self.text(parameters, "SCENE", context)
                 or layer_file(self.parameterAsRasterLayer(parameters, "INPUT", context)))
        if not scene:
            raise QgsProcessingException("give an image: a raster layer or a scene")
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        probabilities = self.parameterAsOutputLayer(parameters, "PROBABILITIES", context)
        args = ["predict", scene, "-o", output, "--overwrite", *runner.flag_args((
            *self.running(parameters, context),
            ("--tile-size", self.number(parameters, "TILE_SIZE", context)),
            ("--overlap", self.number(parameters, "OVERLAP", context)),
            ("--mask-with", self.text(parameters, "MASK_WITH", context)),
            ("--probabilities", probabilities)))]
        if self.geoseg(args, feedback).cancelled:
            return {}
        Styler.attach(context, output, style_of(output))
        return {"OUTPUT": output, "PROBABILITIES": probabilities or None}


class Vectorize(GeosegAlgorithm):
    NAME, TITLE = "vectorize", "Vectorize a class mask"
    HELP = ("Polygons of a class mask in a GeoPackage: class, true area (m²), and with "
            "the probabilities, mean confidence; styled as the mask is. Minimum area (m²) "
            "merges smaller polygons into their neighbour; simplify keeps shared borders "
            "shared. Classes: keep only these (ids or names, comma-separated).")

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Class mask"))
        self.addParameter(QgsProcessingParameterRasterLayer(
            "PROBABILITIES", "Probabilities (adds confidence)", optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_AREA", "Minimum area (m²)", QgsProcessingParameterNumber.Double,
            defaultValue=0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterNumber(
            "SIMPLIFY", "Simplify (map units)", QgsProcessingParameterNumber.Double,
            defaultValue=0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterString("CLASSES", "Classes", optional=True))
        self.addParameter(QgsProcessingParameterVectorDestination(
            "OUTPUT", "Polygons", type=QgsProcessing.TypeVectorPolygon,
            defaultValue=None))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        mask = layer_file(self.parameterAsRasterLayer(parameters, "INPUT", context))
        output = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        if not output.lower().endswith(".gpkg"):
            output = str(Path(output).with_suffix(".gpkg"))
        probabilities = layer_file(self.parameterAsRasterLayer(parameters, "PROBABILITIES",
                                                               context))
        min_area = self.parameterAsDouble(parameters, "MIN_AREA", context)
        simplify = self.parameterAsDouble(parameters, "SIMPLIFY", context)
        args = ["vectorize", mask, "-o", output, "--overwrite", *runner.flag_args((
            ("--probabilities", probabilities),
            ("--min-area", min_area or None), ("--simplify", simplify or None),
            ("--classes", self.text(parameters, "CLASSES", context))))]
        if self.geoseg(args, feedback).cancelled:
            return {}
        Styler.attach(context, output, style_of(output))
        return {"OUTPUT": output}


class Run(GeosegAlgorithm):
    NAME, TITLE = "run", "Map many scenes"
    HELP = ("Predict and vectorize every scene of a folder or glob (or s3:// prefix) into "
            "an output folder, with summary.json; resume finishes an earlier run. A "
            "scheduler tcp://HOST:PORT sends the scenes to a Dask cluster.")

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterString("SCENES", "Scenes (folder or glob)"))
        self.add_running("MODEL")
        self.addParameter(QgsProcessingParameterBoolean("PROBABILITIES", "Probabilities",
                                                        defaultValue=False))
        self.addParameter(QgsProcessingParameterNumber(
            "MIN_AREA", "Minimum polygon area (m²)", QgsProcessingParameterNumber.Double,
            defaultValue=0.0, minValue=0.0))
        self.addParameter(QgsProcessingParameterBoolean("RESUME", "Resume", defaultValue=True))
        self.add_running("DEVICE", "SCHEDULER")
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Output folder"))
        self.addOutput(QgsProcessingOutputString("SUMMARY", "Summary (summary.json)"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        output = self.parameterAsString(parameters, "OUTPUT", context)
        min_area = self.parameterAsDouble(parameters, "MIN_AREA", context)
        resume = self.parameterAsBool(parameters, "RESUME", context)
        args = ["run", self.text(parameters, "SCENES", context), "-o", output,
                "--resume" if resume else "--no-resume", *runner.flag_args((
                    *self.running(parameters, context),
                    ("--probabilities",
                     self.parameterAsBool(parameters, "PROBABILITIES", context)),
                    ("--min-area", min_area or None)))]
        if self.geoseg(args, feedback).cancelled:
            return {}
        return {"OUTPUT": output, "SUMMARY": str(Path(output) / "summary.json")}


class Train(GeosegAlgorithm):
    NAME, TITLE = "train", "Train a model"
    HELP = ("Train a U-Net on an image and its labels: a class raster or polygons with a "
            "class field. Without labels, a teacher model (for example dynamic-world) "
            "labels the image with its confident pixels. The model folder is a model for "
            "Predict land cover.")

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("IMAGE", "Image"))
        self.addParameter(QgsProcessingParameterMapLayer(
            "LABELS", "Labels (class raster or polygons)", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "CLASS_FIELD", "Class field of the polygons", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "LABELS_FROM", "Or a teacher model (labels from its confident pixels)",
            optional=True))
        self.addParameter(QgsProcessingParameterNumber(
            "EPOCHS", "Epochs", QgsProcessingParameterNumber.Integer, defaultValue=20,
            minValue=1))
        self.addParameter(QgsProcessingParameterNumber(
            "CHIP_SIZE", "Chip size (px)", QgsProcessingParameterNumber.Integer,
            defaultValue=256, minValue=16))
        self.add_running("DEVICE")
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Model folder"))
        self.addOutput(QgsProcessingOutputNumber("VAL_MIOU", "Validation mIoU"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        import json

        output = self.parameterAsString(parameters, "OUTPUT", context)
        args = ["train", layer_file(self.parameterAsRasterLayer(parameters, "IMAGE", context)),
                "-o", output, "--overwrite", *runner.flag_args((
                    ("--labels",
                     layer_file(self.parameterAsLayer(parameters, "LABELS", context))),
                    ("--class-field", self.text(parameters, "CLASS_FIELD", context)),
                    ("--labels-from", self.text(parameters, "LABELS_FROM", context)),
                    ("--epochs", self.parameterAsInt(parameters, "EPOCHS", context)),
                    ("--chip-size", self.parameterAsInt(parameters, "CHIP_SIZE", context)),
                    *self.running(parameters, context)))]
        if self.geoseg(args, feedback).cancelled:
            return {}
        card = json.loads((Path(output) / "model.json").read_text())
        return {"OUTPUT": output, "VAL_MIOU": card["metrics"]["val_miou"]}


class Evaluate(GeosegAlgorithm):
    NAME, TITLE = "evaluate", "Evaluate a class mask"
    HELP = ("Score a class mask against reference labels (a class raster or polygons with "
            "a class field): per-class IoU, F1, precision and recall, mIoU and overall "
            "accuracy, written as JSON.")

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterRasterLayer("INPUT", "Class mask"))
        self.addParameter(QgsProcessingParameterMapLayer(
            "LABELS", "Reference labels (class raster or polygons)"))
        self.addParameter(QgsProcessingParameterString(
            "CLASS_FIELD", "Class field of the polygons", optional=True))
        self.addParameter(QgsProcessingParameterString(
            "LABEL_MAP", "Label map (CODE=NAME,…)", optional=True))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", "Scores", fileFilter="JSON (*.json)"))
        self.addOutput(QgsProcessingOutputNumber("MIOU", "mIoU"))
        self.addOutput(QgsProcessingOutputNumber("OVERALL_ACCURACY", "Overall accuracy"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        import json

        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        args = ["evaluate", layer_file(self.parameterAsRasterLayer(parameters, "INPUT", context)),
                "--labels", layer_file(self.parameterAsLayer(parameters, "LABELS", context)),
                "-o", output, "--overwrite", *runner.flag_args((
                    ("--class-field", self.text(parameters, "CLASS_FIELD", context)),
                    ("--label-map", self.text(parameters, "LABEL_MAP", context))))]
        if self.geoseg(args, feedback).cancelled:
            return {}
        scores = json.loads(Path(output).read_text())
        return {"OUTPUT": output, "MIOU": scores["miou"],
                "OVERALL_ACCURACY": scores["overall_accuracy"]}


class ImportModel(GeosegAlgorithm):
    NAME, TITLE = "import_model", "Import a model"
    HELP = ("Import a model from elsewhere (ONNX with Deepness or ukis metadata, an smp "
            "folder, a state-dict checkpoint) into a geoseg model folder. Further options "
            "of `geoseg models import` (--classes, --bands, --scale…) go in Options.")

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterFile(
            "INPUT", "Model file", behavior=QgsProcessingParameterFile.File))
        self.addParameter(QgsProcessingParameterString("OPTIONS", "Options", optional=True))
        self.addParameter(QgsProcessingParameterFolderDestination("OUTPUT", "Model folder"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        import shlex
        import sys

        output = self.parameterAsString(parameters, "OUTPUT", context)
        options = shlex.split(self.text(parameters, "OPTIONS", context),
                              posix=sys.platform != "win32")  # Windows paths keep their \\
        args = ["models", "import", self.parameterAsFile(parameters, "INPUT", context),
                "-o", output, "--overwrite", *options]
        if self.geoseg(args, feedback).cancelled:
            return {}
        return {"OUTPUT": output}


class ExportModel(GeosegAlgorithm):
    NAME, TITLE = "export_model", "Export a model"
    HELP = ("Export a geoseg model (bundled name or folder) for other tools: ONNX, the "
            "Deepness plugin's ONNX with its metadata, or an smp folder.")

    def initAlgorithm(self, config: Any = None) -> None:
        self.addParameter(QgsProcessingParameterString("MODEL", "Model",
                                                       defaultValue="dynamic-world"))
        self.addParameter(QgsProcessingParameterEnum(
            "FORMAT", "Format", options=EXPORT_FORMATS, defaultValue=1))
        self.addParameter(QgsProcessingParameterFileDestination(
            "OUTPUT", "Exported model", fileFilter="ONNX (*.onnx)"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        output = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        args = ["models", "export", self.text(parameters, "MODEL", context), "-o", output,
                "--format", EXPORT_FORMATS[self.parameterAsEnum(parameters, "FORMAT", context)],
                "--overwrite"]
        if self.geoseg(args, feedback).cancelled:
            return {}
        return {"OUTPUT": output}


class CheckEnvironment(GeosegAlgorithm):
    NAME, TITLE = "doctor", "Check environment"
    HELP = ("Find geoseg (the plugin's setting, $GEOSEG_EXECUTABLE or PATH) and report "
            "its environment: versions of geoseg, Python, GDAL, PROJ, rasterio, torch, "
            "ONNX Runtime and Dask, CUDA and GPUs, the model cache and write access.")

    def initAlgorithm(self, config: Any = None) -> None:
        self.addOutput(QgsProcessingOutputString("REPORT", "Report"))
        self.addOutput(QgsProcessingOutputString("EXECUTABLE", "geoseg executable"))

    def processAlgorithm(self, parameters: dict[str, Any], context: QgsProcessingContext,
                         feedback: QgsProcessingFeedback) -> dict[str, Any]:
        from .settings import configured_executable

        try:
            executable = runner.find_geoseg(configured_executable())
        except runner.GeosegNotFound as exc:
            raise QgsProcessingException(str(exc)) from None
        outcome = self.geoseg(["doctor"], feedback)
        return {"REPORT": "\n".join(outcome.stdout), "EXECUTABLE": executable}


ALGORITHMS = (Predict, Vectorize, Run, Train, Evaluate, ImportModel, ExportModel,
              CheckEnvironment)
