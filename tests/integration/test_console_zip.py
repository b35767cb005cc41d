"""Zip uploads on the Analyse page over Starlette's TestClient, in front of a real gateway and services: a
zip (known by its bytes, whatever its name) becomes one analysis per image member, named by its path in
the archive and never written anywhere; folders, __MACOSX and dot-files are skipped; a member that is too
large once decompressed (whatever its header declares), too many members, too many bytes in all, a member
that is no image, an encrypted one, a corrupt zip and a zip inside the zip refuse the upload, saying why."""

from __future__ import annotations

import io
import re
import struct
import zipfile
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from tests.console_fixtures import ConsoleStack
from tests.integration.test_console import client_for, csrf_of, login, wait_batch

CELLS = ("myeloblast", "seg_neutrophil", "basophil")


@pytest.fixture(scope="module")
def jpegs(data_dir: Path) -> dict[str, bytes]:
    folder = data_dir / "bloodcells-5class" / "val"
    return {name: sorted((folder / name).glob("*.jpg"))[0].read_bytes() for name in CELLS}


def make_zip(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            if name.endswith("/"):
                archive.writestr(zipfile.ZipInfo(name), b"")
            else:
                archive.writestr(name, data)
    return buffer.getvalue()


def send(client: TestClient, files: list[tuple[str, bytes]]) -> object:
    token = csrf_of(client, "/analyse")
    parts = [("images", (name, data, "application/octet-stream")) for name, data in files]
    return client.post("/analyse", data={"csrf_token": token, "explain": "on"}, files=parts)


def stored_rows(client: TestClient) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = client.get("/export/results.json").json()
    return rows


def test_a_zip_of_three_cells_gives_three_results_named_by_their_paths(
    console_stack: ConsoleStack, tmp_path: Path, jpegs: dict[str, bytes]
) -> None:
    archive = make_zip(
        {
            "cells/": b"",
            "cells/myeloblast 1.jpg": jpegs["myeloblast"],
            "__MACOSX/cells/._myeloblast 1.jpg": b"\x00\x05\x16\x07 resource fork",
            "cells/.DS_Store": b"\x00\x00\x00\x01Bud1",
            ".hidden/seg.jpg": b"not read: inside a dot-folder",
            "cells/neutrophils/seg.jpg": jpegs["seg_neutrophil"],
            "../../x.jpg": jpegs["basophil"],
        }
    )
    with client_for(console_stack, f"sqlite:///{tmp_path / 'console.db'}") as client:
        login(client, console_stack.keys["reviewer"])
        page = client.get("/analyse").text
        assert 'accept="image/jpeg,image/png,image/tiff,image/bmp,.zip,application/zip"' in page
        assert "or a .zip of them" in page
        response = send(client, [("cells.zip", archive)])
        assert response.status_code == 303, response.text  # type: ignore[attr-defined]
        page = wait_batch(client, response.headers["location"], 3)  # type: ignore[attr-defined]
        assert page.count('data-testid="result-card"') == 3 and page.count("status-done") == 3
        names = re.findall(r'<header><a href="/analyses/\d+">([^<]+)</a></header>', page)
        assert names == ["cells/myeloblast_1.jpg", "cells/neutrophils/seg.jpg", "x.jpg"]
        rows = {row["filename"]: row for row in stored_rows(client)}
        assert set(rows) == set(names)
        assert rows["cells/myeloblast_1.jpg"]["label"] == "myeloblast"
        store = client.app.state.console.store  # type: ignore[attr-defined]
        for name, cell in zip(names, CELLS, strict=True):
            # the member's bytes are what was analysed and kept; its path is only a name
            assert store.image(rows[name]["id"]) == jpegs[cell]
        assert not (tmp_path / "x.jpg").exists() and not Path("x.jpg").exists()

        # a zip is known by its bytes, an image by its own: the names do not decide
        mixed = [("images.jpg", make_zip({"a.png": jpegs["basophil"]})), ("photo.zip", jpegs["myeloblast"])]
        response = send(client, mixed)
        assert response.status_code == 303, response.text  # type: ignore[attr-defined]
        page = wait_batch(client, response.headers["location"], 2)  # type: ignore[attr-defined]
        assert re.findall(r'<header><a href="/analyses/\d+">([^<]+)</a></header>', page) == [
            "a.png",
            "photo.zip",
        ]
        assert page.count("status-done") == 2


def lying_sizes(archive: bytes, declared: int) -> bytes:
    """The zip with every header declaring ``declared`` bytes for its member, whatever it holds."""
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        struct.pack_into("<I", data, at + offset, declared)
    return bytes(data)


def encrypted_flag(archive: bytes) -> bytes:
    """The zip with its member marked encrypted (general purpose flag bit 0), as an encrypting tool does."""
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        (flags,) = struct.unpack_from("<H", data, at + offset)
        struct.pack_into("<H", data, at + offset, flags | 0x1)
    return bytes(data)


def test_bad_zips_refuse_the_upload_saying_why(
    console_stack: ConsoleStack, tmp_path: Path, jpegs: dict[str, bytes]
) -> None:
    limit = 200_000
    bomb = make_zip({"cells/bomb.jpg": b"\0" * (40 * 2**20)})  # 40 MiB of zeros in about 40 kB
    assert len(bomb) < limit
    good = make_zip({"a.jpg": jpegs["myeloblast"]})
    cases = {
        "bomb": (bomb, f"cells.zip: cells/bomb.jpg: over the limit of {limit} bytes once decompressed"),
        # a header that declares a small size is not believed either: the member is read and found out
        "lying": (lying_sizes(bomb, 1000), "cells.zip: cells/bomb.jpg: cannot be read from the zip"),
        "too many": (
            make_zip({f"c{i}.jpg": jpegs["basophil"] for i in range(4)}),
            "cells.zip: it holds 4 files; one upload may have 3",
        ),
        "not an image": (
            make_zip({"a.jpg": jpegs["myeloblast"], "notes/readme.txt": b"counted by hand"}),
            "cells.zip: notes/readme.txt: not a readable image",
        ),
        "encrypted": (
            encrypted_flag(make_zip({"a.jpg": jpegs["myeloblast"]}, zipfile.ZIP_STORED)),
            "encrypted",
        ),
        "corrupt": (good[: len(good) // 2], "cells.zip: not a readable zip archive"),
        "nested": (
            make_zip({"inner.zip": good, "b.jpg": jpegs["basophil"]}),
            "cells.zip: inner.zip: a zip inside the zip",
        ),
        "empty": (make_zip({"cells/": b"", "__MACOSX/._x": b"x"}), "cells.zip: it holds no images"),
    }
    with client_for(
        console_stack, f"sqlite:///{tmp_path / 'a.db'}", max_upload_bytes=limit, max_files=3
    ) as client:
        login(client, console_stack.keys["reviewer"])
        for case, (archive, message) in cases.items():
            response = send(client, [("cells.zip", archive)])
            assert response.status_code == 400, case  # type: ignore[attr-defined]
            assert message in response.text, (case, response.text)  # type: ignore[attr-defined]
        # the zip's images count with the other files of the upload
        two = make_zip({"a.jpg": jpegs["myeloblast"], "b.jpg": jpegs["basophil"]})
        response = send(
            client, [("one.jpg", jpegs["seg_neutrophil"]), ("two.jpg", jpegs["basophil"]), ("z.zip", two)]
        )
        assert response.status_code == 400  # type: ignore[attr-defined]
        assert "z.zip: it holds 2 files besides the 2 other images of this upload" in response.text  # type: ignore[attr-defined]
        assert stored_rows(client) == []
    many_bytes = make_zip({f"c{i}.jpg": b"\0" * 400_000 for i in range(3)})
    with client_for(console_stack, f"sqlite:///{tmp_path / 'b.db'}", max_batch_bytes=1_000_000) as client:
        login(client, console_stack.keys["reviewer"])
        response = send(client, [("cells.zip", many_bytes)])
        assert response.status_code == 400  # type: ignore[attr-defined]
        assert "cells.zip: its files are over the limit of 1000000 bytes once decompressed" in response.text  # type: ignore[attr-defined]
        assert stored_rows(client) == []
