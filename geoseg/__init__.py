"""geoseg: tiled land-cover segmentation of large georeferenced rasters.

The public API is loaded lazily so that ``import geoseg`` (and ``geoseg --help``) stays
fast; torch is imported only when a model is needed. Type checkers see the real names
(the imports under ``TYPE_CHECKING``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from geoseg.batch import run
    from geoseg.evaluation import evaluate
    from geoseg.model import Model, ModelSpec, load_model
    from geoseg.model_export import export_model
    from geoseg.model_import import import_model
    from geoseg.prediction import predict
    from geoseg.sources import open_source
    from geoseg.synthetic import sample_scene, write_sample_data
    from geoseg.tiling import TileGrid
    from geoseg.training import train
    from geoseg.vector import vectorize

_API = {
    "predict": "geoseg.prediction",
    "vectorize": "geoseg.vector",
    "run": "geoseg.batch",
    "evaluate": "geoseg.evaluation",
    "train": "geoseg.training",
    "load_model": "geoseg.model",
    "import_model": "geoseg.model_import",
    "export_model": "geoseg.model_export",
    "Model": "geoseg.model",
    "ModelSpec": "geoseg.model",
    "sample_scene": "geoseg.synthetic",
    "write_sample_data": "geoseg.synthetic",
    "open_source": "geoseg.sources",
    "TileGrid": "geoseg.tiling",
}

__all__ = ["Model", "ModelSpec", "TileGrid", "__version__", "evaluate", "export_model",
           "import_model", "load_model", "open_source", "predict", "run", "sample_scene",
           "train", "vectorize", "write_sample_data"]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
