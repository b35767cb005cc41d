"""Heat map -> overlay at the original image size, in one of two styles.

* ``focus`` (the default), drawn for a haematologist: the map is upsampled smoothly (bicubic, then a
  Gaussian blur), faded out towards the edges of the crop it covers (so no square seam shows where a
  cropping preprocessing stopped), coloured with JET only where it is at least :data:`HEAT_THRESHOLD`,
  with an opacity that grows with the heat (at most :data:`MAX_ALPHA`), so the stain stays visible
  everywhere else; the segmented cell is outlined.
* ``jet40``, the study's plain overlay: bilinear upsampling, JET everywhere at 40% (``show_cam_on_image``
  from the grad-cam library), which tints the whole picture.

``box`` places the map when the preprocessing cropped the image (the map then covers only the crop);
without one the map covers the whole image, which is what a plain resize to the backbone's input means.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image
from scipy import ndimage as ndi

from hemascope.errors import InvalidArgument, echo
from hemascope.imaging.cellseg import segment_cell
from services.explain.colormap import HEAT_THRESHOLD, MAX_ALPHA, jet

Box = tuple[int, int, int, int]
HEAT_WEIGHT = 0.4
STYLES = ("focus", "jet40")
DEFAULT_STYLE = "focus"
#: The map fades to zero over this fraction of the crop's side at its edges (focus style).
EDGE_FADE = 0.12
CONTOUR_RGB = (255, 255, 255)


def check_style(style: str) -> str:
    """``style`` (empty: the default) if known, else INVALID_ARGUMENT naming the known ones."""
    chosen = style or DEFAULT_STYLE
    if chosen not in STYLES:
        raise InvalidArgument(
            f"unknown overlay style {echo(style)}; known: {', '.join(STYLES)}",
            reason="UNKNOWN_OVERLAY",
            field="overlay",
        )
    return chosen


def upsample(heatmap: NDArray[np.float32], width: int, height: int) -> NDArray[np.float32]:
    """The low-resolution map resized to ``height x width`` (bilinear), clipped to [0, 1]."""
    resized = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


def full_size_map(
    heatmap: NDArray[np.float32], width: int, height: int, box: Box | None = None
) -> NDArray[np.float32]:
    """The map in the original image's frame; zero outside ``box`` (x0, y0, x1, y1) when one is given."""
    if box is None:
        return upsample(heatmap, width, height)
    x0, y0, x1, y1 = box
    canvas = np.zeros((height, width), np.float32)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return canvas
    inside = upsample(heatmap, x1 - x0, y1 - y0)
    canvas[cy0:cy1, cx0:cx1] = inside[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    return canvas


def _edge_fade(width: int, height: int) -> NDArray[np.float32]:
    """1 inside, falling smoothly (smoothstep) to 0 at the edges over EDGE_FADE of the side."""
    margin = max(1.0, EDGE_FADE * min(width, height))

    def ramp(n: int) -> NDArray[np.float32]:
        distance = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5)
        t = np.clip(distance / margin, 0.0, 1.0)
        return np.asarray(t * t * (3 - 2 * t), dtype=np.float32)

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


def smooth_map(
    heatmap: NDArray[np.float32], width: int, height: int, box: Box | None = None
) -> NDArray[np.float32]:
    """The map in the original frame for the focus style: bicubic, faded at the edges of the region it
    covers (``box``, or the whole image), blurred; zero outside the region; values in [0, 1]."""
    x0, y0, x1, y1 = box if box is not None else (0, 0, width, height)
    side_w, side_h = max(1, x1 - x0), max(1, y1 - y0)
    inside = cv2.resize(heatmap.astype(np.float32), (side_w, side_h), interpolation=cv2.INTER_CUBIC)
    inside = np.clip(inside, 0.0, 1.0)
    if box is not None:
        inside = inside * _edge_fade(side_w, side_h)
    canvas = np.zeros((height, width), np.float32)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 > cx0 and cy1 > cy0:
        canvas[cy0:cy1, cx0:cx1] = inside[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    sigma = max(1.0, min(side_w, side_h) / 40)
    blurred = np.asarray(ndi.gaussian_filter(canvas, sigma), dtype=np.float32)
    return np.asarray(np.clip(blurred, 0.0, 1.0), dtype=np.float32)


def heat_alpha(mask: NDArray[np.float32]) -> NDArray[np.float32]:
    """Opacity of the colour: 0 below HEAT_THRESHOLD, rising smoothly to MAX_ALPHA at 1."""
    t = np.clip((mask - HEAT_THRESHOLD) / (1.0 - HEAT_THRESHOLD), 0.0, 1.0)
    return np.asarray(MAX_ALPHA * t * t * (3 - 2 * t), dtype=np.float32)


def cell_outline(cell: NDArray[np.bool_], width: int) -> NDArray[np.bool_]:
    """The border of the ``cell`` mask, ``width`` pixels wide."""
    inner = ndi.binary_erosion(cell, iterations=max(1, width))
    return np.asarray(cell & ~inner)


def cell_mask(pixels: NDArray[np.uint8]) -> NDArray[np.bool_] | None:
    """The white cell segmented by colour (:mod:`hemascope.imaging.cellseg`) at the image's size, or None
    when no plausible cell was found."""
    segmentation = segment_cell(pixels)
    if segmentation.fallback:
        return None
    height, width = pixels.shape[:2]
    small = Image.fromarray(segmentation.cell.astype(np.uint8) * 255)
    return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR)) >= 128


def focus_overlay(
    pixels: NDArray[np.uint8], mask: NDArray[np.float32], cell: NDArray[np.bool_] | None = None
) -> NDArray[np.uint8]:
    """``pixels`` with JET colour where ``mask`` (from :func:`smooth_map`) is hot, untouched elsewhere, and
    the ``cell`` mask (same size, optional) outlined."""
    alpha = heat_alpha(mask)[..., None]
    rgb = pixels.astype(np.float32) / 255.0
    blended = (1.0 - alpha) * rgb + alpha * jet(mask)
    out = np.asarray(np.round(blended * 255.0), dtype=np.uint8)
    if cell is not None and cell.any():
        width = max(1, round(min(pixels.shape[:2]) / 180))
        out[cell_outline(cell, width)] = CONTOUR_RGB
    return out


def overlay(pixels: NDArray[np.uint8], mask: NDArray[np.float32]) -> NDArray[np.uint8]:
    """The study's overlay: ``pixels`` (H x W x 3 RGB uint8) with ``mask`` (H x W in [0, 1]) as a JET heat
    map at 40% everywhere."""
    rgb = pixels.astype(np.float32) / 255.0
    blended: NDArray[np.uint8] = show_cam_on_image(
        rgb, mask, use_rgb=True, colormap=cv2.COLORMAP_JET, image_weight=1.0 - HEAT_WEIGHT
    )
    return blended


def render(
    pixels: NDArray[np.uint8],
    heatmap: NDArray[np.float32],
    box: Box | None,
    style: str = DEFAULT_STYLE,
    cell: NDArray[np.bool_] | None = None,
) -> NDArray[np.uint8]:
    """The overlay of ``heatmap`` (the CAM grid) on ``pixels`` in ``style`` (see the module docstring)."""
    height, width = pixels.shape[:2]
    if check_style(style) == "jet40":
        return overlay(pixels, full_size_map(heatmap, width, height, box))
    return focus_overlay(pixels, smooth_map(heatmap, width, height, box), cell)


def to_png(pixels: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()
