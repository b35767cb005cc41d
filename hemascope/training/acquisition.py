"""Acquisition augmentation: the same cell as other microscopes, cameras and stain batches would show it.

Laboratories differ less in their cells than in how they image them: optical magnification and camera
resolution (single-cell images from about 120 to 400 pixels across), focus, JPEG compression, stain
batch and white balance. A model trained on two laboratories learns those differences as readily as the
cells, so training copies are re-acquired, in this order, before the preprocessing option runs:

1. **stain**: HED jitter (Tellez et al. 2018) at twice the strength of the frozen pipeline's augmentation,
   then brightness, contrast, gamma and saturation;
2. **resolution**: the whole image resampled so that its width is log-uniform in ``width`` pixels (only
   ever down: an image is never given detail it did not have), as a lower-resolution camera or objective
   would have taken it;
3. **focus and noise**: Gaussian blur (probability ``blur_p``, sigma in pixels of the resampled image),
   Gaussian sensor noise (probability ``noise_p``);
4. **compression**: a JPEG round trip at a quality in ``jpeg_quality`` (probability ``jpeg_p``).

After the preprocessing option (e.g. the cell crop and haematoxylin channel), :func:`geometry` turns,
flips and slightly zooms the prepared input, filling with the option's own background colour.

Everything is drawn from a generator seeded with ``(seed, SHA-256 of the source bytes, copy index)``: a copy
depends only on its source image, never on order or batching.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from hemascope.training.augment import hed_jitter

Pixels = NDArray[np.uint8]


@dataclass(frozen=True)
class AcquisitionConfig:
    """Perturbation ranges (fixed a priori from what scanners produce; never tuned on a held-out site)."""

    hed_scale: float = 0.2
    hed_shift: float = 0.04
    brightness: float = 0.15
    contrast: float = 0.2
    gamma: tuple[float, float] = (0.75, 1.33)
    saturation: float = 0.3
    width: tuple[float, float] = (120.0, 400.0)
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise_p: float = 0.3
    noise_sigma: tuple[float, float] = (1.0, 6.0)
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (40, 95)
    rotate: bool = True
    flip: bool = True
    zoom: tuple[float, float] = (0.9, 1.1)

    @property
    def version(self) -> str:
        digest = hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:10]
        return f"acquisition.{digest}"


DEFAULT_ACQUISITION = AcquisitionConfig()


def copy_rng(seed: int, source: bytes, index: int) -> np.random.Generator:
    """The generator of copy ``index`` of the image whose encoded bytes are ``source``."""
    digest = int.from_bytes(hashlib.sha256(source).digest()[:8], "big")
    return np.random.default_rng([seed, digest, index, 0xAC])


def _tone(pixels: Pixels, rng: np.random.Generator, cfg: AcquisitionConfig) -> Pixels:
    x = pixels.astype(np.float32) / np.float32(255.0)
    x = x * np.float32(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness))
    mean = x.mean()
    x = (x - mean) * np.float32(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)) + mean
    x = np.clip(x, 0.0, 1.0) ** np.float32(math.exp(rng.uniform(*np.log(cfg.gamma))))
    grey = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    x = grey + (x - grey) * np.float32(rng.uniform(1 - cfg.saturation, 1 + cfg.saturation))
    out: Pixels = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    return out


def _resample(pixels: Pixels, rng: np.random.Generator, cfg: AcquisitionConfig) -> Pixels:
    h, w = pixels.shape[:2]
    target = math.exp(rng.uniform(math.log(cfg.width[0]), math.log(cfg.width[1])))
    if target >= w:
        return pixels
    size = (max(8, round(target)), max(8, round(h * target / w)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR, reducing_gap=None))


def _focus_noise(pixels: Pixels, rng: np.random.Generator, cfg: AcquisitionConfig) -> Pixels:
    out = pixels
    if rng.random() < cfg.blur_p:
        radius = float(rng.uniform(*cfg.blur_sigma))
        out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(radius)))
    if rng.random() < cfg.noise_p:
        noise = rng.normal(0.0, rng.uniform(*cfg.noise_sigma), size=out.shape)
        out = np.clip(np.rint(out.astype(np.float64) + noise), 0, 255).astype(np.uint8)
    return out


def _jpeg(pixels: Pixels, rng: np.random.Generator, cfg: AcquisitionConfig) -> Pixels:
    if rng.random() >= cfg.jpeg_p:
        return pixels
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(rng.integers(*cfg.jpeg_quality)))
    buffer.seek(0)
    with Image.open(buffer) as image:
        return np.asarray(image.convert("RGB"))


def reacquire(
    pixels: Pixels, rng: np.random.Generator, cfg: AcquisitionConfig = DEFAULT_ACQUISITION
) -> Pixels:
    """One random re-acquisition of decoded ``H x W x 3`` uint8 RGB (the size may shrink: resolution)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected H x W x 3 uint8 pixels, got {pixels.shape} {pixels.dtype}")
    out = hed_jitter(pixels, rng, cfg.hed_scale, cfg.hed_shift)
    out = _tone(out, rng, cfg)
    out = _resample(out, rng, cfg)
    out = _focus_noise(out, rng, cfg)
    return np.ascontiguousarray(_jpeg(out, rng, cfg))


def geometry(
    pixels: Pixels,
    rng: np.random.Generator,
    fill: tuple[int, int, int],
    cfg: AcquisitionConfig = DEFAULT_ACQUISITION,
) -> Pixels:
    """A random turn, flip and zoom of a prepared input about its centre; uncovered corners are ``fill``."""
    angle = float(rng.uniform(0.0, 360.0)) if cfg.rotate else 0.0
    zoom = float(rng.uniform(*cfg.zoom))
    h, w = pixels.shape[:2]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    theta = math.radians(angle)
    cos, sin = math.cos(theta) / zoom, math.sin(theta) / zoom
    coeffs = (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)
    image = Image.fromarray(pixels, mode="RGB")
    out = np.asarray(
        image.transform((w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=fill)
    )
    if cfg.flip and rng.random() < 0.5:
        out = out[:, ::-1]
    return np.ascontiguousarray(out, dtype=np.uint8)
