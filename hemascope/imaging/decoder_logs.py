"""Silence decoder log records while :func:`hemascope.imaging.decode.decode_image` runs.

tifffile (and Pillow's TIFF/PNG plugins) log malformed tags they meet, tifffile sometimes quoting tag
contents; for untrusted uploads those records are noise at best and leak file content at worst. The
rejection itself is reported through :class:`~hemascope.errors.InvalidImage`. The filter is installed on
the decoder loggers when this module is imported and only drops records from a thread inside
:func:`quiet_decoder_logs`; other threads and callers are unaffected.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

_DECODER_LOGGERS: Final = ("tifffile", "PIL.ImageFile", "PIL.PngImagePlugin", "PIL.TiffImagePlugin")


class _QuietWhileDecoding(logging.Filter):
    """Drops decoder log records emitted by a thread while it is inside :func:`quiet_decoder_logs`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_DECODING, "active", False)


_DECODING = threading.local()
_QUIET_FILTER = _QuietWhileDecoding()
for _logger_name in _DECODER_LOGGERS:
    logging.getLogger(_logger_name).addFilter(_QUIET_FILTER)


@contextmanager
def quiet_decoder_logs() -> Iterator[None]:
    """Drop decoder log records emitted by the current thread inside the block (re-entrant)."""
    previous = getattr(_DECODING, "active", False)
    _DECODING.active = True
    try:
        yield
    finally:
        _DECODING.active = previous
