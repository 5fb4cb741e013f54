"""STAC Items as scenes: an Item (a JSON file or URL), an ItemCollection or a folder of
Items, read with ``pystac``; an Item's assets are its bands.

A reference to one Item of a collection is ``COLLECTION.json#ITEM_ID`` (what ``geoseg
run`` passes on for each Item). Assets are chosen by their bands' common names (STAC 1.0
``eo:bands``, STAC 1.1 ``bands``) or by key (``assets``); relative hrefs resolve against
the Item's own location; ``raster:bands`` give each band's scale, offset and nodata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.bands import BandFile, common_name, mission_of, mission_of_ids
from geoseg.errors import InputError
from geoseg.gdal import is_gdal_path, vsi_path

if TYPE_CHECKING:
    import pystac

SUFFIXES = (".json", ".geojson")
# Assets that show a scene rather than measure it.
NOT_DATA_ROLES = {"thumbnail", "overview", "visual", "metadata", "snow-ice", "water-mask",
                  "cloud", "cloud-shadow", "data-mask", "saturation"}
RASTER_TYPES = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-hdf")


def split(ref: str) -> tuple[str, str | None]:
    """``"coll.json#ITEM"`` → ``("coll.json", "ITEM")``; a plain reference has no id."""
    base, sep, item_id = ref.rpartition("#")
    if sep and base and item_id and "/" not in item_id and not Path(ref).exists():
        return base, item_id
    return ref, None


def is_stac(ref: str | os.PathLike[str]) -> bool:
    """Whether ``ref`` names STAC JSON: by its suffix, or a STAC API's Item URL
    (``…/items/ID``, no file suffix)."""
    href, _ = split(os.fspath(ref))
    path = href.split("?")[0]
    if path.lower().endswith(SUFFIXES):
        return True
    last = path.rstrip("/").rsplit("/", 1)[-1]
    return "://" in path and "/items/" in path and "." not in last


def is_item_document(ref: str) -> bool:
    """Whether ``ref`` is STAC Item JSON (or an ItemCollection's, or one Item of it), not
    some other JSON (a model card, say)."""
    href, item_id = split(ref)
    if item_id is not None or (is_stac(href) and "/items/" in href):
        return True
    if not is_stac(href) or is_gdal_path(href) or not Path(href).is_file():
        return False
    try:
        return _json(href).get("type") in ("Feature", "FeatureCollection")
    except InputError:
        return False


def folder_items(folder: Path) -> list[str]:
    """The STAC Item files of a folder (JSON files whose ``type`` is ``Feature``, each
    with ``stac_version``); other JSON there (labels, a tile index) is no Item."""
    found = []
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in SUFFIXES:
            try:
                data = _json(str(p))
            except InputError:
                continue
            if data.get("type") == "Feature" and "stac_version" in data:
                found.append(str(p))
    return found


def scene_refs(ref: str) -> list[str]:
    """One reference per Item (``HREF#ID``) of an Item, an ItemCollection or a folder of Items."""
    if not is_gdal_path(ref) and Path(ref).is_dir():
        return [r for f in folder_items(Path(ref)) for r in scene_refs(f)]
    href, item_id = split(ref)
    if item_id is not None:
        return [ref]
    return [f"{href}#{item.id}" for item in read_items(href)]


def read_items(href: str) -> list[pystac.Item]:
    """The Items of an Item or ItemCollection document; a Catalog or Collection is refused."""
    import pystac

    data = _json(href)
    kind = data.get("type")
    try:
        if kind == "Feature":
            return [pystac.Item.from_dict(data, href=_absolute(href), preserve_dict=False)]
        if kind == "FeatureCollection":
            items = pystac.ItemCollection.from_dict(data, preserve_dict=False).items
            if not items:
                raise InputError("is an ItemCollection without Items", href)
            return list(items)
    except (KeyError, TypeError, ValueError, pystac.STACError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"is not a valid STAC Item ({type(exc).__name__}: {exc})", href) from None
    if kind in ("Collection", "Catalog"):
        raise InputError(f"is a STAC {kind}: give its Items (an Item, an ItemCollection "
                         f"or a folder of Items)", href)
    raise InputError(f"is JSON but no STAC Item or ItemCollection (type {kind!r})", href)


def read_item(ref: str) -> tuple[pystac.Item, str]:
    """The one Item ``ref`` names, and the href its relative asset hrefs resolve against."""
    href, item_id = split(ref)
    items = read_items(href)
    if item_id is not None:
        chosen = [i for i in items if i.id == item_id]
        if not chosen:
            raise InputError(f"holds no Item {item_id!r}", href)
        items = chosen
    if len(items) > 1:
        raise InputError(f"holds {len(items)} Items; a scene is one of them (give "
                         f"{href}#{items[0].id}, or run them all with geoseg run)", href)
    item = items[0]
    return item, item.get_self_href() or _absolute(href)


def item_bands(ref: str, assets: Sequence[str] | None = None) -> tuple[str, list[BandFile]]:
    """The Item's id and its bands: every band of its data assets (``assets``: of those
    keys only, in that order), with common names, scale, offset and nodata as the Item
    gives them. Several assets of one common name (a GeoTIFF and a JPEG 2000 copy) give
    the first GeoTIFF."""
    item, base = read_item(ref)
    if not item.assets:
        raise InputError(f"STAC Item {item.id!r} has no assets", ref)
    if assets:
        unknown = [k for k in assets if k not in item.assets]
        if unknown:
            raise InputError(f"STAC Item {item.id!r} has no asset {unknown[0]!r} (it has "
                             f"{', '.join(item.assets)})", ref)
        chosen = [(k, item.assets[k]) for k in assets]
    else:
        chosen = [(k, a) for k, a in item.assets.items() if _is_data(a)]
    mission = item_mission(item)
    bands: list[BandFile] = []
    for key, asset in chosen:
        bands += _asset_bands(item, key, asset, base, mission)
    if not assets:
        bands = _first_per_name(bands, {k: a for k, a in chosen})
    if not bands:
        raise InputError(f"STAC Item {item.id!r} has no raster asset with band common names "
                         f"(choose assets by key with ${{assets}}; it has "
                         f"{', '.join(item.assets)})", ref)
    return item.id, bands


def _asset_bands(item: pystac.Item, key: str, asset: pystac.Asset, base: str,
                 mission: str | None) -> list[BandFile]:
    from pystac.utils import make_absolute_href

    fields = asset.extra_fields
    described = fields.get("bands") or fields.get("eo:bands") or []
    raster = fields.get("raster:bands") or []
    href = asset.href if "://" in asset.href else make_absolute_href(asset.href, base)
    path = vsi_path(href.removeprefix("file://"))
    shown = f"{item.id}:{key} ({href})"
    count = max(len(described), len(raster), 1)
    rule = sentinel2_rule(item.properties)
    applied = item.properties.get("earthsearch:boa_offset_applied") is True
    out = []
    for k in range(count):
        info: dict[str, Any] = described[k] if k < len(described) else {}
        numbers: dict[str, Any] = {**(raster[k] if k < len(raster) else {}), **info}
        name = (common_name(info.get("common_name") or info.get("eo:common_name"))
                or common_name(info.get("name"), item.id, mission)
                or (common_name(key, item.id, mission) if count == 1 else None))
        if name == "rededge":  # STAC 1.0's generic name: the band's own says which
            name = (common_name(info.get("name"), item.id, mission)
                    or (common_name(key, item.id, mission) if count == 1 else None)
                    or _rededge_at(info.get("center_wavelength")) or name)
        scale = _number(numbers.get("raster:scale", numbers.get("scale")))
        offset = _number(numbers.get("raster:offset", numbers.get("offset")))
        if scale is None and offset is None and rule is not None and name is not None:
            scale, offset = rule
        if applied and offset:  # Earth Search: values already had the offset taken off
            offset = 0.0
        nodata = _number(numbers.get("nodata", fields.get("nodata")))
        if nodata is None and rule is not None:
            nodata = 0.0  # Sentinel-2: 0 is NO_DATA, whatever the file says
        out.append(BandFile(path=path, shown=shown, band=k + 1, name=name, scale=scale,
                            offset=offset, nodata=nodata, asset=key))
    return out


def item_mission(item: pystac.Item) -> str | None:
    """The mission whose band numbering an Item's band ids follow (see
    :data:`geoseg.bands.MISSIONS`): its ``platform``, else its id, else its band ids."""
    platform = str(item.properties.get("platform", "")).lower()
    if platform.startswith("sentinel-2"):
        return "sentinel2"
    if platform.startswith("landsat"):
        return "landsat_tm" if platform[-1:] in ("4", "5", "7") else "landsat"
    ids = [str(b.get("name", "")) for a in item.assets.values()
           for b in (a.extra_fields.get("bands") or a.extra_fields.get("eo:bands") or [])]
    return mission_of(item.id) or mission_of_ids([*ids, *item.assets])


def _rededge_at(wavelength: Any) -> str | None:
    """Sentinel-2's red-edge band at ``wavelength`` µm (0.70, 0.74, 0.78)."""
    if not isinstance(wavelength, (int, float)):
        return None
    for centre, name in ((0.705, "rededge071"), (0.740, "rededge075"), (0.783, "rededge078")):
        if abs(wavelength - centre) < 0.015:
            return name
    return None


def sentinel2_rule(properties: dict[str, Any]) -> tuple[float, float] | None:
    """``(scale, offset)`` of a Sentinel-2 L1C/L2A Item's reflectance bands where the Item
    does not declare them (Planetary Computer's do not) but names its processing baseline:
    reflectance = value / 10 000, less 0.1 from baseline 04.00 on (ESA's −1000 offset)."""
    baseline = properties.get("s2:processing_baseline")
    product = str(properties.get("s2:product_type", ""))
    if not isinstance(baseline, str) or product not in ("S2MSI1C", "S2MSI2A"):
        return None
    try:
        major = float(baseline)
    except ValueError:
        return None
    return 0.0001, (-0.1 if major >= 4.0 else 0.0)


def _first_per_name(bands: list[BandFile], assets: dict[str, pystac.Asset]) -> list[BandFile]:
    """Unnamed bands dropped; of several bands of one name, a GeoTIFF's first."""
    def geotiff(b: BandFile) -> bool:
        return "tiff" in (assets[b.asset].media_type or "").lower()

    chosen: dict[str, BandFile] = {}
    for b in bands:
        if b.name is None:
            continue
        if b.name not in chosen or (geotiff(b) and not geotiff(chosen[b.name])):
            chosen[b.name] = b
    order = {id(b): k for k, b in enumerate(bands)}
    return sorted(chosen.values(), key=lambda b: order[id(b)])


def _is_data(asset: pystac.Asset) -> bool:
    roles = set(asset.roles or [])
    if roles & NOT_DATA_ROLES and "data" not in roles:
        return False
    media = (asset.media_type or "").lower()
    if media and not media.startswith(RASTER_TYPES):
        return False
    return bool(media) or asset.href.split("?")[0].lower().endswith((".tif", ".tiff", ".jp2"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _absolute(href: str) -> str:
    return href if "://" in href else os.path.abspath(href)


def _json(href: str) -> dict[str, Any]:
    """A JSON document (a file or an http(s) URL); one-line errors."""
    import urllib.error

    href = href.removeprefix("file://")

    if is_gdal_path(href) and not href.startswith(("http://", "https://", "file://", "s3://")):
        raise InputError("is STAC JSON on a file system geoseg reads Items from only over "
                         "http(s), s3:// or from disk (download it, or give its URL)", href)
    if not is_gdal_path(href) and not Path(href).is_file():
        raise InputError("no such file" if not Path(href).exists() else "is not a file", href)
    try:
        data = json.loads(_read_text(href))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"is not valid JSON ({exc})", href) from None
    except urllib.error.HTTPError as exc:
        raise InputError(f"cannot be read (HTTP {exc.code} {exc.reason})", href) from None
    except urllib.error.URLError as exc:
        raise InputError(f"cannot be read ({exc.reason})", href) from None
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc})", href) from None
    if not isinstance(data, dict):
        raise InputError("is not a STAC Item (not a JSON object)", href)
    return data


# HTTP answers worth asking again (as GDAL_HTTP_MAX_RETRY treats them for rasters).
TRANSIENT = (429, 500, 502, 503, 504)


def _read_text(href: str) -> str:
    """A document's text: a file, or a URL with a timeout (``GDAL_HTTP_TIMEOUT``, 60 s)
    that is asked again after a transient failure (HTTP 429, 500, 502, 503, 504) as often,
    and with the same growing delay, as GDAL retries raster reads
    (``GDAL_HTTP_MAX_RETRY``, ``GDAL_HTTP_RETRY_DELAY``)."""
    import time
    import urllib.error
    import urllib.request

    from geoseg.gdal import GDAL_DEFAULTS

    if href.startswith("s3://"):
        from geoseg import storage

        return storage.read_text(href)
    if not href.startswith(("http://", "https://")):
        return Path(href.removeprefix("file://")).read_text(encoding="utf-8")
    timeout = float(os.environ.get("GDAL_HTTP_TIMEOUT", "60"))
    retries = int(os.environ.get("GDAL_HTTP_MAX_RETRY",
                                 str(GDAL_DEFAULTS["GDAL_HTTP_MAX_RETRY"])))
    delay = float(os.environ.get("GDAL_HTTP_RETRY_DELAY",
                                 str(GDAL_DEFAULTS["GDAL_HTTP_RETRY_DELAY"])))
    request = urllib.request.Request(href, headers={"User-Agent": "geoseg"})
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return str(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            if exc.code not in TRANSIENT or attempt == retries:
                raise
            time.sleep(delay * 2**attempt)
    raise AssertionError("unreachable")
