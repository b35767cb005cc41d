"""The JET colour map in NumPy (no OpenCV) and the focus overlay's constants, shared by the overlay and the
panel around it (which the CLI draws without loading the explain service's dependencies)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: Below this heat (maps are scaled to [0, 1]) the focus overlay shows the image unchanged.
HEAT_THRESHOLD = 0.35
#: Opacity of the colour at the hottest point of the focus overlay.
MAX_ALPHA = 0.6


def jet(values: NDArray[np.float32]) -> NDArray[np.float32]:
    """The JET colour map (blue - cyan - yellow - red) of ``values`` in [0, 1]: ``... x 3`` RGB in [0, 1]."""
    x = np.clip(values, 0.0, 1.0)[..., None]
    centres = np.asarray([3.0, 2.0, 1.0], dtype=np.float32)  # red, green, blue
    return np.asarray(np.clip(1.5 - np.abs(4.0 * x - centres), 0.0, 1.0), dtype=np.float32)
