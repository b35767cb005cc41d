"""Container formats for :mod:`hemascope.imaging.decode`: which are supported, sniffing them from magic
bytes, and PNG chunk CRC verification (Pillow does not check the CRCs of image data chunks).

Internal to the decoder; the public API is :mod:`hemascope.imaging.decode`.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from hemascope.imaging.failures import corrupt

SUPPORTED_FORMATS: Final = ("JPEG", "PNG", "TIFF", "BMP")

FORMAT_ALIASES: Final = {"MPO": "JPEG"}  # a JPEG with a multi-picture header; we decode its first image
"""Pillow format names mapped to the supported format they are a variant of."""

_MAGIC: Final = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)
_PNG_SIGNATURE_LEN: Final = 8


def sniff_format(data: bytes) -> str | None:
    """Guess the format from the magic bytes, only to tell 'corrupt' from 'not an image we support'."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    return None


def verify_png_chunks(data: bytes) -> None:
    """Walk the PNG chunks up to IEND and check their lengths and CRCs (C speed per chunk)."""
    view = memoryview(data)
    position = _PNG_SIGNATURE_LEN
    index = 0
    while True:
        if position + 12 > len(data):
            raise corrupt("PNG", "the file ends before the IEND chunk (it is truncated)")
        length, chunk_type = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if end > len(data):
            raise corrupt("PNG", f"chunk #{index} runs past the end of the file (it is truncated)")
        (stored_crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(view[position + 4 : end - 4]) != stored_crc:
            raise corrupt("PNG", f"chunk #{index} at byte offset {position} has a bad CRC")
        if chunk_type == b"IEND":
            return
        position = end
        index += 1
