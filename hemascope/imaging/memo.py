"""What decoding an encoded image gave, remembered by a digest of its bytes, so a repeat skips the decode.

Decoding a JPEG of a single cell and hashing its pixels takes about 1 ms; a repeated image (an embedding
cache hit, a retry, the same cell analysed again) is the same bytes, and the same bytes with the same
declared media type always decode to the same pixels under the same limits. :class:`DecodeMemo` maps
``SHA-256(media type, bytes)`` to the pixels' content hash and size (never the bytes or pixels, so it stays
small: about 200 bytes an entry) for the last ``entries`` distinct images, least recently used out first.
Only successful decodes are remembered: a bad image is decoded, and refused, every time. A memo belongs to
one set of :class:`~hemascope.imaging.decode.ImageLimits` (its owner's); ``entries=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class SeenImage:
    """What decoding an encoded image gave: the pixels' content hash and the image's size."""

    content_hash: str
    width: int
    height: int


class DecodeMemo:
    """A thread-safe LRU of :class:`SeenImage` by encoded-image digest (see the module docstring)."""

    def __init__(self, entries: int) -> None:
        self.entries = max(0, entries)
        self._seen: OrderedDict[bytes, SeenImage] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(data: bytes, media_type: str) -> bytes:
        """The digest naming these bytes declared as ``media_type`` (no part of the bytes is kept)."""
        declared = media_type.encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(len(declared).to_bytes(8, "big"))  # the length first: no two pairs collide
        digest.update(declared)
        digest.update(data)
        return digest.digest()

    def get(self, key: bytes) -> SeenImage | None:
        if not self.entries:
            return None
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None:
                self._seen.move_to_end(key)
            return seen

    def put(self, key: bytes, seen: SeenImage) -> None:
        if not self.entries:
            return
        with self._lock:
            self._seen[key] = seen
            self._seen.move_to_end(key)
            while len(self._seen) > self.entries:
                self._seen.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._seen)
