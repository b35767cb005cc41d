"""Heat map -> overlay at the original image size: bilinear upsampling, JET colormap, 40% heat.

``show_cam_on_image`` from the grad-cam library does the colouring and blending. ``box`` places the map
when the preprocessing cropped the image (the map then covers only the crop); without one the map covers
the whole image, which is what a plain resize to the backbone's input size means.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image

HEAT_WEIGHT = 0.4


def upsample(heatmap: NDArray[np.float32], width: int, height: int) -> NDArray[np.float32]:
    """The low-resolution map resized to ``height x width`` (bilinear), clipped to [0, 1]."""
    resized = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    return np.clip(resized, 0.0, 1.0).astype(np.float32)


def full_size_map(
    heatmap: NDArray[np.float32], width: int, height: int, box: tuple[int, int, int, int] | None = None
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


def overlay(pixels: NDArray[np.uint8], mask: NDArray[np.float32]) -> NDArray[np.uint8]:
    """``pixels`` (H x W x 3 RGB uint8) with ``mask`` (H x W in [0, 1]) as a JET heat map at 40%."""
    rgb = pixels.astype(np.float32) / 255.0
    blended: NDArray[np.uint8] = show_cam_on_image(
        rgb, mask, use_rgb=True, colormap=cv2.COLORMAP_JET, image_weight=1.0 - HEAT_WEIGHT
    )
    return blended


def to_png(pixels: NDArray[np.uint8]) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG", optimize=False, compress_level=3)
    return buffer.getvalue()
