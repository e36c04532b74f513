"""Input transforms in front of a standard model: JPEG compression, bit-depth reduction, median filtering.

Proposed as defenses by Dziugaite et al. 2016 / Guo et al. 2018 (JPEG), Xu et
al. 2018 (feature squeezing: bit depth, median filter). Athalye et al. 2018
broke them with BPDA: attack through the transform with an approximation's
gradient. JPEG and quantisation have no useful gradient (none, or zero almost
everywhere) and are declared non-differentiable: bit depth is attacked through
the identity (its rounding moves a pixel by at most half a level; a soft
rounding would only rescale each pixel's gradient by a factor >= 0, which
leaves the sign an L-inf attack steps along unchanged: measured, the same
robust accuracy on 128 BreastMNIST images at 2/255 and 4/255), JPEG
through a differentiable JPEG (``differentiable_jpeg.py``), since the identity
is a poor approximation of it (measured: on 55 PneumoniaMNIST images APGD-CE
through the identity left 0.96 robust at 2/255 and 0.76 at 4/255, through the
differentiable JPEG 0.87 and 0.35). The median filter is differentiable almost
everywhere (its gradient picks the median pixel) and is declared so. Every
input transform is also attacked through its BPDA view
(``bench/defenses/adaptive.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.defenses import register_defense
from bench.defenses.base import Declaration, Defense
from bench.defenses.differentiable_jpeg import differentiable_jpeg
from bench.errors import ConfigError


@register_defense("jpeg")
class JPEG(Defense):
    """Encode and decode every image as JPEG at ``quality`` (Pillow's libjpeg), in uint8 as a file would be.

    BPDA differentiates a differentiable JPEG of the same quality (``surrogate``) in place of the codec."""

    declaration = Declaration(differentiable=False, gradient="surrogate", transforms_input=True)
    PARAMS = {"quality": 75}

    def __init__(self, model, **params):
        super().__init__(model, **params)
        quality = int(self.params["quality"])
        if not 1 <= quality <= 100:
            raise ConfigError(f"jpeg quality must be in 1..100, got {quality}. Set defense.params.quality.")
        self.quality = quality

    @torch.no_grad()
    def transform(self, x: torch.Tensor) -> torch.Tensor:
        import io

        import numpy as np
        from PIL import Image

        images = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, "JPEG", quality=self.quality)
            decoded = np.asarray(Image.open(buffer))
            out.append(decoded.reshape(image.shape))
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255

    def surrogate(self, x: torch.Tensor) -> torch.Tensor:
        return differentiable_jpeg(x, self.quality)


@register_defense("bit_depth")
class BitDepth(Defense):
    """Quantise every pixel to ``bits`` bits (Xu et al.'s colour-depth squeezing): round(x * (2^b - 1)) / (2^b - 1)."""

    declaration = Declaration(differentiable=False, transforms_input=True)
    PARAMS = {"bits": 4}

    def __init__(self, model, **params):
        super().__init__(model, **params)
        bits = int(self.params["bits"])
        if not 1 <= bits <= 8:
            raise ConfigError(f"bit_depth bits must be in 1..8, got {bits}. Set defense.params.bits.")
        self.levels = 2**bits - 1

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * self.levels) / self.levels


@register_defense("median")
class MedianFilter(Defense):
    """A ``kernel`` x ``kernel`` median filter per channel, reflect-padded (Xu et al.'s spatial smoothing)."""

    declaration = Declaration(differentiable=True, transforms_input=True)
    PARAMS = {"kernel": 3}

    def __init__(self, model, **params):
        super().__init__(model, **params)
        kernel = int(self.params["kernel"])
        if kernel < 2:
            raise ConfigError(f"median kernel must be at least 2, got {kernel}. Set defense.params.kernel.")
        self.kernel = kernel

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernel
        left, right = (k - 1) // 2, k // 2
        padded = F.pad(x, (left, right, left, right), mode="reflect")
        patches = padded.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, H, W, k, k)
        return patches.reshape(*patches.shape[:4], k * k).median(dim=-1).values
