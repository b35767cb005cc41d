"""Console settings (env prefix ``HEMASCOPE_CONSOLE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from hemascope.data import REPO_ROOT

ENV_PREFIX = "HEMASCOPE_CONSOLE_"


class ConsoleSettings(BaseSettings):
    """Where the console listens, which gateway it talks to, who may log in, where results are kept."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    host: str = Field("127.0.0.1", description="Interface to bind the HTTP server to.")
    port: int = Field(8080, ge=0, le=65535, description="HTTP port; 0 picks a free one.")
    gateway_address: str = Field("127.0.0.1:50050", description="host:port of the Hemascope gateway.")
    gateway_ca_file: Path | None = Field(
        None, description="PEM CA that signed the gateway's certificate; set when the gateway speaks TLS."
    )
    gateway_cert_file: Path | None = Field(
        None,
        description="PEM client certificate the console presents when the gateway requires mutual TLS (its "
        "TLS_CLIENT_CA_FILE), with gateway_key_file. It admits the console's connections only: every call, "
        "bundle promotion included, is still authorised by the API key its user logged in with.",
    )
    gateway_key_file: Path | None = Field(None, description="PEM private key of gateway_cert_file.")
    gateway_timeout_s: float = Field(120.0, gt=0, description="Deadline of one analysis at the gateway.")
    promote_timeout_s: float = Field(
        180.0, gt=0, description="Deadline of a bundle promotion (the classifier loads and verifies it)."
    )
    users_file: Path = Field(
        Path("console-users.jsonl"),
        description="Who may log in: JSON lines {name, role, key_hash} (`hemascope console add-user`).",
    )
    database_url: str = Field(
        "sqlite:///console.db",
        description="SQLAlchemy URL of the result store: SQLite (default) or "
        "postgresql+psycopg://host:5432/db (a schema with ?options=-csearch_path%3Dname).",
    )
    secret_key_file: Path | None = Field(
        None,
        description="File holding the secret (>= 32 bytes) that signs session cookies; None: a random one "
        "per start (everyone logs in again after a restart).",
    )
    cookie_secure: bool = Field(
        False, description="Send the session cookie over HTTPS only (set behind a TLS-terminating proxy)."
    )
    session_max_age_s: int = Field(8 * 3600, ge=60, description="A session ends this long after login.")
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest image file accepted (bytes, checked per file)."
    )
    max_files: int = Field(200, ge=1, description="Most images in one upload.")
    max_batch_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Largest upload (all its files together, bytes)."
    )
    max_pixels: int = Field(
        40_000_000, ge=1, description="Largest decoded image (width x height) accepted (decompression bombs)."
    )
    streams_per_key: int = Field(
        2,
        ge=1,
        description="Batches analysed at once for one API key (each holds a gateway stream, of which the "
        "gateway allows each caller a few); later ones wait their turn.",
    )
    explain: bool = Field(True, description="Ask the gateway for a Grad-CAM overlay of every analysis.")
    data_root: Path | None = Field(
        None,
        description="The only folder the Jobs page takes datasets from: its folder-per-class datasets and "
        "YAML dataset specs (whose roots must lie inside it too). None: no job can be started.",
    )
    batch_results_root: Path | None = Field(
        None,
        description="The only folder the Batch results page reads: one `hemascope batch analyze` result "
        "(--out) per subfolder; nothing outside it is opened, symlinks included. None: the page lists "
        "nothing.",
    )
    jobs_dir: Path = Field(
        Path("console-jobs"),
        description="Where each job's log, report and bundle are written (one folder per job).",
    )
    job_concurrency: int = Field(1, ge=1, description="Jobs run at once; later ones wait in the queue.")
    job_cancel_grace_s: float = Field(
        10.0, gt=0, description="How long a cancelled job has after SIGTERM before it is killed (SIGKILL)."
    )
    bundles_dir: Path = Field(
        REPO_ROOT / "models",
        validation_alias=AliasChoices("bundles_dir", f"{ENV_PREFIX}BUNDLES_DIR", f"{ENV_PREFIX}BUNDLES_ROOT"),
        description="Folder of classifier model bundles (one folder each, with manifest.json and "
        "MODEL_CARD.md): the ones the Models page compares and the Jobs page may evaluate or validate "
        "(besides the bundles its own training jobs wrote). The environment also accepts its former name "
        "BUNDLES_ROOT.",
    )
    reports_dir: Path = Field(
        REPO_ROOT / "reports",
        description="Folder of training reports (one folder each, with results.json) whose metrics the "
        "comparison shows next to each bundle.",
    )
