"""Explain service settings (env prefix ``HEMASCOPE_EXPLAIN_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hemascope.settings import CacheSettings, ImageLimitSettings, ServerSettings


class ExplainSettings(ServerSettings, ImageLimitSettings, CacheSettings):
    """Settings of the explanation (class activation map) service."""

    model_config = SettingsConfigDict(env_prefix="HEMASCOPE_EXPLAIN_", extra="ignore")

    port: int = Field(50054, ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int | None = Field(9467, ge=0, le=65535, description="Prometheus port; None disables.")
    bundle: Path | None = Field(
        None,
        description="Model bundle directory (with manifest.json). Required: without it, or with a bundle "
        "that does not load or whose backbone weights are not here, the service never turns SERVING and "
        "`hemascope serve explain` exits 2.",
    )
    resnet50_checkpoint: Path | None = Field(
        None,
        description="torchvision-layout ResNet50 state dict (.pth); required when the bundle's backbone is "
        "resnet50. Its SHA-256 must equal the bundle's weights_hash.",
    )
    max_concurrent: int = Field(
        2, ge=1, description="Explanations computed at the same time (each runs the backbone in PyTorch)."
    )
    max_queue: int = Field(
        8, ge=0, description="Explanations waiting for a slot; more at once fail with RESOURCE_EXHAUSTED."
    )
    torch_threads: int = Field(
        0,
        ge=0,
        description="PyTorch intra-op threads for this process; 0 keeps PyTorch's default (one per core). On "
        "a busy host, 1 avoids threads contending for cores (small 7 x 7 CAM ops then take microseconds, not "
        "milliseconds); max_concurrent still runs several explanations in parallel.",
    )
    ablation_engine: Literal["pooled", "library"] = Field(
        "pooled",
        description="How Ablation-CAM is computed. `pooled`: from the pooled features, one model call for "
        "every channel at once (an RBF SVM through exact one-feature kernel updates); the grad-cam "
        "library's result to float rounding, 10-37x faster (bench/explain.py). `library`: the grad-cam "
        "library's AblationCAM, one pooled copy of the maps per channel, in batches of ablation_batch (the "
        "reference). Each engine has its own cache entries.",
    )
    ablation_batch: int = Field(
        256,
        ge=1,
        description="Ablated channels evaluated per batch by the `library` engine (memory vs. speed).",
    )
    max_image_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Largest width x height accepted (the overlay PNG is rendered at the original size).",
    )
    max_overlay_pixels: int = Field(
        4_000_000,
        ge=50_176,
        description="Images with more pixels are scaled down (aspect kept) to this many before the "
        "preprocessing, the CAM and the overlay, which is then returned at that size: memory per "
        "explanation stays bounded whatever image size max_image_pixels allows. At most max_concurrent such "
        "large images are decoded at once.",
    )
    memory_cache_entries: int = Field(
        1024, ge=0, description="In-process LRU of explanations (used without Redis); 0 disables caching."
    )
