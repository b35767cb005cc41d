"""Classifier service settings (env prefix ``HEMASCOPE_CLASSIFIER_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from hemascope.settings import ServerSettings


class ClassifierSettings(ServerSettings):
    """Settings of the classifier service."""

    model_config = SettingsConfigDict(env_prefix="HEMASCOPE_CLASSIFIER_", extra="ignore")

    port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int | None = Field(9465, ge=0, le=65535, description="Prometheus port; None disables.")
    bundle: Path | None = Field(
        None,
        description="Model bundle directory (with manifest.json). Required: without it, or with a bundle "
        "that does not load, the service never turns SERVING and `hemascope serve classifier` exits 2.",
    )
    watch_interval_s: float = Field(
        0.0,
        ge=0,
        description="Poll the served bundle's manifest.json this often and reload when it changes; 0 = off.",
    )
    model_threads: int = Field(
        1,
        ge=1,
        description="Threads one model may use per prediction (XGBoost and random forests would otherwise "
        "use every core the machine has, not the container's share: one vector then takes tens of ms under "
        "load). Concurrent calls already run on their own RPC threads.",
    )
    fast_predict: bool = Field(
        True,
        description="Predict with exact paths where the bundle's objects have one (hemascope.bundle.fast: "
        "the scaler, the random forest, k-means and the logistic regression in NumPy, the SVM's libsvm call "
        "without the per-call validation): the same probabilities, bit for bit, without scikit-learn's "
        "per-call overhead (about 4-13 ms per vector for a 100-tree forest). False: the libraries' own "
        "predict calls, as a baseline.",
    )
    max_embeddings: int = Field(1024, ge=1, description="Most embeddings in one Classify call.")
    allow_reload_path: bool = Field(
        False,
        description="Let ReloadBundle name another bundle directory (off: callers can only reload the "
        "configured bundle, never make the service read another directory).",
    )
    require_provenance: bool = Field(
        False,
        description="Refuse embeddings whose backbone, weights_hash or preprocessing is empty (by default "
        "empty ones are not checked, only the dimension is).",
    )
    site_profiles: Path | None = Field(
        None,
        description="Directory of site profiles (`hemascope site adapt` writes them; NAME.npz is applied "
        "when a Classify call names NAME in site_profile). Read and checked against the bundle at every "
        "(re)load: a profile for another bundle or a damaged one is refused (calls naming it fail with "
        "FAILED_PRECONDITION) and the others serve; a missing directory fails the load. None: no profiles.",
    )
