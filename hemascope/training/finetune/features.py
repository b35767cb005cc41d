"""Front features of every training image and of its re-acquired copies, computed once and cached.

The front (ImageNet stem and first stages) is frozen, so what it makes of an input never changes while the
back is trained: each image's original (variant 0, exactly what serving feeds the backbone) and ``copies``
re-acquired variants go through the preprocessing option and the front once, and are stored as float16
``N x (copies + 1) x C x H x W`` arrays in chunks under a folder keyed by everything that determines them
(file contents, option version, acquisition recipe, copies, seed, front weights, split). A rerun reuses
finished chunks, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray

from hemascope.files import file_sha256
from hemascope.imaging.cellseg import NEUTRAL
from hemascope.imaging.decode import decode_image
from hemascope.imaging.preprocess import Preprocessing, get_preprocessing
from hemascope.training.acquisition import (
    DEFAULT_ACQUISITION,
    AcquisitionConfig,
    copy_rng,
    geometry,
    reacquire,
)
from hemascope.training.finetune.network import SPLIT_BLOCK, Front, training_device
from services.feature.torch_modules import EfficientNetTrunk, EmbeddingModule

CHUNK = 128
FORMAT = 1


@dataclass(frozen=True)
class VariantPlan:
    """Which inputs the front sees per image: the original and ``copies`` re-acquired variants."""

    option: str
    copies: int = 5
    seed: int = 50
    acquisition: AcquisitionConfig = field(default=DEFAULT_ACQUISITION)
    split: int = SPLIT_BLOCK

    def describe(self) -> dict[str, object]:
        return {
            "option": self.option,
            "preprocessing": get_preprocessing(self.option).version,
            "copies": self.copies,
            "seed": self.seed,
            "acquisition": self.acquisition.version,
            "acquisition_ranges": asdict(self.acquisition),
            "split_block": self.split,
        }


def fill_colour(option: Preprocessing, prepared: NDArray[np.uint8]) -> tuple[int, int, int]:
    """The option's background: white for the cropped haematoxylin channel, the neutral grey for other
    cropped options, the image's own border median otherwise."""
    if option.cell_crop:
        return (255, 255, 255) if option.channels == "hematoxylin" else NEUTRAL
    edge = np.concatenate([prepared[0], prepared[-1], prepared[:, 0], prepared[:, -1]])
    r, g, b = (int(v) for v in np.median(edge, axis=0))
    return r, g, b


def prepare_variants(data: bytes, plan: VariantPlan) -> NDArray[np.uint8]:
    """``(copies + 1) x size x size x 3`` uint8: the served input first, then the re-acquired copies."""
    pixels = decode_image(data).pixels
    option = get_preprocessing(plan.option)
    out = [option.prepare(pixels)]
    for index in range(plan.copies):
        rng = copy_rng(plan.seed, data, index)
        prepared = option.prepare(reacquire(pixels, rng, plan.acquisition))
        out.append(geometry(prepared, rng, fill_colour(option, prepared), plan.acquisition))
    return np.stack(out)


class _Variants(torch.utils.data.Dataset[tuple[int, torch.Tensor]]):
    def __init__(self, paths: Sequence[Path], plan: VariantPlan) -> None:
        self.paths, self.plan = list(paths), plan

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor]:
        torch.set_num_threads(1)
        return index, torch.from_numpy(prepare_variants(self.paths[index].read_bytes(), self.plan))


def advance(
    features: NDArray[np.float16], embedding: EmbeddingModule, start: int, stop: int, chunk: int = 512
) -> NDArray[np.float16]:
    """Front features cached at block ``start`` carried through the frozen blocks ``start..stop-1``, so a
    recipe that fine-tunes from block ``stop`` never recomputes them (every variant, float16)."""
    if stop == start:
        return features
    trunk = embedding.trunk
    assert isinstance(trunk, EfficientNetTrunk)
    blocks = list(trunk.net._blocks)[start:stop]
    n, v = features.shape[:2]
    flat = features.reshape(n * v, *features.shape[2:])
    out: list[NDArray[np.float16]] = []
    device = training_device()
    for block in blocks:
        block.to(device)
    with torch.inference_mode():
        for begin in range(0, len(flat), chunk):
            x = torch.from_numpy(flat[begin : begin + chunk].astype(np.float32)).to(device)
            for block in blocks:
                x = block(x)
            out.append(x.to(torch.float16).cpu().numpy())
    for block in blocks:
        block.to("cpu")
    stacked = np.concatenate(out)
    return stacked.reshape(n, v, *stacked.shape[1:])


def cache_key(paths: Sequence[Path], plan: VariantPlan, weights_hash: str) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(file_sha256(path).encode())
    digest.update(json.dumps([plan.describe(), weights_hash, FORMAT], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:24]


def front_features(
    paths: Sequence[Path],
    plan: VariantPlan,
    front: Front,
    weights_hash: str,
    cache_dir: Path,
    *,
    workers: int = 1,
    log: Callable[[str], None] | None = None,
    until: int | None = None,
) -> NDArray[np.float16]:
    """``N x (copies + 1) x C x H x W`` front features of ``paths`` (cached; see the module docstring):
    the inputs of block ``plan.split``, or with ``until`` those of a later block (carried through the
    frozen blocks in between once, and cached too)."""
    folder = cache_dir / f"front-{cache_key(paths, plan, weights_hash)}"
    folder.mkdir(parents=True, exist_ok=True)
    if until is not None and until > plan.split:
        target = folder / f"block-{until:02d}.npy"
        if target.is_file():
            stored: NDArray[np.float16] = np.load(target)
            return stored
        base = front_features(paths, plan, front, weights_hash, cache_dir, workers=workers, log=log)
        if log is not None:
            log(f"  carrying the front features through the frozen blocks {plan.split}-{until - 1}")
        advanced = advance(base, front.embedding, plan.split, until)
        partial = target.with_suffix(".partial.npy")
        np.save(partial, advanced)
        partial.replace(target)
        return advanced
    (folder / "plan.json").write_text(json.dumps({**plan.describe(), "images": len(paths)}, indent=1))
    chunks = []
    for number, start in enumerate(range(0, len(paths), CHUNK)):
        target = folder / f"chunk-{number:05d}.npy"
        if not target.is_file():
            _compute_chunk(paths[start : start + CHUNK], plan, front, target, workers)
        chunks.append(np.load(target))
        if log is not None:
            log(f"  front features {min(start + CHUNK, len(paths))}/{len(paths)} images")
    return np.concatenate(chunks)


def _compute_chunk(
    paths: Sequence[Path], plan: VariantPlan, front: Front, target: Path, workers: int
) -> None:
    loader = torch.utils.data.DataLoader(_Variants(paths, plan), batch_size=4, num_workers=workers)
    out: NDArray[np.float16] | None = None
    device = training_device()
    front.to(device)
    with torch.inference_mode():
        for indices, variants in loader:
            n, v = variants.shape[:2]
            batch = variants.reshape(n * v, *variants.shape[2:]).to(device)
            features = front(batch).to(torch.float16).cpu().numpy()
            features = features.reshape(n, v, *features.shape[1:])
            if out is None:
                out = np.zeros((len(paths), *features.shape[1:]), np.float16)
            out[indices.numpy()] = features
    assert out is not None
    front.to("cpu")
    partial = target.with_suffix(".partial.npy")
    np.save(partial, out)
    partial.replace(target)
