"""Band names: what a band is called in a model card, a file name, a GeoTIFF band
description or a STAC asset, reduced to one vocabulary (STAC's ``eo`` common names), and a
scene's bands matched to the bands a model reads.

Sentinel-2 (``B01`` … ``B12``, ``B8A``) and Landsat (``B1`` … ``B11``, ``SR_B4``, ``ST_B10``;
TM/ETM+ numbering for ``LT04``/``LT05``/``LE07`` products) band names are known; so are the
common names and the usual spellings of them (``rededge1``, ``swir1``, ``nir_narrow``…).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from geoseg.errors import MissingBandsError

# STAC eo common names (the v2 names of the red-edge bands; "rededge" alone is generic).
COMMON_NAMES = ("coastal", "blue", "green", "red", "yellow", "pan", "rededge", "rededge071",
                "rededge075", "rededge078", "nir", "nir08", "nir09", "cirrus", "swir16",
                "swir22", "lwir", "lwir11", "lwir12")

SPELLINGS = {
    "aerosol": "coastal", "coastal_aerosol": "coastal", "ultrablue": "coastal",
    "panchromatic": "pan", "red_edge": "rededge",
    "rededge1": "rededge071", "rededge2": "rededge075", "rededge3": "rededge078",
    "re1": "rededge071", "re2": "rededge075", "re3": "rededge078",
    "vre1": "rededge071", "vre2": "rededge075", "vre3": "rededge078",
    "nir_narrow": "nir08", "nirnarrow": "nir08", "narrow_nir": "nir08",
    "nir1": "nir", "near_infrared": "nir", "nir_broad": "nir",
    "water_vapour": "nir09", "water_vapor": "nir09",
    "swir1": "swir16", "swir_1": "swir16", "swir2": "swir22", "swir_2": "swir22",
    "tir": "lwir", "thermal": "lwir", "tirs1": "lwir11", "tirs2": "lwir12",
}

SENTINEL2 = {"B01": "coastal", "B02": "blue", "B03": "green", "B04": "red",
             "B05": "rededge071", "B06": "rededge075", "B07": "rededge078", "B08": "nir",
             "B8A": "nir08", "B09": "nir09", "B10": "cirrus", "B11": "swir16", "B12": "swir22"}
LANDSAT_OLI = {"B1": "coastal", "B2": "blue", "B3": "green", "B4": "red", "B5": "nir08",
               "B6": "swir16", "B7": "swir22", "B8": "pan", "B9": "cirrus", "B10": "lwir11",
               "B11": "lwir12"}
LANDSAT_TM = {"B1": "blue", "B2": "green", "B3": "red", "B4": "nir08", "B5": "swir16",
              "B6": "lwir", "B7": "swir22", "B8": "pan"}

# Where a band is missing, the band that stands in for it (broad and narrow NIR; a
# generic red edge for the one red-edge band a scene has).
STAND_INS = {"nir": ("nir08",), "nir08": ("nir",), "lwir": ("lwir11",), "lwir11": ("lwir",)}

_BAND_ID = re.compile(r"^(?:(SR|ST|TOA)_)?B(8A|\d{1,2})$", re.IGNORECASE)
_LANDSAT_TM = re.compile(r"(^|[_\W])L[TE]0[4-7]", re.IGNORECASE)
_LANDSAT = re.compile(r"(^|[_\W])(L[COTEM]0\d|HLS\.L30)", re.IGNORECASE)
_SENTINEL2 = re.compile(r"(^|[_\W])(S2[ABCD]?_|MSIL[12]|HLS\.S30|T\d\d[A-Z]{3}(?=[_\W]|$))",
                        re.IGNORECASE)
_PARTS = re.compile(r"[_\-.\s]+")
# Name parts after which a file is a product of the bands, not a band (Landsat's
# SR_QA_AEROSOL, QA_PIXEL; Sentinel-2's WVP, AOT, SCL, TCI).
NOT_BANDS = ("QA", "WVP", "AOT", "SCL", "TCI", "MSK", "CLD", "SNW", "PVI")

MISSIONS = ("sentinel2", "landsat", "landsat_tm")
# Sentinel-2's processing levels as names carry them: MSIL1C/MSIL2A (SAFE), S2MSI2A
# (product type), _L2A (Earth Search Item ids), sentinel-2-l1c (collections).
_LEVEL = re.compile(r"(?:^|[_\W])(?:S2)?(?:MSI)?(L1C|L2A|1C|2A)(?=[_\W]|$)", re.IGNORECASE)


def processing_level(context: str) -> str | None:
    """The Sentinel-2 processing level (``L1C`` or ``L2A``) a product, file or Item name
    announces, or None (none, or both)."""
    found = {"L" + m.group(1).upper().removeprefix("L") for m in _LEVEL.finditer(context)
             if m.group(0).lstrip("_-./ ").upper().startswith(("L", "MSI", "S2MSI"))}
    return found.pop() if len(found) == 1 else None


def mission_of(context: str) -> str | None:
    """The mission a file name or Item id names: ``landsat_tm`` (LT04/LT05/LE07),
    ``landsat`` (LC08/LC09…, HLS.L30), ``sentinel2`` (S2A_, MSIL2A, T33UUP, HLS.S30), or None."""
    if _LANDSAT_TM.search(context):
        return "landsat_tm"
    if _LANDSAT.search(context):
        return "landsat"
    if _SENTINEL2.search(context):
        return "sentinel2"
    return None


def mission_of_ids(texts: Sequence[str | None]) -> str | None:
    """The mission that the band ids of one scene imply together: B8A, B12 or a
    zero-padded id (B01…B09) exist in Sentinel-2's numbering only."""
    for text in texts:
        found = _BAND_ID.match((text or "").strip())
        if found and found.group(1):
            return "landsat"
        if found and (found.group(2).upper() in ("8A", "12") or found.group(2).startswith("0")):
            return "sentinel2"
    return None


def common_name(text: str | None, context: str = "", mission: str | None = None) -> str | None:
    """The eo common name that ``text`` denotes (a common name, a spelling of one, or a
    Sentinel-2/Landsat band id such as ``B8A`` or ``SR_B5``), else None.

    Band ids mean different bands in Sentinel-2's and Landsat's numbering from B5 on:
    ``mission`` (see :data:`MISSIONS`), else the one ``context`` (a file name, an Item id)
    names, decides. Where neither does, only ids that mean one band in both (B1–B4),
    or exist in one numbering only (B8A, B12, B01…B09), are named."""
    if not text:
        return None
    word = text.strip().lower().replace(" ", "_").replace("-", "_")
    if word in COMMON_NAMES:
        return word
    if word in SPELLINGS:
        return SPELLINGS[word]
    found = _BAND_ID.match(text.strip())
    if found is None:
        return None
    prefix, number = found.group(1), found.group(2).upper()
    mission = mission or mission_of(context) or ("landsat" if prefix else None)
    if mission == "landsat" and _LANDSAT_TM.search(context):
        mission = "landsat_tm"
    if mission in ("landsat", "landsat_tm"):
        table = LANDSAT_TM if mission == "landsat_tm" else LANDSAT_OLI
        return None if number == "8A" else table.get(f"B{int(number)}")
    if mission == "sentinel2" or number in ("8A", "12") or (len(number) == 2 and number[0] == "0"):
        return SENTINEL2.get("B8A" if number == "8A" else f"B{int(number):02d}")
    return LANDSAT_OLI.get(f"B{int(number)}") if int(number) <= 4 else None


def name_in_file(path: str, mission: str | None = None) -> str | None:
    """The common name of the band a file's name announces (``…_B04_10m.jp2``,
    ``LC09_…_SR_B4.TIF``, ``scene_nir.tif``, ``red_edge_1.tif``), or None when it names
    none or several, or is a product of the bands (``…_QA_PIXEL.TIF``, ``…_SCL_20m.jp2``).
    ``mission``: as for :func:`common_name`."""
    stem = re.split(r"[/\\]", path.split("?")[0])[-1]
    stem = re.sub(r"\.(tiff?|jp2|vrt|img)$", "", stem, flags=re.IGNORECASE)
    parts = [p for p in _PARTS.split(stem) if p]
    if any(p.upper() in NOT_BANDS for p in parts):
        return None
    found = set()
    k = 0
    while k < len(parts):
        pair = f"{parts[k]}_{parts[k + 1]}" if k + 1 < len(parts) else ""
        if pair and pair.lower().replace("-", "_") in {*SPELLINGS, *COMMON_NAMES}:
            found.add(common_name(pair))  # red_edge, swir_1, nir_narrow
            k += 2
            continue
        part = parts[k]
        prefixed = f"{parts[k - 1]}_{part}" if k and parts[k - 1].upper() in ("SR", "ST") else part
        name = common_name(prefixed, stem, mission)
        if name is not None:
            found.add(name)
        k += 1
    return found.pop() if len(found) == 1 else None


def names_in_files(paths: Sequence[str]) -> list[str | None]:
    """:func:`name_in_file` of each of one scene's files, their mission decided together
    (one file's ``B8A`` makes every ``B5`` Sentinel-2's)."""
    context = " ".join(re.split(r"[/\\]", p.split("?")[0])[-1] for p in paths)
    ids = [part for p in paths for part in _PARTS.split(re.split(r"[/\\]", p)[-1])]
    mission = mission_of(context) or mission_of_ids(ids)
    return [name_in_file(p, mission) for p in paths]


def match(wanted: Sequence[str], have: Sequence[str | None], scene: str) -> list[int] | None:
    """Indexes into ``have`` (a scene's band common names, None where unknown) of the
    bands ``wanted`` (a model card's names), in the model's order.

    None when names cannot decide (the card's or all of the scene's are unknown): the
    caller then goes by order. A band the model needs that the scene lacks is a
    :class:`MissingBandsError` that says which bands the scene has.
    """
    mission = mission_of_ids(wanted)
    want = [common_name(w, mission=mission) for w in wanted]
    if any(w is None for w in want) or all(h is None for h in have):
        return None
    picked, missing = [], []
    for w, shown in zip(want, wanted, strict=True):
        assert w is not None
        options = [i for i, h in enumerate(have) if h == w]
        for stand_in in STAND_INS.get(w, ()):
            options = options or [i for i, h in enumerate(have) if h == stand_in]
        if not options and w.startswith("rededge"):
            generic = [i for i, h in enumerate(have) if h == "rededge"]
            options = generic if len(generic) == 1 else []
        if options:
            picked.append(options[0])
        else:
            missing.append(shown if shown.lower() == w else f"{shown} ({w})")
    if missing:
        if any(h is None for h in have) and len(have) == len(wanted):
            return None  # unnamed bands may be the missing ones: go by order
        names = ", ".join(h or f"band {i + 1} (unnamed)" for i, h in enumerate(have))
        raise MissingBandsError(f"lacks the {', '.join(missing)} band{'s' * (len(missing) > 1)} the "
                         f"model needs (it has {names})", scene)
    return picked


@dataclass(frozen=True)
class BandFile:
    """One band of a scene as it is stored: a band of a file (a band-per-file product, a
    STAC asset), with what the product says about it (None: ask the file)."""

    path: str  # as GDAL opens it
    shown: str  # as the user (or the STAC Item) names it in errors
    band: int = 1  # 1-based, in the file
    name: str | None = None  # common name (None: from the file's band description or name)
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    asset: str = ""  # a STAC Item's asset key
