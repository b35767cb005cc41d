"""Content hashing of decoded pixels.

The hash identifies *what the model sees*, not the file: the same pixels stored as PNG, TIFF or BMP (or as a
PNG with extra metadata chunks) hash identically, while any pixel change, a different shape or a different
dtype gives a different hash. ``HASH_VERSION`` is part of the hashed data and of nothing else; bump it when
the decoding pipeline changes in a way that alters the pixels of existing images.
"""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray

HASH_VERSION = "px1"


def _header(pixels: NDArray[np.generic]) -> bytes:
    """Describe version, dtype (with byte order) and shape so equal bytes of different layout differ."""
    shape = "x".join(str(dim) for dim in pixels.shape)
    return f"{HASH_VERSION}|{pixels.dtype.str}|{shape}|".encode("ascii")


def content_hash(pixels: NDArray[np.generic]) -> str:
    """Return the sha256 hex digest of ``pixels`` (normally the H x W x 3 uint8 RGB array of a decoded image).

    The buffer is hashed directly (C order, copied only when the array is not C-contiguous).
    """
    if pixels.dtype.hasobject:
        raise TypeError("content_hash needs a numeric array, not an object array")
    flat_bytes = np.ascontiguousarray(pixels).reshape(-1).view(np.uint8)
    digest = hashlib.sha256(_header(pixels))
    digest.update(flat_bytes.data)
    return digest.hexdigest()
