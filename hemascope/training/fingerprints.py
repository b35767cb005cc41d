"""Acquisition fingerprints of a list of image files, decoded as the services decode them, cached on disk."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from hemascope.imaging.decode import decode_image
from hemascope.imaging.fingerprint import REVISION, SIZE, fingerprint

_CHUNK = 64


def _chunk(paths: Sequence[str]) -> NDArray[np.float32]:
    out = np.empty((len(paths), SIZE), dtype=np.float32)
    for i, path in enumerate(paths):
        out[i] = fingerprint(decode_image(Path(path).read_bytes()).pixels)
    return out


def fingerprint_files(
    paths: Sequence[Path],
    *,
    cache_dir: Path | None = None,
    workers: int = 1,
    log: Callable[[str], None] | None = None,
) -> NDArray[np.float32]:
    """Fingerprints (N x SIZE) of ``paths`` in order; with ``cache_dir``, stored there under a key made of
    the fingerprint revision and the paths, so a study run twice reads them back."""
    names = [str(p) for p in paths]
    target = None
    if cache_dir is not None:
        key = hashlib.sha256(json.dumps([REVISION, *names]).encode()).hexdigest()[:20]
        target = cache_dir / "fingerprints" / f"r{REVISION}-{key}.npy"
        if target.is_file():
            stored: NDArray[np.float32] = np.load(target)
            if stored.shape == (len(names), SIZE):
                return stored
    if log is not None:
        log(f"fingerprinting {len(names)} images")
    chunks = [names[i : i + _CHUNK] for i in range(0, len(names), _CHUNK)]
    if workers > 1 and len(chunks) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(_chunk, chunks))
    else:
        parts = [_chunk(c) for c in chunks]
    result = np.concatenate(parts) if parts else np.empty((0, SIZE), dtype=np.float32)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, result)
    return result
