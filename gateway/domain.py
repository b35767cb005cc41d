"""The gateway's domain types: what the core takes and returns (converters map them to and from protobuf).

The downstream services' result messages (predictions, boxes, explanation) are carried as the plain data
messages those services return: the gateway passes them through unchanged and adds what it computes
itself (statuses, consensus, timings, versions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from hemascope.consensus import DEFAULT_MALIGNANT_THRESHOLD, Consensus
from hemascope.site.drift import SiteStatus
from hemascope.v1 import classifier_pb2, common_pb2, detector_pb2, explain_pb2

PARTS = ("embedding", "classification", "detection", "explanation")
SERVICES = ("feature", "classifier", "detector", "explain")


@dataclass(frozen=True)
class AnalyzeOptions:
    """What to compute for one image (see AnalyzeOptions in analysis.proto)."""

    models: tuple[str, ...] = ()
    skip_classification: bool = False
    detect: bool = False
    explain: bool = False
    explain_model: str = ""
    explain_class: str = ""
    explain_method: str = ""
    explain_overlay: str = ""
    detect_confidence: float = 0.0
    detect_iou: float = 0.0
    malignant_threshold: float = DEFAULT_MALIGNANT_THRESHOLD
    #: the caller's site profile (set by the data plane from the gateway's settings, never by a request)
    site_profile: str = ""

    def audit_view(self) -> dict[str, object]:
        """The options as recorded in the audit trail (no image data, no caller ids)."""
        return {
            "models": list(self.models),
            "skip_classification": self.skip_classification,
            "detect": self.detect,
            "explain": self.explain,
            "explain_model": self.explain_model,
            "explain_class": self.explain_class,
            "explain_method": self.explain_method,
            "explain_overlay": self.explain_overlay,
            "detect_confidence": self.detect_confidence,
            "detect_iou": self.detect_iou,
            "malignant_threshold": self.malignant_threshold,
        }


@dataclass(frozen=True)
class PartStatus:
    """The outcome of one part: OK, or the failure's code, reason and message."""

    part: str
    code: grpc.StatusCode
    reason: str
    message: str
    elapsed_ms: float

    @property
    def ok(self) -> bool:
        return self.code is grpc.StatusCode.OK


@dataclass(frozen=True)
class EmbeddingInfo:
    backbone: str
    weights_hash: str
    preprocessing: str
    cache_hit: bool = False


@dataclass(frozen=True)
class Classification:
    predictions: Sequence[classifier_pb2.ModelPrediction]
    bundle_version: str
    consensus: Consensus
    #: the site profile the classifier applied ("" for none)
    site_profile: str = ""


@dataclass(frozen=True)
class Detection:
    boxes: Sequence[detector_pb2.Box]
    model_version: str


@dataclass(frozen=True)
class SiteReport:
    """A caller's site status after an image (AnalyzeResponse.site / GetCapabilities.site)."""

    status: SiteStatus
    atypical_share: float = 0.0
    window_images: int = 0
    window: int = 0
    flag_share: float = 0.0
    images_seen: int = 0


@dataclass
class AnalysisReport:
    """One image's analysis: what succeeded, and a status for every part attempted."""

    image_id: str
    content_hash: str
    width: int
    height: int
    embedding: EmbeddingInfo | None = None
    #: the feature service's input check (one centred white cell or not); None when not checked
    input_check: common_pb2.InputCheck | None = None
    classification: Classification | None = None
    detection: Detection | None = None
    explanation: explain_pb2.ExplainResponse | None = None
    parts: list[PartStatus] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    model_versions: dict[str, str] = field(default_factory=dict)
    #: the caller's site status after this image; None when it was not classified
    site: SiteReport | None = None

    @property
    def outcome(self) -> str:
        """ "ok" when every part succeeded, "partial" when some did, "failed" when none did."""
        ok = sum(part.ok for part in self.parts)
        return "ok" if ok == len(self.parts) else ("partial" if ok else "failed")


@dataclass(frozen=True)
class ModelCapability:
    name: str
    version: str
    explain_methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceState:
    name: str
    serving: bool
    circuit_open: bool
    not_running: bool = False
    """The gateway runs without this service (no address configured)."""


@dataclass(frozen=True)
class Capabilities:
    """What the gateway can do now (GetCapabilitiesResponse)."""

    classes: tuple[str, ...] = ()
    malignant_classes: tuple[str, ...] = ()
    models: tuple[ModelCapability, ...] = ()
    bundle_version: str = ""
    embedding: EmbeddingInfo | None = None
    detector_version: str = ""
    detector_classes: tuple[str, ...] = ()
    max_image_bytes: int = 0
    max_image_pixels: int = 0
    max_stream_in_flight: int = 0
    max_streams_per_caller: int = 0
    services: tuple[ServiceState, ...] = ()
    explain_methods: tuple[str, ...] = ()
    """Every CAM method any model accepts (for validating AnalyzeOptions.explain_method)."""
    expected_atypical_rate: float = 0.0
    """Share of a validated site's answers flagged atypical by construction (0: no reference)."""
