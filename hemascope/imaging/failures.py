"""Reason codes and error mapping for :mod:`hemascope.imaging.decode`.

Every decoder failure becomes :class:`~hemascope.errors.InvalidImage` with one of the ``REASON_*`` codes;
messages describe the failure without quoting the decoder's message (it may hold image bytes). The reason
codes are re-exported by :mod:`hemascope.imaging.decode`, which is where callers should import them from.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from PIL import Image

from hemascope.errors import HemascopeError, InvalidImage

REASON_EMPTY: Final = "EMPTY_IMAGE"
REASON_TOO_LARGE: Final = "IMAGE_TOO_LARGE"
REASON_UNSUPPORTED: Final = "UNSUPPORTED_FORMAT"
REASON_MISMATCH: Final = "MEDIA_TYPE_MISMATCH"
REASON_TOO_MANY_PIXELS: Final = "TOO_MANY_PIXELS"
REASON_CORRUPT: Final = "CORRUPT_IMAGE"

SUPPORTED_TEXT: Final = "JPEG, PNG, TIFF or BMP"
"""The supported formats, as written in messages."""


def corrupt(format_name: str | None, detail: str) -> InvalidImage:
    """A :data:`REASON_CORRUPT` error for a ``format_name`` image (any image when ``None``)."""
    kind = f"{format_name} image" if format_name else "image"
    return InvalidImage(f"The {kind} is corrupt or truncated: {detail}.", reason=REASON_CORRUPT)


def unsupported(detail: str) -> InvalidImage:
    """A :data:`REASON_UNSUPPORTED` error; ``detail`` is a full sentence."""
    return InvalidImage(
        f"{detail} Supported formats are {SUPPORTED_TEXT}.",
        reason=REASON_UNSUPPORTED,
    )


def _describe(exc: BaseException) -> str:
    """Describe a decoder failure without quoting the decoder's message (it may hold image bytes)."""
    if "truncated" in str(exc).lower() or isinstance(exc, EOFError):
        return "the file ends before all pixel data was read (it is truncated)"
    return f"the decoder failed ({type(exc).__name__})"


@contextmanager
def mapped_errors(format_name: str | None) -> Iterator[None]:
    """Turn any decoder exception raised inside the block into :class:`InvalidImage`."""
    try:
        yield
    except (HemascopeError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(
            "The image header declares far more pixels than allowed (possible decompression bomb). "
            "Downscale the image before sending it.",
            reason=REASON_TOO_MANY_PIXELS,
        ) from exc
    except Exception as exc:
        raise corrupt(format_name, _describe(exc)) from exc
