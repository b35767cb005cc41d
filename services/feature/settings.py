"""Feature service settings (env prefix ``HEMASCOPE_FEATURE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hemascope.imaging.preprocess import DEFAULT_PREPROCESSING, PREPROCESSING
from hemascope.settings import ServerSettings


def _default_model_cache() -> Path:
    return Path.home() / ".cache" / "hemascope" / "models"


class FeatureSettings(ServerSettings):
    """Settings of the feature-embedding service."""

    model_config = SettingsConfigDict(env_prefix="HEMASCOPE_FEATURE_", extra="ignore")

    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int | None = Field(9464, ge=0, le=65535, description="Prometheus port; None disables.")
    backbone: str = Field("efficientnet_lite0", description="Backbone id: efficientnet_lite0 or resnet50.")
    preprocessing: str = Field(
        DEFAULT_PREPROCESSING,
        description="Preprocessing option (hemascope.imaging.preprocess.PREPROCESSING): "
        + ", ".join(PREPROCESSING)
        + "; its version is part of every cache key and embedding's provenance.",
    )
    resnet50_checkpoint: Path | None = Field(
        None, description="torchvision-layout ResNet50 state dict (.pth); required for backbone resnet50."
    )
    model_cache_dir: Path = Field(
        default_factory=_default_model_cache, description="Where ONNX exports are cached by weights hash."
    )
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads; 0 = all cores.")
    allow_spinning: bool = Field(
        False,
        description="Let ONNX Runtime's idle threads spin (faster alone, slower beside Python work).",
    )
    use_gpu: bool = Field(True, description="Use the CUDA execution provider when ONNX Runtime has it.")
    max_batch_size: int = Field(32, ge=1, le=256, description="Largest micro-batch sent to the model.")
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        description="How long the first request of a micro-batch waits for company. 0: greedy, a batch is "
        "whatever queued while the model was busy (best on CPU); a few ms helps a GPU fill bigger batches.",
    )
    max_queue: int = Field(256, ge=1, description="Images waiting for the model before RESOURCE_EXHAUSTED.")
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest encoded image accepted.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest width x height accepted.")
    max_batch_items: int = Field(64, ge=1, description="Most images in one EmbedBatch call.")
    max_batch_bytes: int = Field(
        48 * 1024 * 1024, ge=1, description="Most encoded image bytes in one EmbedBatch call."
    )
    redis_url: str | None = Field(
        None,
        description="Redis URL for the embedding cache (e.g. redis://127.0.0.1:6379/0); unset: in-process.",
    )
    cache_prefix: str = Field("hemascope:", description="Key prefix in Redis.")
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Embedding cache time-to-live in seconds.")
    memory_cache_entries: int = Field(10_000, ge=0, description="In-process LRU size (used without Redis).")
    redis_timeout_ms: float = Field(50.0, gt=0, description="Redis socket timeout; slower means a miss.")
