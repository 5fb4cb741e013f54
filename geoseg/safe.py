"""Sentinel-2 SAFE products (Level-1C and Level-2A, as the Copernicus Data Space delivers
them: a ``.SAFE`` folder, or its ``.zip``): the band files under ``GRANULE/*/IMG_DATA``
and the product's own reflectance rule from ``MTD_MSIL1C.xml``/``MTD_MSIL2A.xml``.

The rule: reflectance = (value + offset) / quantification, where the quantification is
``QUANTIFICATION_VALUE`` (L1C) or ``BOA_QUANTIFICATION_VALUE`` (L2A), 10 000, and the
per-band offset ``RADIO_ADD_OFFSET``/``BOA_ADD_OFFSET`` is −1000 from processing baseline
04.00 on and absent before. A zipped product is read in place through GDAL's ``/vsizip/``.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from xml.etree import ElementTree

from geoseg.bands import SENTINEL2, BandFile
from geoseg.errors import InputError

# The band_id of the metadata's offsets: the bands in this order, from 0.
BAND_ORDER = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
              "B11", "B12")
_BAND_FILE = re.compile(r"_(B\d\d|B8A)(?:_(\d+)m)?\.jp2$", re.IGNORECASE)
_METADATA = re.compile(r"(^|/)MTD_MSIL(1C|2A)\.xml$")


def is_product(path: Path) -> bool:
    """Whether ``path`` is a SAFE folder, its metadata file, or a zip of one."""
    if path.is_dir():
        return any(path.glob("MTD_MSIL*.xml")) and (path / "GRANULE").is_dir()
    if path.name.startswith("MTD_MSIL") and path.suffix.lower() == ".xml":
        return (path.parent / "GRANULE").is_dir()
    if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            return any(_METADATA.search(n) and n.count("/") <= 1 for n in z.namelist())
    return False


def product_name(path: Path) -> str:
    """``S2B_MSIL2A_….SAFE`` (or ``.zip``, or its metadata file) → ``S2B_MSIL2A_…``."""
    if path.is_file() and path.suffix.lower() == ".xml":
        path = path.parent
    name = path.name
    for suffix in (".zip", ".SAFE", ".safe"):
        name = name.removesuffix(suffix)
    return name


def product_bands(path: Path) -> tuple[str, list[BandFile]]:
    """The product's name and its bands (every resolution a band comes at; the finest is
    chosen later), each with the scale and offset of the product's metadata."""
    if path.is_file() and path.suffix.lower() == ".xml":
        path = path.parent
    if path.is_dir():
        metadata = next(iter(sorted(path.glob("MTD_MSIL*.xml"))))
        text = metadata.read_bytes()
        files = [(str(f.relative_to(path)).replace("\\", "/"), str(f.absolute()))
                 for f in sorted(path.glob("GRANULE/*/IMG_DATA/**/*.jp2"))]
    else:
        root = f"/vsizip/{path.absolute()}"
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            inner = next(n for n in names if _METADATA.search(n) and n.count("/") <= 1)
            text = z.read(inner)
            top = inner.rsplit("/", 1)[0] + "/" if "/" in inner else ""
            files = [(n[len(top):], f"{root}/{n}") for n in sorted(names)
                     if n.startswith(f"{top}GRANULE/") and "/IMG_DATA/" in n
                     and n.lower().endswith(".jp2")]
    granules = {f.split("/")[1] for f, _ in files}
    if len(granules) > 1:
        raise InputError(f"holds {len(granules)} granules (a product from before 2016-12); "
                         f"give one granule's IMG_DATA band files instead", path)
    scale, offset = reflectance_rule(text, path)
    bands = []
    for inner_name, gdal_path in files:
        found = _BAND_FILE.search(inner_name)
        if found is None:  # TCI, AOT, WVP, SCL: products of the bands, not bands
            continue
        band = found.group(1).upper()
        bands.append(BandFile(gdal_path, gdal_path, name=SENTINEL2[band], scale=scale,
                              offset=offset.get(band, 0.0) * scale, nodata=0.0))  # 0: NO_DATA
    if not bands:
        raise InputError("is a Sentinel-2 SAFE product without band files (.jp2 under "
                         "GRANULE/*/IMG_DATA)", path)
    return product_name(path), bands


def reflectance_rule(text: bytes, path: Path) -> tuple[float, dict[str, float]]:
    """``(1 / quantification, {band: offset})`` from a product's metadata XML."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise InputError(f"has metadata that is not XML ({exc})", path) from None
    quantification = None
    offsets: dict[str, float] = {}
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag in ("QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE") and element.text:
            quantification = float(element.text)
        elif tag in ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET") and element.text:
            band_id = int(element.get("band_id", "-1"))
            if 0 <= band_id < len(BAND_ORDER):
                offsets[BAND_ORDER[band_id]] = float(element.text)
    if not quantification or quantification <= 0:
        raise InputError("has product metadata without a quantification value", path)
    return 1.0 / quantification, offsets
