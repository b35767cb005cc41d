"""Feature service settings (env prefix ``HEMASCOPE_FEATURE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hemascope.imaging.preprocess import DEFAULT_PREPROCESSING, PREPROCESSING
from hemascope.settings import CacheSettings, ImageLimitSettings, ServerSettings


def _default_model_cache() -> Path:
    return Path.home() / ".cache" / "hemascope" / "models"


class FeatureSettings(ServerSettings, ImageLimitSettings, CacheSettings):
    """Settings of the feature-embedding service."""

    model_config = SettingsConfigDict(env_prefix="HEMASCOPE_FEATURE_", extra="ignore")

    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int | None = Field(9464, ge=0, le=65535, description="Prometheus port; None disables.")
    backbone: str = Field(
        "efficientnet_lite0_blood",
        description="Backbone id: efficientnet_lite0_blood (fine-tuned on blood cells; serves only "
        "cellcrop-hematoxylin), efficientnet_lite0 (ImageNet, the study's) or resnet50.",
    )
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
    preprocess_threads: int = Field(
        2,
        ge=0,
        description="Threads that decode, check and preprocess images ahead of the model, off the RPC "
        "threads, so that this work overlaps the model's batches without every RPC thread contending for "
        "it (an EmbedBatch's images are prepared in parallel). 0: each RPC thread prepares its own images.",
    )
    max_batch_size: int = Field(32, ge=1, le=256, description="Largest micro-batch sent to the model.")
    max_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        description="How long the first request of a micro-batch waits for company. 0: greedy, a batch is "
        "whatever queued while the model was busy (best on CPU); a few ms helps a GPU fill bigger batches.",
    )
    max_queue: int = Field(256, ge=1, description="Images waiting for the model before RESOURCE_EXHAUSTED.")
    max_batch_items: int = Field(64, ge=1, description="Most images in one EmbedBatch call.")
    max_batch_bytes: int = Field(
        48 * 1024 * 1024, ge=1, description="Most encoded image bytes in one EmbedBatch call."
    )
    memory_cache_entries: int = Field(10_000, ge=0, description="In-process LRU size (used without Redis).")
    decode_memo_entries: int = Field(
        4096,
        ge=0,
        description="Distinct encoded images whose content hash and size are remembered (about 200 bytes "
        "each), so a repeat whose embedding is cached is answered without decoding it again; 0 = off.",
    )
    input_check: bool = Field(
        True,
        description="Check that each image is one white cell centred in the frame (hemascope.imaging."
        "inputcheck): blank images are refused (INVALID_ARGUMENT, BLANK_IMAGE) and every embedding carries "
        "the verdict, which the classifier turns into a referral. Off: no check, no verdict.",
    )
