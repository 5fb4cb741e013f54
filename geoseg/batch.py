"""``geoseg run``: predict and vectorize one or many scenes into an output folder.

Each scene (a GeoTIFF, a VRT or a folder of mosaic tiles) gives ``NAME.mask.tif`` (+ its
``.qml``), ``NAME.gpkg`` (+ its ``.qml``) and on request ``NAME.prob.tif`` and
``NAME.png``; ``summary.json`` lists every scene with the area of each class, and the
same table is printed. Every output of every scene is checked before any work starts.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg import __version__, atomic
from geoseg.errors import InputError

if TYPE_CHECKING:
    from geoseg.vector import Tally

SUMMARY = "summary.json"


@dataclass(frozen=True)
class SceneOutputs:
    """Where one scene's outputs go."""

    name: str
    source: str
    mask: Path
    gpkg: Path
    probabilities: Path | None
    quicklook: Path | None

    def all(self) -> list[Path]:
        from geoseg.pipeline import qml_path as mask_qml
        from geoseg.vector import qml_path as gpkg_qml

        paths = [self.mask, mask_qml(self.mask), self.gpkg, gpkg_qml(self.gpkg),
                 self.probabilities, self.quicklook]
        return [p for p in paths if p is not None]


def scene_name(source: str | os.PathLike[str]) -> str:
    """``data/scene_7.tif`` → ``scene_7``; a folder of tiles is named after the folder."""
    p = Path(source)
    return p.name if p.is_dir() else p.name.split(".")[0] or p.stem


def plan(sources: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
         probabilities: bool, quicklook: bool) -> list[SceneOutputs]:
    if not sources:
        raise InputError("no input scene given")
    out = Path(out_dir)
    scenes, seen = [], {}
    for src in sources:
        name = scene_name(src)
        if name in seen:
            raise InputError(f"has the same name as {seen[name]}; their outputs would "
                             f"collide in {out}", src)
        seen[name] = str(src)
        scenes.append(SceneOutputs(
            name, str(src), out / f"{name}.mask.tif", out / f"{name}.gpkg",
            out / f"{name}.prob.tif" if probabilities else None,
            out / f"{name}.png" if quicklook else None))
    return scenes


def run(
    sources: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    model: str | os.PathLike[str] = "default",
    *,
    probabilities: bool = False,
    quicklook: bool = False,
    min_area: float = 0.0,
    simplify: float = 0.0,
    classes: Sequence[int | str] | None = None,
    overwrite: bool = False,
    scheduler: str = "threads",
    workers: int | None = None,
    progress: bool = False,
    report: Callable[[str], None] | None = None,
    **predict_options: Any,
) -> dict[str, Any]:
    """Predict and vectorize every scene of ``sources`` into ``out_dir``.

    ``predict_options`` go to :func:`geoseg.predict` (tile_size, overlap, batch_size,
    device, bands, tta, allow_no_crs). Returns the summary also written to
    ``out_dir/summary.json``; ``report`` receives a line of text as each scene finishes.
    """
    from geoseg.model import load_model
    from geoseg.pipeline import predict
    from geoseg.vector import iter_layers, write_gpkg

    scenes = plan(sources, out_dir, probabilities=probabilities, quicklook=quicklook)
    summary_path = Path(out_dir) / SUMMARY
    atomic.check_outputs([*(p for s in scenes for p in s.all()), summary_path],
                         overwrite=overwrite)
    loaded = load_model(model)
    done = []
    for scene in scenes:
        started = time.perf_counter()
        predict(scene.source, scene.mask, loaded, probabilities_path=scene.probabilities,
                quicklook=scene.quicklook, overwrite=overwrite, scheduler=scheduler,
                workers=workers, progress=progress, **predict_options)
        batches = iter_layers(scene.mask, probabilities=scene.probabilities,
                              min_area=min_area, simplify=simplify, classes=classes,
                              scheduler=scheduler, workers=workers, progress=progress,
                              allow_no_crs=bool(predict_options.get("allow_no_crs")))
        tally = write_gpkg(batches, scene.gpkg, overwrite=overwrite)
        entry = {"name": scene.name, "source": scene.source,
                 "outputs": {k: str(v) for k, v in (
                     ("mask", scene.mask), ("gpkg", scene.gpkg),
                     ("probabilities", scene.probabilities),
                     ("quicklook", scene.quicklook)) if v is not None},
                 "crs": tally.crs, "seconds": round(time.perf_counter() - started, 2),
                 "classes": class_areas(tally)}
        done.append(entry)
        if report:
            report(format_scene(entry))
    summary = {"geoseg": __version__, "model": loaded.spec.name,
               "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                   timespec="seconds"),
               "options": {"min_area_m2": min_area, "simplify": simplify,
                           "classes": list(classes) if classes else None},
               "scenes": done}
    with atomic.atomic_path(summary_path, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def class_areas(tally: Tally) -> list[dict[str, Any]]:
    """Polygons, area and share of the mapped area, per class (every class listed)."""
    total = float(tally.area_m2.sum())
    rows = []
    for k, name in enumerate(tally.class_names):
        area = float(tally.area_m2[k]) if k < len(tally.area_m2) else 0.0
        rows.append({"class_id": k, "class_name": name,
                     "polygons": int(tally.polygons[k]) if k < len(tally.polygons) else 0,
                     "area_m2": round(area, 2), "share": round(area / total, 6) if total else 0.0})
    return rows


def format_scene(entry: dict[str, Any]) -> str:
    """A scene's class table as text (areas in hectares)."""
    lines = [f"{entry['name']} ({entry['seconds']:.1f} s)"]
    lines += [f"  {kind}: {path}" for kind, path in entry["outputs"].items()]
    lines.append(f"  {'class':<16} {'polygons':>9} {'area (ha)':>12} {'share':>7}")
    for row in entry["classes"]:
        lines.append(f"  {row['class_name']:<16} {row['polygons']:>9} "
                     f"{row['area_m2'] / 1e4:>12.2f} {row['share']:>7.1%}")
    return "\n".join(lines)
