"""Settings shared by every service. Each service subclasses ``ServerSettings`` with its own env prefix."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING or ERROR.")
    log_json: bool = Field(True, description="Structured JSON logs (False: human-readable console lines).")
