"""Cache keys and the stored value encoding (little-endian float32 bytes)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["KEY_VERSION", "CacheKey", "Vector", "decode_vector", "encode_vector"]

#: Version of the key layout and value encoding; bump it to orphan every existing entry.
KEY_VERSION = "v1"

Vector = npt.NDArray[np.float32]

_HEX_RE = re.compile(r"[0-9a-f]+")
_TOKEN_RE = re.compile(r"[A-Za-z0-9._-]+")

_ENCODING = "<f4"
_ITEM_BYTES = 4


@dataclass(frozen=True)
class CacheKey:
    """Everything an embedding depends on, and nothing else.

    ``content_hash`` and ``weights_hash`` are lowercase hex digests (sha256 of the decoded pixels and of the
    weights file); ``backbone`` and ``preprocessing`` are identifiers made of letters, digits, ``.``, ``_``
    and ``-``. The restricted alphabets keep the ``:``-separated rendering unambiguous, so two different
    keys can never render to the same string.
    """

    content_hash: str
    backbone: str
    weights_hash: str
    preprocessing: str

    def __post_init__(self) -> None:
        _require(_HEX_RE, "content_hash", self.content_hash, "a lowercase hex digest")
        _require(_HEX_RE, "weights_hash", self.weights_hash, "a lowercase hex digest")
        _require(_TOKEN_RE, "backbone", self.backbone, "letters, digits, '.', '_' or '-'")
        _require(_TOKEN_RE, "preprocessing", self.preprocessing, "letters, digits, '.', '_' or '-'")

    def render(self, prefix: str) -> str:
        """Return the storage key.

        Layout: ``{prefix}emb:v1:{backbone}:{weights_hash}:{preprocessing}:{content_hash}``. The full weights
        hash is used, so a change to any character of any field changes the key.
        """
        return (
            f"{prefix}emb:{KEY_VERSION}:{self.backbone}:{self.weights_hash}:"
            f"{self.preprocessing}:{self.content_hash}"
        )


def _require(pattern: re.Pattern[str], name: str, value: str, expected: str) -> None:
    """Raise ``ValueError`` unless ``value`` is a string made only of ``pattern``'s alphabet."""
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise ValueError(f"CacheKey.{name} must be non-empty and made of {expected}")


def encode_vector(vector: npt.NDArray[Any]) -> bytes:
    """Return ``vector`` as little-endian float32 bytes (a copy); ``ValueError`` unless 1-D and non-empty."""
    array = np.asarray(vector)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"embedding must be a non-empty 1-D array, got shape {array.shape}")
    return array.astype(_ENCODING).tobytes()


def decode_vector(data: bytes, dim: int | None = None) -> Vector | None:
    """Return a fresh float32 array from stored bytes, or ``None`` if their length is impossible."""
    if not data or len(data) % _ITEM_BYTES or (dim is not None and len(data) != dim * _ITEM_BYTES):
        return None
    return np.frombuffer(data, dtype=_ENCODING).astype(np.float32)
