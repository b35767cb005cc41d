"""The detector's model files: the ONNX Runtime session (CUDA when present and allowed, CPU otherwise), the
class names and input size from the export's metadata, and the validation metrics of its model card.

Anything wrong with the ONNX file raises :class:`~hemascope.errors.ConfigurationError`: the service then never
turns SERVING and ``hemascope serve detector`` exits 2 with the message.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hemascope.errors import ConfigurationError
from hemascope.files import file_sha256
from hemascope.logs import get_logger
from hemascope.onnx_session import open_session

log = get_logger(__name__)

DEFAULT_INPUT_SIZE = 640
VERSION_DIGITS = 12


def class_names(metadata: Mapping[str, str]) -> tuple[str, ...]:
    """The ``names`` entry Ultralytics writes into the export (a Python dict literal, ``{0: 'WBC', ...}``)."""
    try:
        names = ast.literal_eval(metadata["names"])
        ordered = tuple(str(names[i]) for i in range(len(names)))
    except (KeyError, ValueError, SyntaxError, TypeError) as exc:
        raise ConfigurationError(
            f"the detector export has no readable class names in its metadata ('names': {exc!r}); "
            "export it with Ultralytics"
        ) from None
    if not ordered:
        raise ConfigurationError("the detector export's metadata lists no classes")
    return ordered


def input_size(metadata: Mapping[str, str]) -> int:
    """The square input side from the export's ``imgsz`` metadata (``[640, 640]``); 640 when absent."""
    try:
        sides = ast.literal_eval(metadata.get("imgsz", "None"))
    except (ValueError, SyntaxError):
        sides = None
    if sides is None:
        return DEFAULT_INPUT_SIZE
    if not isinstance(sides, list | tuple) or len(set(sides)) != 1 or not isinstance(sides[0], int):
        raise ConfigurationError(f"the detector export's input size {sides!r} is not square")
    return int(sides[0])


class OnnxDetector:
    """Runs the export: float32 ``N x 3 x S x S`` (RGB 0..1, letterboxed) -> raw head ``N x (4 + C) x A``."""

    def __init__(
        self, path: Path, *, intra_op_threads: int = 0, use_gpu: bool = True, allow_spinning: bool = False
    ) -> None:
        if not path.is_file():
            raise ConfigurationError(f"detector model {path} does not exist or is not a file")
        try:
            self.sha256 = file_sha256(path)
            self.session = open_session(
                path, intra_op_threads=intra_op_threads, use_gpu=use_gpu, allow_spinning=allow_spinning
            )
        except Exception as exc:  # OSError, or onnxruntime's own (InvalidProtobuf, Fail, ...)
            raise ConfigurationError(f"cannot load detector model {path}: {exc}") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ConfigurationError(f"detector model {path} must take one N x 3 x H x W input")
        self.input_name = inputs[0].name
        metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.classes = class_names(metadata)
        self.input_size = input_size(metadata)

    @property
    def providers(self) -> Sequence[str]:
        return list(self.session.get_providers())

    def run(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        (out,) = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return np.asarray(out, dtype=np.float32)

    def warm_up(self) -> None:
        """One run on a blank image (the first run is slow); checks the head has 4 + classes rows."""
        blank = np.full((1, 3, self.input_size, self.input_size), 114 / 255, dtype=np.float32)
        out = self.run(blank)
        if out.ndim != 3 or out.shape[1] != 4 + len(self.classes):
            raise ConfigurationError(
                f"detector output {out.shape} is not a raw YOLOv8 head for {len(self.classes)} classes "
                f"(expected [batch, {4 + len(self.classes)}, anchors]; export without NMS)"
            )


@dataclass(frozen=True)
class Metrics:
    """Detection quality on a validation split."""

    precision: float
    recall: float
    map50: float
    map50_95: float
    images: int
    instances: int


@dataclass(frozen=True)
class CardMetrics:
    """The model card's validation metrics: overall and per class (in class order)."""

    split: str
    overall: Metrics
    per_class: dict[str, Metrics]


def _metrics(entry: Mapping[str, Any]) -> Metrics:
    return Metrics(
        precision=float(entry["precision"]),
        recall=float(entry["recall"]),
        map50=float(entry["mAP50"]),
        map50_95=float(entry["mAP50-95"]),
        images=int(entry.get("images", 0)),
        instances=int(entry.get("instances", 0)),
    )


def load_card_metrics(path: Path, classes: Sequence[str]) -> CardMetrics | None:
    """``metrics.json`` written by ``hemascope train detector``; None (logged) when absent or unreadable."""
    if not path.is_file():
        log.warning("detector_metrics_missing", file=path.name)
        return None
    try:
        record = json.loads(path.read_text())
        per_class = record.get("per_class", {})
        return CardMetrics(
            split=str(record.get("split", "")),
            overall=_metrics(record["overall"]),
            per_class={name: _metrics(per_class[name]) for name in classes if name in per_class},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("detector_metrics_unreadable", file=path.name, error=repr(exc))
        return None


@dataclass(frozen=True)
class ModelInfo:
    """What GetModelInfo reports about the loaded detector."""

    name: str  # the model's directory name, e.g. "detector-bccd" (never a full path)
    version: str  # the ONNX file's SHA-256, first VERSION_DIGITS hex digits
    sha256: str
    classes: tuple[str, ...]
    input_size: int
    providers: Sequence[str]
    card: CardMetrics | None  # from metrics.json beside the ONNX file


def describe(model: OnnxDetector, path: Path) -> ModelInfo:
    """The :class:`ModelInfo` of ``model``, loaded from ``path``."""
    return ModelInfo(
        name=path.parent.name or path.stem,
        version=model.sha256[:VERSION_DIGITS],
        sha256=model.sha256,
        classes=model.classes,
        input_size=model.input_size,
        providers=model.providers,
        card=load_card_metrics(path.with_name("metrics.json"), model.classes),
    )
