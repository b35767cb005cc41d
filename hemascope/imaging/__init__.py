"""Image decoding, validation and content hashing for the Hemascope services."""

from hemascope.imaging.decode import (
    SUPPORTED_MEDIA_TYPES,
    DecodedImage,
    ImageHeader,
    ImageLimits,
    decode_image,
    probe_image,
)
from hemascope.imaging.hashing import HASH_VERSION, content_hash

__all__ = [
    "HASH_VERSION",
    "SUPPORTED_MEDIA_TYPES",
    "DecodedImage",
    "ImageHeader",
    "ImageLimits",
    "content_hash",
    "decode_image",
    "probe_image",
]
