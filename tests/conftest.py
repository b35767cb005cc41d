"""Shared fixtures: real images from ../shared/data, a session-wide ONNX export cache, servers on port 0."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from hemascope.data import shared_data_dir
from hemascope.server import ManagedServer

pytest_plugins = ["tests.classifier_fixtures", "tests.multisite_fixtures", "tests.console_fixtures"]

CLASSES = ("basophil", "erythroblast", "monocyte", "myeloblast", "seg_neutrophil")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if not (path / "bloodcells-5class").is_dir():
        pytest.fail(f"shared data not found at {path}; set HEMASCOPE_DATA_DIR")
    return path


@pytest.fixture(scope="session")
def real_images(data_dir: Path) -> list[Path]:
    """Two real JPEGs per class (both scanners), sorted for reproducibility."""
    paths: list[Path] = []
    for name in CLASSES:
        paths += sorted((data_dir / "bloodcells-5class" / "train" / name).glob("*.jpg"))[:2]
    return paths


@pytest.fixture(scope="session")
def model_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ONNX export cache for the whole test session (exports take seconds)."""
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="session")
def resnet50_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchvision-layout ResNet50 checkpoint made here (random weights, fixed seed)."""
    import torch
    from torchvision.models import resnet50

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "resnet50-test.pth"
    torch.save(resnet50(weights=None).state_dict(), path)
    return path


def encode(pixels: np.ndarray, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **params)
    return buffer.getvalue()


def wait_serving(server: ManagedServer, timeout: float = 120) -> None:
    server.wait_ready(timeout)


@pytest.fixture
def channel_to() -> Iterator[type]:
    """Factory closing its channels afterwards: ``channel_to(port)``."""
    channels: list[grpc.Channel] = []

    def make(port: int) -> grpc.Channel:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return channel

    yield make  # type: ignore[misc]
    for channel in channels:
        channel.close()
