"""Training-time augmentation for the frozen-feature pipeline: stain, colour, scale, rotation and flips.

Each image of the FIT part is embedded ``K`` extra times, each time perturbed as another scanner or stain
batch might have shown it. The perturbations, in order:

1. **HED stain jitter** (Tellez et al. 2018): RGB -> haematoxylin/eosin/DAB optical densities (Ruifrok &
   Johnston's matrix, as in scikit-image's ``rgb2hed``), each channel ``c * alpha + beta`` with
   ``alpha ~ U(1 - hed_scale, 1 + hed_scale)`` and ``beta ~ U(-hed_shift, hed_shift)``, then back to RGB.
2. **Geometry**: one affine warp, rotation by an angle ``~ U(0, 360)`` and scaling by ``~ U(scale)``, about
   the image centre; uncovered corners take the image's border colour (the slide background).
3. **Colour**: brightness, contrast and saturation factors ``~ U(1 - x, 1 + x)`` and a hue shift.
4. **Flip**: left-right with probability 1/2.

Everything is drawn from a generator seeded with ``(seed, SHA-256 of the source's bytes, copy index)``, so
an augmented copy depends only on its source image and never on the order or the batch it came in.
:func:`embed_augmented` encodes the copies losslessly (PNG) and embeds them with the same backbone and
preprocessing as the originals, so a copy goes through exactly the path a real image would.
"""

from __future__ import annotations

import hashlib
import io
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from hemascope.imaging.decode import decode_image

Pixels = NDArray[np.uint8]
#: Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) in optical-density RGB.
RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
_LOG_ADJUST = np.log(1e-6)
CHUNK = 256  # source images augmented (and their copies embedded) per round


@dataclass(frozen=True)
class AugmentConfig:
    """Perturbation strengths (fixed a priori; never tuned on the evaluation probe)."""

    hed_scale: float = 0.1
    hed_shift: float = 0.02
    scale: tuple[float, float] = (0.85, 1.15)
    rotate: bool = True
    flip: bool = True
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.2
    hue: float = 0.03  # fraction of the hue circle

    @property
    def version(self) -> str:
        digest = hashlib.sha256(repr(sorted(asdict(self).items())).encode()).hexdigest()[:10]
        return f"hed-affine-colour-flip.{digest}"


DEFAULT_AUGMENT = AugmentConfig()


def rgb_to_hed(pixels: Pixels) -> NDArray[np.float32]:
    rgb = np.maximum(pixels.astype(np.float32) / np.float32(255.0), np.float32(1e-6))
    stains: NDArray[np.float32] = (np.log(rgb) / np.float32(_LOG_ADJUST)) @ HED_FROM_RGB.astype(np.float32)
    return stains  # unclipped, so the transform is invertible


def hed_to_rgb(stains: NDArray[np.float32]) -> Pixels:
    rgb = np.exp((stains * np.float32(_LOG_ADJUST)) @ RGB_FROM_HED.astype(np.float32))
    out: Pixels = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return out


def hed_jitter(pixels: Pixels, rng: np.random.Generator, scale: float, shift: float) -> Pixels:
    alpha = rng.uniform(1 - scale, 1 + scale, size=3)
    beta = rng.uniform(-shift, shift, size=3)
    return hed_to_rgb(rgb_to_hed(pixels) * alpha.astype(np.float32) + beta.astype(np.float32))


def _border_colour(pixels: Pixels) -> tuple[int, int, int]:
    edge = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    r, g, b = (int(v) for v in np.median(edge, axis=0))
    return r, g, b


def affine(pixels: Pixels, angle_deg: float, scale: float) -> Pixels:
    """Rotation by ``angle_deg`` and zoom by ``scale`` about the centre; same size out, border-colour fill."""
    h, w = pixels.shape[:2]
    cx, cy = (w - 1) / 2, (h - 1) / 2
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta) / scale, math.sin(theta) / scale
    # output (x, y) -> input: centre + R(-theta) / scale * (output - centre)
    coeffs = (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)
    image = Image.fromarray(pixels, mode="RGB")
    warped = image.transform(
        (w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=_border_colour(pixels)
    )
    return np.asarray(warped, dtype=np.uint8)


def colour_jitter(pixels: Pixels, rng: np.random.Generator, cfg: AugmentConfig) -> Pixels:
    x = pixels.astype(np.float32)
    x *= np.float32(rng.uniform(1 - cfg.brightness, 1 + cfg.brightness))
    mean = x.mean()
    x = (x - mean) * np.float32(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)) + mean
    grey = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    x = grey + (x - grey) * np.float32(rng.uniform(1 - cfg.saturation, 1 + cfg.saturation))
    out: Pixels = np.clip(np.rint(x), 0, 255).astype(np.uint8)
    shift = rng.uniform(-cfg.hue, cfg.hue)
    if shift:
        hsv = np.asarray(Image.fromarray(out, mode="RGB").convert("HSV")).copy()
        hsv[..., 0] = ((hsv[..., 0].astype(np.int64) + round(shift * 256)) % 256).astype(np.uint8)
        out = np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB"), dtype=np.uint8)
    return out


def augment(pixels: Pixels, rng: np.random.Generator, cfg: AugmentConfig = DEFAULT_AUGMENT) -> Pixels:
    """One random perturbation of ``H x W x 3`` uint8 RGB ``pixels`` (same shape and dtype out)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected H x W x 3 uint8 pixels, got {pixels.shape} {pixels.dtype}")
    out = hed_jitter(pixels, rng, cfg.hed_scale, cfg.hed_shift)
    angle = rng.uniform(0.0, 360.0) if cfg.rotate else 0.0
    out = affine(out, angle, rng.uniform(*cfg.scale))
    out = colour_jitter(out, rng, cfg)
    if cfg.flip and rng.random() < 0.5:
        out = np.ascontiguousarray(out[:, ::-1])
    return out


def copy_rng(seed: int, source: bytes, index: int) -> np.random.Generator:
    """The generator of copy ``index`` of the image whose encoded bytes are ``source``."""
    digest = int.from_bytes(hashlib.sha256(source).digest()[:8], "big")
    return np.random.default_rng([seed, digest, index])


def augmented_copies(
    source: bytes, copies: int, *, seed: int, cfg: AugmentConfig = DEFAULT_AUGMENT
) -> list[Pixels]:
    """``copies`` perturbations of one encoded image, deterministic in (seed, its bytes, copy index)."""
    pixels = decode_image(source).pixels
    return [augment(pixels, copy_rng(seed, source, i), cfg) for i in range(copies)]


def encode_png(pixels: Pixels) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


#: ``embed(paths) -> N x dimension`` vectors, in order (the same backbone and preprocessing as the originals)
EmbedFn = Callable[[Sequence[Path]], NDArray[np.float32]]


def embed_augmented(
    paths: Sequence[Path],
    copies: int,
    embed: EmbedFn,
    *,
    seed: int,
    cfg: AugmentConfig = DEFAULT_AUGMENT,
    log: Callable[[str], None] | None = None,
    keep: Path | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Embeds ``copies`` augmented copies of each of ``paths``.

    Returns the vectors (``len(paths) * copies`` rows) and, per row, the index into ``paths`` of its source
    (so a copy can inherit its source's label and duplicate group). Copies are written as PNG to a
    temporary folder one chunk at a time and removed after embedding; with ``keep`` they are written to
    (and, on a rerun, read back from) that folder instead, so several preprocessing options can share them.
    The caller must give a ``keep`` folder that is specific to ``paths``, ``copies``, ``seed`` and ``cfg``.
    """
    if copies < 1 or not paths:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    with tempfile.TemporaryDirectory(prefix="hemascope-augment-") as tmp:
        folder = keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        vectors: list[NDArray[np.float32]] = []
        for start in range(0, len(paths), CHUNK):
            chunk_paths = _write_copies(paths, start, copies, folder, seed, cfg)
            vectors.append(np.asarray(embed(chunk_paths), dtype=np.float32))
            if keep is None:
                for target in chunk_paths:
                    target.unlink()
            if log is not None:
                log(f"  augmented {min(start + CHUNK, len(paths))}/{len(paths)} images x {copies}")
    sources = np.repeat(np.arange(len(paths), dtype=np.int64), copies)
    return np.concatenate(vectors), sources


def _write_copies(
    paths: Sequence[Path], start: int, copies: int, folder: Path, seed: int, cfg: AugmentConfig
) -> list[Path]:
    """PNG files of the copies of ``paths[start : start + CHUNK]`` (made unless already in ``folder``)."""
    out: list[Path] = []
    for index in range(start, min(start + CHUNK, len(paths))):
        targets = [folder / f"{index:06d}-{i:02d}.png" for i in range(copies)]
        if not all(t.is_file() for t in targets):
            for target, pixels in zip(
                targets, augmented_copies(paths[index].read_bytes(), copies, seed=seed, cfg=cfg), strict=True
            ):
                partial = target.with_suffix(".partial")
                partial.write_bytes(encode_png(pixels))
                partial.replace(target)
        out += targets
    return out
