"""Feature benchmark, model side: real images and requests, the ONNX export, the raw session, the breakdown.

PyTorch is only imported in child processes (making the random ResNet50 checkpoint, exporting to ONNX), so
the raw session runs in a process as lean as the service's.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from benchlib.cpu import CpuUsage, cpu_snapshot, cpu_usage
from benchlib.service import hemascope_command
from benchlib.stats import median_ms
from numpy.typing import NDArray

from hemascope.cache import CacheKey, MemoryCache
from hemascope.data import shared_data_dir
from hemascope.files import file_sha256
from hemascope.imaging.decode import ImageLimits, decode_image
from hemascope.imaging.hashing import content_hash
from hemascope.imaging.preprocess import DEFAULT_PREPROCESSING, get_preprocessing
from hemascope.v1 import common_pb2, feature_pb2
from services.feature import converters
from services.feature.backbones import BackboneSpec, get_spec, weights_file
from services.feature.core import BackboneInfo, EmbedResult
from services.feature.onnx_export import onnx_path
from services.feature.runtime import OnnxEmbedder
from services.feature.settings import FeatureSettings

DATASET = "bloodcells-5class"
RAW_BATCHES = (1, 8, 32)
BREAKDOWN_ITERATIONS = 200
PREPARE_ROUNDS = 5
EXPORT_TIMEOUT_S = 1800.0
RANDOM_CHECKPOINT_SCRIPT = """
import sys, torch
from torchvision.models import resnet50
torch.manual_seed(0)
torch.save(resnet50(weights=None).state_dict(), sys.argv[1])
"""


# --- images -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EncodedImage:
    data: bytes
    media_type: str
    name: str


def load_images(split: str, limit: int) -> list[EncodedImage]:
    """Up to ``limit`` real JPEGs of ``split``, taken round-robin over the classes (sorted, reproducible)."""
    root = shared_data_dir() / DATASET / split
    if not root.is_dir():
        raise SystemExit(f"dataset not found at {root}; set HEMASCOPE_DATA_DIR")
    per_class = [sorted(folder.glob("*.jpg")) for folder in sorted(root.iterdir()) if folder.is_dir()]
    ordered = [path for group in zip(*per_class, strict=False) for path in group]
    return [EncodedImage(path.read_bytes(), "image/jpeg", path.name) for path in ordered[:limit]]


def model_inputs(images: Sequence[EncodedImage], spec: BackboneSpec) -> NDArray[np.uint8]:
    """The images decoded and resized exactly as the service does, stacked ``N x S x S x 3``."""
    return np.stack(
        [spec.preprocessing.resize(decode_image(im.data, media_type=im.media_type).pixels) for im in images]
    )


def embed_requests(images: Sequence[EncodedImage], *, skip_cache: bool) -> list[feature_pb2.EmbedRequest]:
    return [
        feature_pb2.EmbedRequest(
            image=common_pb2.Image(data=im.data, media_type=im.media_type, image_id=im.name),
            skip_cache=skip_cache,
        )
        for im in images
    ]


# --- model preparation (PyTorch only in child processes) --------------------------------------------------
def random_resnet50_checkpoint(directory: Path) -> Path:
    """A torchvision ResNet50 state dict with random weights (seed 0), made in a child process."""
    path = directory / "resnet50-random-seed0.pth"
    subprocess.run([sys.executable, "-c", RANDOM_CHECKPOINT_SCRIPT, str(path)], check=True)
    return path


def service_env(settings: FeatureSettings, **extra: str) -> dict[str, str]:
    """Environment giving a child ``hemascope`` the model cache and checkpoint of ``settings``."""
    env = dict(os.environ, HEMASCOPE_FEATURE_MODEL_CACHE_DIR=str(settings.model_cache_dir))
    if settings.resnet50_checkpoint is not None:
        env["HEMASCOPE_FEATURE_RESNET50_CHECKPOINT"] = str(settings.resnet50_checkpoint)
    env.update(extra)
    return env


def ensure_export(settings: FeatureSettings) -> tuple[Path, str]:
    """The cached ONNX export (made by ``hemascope export-backbone`` if missing) and the weights hash."""
    spec = get_spec(settings.backbone)
    weights_hash = file_sha256(weights_file(spec.name, settings.resnet50_checkpoint))
    target = onnx_path(settings.model_cache_dir, spec, weights_hash)
    if not target.is_file():
        print(f"exporting {spec.name} to {target} (once per weights hash) ...", file=sys.stderr)
        command = [*hemascope_command(), "export-backbone", "--backbone", spec.name]
        subprocess.run(command, env=service_env(settings), check=True, timeout=EXPORT_TIMEOUT_S)
    return target, weights_hash


# --- raw session ------------------------------------------------------------------------------------------
def raw_throughput(embedder: OnnxEmbedder, pixels: NDArray[np.uint8], batch: int, seconds: float) -> float:
    """Images per second of ``embedder.run`` on pre-stacked batches of ``batch`` real images."""
    count = max(1, len(pixels) // batch)
    batches = [
        np.ascontiguousarray(pixels[(np.arange(batch) + k * batch) % len(pixels)]) for k in range(count)
    ]
    embedder.run(batches[0])  # warm-up: first run allocates
    runs, started = 0, time.perf_counter()
    while True:
        embedder.run(batches[runs % len(batches)])
        runs += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and runs >= 2:
            return runs * batch / elapsed


def bench_raw(
    path: Path, settings: FeatureSettings, pixels: NDArray[np.uint8], seconds: float
) -> tuple[dict[int, float], CpuUsage, list[str]]:
    embedder = OnnxEmbedder(
        path,
        intra_op_threads=settings.intra_op_threads,
        use_gpu=settings.use_gpu,
        allow_spinning=settings.allow_spinning,
    )
    before = cpu_snapshot()
    results = {batch: raw_throughput(embedder, pixels, batch, seconds) for batch in RAW_BATCHES}
    usage = cpu_usage(before, cpu_snapshot())
    return results, usage, list(embedder.providers)


# --- miss breakdown ---------------------------------------------------------------------------------------
def miss_breakdown(image: EncodedImage, spec: BackboneSpec, weights_hash: str) -> dict[str, float]:
    """Median ms per stage of a miss's Python work on one real image (the model itself is not included)."""
    request = embed_requests([image], skip_cache=False)[0]
    wire = request.SerializeToString()
    decoded = decode_image(image.data, ImageLimits(), image.media_type)
    option = get_preprocessing(DEFAULT_PREPROCESSING)  # what the service runs by default
    key = CacheKey(content_hash(decoded.pixels), spec.name, weights_hash, option.version)
    vector = np.zeros(spec.dimension, np.float32)
    info = BackboneInfo(spec, weights_hash, "bench", ["CPUExecutionProvider"], option)
    result = EmbedResult(vector, key.content_hash, False, decoded.width, decoded.height, image.name)
    response = converters.embed_response(result, info)
    cache = MemoryCache(max_entries=10)

    def cache_get_put() -> None:
        cache.get(key)
        cache.put(key, vector)

    stages: dict[str, Callable[[], object]] = {
        "request_parse": lambda: feature_pb2.EmbedRequest.FromString(wire),
        "decode_image": lambda: decode_image(image.data, ImageLimits(), image.media_type),
        "content_hash": lambda: content_hash(decoded.pixels),
        f"prepare ({option.name})": lambda: option.prepare(decoded.pixels),
        "memory_cache_get_put": cache_get_put,
        "response_build": lambda: converters.embed_response(result, info),
        "response_serialize": response.SerializeToString,
    }
    timings = {name: median_ms(fn, BREAKDOWN_ITERATIONS) for name, fn in stages.items()}
    timings["total_python"] = round(sum(timings.values()), 3)
    return timings


# --- preprocessing, package against the SciPy reference ---------------------------------------------------
def _reference_module() -> ModuleType:
    """``tests/reference_preprocess.py`` of this checkout (first on the path: torchstain installs a
    top-level ``tests`` package of its own)."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("tests.reference_preprocess")


def prepare_timings(images: Sequence[EncodedImage]) -> dict[str, float]:
    """CPU ms per image of the default option's ``prepare`` (the package's OpenCV implementation) and of
    the SciPy / per-pixel definition it reproduces (``tests/reference_preprocess.py``), on the same real
    images in the same run: rounds alternate between the two, and each side's best round counts (CPU time,
    so another process taking the CPU between rounds does not count; sharing the core still slows both).
    """
    option = get_preprocessing(DEFAULT_PREPROCESSING)
    reference_preprocess = _reference_module()
    pixels = [decode_image(im.data, ImageLimits(), im.media_type).pixels for im in images]
    sides: dict[str, Callable[[NDArray[np.uint8]], object]] = {
        "package": option.prepare,
        "reference": lambda p: reference_preprocess.prepare(option, p),
    }
    best = {name: float("inf") for name in sides}
    for _ in range(PREPARE_ROUNDS):
        for name, fn in sides.items():
            started = time.process_time()
            for p in pixels:
                fn(p)
            best[name] = min(best[name], 1000 * (time.process_time() - started) / len(pixels))
    sizes = sorted({f"{p.shape[1]}x{p.shape[0]}" for p in pixels})
    print(f"preprocessing timed on {len(pixels)} images ({', '.join(sizes)})", file=sys.stderr)
    return {
        "package_ms": round(best["package"], 3),
        "reference_ms": round(best["reference"], 3),
        "speedup": round(best["reference"] / best["package"], 2),
    }
