"""Fuzzer: model bundle loading (``hemascope.bundle.load_bundle``) on a tiny synthetic bundle.

The first byte picks what is tampered with: the manifest (its JSON text replaced by the input), or one
model file (replaced by the input, its SHA-256 in the manifest updated to match, so the skops / XGBoost
readers themselves parse it). Any input must load or be refused with BundleError; it must never run code,
raise another exception or hang."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["hemascope"]):
    from fuzz.harness import expected, run
    from hemascope.bundle import load_bundle
    from hemascope.bundle.manifest import MANIFEST
    from services.classifier.synthetic import SyntheticSpec, build_synthetic_bundle

PRISTINE = Path(tempfile.mkdtemp(prefix="fuzz-bundle-")) / "bundle"
build_synthetic_bundle(PRISTINE, SyntheticSpec(version="fuzz"))
MANIFEST_TEXT = (PRISTINE / MANIFEST).read_text()
RAW = json.loads(MANIFEST_TEXT)
FILES = [RAW["scaler_file"], *(entry["file"] for entry in RAW["models"].values())]
WORK = PRISTINE.parent / "work"


def _fresh() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    shutil.copytree(PRISTINE, WORK)


def target(data: bytes) -> None:
    if not data:
        return
    choice, body = data[0] % (len(FILES) + 1), data[1:]
    _fresh()
    if choice == 0:
        (WORK / MANIFEST).write_bytes(body)
    else:
        name = FILES[choice - 1]
        (WORK / name).write_bytes(body)
        manifest = json.loads(MANIFEST_TEXT)
        digest = hashlib.sha256(body).hexdigest()
        if name == manifest["scaler_file"]:
            manifest["scaler_sha256"] = digest
        for entry in manifest["models"].values():
            if entry["file"] == name:
                entry["sha256"] = digest
        (WORK / MANIFEST).write_text(json.dumps(manifest))
    expected(lambda: load_bundle(WORK))


def seeds() -> Iterator[bytes]:
    yield b"\x00" + MANIFEST_TEXT.encode()
    for index, name in enumerate(FILES, start=1):
        yield bytes([index]) + (PRISTINE / name).read_bytes()


if __name__ == "__main__":
    run("bundle", target, seeds())
