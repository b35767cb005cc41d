"""The classifier's own Prometheus metrics (per-RPC metrics come from the shared interceptor)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

MODEL_SECONDS = Histogram(
    "hemascope_classifier_model_seconds",
    "Time one model takes to predict the embeddings of one call, by model.",
    ["model"],
    buckets=_BUCKETS,
)
PREDICTIONS = Counter("hemascope_classifier_predictions_total", "Embeddings classified, by model.", ["model"])
ABSTENTIONS = Counter(
    "hemascope_classifier_abstentions_total",
    "Predictions flagged abstain (referred: low confidence or out of distribution), by model.",
    ["model"],
)
OUT_OF_DISTRIBUTION = Counter(
    "hemascope_classifier_out_of_distribution_total",
    "Predictions whose embedding was out of distribution (OOD score above the model's threshold), by model.",
    ["model"],
)
RELOADS = Counter(
    "hemascope_classifier_reloads_total", "Bundle loads, by outcome (loaded, failed).", ["outcome"]
)
ATYPICAL_ACQUISITION = Counter(
    "hemascope_classifier_atypical_acquisition_total",
    "Predictions whose image's acquisition was atypical for the answered class, by model.",
    ["model"],
)
UNCHECKED_ACQUISITION = Counter(
    "hemascope_classifier_unchecked_acquisition_total",
    "Embeddings answered without the acquisition check although the bundle has a reference (no fingerprint, "
    "or one of another revision).",
)
