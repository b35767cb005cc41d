"""Detector service settings (env prefix ``HEMASCOPE_DETECTOR_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hemascope.data import REPO_ROOT
from hemascope.settings import ImageLimitSettings, ServerSettings

DEFAULT_MODEL = REPO_ROOT / "models" / "detector-bccd" / "detector.onnx"


class DetectorSettings(ServerSettings, ImageLimitSettings):
    """Settings of the cell-detector service."""

    model_config = SettingsConfigDict(env_prefix="HEMASCOPE_DETECTOR_", extra="ignore")

    port: int = Field(50053, ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int | None = Field(9466, ge=0, le=65535, description="Prometheus port; None disables.")
    model: Path = Field(
        DEFAULT_MODEL,
        description="The detector's ONNX export (raw YOLOv8 head, no NMS, class names in its metadata). A "
        "metrics.json beside it is served by GetModelInfo. Missing or unreadable: the service never turns "
        "SERVING and `hemascope serve detector` exits 2.",
    )
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 = all cores.")
    allow_spinning: bool = Field(
        False,
        description="Let ONNX Runtime's idle threads spin (faster alone, slower beside Python work).",
    )
    use_gpu: bool = Field(True, description="Use the CUDA execution provider when ONNX Runtime has it.")
    max_batch_size: int = Field(8, ge=1, le=256, description="Largest micro-batch sent to the model.")
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        description="How long the first image of a micro-batch waits for company. 0: greedy, a batch is "
        "whatever queued while the model was busy (best on CPU); a few ms helps a GPU fill bigger batches.",
    )
    max_queue: int = Field(
        64,
        ge=1,
        description="Letterboxed images (4.9 MB each at 640) waiting for the model; beyond: "
        "RESOURCE_EXHAUSTED.",
    )
    max_batch_items: int = Field(32, ge=1, description="Most images in one DetectBatch call.")
    max_batch_bytes: int = Field(
        48 * 1024 * 1024, ge=1, description="Most encoded image bytes in one DetectBatch call."
    )
    max_detections_limit: int = Field(
        1000, ge=1, description="Largest max_detections a request may ask for (the default is 300)."
    )
