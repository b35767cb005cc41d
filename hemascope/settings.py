"""Settings shared by every service. Each service subclasses ``ServerSettings`` with its own env prefix."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from hemascope.errors import ConfigurationError
from hemascope.tracing import TracingConfig


class ServerSettings(BaseSettings):
    """Network, limits and lifecycle settings common to all gRPC services."""

    model_config = SettingsConfigDict(env_prefix="HEMASCOPE_", extra="ignore")

    host: str = Field(
        "127.0.0.1", description="Interface to bind the gRPC server to ('0.0.0.0' in containers)."
    )
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one (tests).")
    metrics_port: int | None = Field(
        9464, ge=0, le=65535, description="Prometheus /metrics port; 0 picks a free one, None disables it."
    )
    max_workers: int = Field(32, ge=1, description="Threads serving RPCs concurrently.")
    max_message_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="Largest request message accepted by gRPC itself."
    )
    grace_period_s: float = Field(10.0, ge=0, description="Seconds in-flight RPCs get to finish on SIGTERM.")
    max_connection_age_s: float = Field(
        300.0,
        ge=0,
        description="Close client connections after this long (0: never), so clients re-resolve and spread "
        "over new replicas; in-flight calls get max_connection_age_grace_s to finish.",
    )
    max_connection_age_grace_s: float = Field(
        60.0, ge=0, description="How long calls on a connection being closed for its age may still run."
    )
    tls_cert_file: Path | None = Field(
        None, description="PEM server certificate chain; None: plaintext (a private network only)."
    )
    tls_key_file: Path | None = Field(None, description="PEM private key of tls_cert_file.")
    tls_client_ca_file: Path | None = Field(
        None,
        description="PEM CA bundle of caller certificates; when set, mutual TLS: every caller (the gateway, "
        "an operator) must present a certificate this CA signed.",
    )
    admin_subjects: list[str] = Field(
        default_factory=list,
        description="Common names of the client certificates allowed to call administrative RPCs (e.g. "
        "ReloadBundle); needs mutual TLS. Empty: administrative RPCs are refused (PERMISSION_DENIED).",
    )
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING or ERROR.")
    log_json: bool = Field(True, description="Structured JSON logs (False: human-readable console lines).")
    tracing_endpoint: str | None = Field(
        None,
        description="OTLP/gRPC collector to export trace spans to (e.g. http://otel-collector:4317; https:// "
        "for TLS). Unset: tracing is off (no spans, no exporter).",
    )
    tracing_service_name: str | None = Field(
        None,
        description="service.name of this process's spans; unset: the service's own name (e.g. feature).",
    )
    tracing_sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces recorded (0..1); a call arriving in a trace follows its caller's "
        "decision, so a trace is recorded whole or not at all.",
    )

    def tracing_config(self, service: str) -> TracingConfig:
        """What :func:`hemascope.tracing.setup_tracing` needs, ``service`` naming the spans by default."""
        return TracingConfig(
            self.tracing_endpoint or None, self.tracing_service_name or service, self.tracing_sample_ratio
        )


class ImageLimitSettings(BaseSettings):
    """Limits on the images a service accepts (checked before decoding)."""

    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest encoded image accepted.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest width x height accepted.")


class CacheSettings(BaseSettings):
    """A cache in Redis (shared by replicas) or in process: where, for how long, and how it is protected."""

    redis_url: str | None = Field(
        None, description="Redis URL for the cache (e.g. redis://127.0.0.1:6379/0); unset: in-process."
    )
    redis_password: SecretStr | None = Field(
        None,
        description="Password of the Redis server (kept out of the URL, so out of process listings and "
        "logs); a password in redis_url works too.",
    )
    redis_password_file: Path | None = Field(
        None,
        description="File holding the Redis password (a mounted secret); used when redis_password is unset.",
    )
    cache_key_file: Path | None = Field(
        None,
        description="Secret (>= 32 bytes) that seals every Redis cache value with an HMAC over the value and "
        "its key (provenance), so a value written by anyone else is refused as a miss; every replica "
        "sharing the cache needs the same file. Unset: a random secret per process (safe, not shared).",
    )
    cache_prefix: str = Field("hemascope:", description="Key prefix in Redis.")
    cache_ttl_s: int = Field(7 * 24 * 3600, ge=1, description="Cache time-to-live in seconds.")
    redis_timeout_ms: float = Field(50.0, gt=0, description="Redis socket timeout; slower means a miss.")

    def redis_password_value(self) -> str | None:
        """The Redis password: redis_password, else the content of redis_password_file, else None."""
        if self.redis_password is not None:
            return self.redis_password.get_secret_value()
        if self.redis_password_file is None:
            return None
        try:
            return self.redis_password_file.read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(
                f"redis_password_file: cannot read {self.redis_password_file}: {exc}",
                field="redis_password_file",
            ) from None
