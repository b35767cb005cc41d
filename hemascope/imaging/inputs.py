"""What a caller sends as an image, before decoding (shared by every service that takes images)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageInput:
    """Encoded bytes, an optional media type to cross-check, an optional caller id (echoed, never logged)."""

    data: bytes
    media_type: str = ""
    image_id: str = ""
