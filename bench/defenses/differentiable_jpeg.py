"""A differentiable approximation of baseline JPEG, for BPDA through the JPEG defense.

The identity is a poor stand-in for JPEG's gradient on small images (an 8x8
block is a ninth of a 28x28 image): on PneumoniaMNIST, BPDA through the
identity left samples that Square then broke. This follows the codec step by
step with differentiable operations (Shin and Song 2017, "JPEG-resistant
adversarial images"), as libjpeg does it with Pillow's defaults:

- RGB to YCbCr (JFIF), chroma 4:2:0 (2x2 mean down, bilinear up, which is
  libjpeg's "fancy" triangle upsampling); one-channel images are one luma
  component;
- edges replicated to whole blocks (MCUs), level shift by 128, orthonormal
  8x8 DCT-II, the standard tables scaled by ``quality`` (libjpeg's scaling);
- quantisation rounding replaced by ``round(x) + (x - round(x))**3``, equal to
  rounding at the integers with a non-zero gradient between them.

Its output matches Pillow's decoded JPEG to within a fraction of a grey level
on average (tests/test_defenses.py measures it on real images); only its
gradient is used, the forward pass is the real codec.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61), (12, 12, 14, 19, 26, 58, 60, 55), (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62), (18, 22, 37, 56, 68, 109, 103, 77), (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101), (72, 92, 95, 98, 112, 100, 103, 99),
)  # ITU T.81 Annex K, table K.1
_CHROMA = (
    (17, 18, 24, 47, 99, 99, 99, 99), (18, 21, 26, 66, 99, 99, 99, 99), (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99), *((99,) * 8,) * 4,
)  # table K.2


def quantisation_table(quality: int, chroma: bool = False) -> torch.Tensor:
    """The standard table scaled as libjpeg scales it for ``quality`` (1..100), entries in [1, 255]."""
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    base = torch.tensor(_CHROMA if chroma else _LUMA, dtype=torch.float64)
    return torch.floor((base * scale + 50) / 100).clamp(1, 255)


def _dct_matrix() -> torch.Tensor:
    k, n = torch.arange(8, dtype=torch.float64).unsqueeze(1), torch.arange(8, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * n + 1) * k / 16) * math.sqrt(2 / 8)
    m[0] = math.sqrt(1 / 8)
    return m


_DCT = _dct_matrix()


def soft_round(x: torch.Tensor) -> torch.Tensor:
    """Rounding with a usable gradient: exact at the integers, ``3 (x - round x)^2`` between them."""
    r = torch.round(x)
    return r + (x - r) ** 3


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    return F.pad(x, (0, -w % multiple, 0, -h % multiple), mode="replicate")


def _code_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Level-shifted plane (N, 1, H, W), H and W multiples of 8: DCT, quantise, dequantise, inverse DCT."""
    n, _, h, w = plane.shape
    dct, q = _DCT.to(plane), table.to(plane)
    blocks = plane.reshape(n, h // 8, 8, w // 8, 8).transpose(2, 3)  # (N, hb, wb, 8, 8)
    coefficients = soft_round(dct @ blocks @ dct.T / q) * q
    return (dct.T @ coefficients @ dct).transpose(2, 3).reshape(n, 1, h, w)


def differentiable_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG encode-decode of images in [0, 1] (N, C, H, W), C 1 or 3, with a gradient everywhere."""
    h, w = x.shape[-2:]
    pixels = x * 255
    luma_table, chroma_table = quantisation_table(quality), quantisation_table(quality, chroma=True)
    if x.shape[1] == 1:
        out = _code_plane(_pad_to(pixels, 8) - 128, luma_table)[..., :h, :w] + 128
        return out.clamp(0, 255) / 255
    if x.shape[1] != 3:
        raise ValueError(f"JPEG codes 1 or 3 channels; got {x.shape[1]}")
    r, g, b = _pad_to(pixels, 16).split(1, dim=1)  # 4:2:0: a 16x16 MCU
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b  # (both chroma planes level-shifted already: +128 - 128)
    y = _code_plane(y - 128, luma_table) + 128
    chroma = [F.interpolate(_code_plane(F.avg_pool2d(c, 2), chroma_table), scale_factor=2, mode="bilinear",
                            align_corners=False) for c in (cb, cr)]
    cb, cr = chroma
    rgb = torch.cat([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], dim=1)
    return rgb[..., :h, :w].clamp(0, 255) / 255
