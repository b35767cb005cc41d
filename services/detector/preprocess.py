"""Letterboxing for the YOLO detector, bit-for-bit as Ultralytics 8.4 prepares an image for a 640 model.

Ultralytics' ``LetterBox(new_shape=(size, size), auto=False, scale_fill=False, scaleup=True, center=True)``:

* one ratio ``r = min(size / h, size / w)`` (images smaller than ``size`` are scaled up);
* resized shape ``(max(round(w * r), 1), max(round(h * r), 1))``, Python's ``round`` (half to even);
* ``cv2.resize(..., INTER_LINEAR)`` only when that shape differs from the original;
* padding split around the image: ``top = round(dh / 2 - 0.1)``, ``bottom = round(dh / 2 + 0.1)`` (same for
  left/right), value 114; then HWC -> CHW and ``/ 255`` in float32.

Because the resized sides are rounded, the effective ratio differs very slightly per axis;
:attr:`Letterbox.gain_x` and :attr:`Letterbox.gain_y` give it, as Ultralytics' ``scale_boxes`` uses it.
Ultralytics' own predict letterboxes a *dynamic*-shape model (like ``detector.onnx``) to the minimum
rectangle instead (``auto=True``, e.g. 640 x 480) unless it is called with ``rect=False``; this module always
produces the fixed square, which is what a micro-batching service needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

__all__ = ["PAD_VALUE", "Letterbox", "letterbox"]

PAD_VALUE = 114
"""Grey level of the padding, in 0..255 (``PAD_VALUE / 255`` in the model input)."""


@dataclass(frozen=True)
class Letterbox:
    """How an original image was placed into the square model input."""

    scale: float
    """Resize ratio applied to the original: ``min(size / height, size / width)``."""
    pad_x: float
    """Left padding, in letterboxed pixels."""
    pad_y: float
    """Top padding, in letterboxed pixels."""
    width: int
    """Original image width."""
    height: int
    """Original image height."""
    size: int
    """Side of the square model input."""

    @property
    def resized_width(self) -> int:
        """Width of the image inside the letterbox (rounded as Ultralytics rounds it)."""
        return max(round(self.width * self.scale), 1)

    @property
    def resized_height(self) -> int:
        return max(round(self.height * self.scale), 1)

    @property
    def gain_x(self) -> float:
        """Effective horizontal ratio (resized width / original width), as Ultralytics' ``scale_boxes``."""
        return self.resized_width / self.width

    @property
    def gain_y(self) -> float:
        return self.resized_height / self.height


def letterbox_params(width: int, height: int, size: int = 640) -> tuple[Letterbox, tuple[int, int, int, int]]:
    """The :class:`Letterbox` of a ``width`` x ``height`` image and its (top, bottom, left, right) padding."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width} x {height}")
    if size <= 0:
        raise ValueError(f"letterbox size must be positive, got {size}")
    r = min(size / height, size / width)
    new_w, new_h = max(round(width * r), 1), max(round(height * r), 1)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    box = Letterbox(scale=r, pad_x=float(left), pad_y=float(top), width=width, height=height, size=size)
    return box, (top, bottom, left, right)


def letterbox(pixels: NDArray[np.uint8], size: int = 640) -> tuple[NDArray[np.float32], Letterbox]:
    """H x W x 3 uint8 RGB -> (3 x ``size`` x ``size`` float32 RGB in 0..1, placement).

    The padding is ``114 / 255``. The channel order is kept, so RGB in gives RGB out.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 array, got {pixels.shape} {pixels.dtype}")
    height, width = int(pixels.shape[0]), int(pixels.shape[1])
    box, (top, bottom, left, right) = letterbox_params(width, height, size)
    new_w, new_h = box.resized_width, box.resized_height
    if (width, height) != (new_w, new_h):
        image = cv2.resize(np.ascontiguousarray(pixels), (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    else:
        image = pixels
    canvas = np.full((new_h + top + bottom, new_w + left + right, 3), PAD_VALUE, dtype=np.uint8)
    canvas[top : top + new_h, left : left + new_w] = image
    chw = np.ascontiguousarray(canvas.transpose(2, 0, 1)).astype(np.float32)
    chw /= np.float32(255.0)
    return chw, box
