"""Dynamic World's network in torch: the land-cover model of Google and the World Resources
Institute (Brown et al. 2022, Scientific Data, doi:10.1038/s41597-022-01307-4), released
under Apache-2.0 in ``google/dynamicworld``. Its weights, converted from that repository's
forward SavedModel by ``workflows/convert_dynamic_world.py``, ship in
``geoseg/models/dynamic-world`` with the licence and NOTICE.

The network is written here op for op as its SavedModel's graph runs (the published block
diagram leaves out the first two and the last two of these):

1. a 3 × 3 convolution, 9 → 64 channels, with batch norm and Mish, at full resolution;
2. an antialiased bilinear downsampling to half size (``tf.image.resize(..., antialias=
   True)``: a triangle filter two input pixels wide, ``[1, 3, 3, 1] / 8`` per axis on an
   even size, renormalized where it meets the edge);
3. at half resolution, three residual stages of depthwise-separable blocks (96, then 144
   channels) beside a 48-channel branch, concatenated and reduced to 144 channels;
4. a bilinear upsampling back to full size (half-pixel centres);
5. each pixel's 144 features divided by their L2 norm;
6. a 1 × 1 convolution to the 9 classes' logits (the softmax comes after, outside).

Every convolution has a bias and every batch norm an epsilon of 1e-3, as in the graph.

The network takes Sentinel-2 **L1C** digital numbers (top-of-atmosphere reflectance ×
10 000, of a product without the +1000 offset of processing baseline 04.00: the offset is
the product's, and geoseg takes it off before the network) and holds Dynamic World's
normalization inside (:func:`normalize`), so an ONNX graph exported from it does too.

Exactness under tiling: the downsampling pairs pixels, so a tile must start on an even
pixel and be of even size to sample as the whole scene does; and a tile's edge changes
what the network says up to :data:`CONTEXT` pixels inside it. geoseg's tiles keep both
(``tile_size``/``overlap`` even, blending only where both tiles are exact), so a tiled
map equals the original's whole-image run except within that distance of the scene's
edge, where the original pads with zeros and geoseg with the scene mirrored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ARCHITECTURE = "DynamicWorld"

# (Sentinel-2 id, eo common name) of the nine bands, in the network's order.
BANDS = (("B02", "blue"), ("B03", "green"), ("B04", "red"), ("B05", "rededge071"),
         ("B06", "rededge075"), ("B07", "rededge078"), ("B08", "nir"), ("B11", "swir16"),
         ("B12", "swir22"))

# Dynamic World's class names and palette, as Earth Engine's catalog gives them.
CLASSES = (("water", "419bdf"), ("trees", "397d49"), ("grass", "88b053"),
           ("flooded_vegetation", "7a87c6"), ("crops", "e49635"),
           ("shrub_and_scrub", "dfc35a"), ("built", "c4281b"), ("bare", "a59b8f"),
           ("snow_and_ice", "b39fe1"))

# The normalization of google/dynamicworld's single_image_runner.ipynb: per band, the
# 30th and 70th percentiles of log(DN * 0.005 + 1) over diverse surfaces; the notebook
# subtracts the first and divides by the second.
NORM_PERCENTILES = (
    (1.7417268007636313, 2.023298706048351),
    (1.7261204997060209, 2.038905204308012),
    (1.6798346251414997, 2.179592821212937),
    (1.7734969472909623, 2.2890068333026603),
    (2.289154079164943, 2.6171674549378166),
    (2.382939712192371, 2.773418590375327),
    (2.3828939530384052, 2.7578332604178284),
    (2.1952484264967844, 2.789092484314204),
    (1.554812948247501, 2.4140534947492487),
)

# How far inside a tile its edge changes the network's answer, in full-resolution pixels:
# the 3 × 3 stem (1), the downsampling filter (2), nine 3 × 3 depthwise convolutions at
# half resolution on the longest path (18) and the upsampling (2), rounded up to even.
CONTEXT = 24


def normalize(dn: torch.Tensor) -> torch.Tensor:
    """Dynamic World's input transfer of L1C digital numbers ``(B, 9, H, W)``: per band
    ``x = log(DN * 0.005 + 1)``, ``x = (x - p30) / p70``, then ``e / (e + 1)`` with
    ``e = exp(5x - 1)`` (written as the equal, overflow-free ``sigmoid(5x - 1)``).
    Negative values (below the baseline offset, in the darkest water) count as 0."""
    import torch

    lo = torch.tensor([p[0] for p in NORM_PERCENTILES], dtype=dn.dtype, device=dn.device)
    hi = torch.tensor([p[1] for p in NORM_PERCENTILES], dtype=dn.dtype, device=dn.device)
    x = torch.log1p(torch.clamp(dn, min=0.0) * 0.005)
    x = (x - lo.view(1, -1, 1, 1)) / hi.view(1, -1, 1, 1)
    return torch.sigmoid(x * 5.0 - 1.0)


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish, ``x * tanh(softplus(x))``: torch's own kernel, and in an ONNX export the same
    function as ``x * n / (n + 2)`` with ``n = e^x (e^x + 2)`` (``tanh(log(1 + e^x))``
    written with one exponential), which ONNX Runtime computes 5x faster than its Softplus
    and Tanh; ``e^x`` is taken at ``min(x, 20)``, where the ratio is 1 in float32."""
    import torch
    import torch.nn.functional as F

    if not torch.onnx.is_in_onnx_export():
        return F.mish(x)
    e = torch.exp(torch.clamp(x, max=20.0))
    n = e * (e + 2.0)
    return x * n / (n + 2.0)


def _network_class() -> type[torch.nn.Module]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Unit(nn.Module):
        """A convolution (1 × 1, 3 × 3 or 3 × 3 depthwise), batch norm and Mish."""

        def __init__(self, cin: int, cout: int, kernel: int = 1, depthwise: bool = False) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2,
                                  groups=cin if depthwise else 1)
            self.bn = nn.BatchNorm2d(cout, eps=1e-3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return mish(self.bn(self.conv(x)))

    def separable(c: int) -> nn.Sequential:
        return nn.Sequential(Unit(c, c, 3, depthwise=True), Unit(c, c))

    class Residual(nn.Module):
        """``body(x) + shortcut(x)``, both ending in Mish."""

        def __init__(self, cin: int, cout: int) -> None:
            super().__init__()
            self.body = nn.Sequential(Unit(cin, cout), separable(cout), separable(cout),
                                      Unit(cout, cout, 3, depthwise=True))
            self.shortcut = Unit(cin, cout)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x) + self.shortcut(x)

    class DynamicWorldNet(nn.Module):
        """Dynamic World's forward network: L1C digital numbers ``(B, 9, H, W)`` → logits
        ``(B, 9, H, W)``. Any size runs; an even one is what tiles use (see the module)."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = Unit(9, 64, 3)
            self.stage1 = Residual(64, 96)
            self.stage2 = Residual(96, 144)
            self.side = nn.Sequential(Unit(64, 48), Unit(48, 48, 3, depthwise=True))
            self.stage3 = Residual(192, 144)
            self.head = nn.Conv2d(144, 9, 1)
            k = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
            self.register_buffer("down_kernel", (k[:, None] * k[None, :]).expand(
                64, 1, 4, 4).contiguous(), persistent=False)

        def downsample(self, x: torch.Tensor, odd: bool) -> torch.Tensor:
            if odd:  # TensorFlow's scale for an odd size is floor(n / 2) / n
                h, w = x.shape[-2:]
                return F.interpolate(x, size=(h // 2, w // 2), mode="bilinear",
                                     align_corners=False, antialias=True)
            # The same filter on an even size, as a convolution (any runtime has one):
            # the kernel's sum over the pixels inside renormalizes at the edges.
            k: torch.Tensor = self.down_kernel  # type: ignore[assignment]
            inside = F.conv2d(torch.ones_like(x[:1, :1]), k[:1], stride=2, padding=1)
            return F.conv2d(x, k, stride=2, padding=1, groups=int(k.shape[0])) / inside

        def forward(self, dn: torch.Tensor) -> torch.Tensor:
            x = self.stem(normalize(dn))
            h, w = x.shape[-2:]
            # An ONNX export traces an even tile: its graph takes even sizes only.
            odd = isinstance(h, int) and isinstance(w, int) and bool(h % 2 or w % 2)
            half = self.downsample(x, odd)
            a = self.stage1(half)
            b = self.stage2(a)
            c = self.stage3(torch.cat([b, self.side(half)], dim=1))
            if odd:
                up = F.interpolate(c, size=(h, w), mode="bilinear", align_corners=False)
                norm = torch.rsqrt(torch.clamp((up * up).sum(dim=1, keepdim=True), min=1e-12))
                return self.head(up * norm)
            return self.head_twice(c)

        def head_twice(self, c: torch.Tensor) -> torch.Tensor:
            """The head on twice ``c``'s size without the 144 upsampled channels at full
            resolution: the 1 x 1 head and the bilinear upsampling are both linear, so they
            swap, and each pixel's L2 norm is a weighted sum of the dot products of the
            2 x 2 half-resolution pixels it interpolates (five maps of them, edges
            replicated as the upsampling clamps). The same function, a quarter of the memory."""
            h, w = c.shape[-2:]
            z = F.conv2d(c, self.head.weight)  # the head without its bias: 9 channels
            zu = F.interpolate(z, scale_factor=2.0, mode="bilinear", align_corners=False)
            p = F.pad(c, (1, 1, 1, 1), mode="replicate")
            n = (p * p).sum(1, keepdim=True)
            across = (p[..., :, :-1] * p[..., :, 1:]).sum(1, keepdim=True)
            down = (p[..., :-1, :] * p[..., 1:, :]).sum(1, keepdim=True)
            diagonal = (p[..., :-1, :-1] * p[..., 1:, 1:]).sum(1, keepdim=True)
            anti = (p[..., :-1, 1:] * p[..., 1:, :-1]).sum(1, keepdim=True)
            def at(m: torch.Tensor, y: int, x: int) -> torch.Tensor:
                return m[..., y:y + h, x:x + w]

            phases = []
            for ay in (0, 1):  # output rows 2i + ay interpolate padded rows ay + i, ay + i + 1
                r0, r1 = (0.25, 0.75) if ay == 0 else (0.75, 0.25)
                for ax in (0, 1):
                    c0, c1 = (0.25, 0.75) if ax == 0 else (0.75, 0.25)
                    tl, tr, bl, br = r0 * c0, r0 * c1, r1 * c0, r1 * c1
                    y, x = ay, ax  # the 2 x 2 block's top left, in the padded grid
                    squared = (tl * tl * at(n, y, x) + tr * tr * at(n, y, x + 1)
                               + bl * bl * at(n, y + 1, x) + br * br * at(n, y + 1, x + 1)
                               + 2 * (tl * tr * at(across, y, x) + bl * br * at(across, y + 1, x)
                                      + tl * bl * at(down, y, x) + tr * br * at(down, y, x + 1)
                                      + tl * br * at(diagonal, y, x) + tr * bl * at(anti, y, x)))
                    phases.append(torch.rsqrt(torch.clamp(squared, min=1e-12)))
            norm = F.pixel_shuffle(torch.cat(phases, dim=1), 2)
            bias: torch.Tensor = self.head.bias  # type: ignore[assignment]
            return zu * norm + bias.view(1, -1, 1, 1)

    return DynamicWorldNet


def network() -> torch.nn.Module:
    """A freshly initialised Dynamic World network (weights come from the bundled model)."""
    return _network_class()()
