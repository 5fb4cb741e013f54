"""Which scenes a batch run has, and where each one's outputs go.

A scene is a GeoTIFF, a VRT, a folder of mosaic tiles or of one product's band files, a
band stack (``B02.tif+B03.tif+…``), a Sentinel-2 SAFE product (folder or zip) or a STAC
Item; an ItemCollection or a folder of Items is one scene per Item. Arguments may also be
glob patterns or text lists of scenes. Each scene is named after its file (without the
raster suffix), its folder, its product, what its band files' names share, or its Item's
id; its outputs are ``OUT/NAME.mask.tif``,
``OUT/NAME.gpkg`` and so on.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from geoseg import safe, stac, storage
from geoseg.errors import InputError
from geoseg.gdal import is_gdal_path
from geoseg.styles import style_name, style_path

LIST_SUFFIXES = (".txt", ".lst")
RASTER_SUFFIXES = (".tif", ".tiff", ".vrt", ".jp2", ".img", ".nc", ".hdf", ".ecw", ".sid")


Output = Path | str  # a local path, or an s3:// URL


@dataclass(frozen=True)
class SceneOutputs:
    """Where one scene's outputs go: local paths, or URLs in object storage."""

    name: str
    source: str
    mask: Output
    gpkg: Output
    probabilities: Output | None
    quicklook: Output | None

    def files(self) -> dict[str, Output]:
        """Every output file by kind (styles included)."""
        files = {"mask": self.mask, "mask_style": _style(self.mask), "gpkg": self.gpkg,
                 "gpkg_style": _style(self.gpkg), "probabilities": self.probabilities,
                 "quicklook": self.quicklook}
        return {k: p for k, p in files.items() if p is not None}

    def all(self) -> list[Output]:
        return list(self.files().values())

    def in_folder(self, folder: Path) -> SceneOutputs:
        """The same outputs, by the same names, in the local ``folder``."""
        def there(p: Output | None) -> Path | None:
            return None if p is None else folder / os.path.basename(p)

        mask, gpkg = there(self.mask), there(self.gpkg)
        assert mask is not None and gpkg is not None
        return SceneOutputs(self.name, self.source, mask, gpkg, there(self.probabilities),
                            there(self.quicklook))


def _style(layer: Output) -> Output:
    return style_name(layer) if isinstance(layer, str) else style_path(layer)


def join(folder: Output, name: str) -> Output:
    """``name`` in a local folder, or under an ``s3://`` prefix."""
    return f"{folder.rstrip('/')}/{name}" if isinstance(folder, str) else folder / name


def expand_sources(items: Sequence[str | os.PathLike[str]]) -> list[str]:
    """Scenes from arguments: paths (files, VRTs, folders of tiles), glob patterns such as
    ``'tiles/*.tif'`` or ``'s3://bucket/scenes/**/*.tif'`` (quoted, so thousands of files
    pass no shell limit) and text lists (``.txt``/``.lst``: one path or pattern per line,
    ``#`` comments)."""
    scenes: list[str] = []
    for item in items:
        text = os.fspath(item)
        if Path(text).suffix.lower() in LIST_SUFFIXES and Path(text).is_file():
            try:
                lines = Path(text).read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise InputError(f"cannot read the list of scenes ({exc})", text) from None
            entries = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            if not entries:
                raise InputError("lists no scene", text)
            scenes += [s for e in entries for s in _expand_one(e)]
        else:
            scenes += _expand_one(text)
    return scenes


def _expand_one(text: str) -> list[str]:
    if storage.has_magic(text):  # listed in the bucket: each object is a scene
        return [s for m in storage.glob(text) for s in _items(m)]
    # The '?' of a signed URL is no wildcard.
    if not is_gdal_path(text) and glob.has_magic(text) and not Path(text).exists():
        matches = sorted(glob.glob(text, recursive=True))
        if not matches:
            raise InputError("matches no file", text)
        return [s for m in matches for s in _items(m)]
    return _items(text)


def _items(text: str) -> list[str]:
    """A STAC document or a folder of Items as one ``HREF#ID`` per Item; else ``text``."""
    from geoseg.sources import is_item

    if is_item(text):
        return stac.scene_refs(text)
    return [text]


def scene_name(source: str | os.PathLike[str]) -> str:
    """``data/scene_7.tif`` → ``scene_7``, ``ortho.2024-05.tif`` → ``ortho.2024-05``; a
    folder of tiles is named after the folder."""
    text = os.fspath(source)
    _, item_id = stac.split(text)
    if item_id is not None:
        return item_id
    if stac.is_stac(text):
        return stac.read_item(text)[0].id
    parts = stack_parts(text)
    if len(parts) > 1:
        from geoseg.sources import stack_name

        return stack_name(parts)
    if is_gdal_path(text):
        text = text.split("?")[0]  # a signed URL's query is not part of the name
    elif safe.is_product(Path(text)):
        return safe.product_name(Path(text))
    p = Path(text)
    if p.is_dir():
        return Path(os.path.abspath(p)).name
    return p.stem if p.suffix.lower() in RASTER_SUFFIXES else p.name


def stack_parts(text: str) -> list[str]:
    """The files of a band stack ``A+B+C`` (:func:`geoseg.sources.stack_parts`, ``NAME=``
    prefixes dropped); ``[text]`` for anything else."""
    from geoseg.sources import part_path
    from geoseg.sources import stack_parts as parts

    return [part_path(p) for p in parts(text)]


def scene_files(source: str) -> list[Path]:
    """The local files a scene is read from (a stack's band files, an Item's JSON), so
    that a resumed run sees when one changed; a folder stands for its files."""
    href, _ = stac.split(source)
    return [Path(p) for p in stack_parts(href) if not is_gdal_path(p)]


def _absolute_part(part: str) -> str:
    from geoseg.sources import part_path

    path = part_path(part)
    prefix = part[:len(part) - len(path)]  # "NAME=" or ""
    return prefix + (path if is_gdal_path(path) else os.path.abspath(path))


def absolute(scene: SceneOutputs) -> SceneOutputs:
    """The scene with absolute paths, for workers that run in another directory."""
    def whole(p: Output | None) -> Output | None:
        return p if p is None or storage.is_url(p) else Path(os.path.abspath(p))

    source = scene.source
    href, item_id = stac.split(source)
    from geoseg.sources import stack_parts as parts_of

    parts = parts_of(href)
    if len(parts) > 1:
        source = "+".join(_absolute_part(p) for p in parts)
    elif not is_gdal_path(href):
        source = os.path.abspath(href) + (f"#{item_id}" if item_id else "")
    mask, gpkg = whole(scene.mask), whole(scene.gpkg)
    assert mask is not None and gpkg is not None
    return SceneOutputs(scene.name, source, mask, gpkg, whole(scene.probabilities),
                        whole(scene.quicklook))


def plan(sources: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
         probabilities: bool, quicklook: bool) -> list[SceneOutputs]:
    """Name each scene and place its outputs in ``out_dir`` (a folder, or an ``s3://``
    prefix); two scenes of one name are an error, as their outputs would collide."""
    if not sources:
        raise InputError("no input scene given")
    out: Output = (os.fspath(out_dir).rstrip("/") if storage.is_url(os.fspath(out_dir))
                   else Path(out_dir))
    scenes: list[SceneOutputs] = []
    owner: dict[str, str] = {}  # output file name -> the source that writes it
    for src in sources:
        name = scene_name(src)
        if not name or name.startswith("."):
            raise InputError("cannot name its outputs after it (give the file or folder by "
                             "a name that does not start with a dot)", src)
        if f"{name}.mask.tif" in owner:
            raise InputError(f"has the same name as {owner[f'{name}.mask.tif']}; their "
                             f"outputs would collide in {out}", src)
        scene = SceneOutputs(name, str(src), join(out, f"{name}.mask.tif"),
                             join(out, f"{name}.gpkg"),
                             join(out, f"{name}.prob.tif") if probabilities else None,
                             join(out, f"{name}.png") if quicklook else None)
        for path in scene.all():  # x.tif and x.mask.tif would both write x.mask.qml
            file = os.path.basename(path)
            if file in owner:
                raise InputError(f"would write {file} in {out}, as {owner[file]} "
                                 f"does (rename one of them)", src)
            owner[file] = str(src)
        scenes.append(scene)
    return scenes
