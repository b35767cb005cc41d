"""What a caller sends as an image, before decoding (shared by every service that takes images)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hemascope.errors import InvalidArgument


@dataclass(frozen=True)
class ImageInput:
    """Encoded bytes, an optional media type to cross-check, an optional caller id (echoed, never logged)."""

    data: bytes
    media_type: str = ""
    image_id: str = ""


def check_batch(images: Sequence[ImageInput], max_items: int, max_bytes: int) -> None:
    """InvalidArgument (reason BATCH_TOO_LARGE) when a batch has too many images or too many bytes."""
    if len(images) > max_items:
        raise InvalidArgument(
            f"{len(images)} images in one batch; the limit is {max_items}. Split the batch.",
            reason="BATCH_TOO_LARGE",
            field="images",
        )
    total = sum(len(image.data) for image in images)
    if total > max_bytes:
        raise InvalidArgument(
            f"batch holds {total} bytes of images; the limit is {max_bytes}. Split the batch.",
            reason="BATCH_TOO_LARGE",
            field="images",
        )
