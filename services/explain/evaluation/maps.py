"""CAM maps for every model of a bundle (cached on disk, per Ablation-CAM engine: the library's engine costs
about a second per image and model on two cores) and random maps at the same resolution, upsampled the
same way."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from services.explain.cam import CamExplainer, default_method
from services.explain.evaluation.data import EvalImage
from services.explain.overlay import upsample


@dataclass(frozen=True)
class ImageMaps:
    """One image's explanations by every model (rows in ``models`` order), each of its predicted class."""

    models: tuple[str, ...]
    methods: tuple[str, ...]
    heatmaps: NDArray[np.float32]  # models x h x w, in [0, 1]
    predicted: NDArray[np.int64]  # models: the class explained (the model's most probable class)
    probabilities: NDArray[np.float64]  # models x classes, calibrated
    seconds: NDArray[np.float64]  # the body's forward pass, then each model's CAM on its maps (NaN: cached)


def _cache_file(work: Path, bundle_version: str, engine: str, image: EvalImage) -> Path:
    key = hashlib.sha256(str(image.path.resolve()).encode()).hexdigest()[:24]
    return work / "maps" / bundle_version / engine / f"{key}.npz"


def explain_all(explainer: CamExplainer, prepared: NDArray[np.uint8], models: Sequence[str]) -> ImageMaps:
    """Every model's default-method explanation of one prepared image."""
    started = time.perf_counter()
    maps = explainer.maps(prepared[None])
    seconds = [time.perf_counter() - started]
    results = []
    for model in models:
        started = time.perf_counter()
        results.append(explainer.explain_maps(maps, model, None))
        seconds.append(time.perf_counter() - started)
    return ImageMaps(
        models=tuple(models),
        methods=tuple(r.method for r in results),
        heatmaps=np.stack([r.heatmap for r in results]).astype(np.float32),
        predicted=np.asarray([r.class_index for r in results], np.int64),
        probabilities=np.stack([r.probabilities for r in results]),
        seconds=np.asarray(seconds, np.float64),
    )


def cached_maps(
    explainer: CamExplainer,
    images: Sequence[EvalImage],
    prepared: NDArray[np.uint8],
    work: Path,
    progress: Callable[[str], None] | None = None,
) -> list[ImageMaps]:
    """:func:`explain_all` for each image, read from / written to
    ``work/maps/<bundle version>/<Ablation-CAM engine>/``."""
    models = tuple(explainer.bundle.models)
    version = explainer.bundle.manifest.bundle_version
    out: list[ImageMaps] = []
    for index, (image, pixels) in enumerate(zip(images, prepared, strict=True)):
        path = _cache_file(work, version, explainer.ablation_engine, image)
        if path.is_file():
            with np.load(path) as stored:
                if tuple(stored["models"].tolist()) == models:
                    out.append(
                        ImageMaps(
                            models,
                            tuple(stored["methods"].tolist()),
                            stored["heatmaps"],
                            stored["predicted"],
                            stored["probabilities"],
                            np.full(len(models) + 1, np.nan),
                        )
                    )
                    continue
        result = explain_all(explainer, pixels, models)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            models=np.asarray(models),
            methods=np.asarray(result.methods),
            heatmaps=result.heatmaps,
            predicted=result.predicted,
            probabilities=result.probabilities,
        )
        out.append(result)
        if progress is not None and (index + 1) % 10 == 0:
            progress(f"  maps: {index + 1}/{len(images)} images")
    return out


def method_names(explainer: CamExplainer) -> dict[str, str]:
    return {model: default_method(explainer.bundle, model) for model in explainer.bundle.models}


def random_maps(count: int, shape: tuple[int, int], seed: int) -> NDArray[np.float32]:
    """``count`` random maps (uniform in [0, 1]) at the CAM resolution ``shape``."""
    return np.random.default_rng(seed).random((count, *shape)).astype(np.float32)


def full_resolution(heatmap: NDArray[np.float32], size: int) -> NDArray[np.float32]:
    """A low-resolution map at the prepared image's size, as the overlay upsamples it (bilinear)."""
    return upsample(heatmap, size, size)
