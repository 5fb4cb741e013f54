"""Procedural 4-band (blue, green, red, NIR) land-cover scenes with exact labels.

A scene is a *recipe* — seeded low-resolution fields, field parcels, settlements with
buildings, roads and rivers — that renders any window on demand. So a scene of any size
can be written strip by strip with bounded memory, and every pixel has an exact label.

Spectra are surface reflectance × 10000 (uint16, like Sentinel-2 L2A): water is dark with
almost no NIR, vegetation is bright in NIR and dark in red, soil rises from blue to red,
roofs and asphalt are grey or reddish and flat in NIR. Texture, parcel-to-parcel variation,
mixed pixels at boundaries (a small blur) and sensor noise keep it from being trivial.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from affine import Affine

from geoseg.maskfile import NODATA, colormap

CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("water", (31, 120, 180)),
    ("forest", (27, 100, 45)),
    ("grass_crop", (160, 210, 90)),
    ("bare_soil", (190, 150, 100)),
    ("built_up", (220, 40, 40)),
    ("road", (110, 110, 110)),
)
BANDS = ("blue", "green", "red", "nir")
WATER, FOREST, GRASS, BARE, BUILT, ROAD = range(6)
NODATA_IMAGE = 0

# Mean reflectance × 10000 per class and band (blue, green, red, nir).
SPECTRA = np.array([
    [650, 750, 520, 280],      # water
    [330, 560, 360, 3100],     # forest
    [480, 820, 560, 3900],     # grass / crop
    [950, 1250, 1650, 2250],   # bare soil
    [1350, 1380, 1450, 1750],  # built-up (grey roofs; red roofs vary this)
    [760, 800, 840, 920],      # road (asphalt)
], dtype=np.float32)
RED_ROOF = np.array([800, 880, 1850, 2000], dtype=np.float32)

COARSE = 16   # pixels per cell of the large-scale fields
MEDIUM = 4    # pixels per cell of the boundary-roughening field
TEXTURE = 256  # period of the small-scale texture tiles


@dataclass
class Scene:
    """A renderable synthetic scene (``size × size`` pixels at ``resolution`` metres)."""

    size: int
    seed: int
    resolution: float = 2.0
    crs: str = "EPSG:32633"
    origin: tuple[float, float] = (500_000.0, 5_200_000.0)
    nodata_corner: bool = True
    _fields: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        n_coarse = self.size // COARSE + 2
        n_medium = self.size // MEDIUM + 2
        self._fields = {
            "terrain": _smooth_noise(rng, n_coarse, 9.0),
            "forest": _smooth_noise(rng, n_coarse, 5.0),
            "bare": _smooth_noise(rng, n_coarse, 4.0),
            "rough": _smooth_noise(rng, n_medium, 3.0),
            "tex_fine": _smooth_noise(rng, TEXTURE, 0.8, periodic=True),
            "tex_mid": _smooth_noise(rng, TEXTURE, 3.0, periodic=True),
        }
        self.water_level = float(np.quantile(self._fields["terrain"], 0.10))
        self.forest_level = float(np.quantile(self._fields["forest"], 0.62))
        self.bare_level = float(np.quantile(self._fields["bare"], 0.85))
        self.parcel_angle = rng.uniform(0, math.pi / 2)
        self.parcel_size = rng.uniform(60, 140, size=2)
        self.roads = _roads(rng, self.size)
        self.rivers = _rivers(rng, self.size)
        buildings, streets = _settlements(rng, self.size)
        self.roads = np.concatenate([self.roads, streets]) if len(streets) else self.roads
        self.buildings = buildings[~self._is_water(buildings[:, 0:3:2].mean(axis=1),
                                                   buildings[:, 1:4:2].mean(axis=1))]
        self.noise_seed = int(rng.integers(2**31))

    def _is_water(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Whether points (pixel coordinates) lie in a lake or river (no houses there)."""
        f = self._fields
        terrain = (_sample(f["terrain"], rows / COARSE, cols / COARSE)
                   + 0.35 * _sample(f["rough"], rows / MEDIUM, cols / MEDIUM))
        river = _near_segments(self.rivers, rows[:, None], cols[:, None])[:, 0]
        return (terrain < self.water_level) | river

    @property
    def transform(self) -> Affine:
        return Affine(self.resolution, 0, self.origin[0], 0, -self.resolution, self.origin[1])

    def labels(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Exact class labels for a window (uint8, 255 in the nodata corner)."""
        return self._render(row, col, height, width)[1]

    def render(self, row: int = 0, col: int = 0, height: int | None = None,
               width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(image uint16 (4, h, w), labels uint8 (h, w))`` for a window (default: all)."""
        height = self.size - row if height is None else height
        width = self.size - col if width is None else width
        return self._render(row, col, height, width)

    def _render(self, row: int, col: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        # One pixel of context on each side so the boundary blur is the same in every window.
        r0, c0, h, w = row - 1, col - 1, height + 2, width + 2
        yy, xx = np.mgrid[r0:r0 + h, c0:c0 + w].astype(np.float32)
        labels = self._land_cover(yy, xx)
        image = self._spectra(labels, yy, xx)
        image = _blur(image)[:, 1:-1, 1:-1]
        labels = labels[1:-1, 1:-1]
        rng = np.random.default_rng([self.noise_seed, row, col])
        image += rng.normal(0, 25, size=image.shape).astype(np.float32)
        image = np.clip(image, 1, 65535).astype(np.uint16)
        if self.nodata_corner:
            corner = (yy[1:-1, 1:-1] + (self.size - xx[1:-1, 1:-1])) < self.size * 0.18
            image[:, corner] = NODATA_IMAGE
            labels[corner] = NODATA
        return image, labels

    def _land_cover(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        f = self._fields
        rough = 0.35 * _sample(f["rough"], yy / MEDIUM, xx / MEDIUM)
        labels = np.full(yy.shape, GRASS, np.uint8)
        labels[_sample(f["bare"], yy / COARSE, xx / COARSE) + rough > self.bare_level] = BARE
        labels[_sample(f["forest"], yy / COARSE, xx / COARSE) + rough > self.forest_level] = FOREST
        labels[self._is_water(yy, xx)] = WATER
        for rect in _in_window(self.buildings, yy, xx):
            labels[_rect_slices(rect, yy, xx)] = BUILT
        labels[_near_segments(self.roads, yy, xx)] = ROAD
        return labels

    def _spectra(self, labels: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        f = self._fields
        image = SPECTRA[labels].transpose(2, 0, 1).copy()
        iy, ix = yy.astype(np.int64) % TEXTURE, xx.astype(np.int64) % TEXTURE
        fine, mid = f["tex_fine"][iy, ix], f["tex_mid"][iy, ix]
        # Parcels: each field gets its own crop vigour and brightness.
        u = xx * math.cos(self.parcel_angle) + yy * math.sin(self.parcel_angle)
        v = -xx * math.sin(self.parcel_angle) + yy * math.cos(self.parcel_angle)
        pu = np.floor(u / self.parcel_size[0]).astype(np.int64)
        pv = np.floor(v / self.parcel_size[1]).astype(np.int64)
        vigour = _hash01(pu, pv, self.seed) - 0.5
        crop = labels == GRASS
        image[3][crop] *= 1 + 0.35 * vigour[crop]
        image[:3, crop] *= 1 - 0.25 * vigour[crop]
        built = labels == BUILT
        red = np.zeros(labels.shape, bool)
        for rect in _in_window(self.buildings, yy, xx):
            if rect[4]:  # red tile roof
                red[_rect_slices(rect, yy, xx)] = True
        image[:, red & built] = RED_ROOF[:, None]
        texture = {WATER: 0.04, FOREST: 0.18, GRASS: 0.07, BARE: 0.10, BUILT: 0.06, ROAD: 0.04}
        amp = np.zeros(labels.shape, np.float32)
        for cls, a in texture.items():
            amp[labels == cls] = a
        image *= 1 + amp * (0.6 * fine + 0.4 * mid)
        return image


def _smooth_noise(rng: np.random.Generator, n: int, sigma: float, *, periodic: bool = False) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian-filtered noise on an ``n × n`` grid (periodic by FFT)."""
    pad = 0 if periodic else int(3 * sigma)
    m = n + 2 * pad
    white = rng.standard_normal((m, m))
    k = np.fft.fftfreq(m)
    gauss = np.exp(-2 * (math.pi * sigma) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2))
    smooth = np.fft.ifft2(np.fft.fft2(white) * gauss).real[pad:pad + n, pad:pad + n]
    return ((smooth - smooth.mean()) / (smooth.std() + 1e-12)).astype(np.float32)


def _sample(grid: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of ``grid`` at fractional cell coordinates (clamped)."""
    n = grid.shape[0] - 1
    y = np.clip(y, 0, n - 1e-3)
    x = np.clip(x, 0, n - 1e-3)
    y0, x0 = y.astype(np.int64), x.astype(np.int64)
    fy, fx = y - y0, x - x0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _hash01(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per integer pair."""
    h = (a * 73856093) ^ (b * 19349663) ^ (seed * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float32) / 65536.0


def _blur(image: np.ndarray) -> np.ndarray:
    """A small point-spread function (centre 1/2, 4-neighbours 1/8 each) → mixed edge pixels."""
    out = image.copy()
    out[:, 1:-1, 1:-1] = 0.5 * image[:, 1:-1, 1:-1] + 0.125 * (
        image[:, :-2, 1:-1] + image[:, 2:, 1:-1] + image[:, 1:-1, :-2] + image[:, 1:-1, 2:])
    return out


# Segments are rows (r0, c0, r1, c1, half_width); rectangles are (r0, c0, r1, c1, kind).

def _roads(rng: np.random.Generator, size: int) -> np.ndarray:
    segments = []
    for _ in range(max(2, size // 600)):
        # A gently bending road across the scene, as a polyline of a few segments.
        angle = rng.uniform(0, math.pi)
        centre = rng.uniform(0.1, 0.9, size=2) * size
        direction = np.array([math.sin(angle), math.cos(angle)])
        points = [centre - direction * size * 1.5]
        for _ in range(8):
            angle += rng.normal(0, 0.15)
            step = np.array([math.sin(angle), math.cos(angle)]) * size * 3 / 8
            points.append(points[-1] + step)
        half = rng.uniform(1.6, 2.6)
        segments += [(*p, *q, half) for p, q in itertools.pairwise(points)]
    return np.array(segments, np.float32).reshape(-1, 5)


def _rivers(rng: np.random.Generator, size: int) -> np.ndarray:
    segments: list[tuple[float, ...]] = []
    if rng.random() < 0.7:
        row = rng.uniform(0.2, 0.8) * size
        phase, wavelength = rng.uniform(0, 6.28), rng.uniform(0.3, 0.8) * size
        amplitude = rng.uniform(0.03, 0.12) * size
        half = rng.uniform(4, 9)
        cols = np.linspace(-20, size + 20, 64)
        rows = row + amplitude * np.sin(2 * math.pi * cols / wavelength + phase)
        segments = [(rows[k], cols[k], rows[k + 1], cols[k + 1], half) for k in range(63)]
    return np.array(segments, np.float32).reshape(-1, 5)


def _settlements(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Villages: buildings along a street grid around a few centres."""
    buildings, streets = [], []
    for _ in range(max(1, round(size * size / 1024**2 * 1.5))):
        cr, cc = rng.uniform(0.05, 0.95, size=2) * size
        radius = rng.uniform(60, 180)
        block = rng.uniform(28, 44)
        n = int(radius // block) + 1
        for k in range(-n, n + 1):
            streets.append((cr + k * block, cc - radius, cr + k * block, cc + radius, 1.6))
            streets.append((cr - radius, cc + k * block, cr + radius, cc + k * block, 1.6))
            for m in range(-n, n):
                for dr, dc in ((0.2, 0.15), (0.2, 0.6), (0.6, 0.15), (0.6, 0.6)):
                    r0 = cr + k * block + dr * block + rng.uniform(-2, 2)
                    c0 = cc + m * block + dc * block + rng.uniform(-2, 2)
                    if math.hypot(r0 - cr, c0 - cc) > radius or rng.random() < 0.25:
                        continue
                    h, w = rng.uniform(5, 11, size=2)
                    buildings.append((r0, c0, r0 + h, c0 + w, float(rng.random() < 0.4)))
    return (np.array(buildings, np.float32).reshape(-1, 5),
            np.array(streets, np.float32).reshape(-1, 5))


def _in_window(rects: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Rectangles (or segments, by their bounding boxes) that touch the window."""
    if not len(rects):
        return rects
    ymin, ymax, xmin, xmax = yy.min(), yy.max(), xx.min(), xx.max()
    pad = rects[:, 4:5].max() + 1 if rects.shape[1] == 5 else 1
    lo_r = np.minimum(rects[:, 0], rects[:, 2]) - pad
    hi_r = np.maximum(rects[:, 0], rects[:, 2]) + pad
    lo_c = np.minimum(rects[:, 1], rects[:, 3]) - pad
    hi_c = np.maximum(rects[:, 1], rects[:, 3]) + pad
    keep = (hi_r >= ymin) & (lo_r <= ymax) & (hi_c >= xmin) & (lo_c <= xmax)
    return rects[keep]


def _rect_slices(rect: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> tuple[slice, slice]:
    """The part of a grid window (integer pixel coordinates ``yy``, ``xx``) that
    ``r0 <= y < r1`` and ``c0 <= x < c1`` select, as slices (no full-window pass)."""
    row0, col0 = int(yy[0, 0]), int(xx[0, 0])
    h, w = yy.shape
    r0, c0, r1, c1 = (math.ceil(v) for v in rect[:4])
    return (slice(min(max(r0 - row0, 0), h), min(max(r1 - row0, 0), h)),
            slice(min(max(c0 - col0, 0), w), min(max(c1 - col0, 0), w)))


def _near_segments(segments: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Points (pixel centres ``+ 0.5``) that lie within each segment's half width.

    On a grid window each segment is only evaluated inside its own bounding box.
    """
    hit = np.zeros(yy.shape, bool)
    grid = yy.ndim == 2 and yy.shape[1] > 1 and bool(yy[0, 0] == yy[0, -1])
    for r0, c0, r1, c1, half in _in_window(segments, yy, xx):
        if grid:
            box = np.array([min(r0, r1) - half - 1, min(c0, c1) - half - 1,
                            max(r0, r1) + half + 1, max(c0, c1) + half + 1])
            region = _rect_slices(box, yy, xx)
        else:
            region = (slice(None), slice(None))
        py, px = yy[region] + 0.5, xx[region] + 0.5
        dy, dx = r1 - r0, c1 - c0
        t = np.clip(((py - r0) * dy + (px - c0) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
        hit[region] |= (py - r0 - t * dy) ** 2 + (px - c0 - t * dx) ** 2 <= half * half
    return hit


def sample_scene(size: int = 2048, *, seed: int = 0, nodata_corner: bool = True) -> Scene:
    """A synthetic scene recipe; ``.render()`` gives ``(image, labels)``."""
    return Scene(size=size, seed=seed, nodata_corner=nodata_corner)


SYNTHETIC_TAG = "GEOSEG_SYNTHETIC"  # the GeoTIFF tag that marks a scene geoseg rendered


def is_synthetic(path: str) -> bool:
    """Whether ``path`` is a scene :func:`write_sample_data` wrote (its GeoTIFF tag)."""
    import rasterio

    try:
        with rasterio.open(path) as ds:
            return SYNTHETIC_TAG in ds.tags()
    except (rasterio.errors.RasterioError, OSError):
        return False


def write_sample_data(folder: str | os.PathLike[str], *, size: int = 2048, seed: int = 0,
                      nodata_corner: bool = True, overwrite: bool = False,
                      strip: int = 512) -> tuple[Path, Path]:
    """Write ``scene_<seed>.tif`` (uint16, 4 bands, nodata 0) and ``labels_<seed>.tif``.

    Rendered in strips of ``strip`` rows, so memory does not grow with ``size``.
    """
    import rasterio

    from geoseg.atomic import atomic_path
    from geoseg.errors import InputError

    if size < 16:
        raise InputError(f"size must be at least 16 pixels, not {size}")
    scene = sample_scene(size, seed=seed, nodata_corner=nodata_corner)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image_path, label_path = folder / f"scene_{seed}.tif", folder / f"labels_{seed}.tif"
    common = {"driver": "GTiff", "width": size, "height": size, "crs": scene.crs,
              "transform": scene.transform, "tiled": True, "blockxsize": 256,
              "blockysize": 256, "compress": "deflate", "BIGTIFF": "IF_SAFER"}
    with atomic_path(image_path, overwrite=overwrite) as tmp_img, \
            atomic_path(label_path, overwrite=overwrite) as tmp_lab, \
            rasterio.open(tmp_img, "w", count=4, dtype="uint16", nodata=NODATA_IMAGE,
                          predictor=2, **common) as img, \
            rasterio.open(tmp_lab, "w", count=1, dtype="uint8", nodata=NODATA,
                          **common) as lab:
        for row in range(0, size, strip):
            h = min(strip, size - row)
            image, labels = scene.render(row, 0, h, size)
            window = ((row, row + h), (0, size))
            img.write(image, window=window)
            lab.write(labels, 1, window=window)
        img.descriptions = BANDS
        img.update_tags(**{SYNTHETIC_TAG: f"seed {seed}"})
        lab.write_colormap(1, colormap([c for _, c in CLASSES]))
        lab.update_tags(CLASS_NAMES=json.dumps([n for n, _ in CLASSES]))
    return image_path, label_path
