"""Gateway settings (env prefix ``HEMASCOPE_GATEWAY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from hemascope.settings import ImageLimitSettings, ServerSettings


class GatewaySettings(ServerSettings, ImageLimitSettings):
    """Settings of the public gateway: downstream addresses, security, limits, resilience."""

    model_config = SettingsConfigDict(env_prefix="HEMASCOPE_GATEWAY_", extra="ignore")

    port: int = Field(50050, ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int | None = Field(9463, ge=0, le=65535, description="Prometheus port; None disables.")

    feature_address: str = Field(
        "127.0.0.1:50051", description="host:port of the feature service; empty: run without it."
    )
    classifier_address: str = Field(
        "127.0.0.1:50052", description="host:port of the classifier service; empty: run without it."
    )
    detector_address: str = Field(
        "127.0.0.1:50053", description="host:port of the detector service; empty: run without it."
    )
    explain_address: str = Field(
        "127.0.0.1:50054", description="host:port of the explain service; empty: run without it."
    )

    api_keys_file: Path | None = Field(
        None,
        description="API key file (hashed keys, see `hemascope gateway add-key`). None: authentication is "
        "off and every caller is 'anonymous' (logged loudly at start).",
    )
    require_api_key: bool = Field(
        True, description="With a keys file: refuse calls without a valid x-api-key (UNAUTHENTICATED)."
    )
    tls_cert_file: Path | None = Field(None, description="PEM server certificate chain; None: plaintext.")
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle of caller certificates; when set, mTLS: callers must present one."
    )
    downstream_ca_file: Path | None = Field(
        None, description="PEM CA bundle to verify the services' certificates; None: insecure channels."
    )
    downstream_cert_file: Path | None = Field(
        None, description="PEM client certificate the gateway presents to the services (mTLS)."
    )
    downstream_key_file: Path | None = Field(None, description="PEM private key of downstream_cert_file.")
    admin_cert_file: Path | None = Field(
        None,
        description="PEM client certificate the gateway presents to the classifier for PromoteBundle (its "
        "ReloadBundle answers only a common name in the classifier's ADMIN_SUBJECTS); trusted with "
        "downstream_ca_file. None: the gateway's own identity (downstream_cert_file) is presented.",
    )
    admin_key_file: Path | None = Field(None, description="PEM private key of admin_cert_file.")
    promote_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Longest the classifier may take to load and verify a promoted bundle (a shorter "
        "caller deadline wins).",
    )
    audit_log: Path | None = Field(
        None, description="Append-only hash-chained audit file (JSON lines); None: no audit trail (logged)."
    )
    audit_key_file: Path | None = Field(
        None,
        description="File holding a secret (>= 32 bytes) that makes the audit chain an HMAC chain, so only "
        "holders of the key can recompute it; None: plain SHA-256 chain.",
    )

    max_stream_in_flight: int = Field(
        8, ge=1, description="Requests of one AnalyzeStream processed at once; the gateway reads no more."
    )
    max_streams_per_caller: int = Field(
        4,
        ge=1,
        description="AnalyzeStream calls one caller may hold open; for anonymous callers (no API key or "
        "client certificate) the limit is per connection.",
    )
    stream_idle_timeout_s: float = Field(
        120.0,
        gt=0,
        description="An AnalyzeStream with nothing in flight that sends no request for this long is ended "
        "(DEADLINE_EXCEEDED, reason STREAM_IDLE), freeing its slot.",
    )
    site_window: int = Field(
        50, ge=1, description="Images in each caller's drift window (the site monitor, docs/site.md)."
    )
    site_min_images: int = Field(
        30, ge=1, description="Images a caller's window needs before the site monitor judges it."
    )
    site_flag_share: float = Field(
        0.4,
        gt=0,
        le=1,
        description="Atypical share of the window at which a caller is flagged 'unvalidated site'.",
    )
    site_clear_share: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Share at or below which a flagged caller is cleared again (hysteresis).",
    )
    site_profiles: dict[str, str] = Field(
        default_factory=dict,
        description="Caller id -> the site profile (made by `hemascope site adapt`, served by the "
        "classifier's --site-profiles) applied to that caller's answers; JSON in the environment. "
        "Callers not listed get the bundle alone.",
    )
    site_max_callers: int = Field(
        10_000, ge=1, description="Callers the site monitor remembers (least recently seen forgotten first)."
    )
    batch_parallel: int = Field(
        4, ge=1, description="Images of one KServe ModelInfer batch analysed at once."
    )
    batch_capacity: int = Field(
        64,
        ge=1,
        description="Batch images queued or running at once over all calls; beyond it ModelInfer is "
        "RESOURCE_EXHAUSTED (GATEWAY_BUSY).",
    )
    audit_retry_s: float = Field(
        5.0,
        gt=0,
        description="While the audit trail cannot be written (every call refused, health NOT_SERVING), how "
        "often writing is tried again.",
    )

    downstream_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest a downstream call may take; the cap when the caller sets no deadline (a "
        "shorter caller deadline always wins).",
    )
    deadline_reserve_ms: float = Field(
        100.0,
        ge=0,
        description="Part of the caller's deadline kept back from the downstream calls (at most 20% of it) "
        "so the gateway can still answer with the parts that finished when one is late.",
    )
    retries: int = Field(
        2, ge=0, description="Extra attempts of an idempotent downstream call on UNAVAILABLE/overload."
    )
    retry_backoff_ms: float = Field(
        50.0, ge=0, description="First retry delay; doubles per attempt, with +-50% jitter."
    )
    breaker_failures: int = Field(
        5, ge=1, description="Consecutive failures of one service that open its circuit breaker."
    )
    breaker_reset_s: float = Field(
        10.0, gt=0, description="Seconds an open breaker fails fast before one trial call is let through."
    )
    health_timeout_s: float = Field(
        2.0, gt=0, description="Timeout of the health and describe calls made for GetCapabilities."
    )
    capabilities_ttl_s: float = Field(
        5.0,
        ge=0,
        description="How long GetCapabilities answers from its cache (refreshed sooner on recovery).",
    )
    part_workers: int = Field(
        64, ge=4, description="Threads running downstream calls (parts) concurrently, shared by all calls."
    )
    stream_workers: int = Field(
        32, ge=1, description="Threads running AnalyzeStream requests, shared by all streams."
    )
    decode_memo_entries: int = Field(
        1024,
        ge=0,
        description="Distinct encoded images whose content hash and size are remembered (about 200 bytes "
        "each), so a repeated image is not decoded again to check it and name it in the report; 0 = off.",
    )
    explain_default_model: str = Field(
        "logistic_regression", description="Model explained when AnalyzeOptions.explain_model is empty."
    )

    @model_validator(mode="after")
    def _site_rule(self) -> GatewaySettings:
        if self.site_min_images > self.site_window:
            raise ValueError("site_min_images must not exceed site_window")
        if self.site_clear_share >= self.site_flag_share:
            raise ValueError("site_clear_share must be below site_flag_share")
        return self
