"""Zip uploads: a .zip of cell images becomes one image per member, read in memory (nothing is extracted
to disk, and a member's path is only ever a display name). Every limit is checked on what is actually
read, never on what the archive's headers declare: each member is decompressed at most to one byte over
the per-image limit, and all members together at most to the upload limit (zip bombs)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass

from console.images import safe_path

ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
"""How a zip begins: a member's local header, or the end record of an empty archive."""
_END = b"PK\x05\x06"
_END64_LOCATOR = b"PK\x06\x07"
_END64 = b"PK\x06\x06"
ENTRY_HEADROOM = 64
"""Entries (folders, ``__MACOSX`` companions, dot-files) an archive may hold besides its images before its
directory is not even parsed."""


class BadArchive(ValueError):
    """The zip as a whole is refused (unreadable, too many members, too large once decompressed)."""


class TooManyMembers(BadArchive):
    """The zip holds more files than the batch has room for."""

    def __init__(self, count: int) -> None:
        super().__init__(f"it holds {count} files, more than the batch has room for")
        self.count = count


@dataclass(frozen=True)
class Member:
    """One image candidate of a zip: its display name (the sanitised path inside the archive) and bytes."""

    name: str
    data: bytes


def is_zip(data: bytes) -> bool:
    """Whether ``data`` is a zip archive, by its first bytes (whatever the file is called)."""
    return data[:4] in ZIP_MAGIC


def skipped(name: str) -> bool:
    """Entries that are not images by construction: folders, macOS resource forks (``__MACOSX/``) and
    dot-files or anything inside a dot-folder (``.`` and ``..`` are not dot-files: such a path is only
    a name here, reduced by ``safe_path``)."""
    parts = name.replace("\\", "/").split("/")
    hidden = (p for p in parts if p.startswith(".") and p not in (".", ".."))
    return name.endswith(("/", "\\")) or parts[0] == "__MACOSX" or any(hidden)


def declared_entries(data: bytes) -> int:
    """The entry count the archive's end record declares (its zip64 record when there is one), read
    before the directory is parsed so that a directory of millions of tiny entries is refused cheaply;
    BadArchive when there is no end record."""
    at = data.rfind(_END, max(0, len(data) - (22 + 0xFFFF)))
    try:
        if at < 0:
            raise BadArchive("not a readable zip archive (no end record)")
        (entries,) = struct.unpack_from("<H", data, at + 10)
        if entries == 0xFFFF and at >= 20 and data[at - 20 : at - 16] == _END64_LOCATOR:
            (offset,) = struct.unpack_from("<Q", data, at - 20 + 8)
            if data[offset : offset + 4] == _END64:
                (entries,) = struct.unpack_from("<Q", data, offset + 32)
    except struct.error:
        raise BadArchive("not a readable zip archive (truncated end record)") from None
    return int(entries)


def read_zip(
    data: bytes, *, max_members: int, max_member_bytes: int, max_total_bytes: int
) -> tuple[list[Member], list[str]]:
    """The image candidates of the zip ``data`` in archive order, and what is wrong with the members that
    cannot be one (encrypted, unreadable, over ``max_member_bytes`` once decompressed, a zip inside the zip;
    each message names the member). Whether a candidate is an image is decided later, on its bytes, like
    any uploaded file. BadArchive when the archive as a whole is refused: not readable, more than
    ``max_members`` files (folders, ``__MACOSX/`` and dot-files aside), or more than ``max_total_bytes``
    once decompressed."""
    entries = declared_entries(data)
    if entries > 4 * max_members + ENTRY_HEADROOM:
        raise TooManyMembers(entries)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise BadArchive(f"not a readable zip archive ({exc})") from None
    with archive:
        infos = [info for info in archive.infolist() if not info.is_dir() and not skipped(info.filename)]
        if len(infos) > max_members:
            raise TooManyMembers(len(infos))
        members: list[Member] = []
        errors: list[str] = []
        total = 0
        for info in infos:
            name = safe_path(info.filename)
            if info.flag_bits & 0x1:
                errors.append(f"{name}: encrypted; only unencrypted zips are accepted")
                continue
            try:
                with archive.open(info) as stream:
                    content = stream.read(max_member_bytes + 1)  # never more, whatever the header says
            except (
                zipfile.BadZipFile,
                zlib.error,
                EOFError,
                OSError,
                RuntimeError,
                NotImplementedError,
            ) as exc:
                errors.append(f"{name}: cannot be read from the zip ({exc})")
                continue
            if len(content) > max_member_bytes:
                errors.append(f"{name}: over the limit of {max_member_bytes} bytes once decompressed")
                continue
            total += len(content)
            if total > max_total_bytes:
                raise BadArchive(f"its files are over the limit of {max_total_bytes} bytes once decompressed")
            if is_zip(content):
                errors.append(f"{name}: a zip inside the zip; put the images in one zip")
                continue
            members.append(Member(name, content))
    return members, errors
