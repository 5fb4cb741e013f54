"""geoseg: tiled land-cover segmentation of large georeferenced rasters.

The public API is loaded lazily so that ``import geoseg`` (and ``geoseg --help``) stays
fast; torch is imported only when a model is needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "predict": "geoseg.pipeline",
    "vectorize": "geoseg.vector",
    "run": "geoseg.batch",
    "evaluate": "geoseg.metrics",
    "train": "geoseg.training",
    "load_model": "geoseg.model",
    "Model": "geoseg.model",
    "ModelSpec": "geoseg.model",
    "sample_scene": "geoseg.synthetic",
    "write_sample_data": "geoseg.synthetic",
    "open_source": "geoseg.raster",
    "TileGrid": "geoseg.tiling",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
