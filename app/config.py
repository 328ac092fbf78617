"""Application settings, read from LESION_REVIEW_* environment variables; never built at import time."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEMO_DIR = PROJECT_ROOT / "data" / "demo"
DEFAULT_MODEL = PROJECT_ROOT / "models" / "lesion-detector.onnx"


def is_loopback_name(host: str | None) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1), brackets allowed."""
    if not host:
        return False
    name = host.strip().lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything the app reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="LESION_REVIEW_", env_file=None, extra="ignore")

    # A local folder, or an fsspec URL (s3://bucket/prefix, gs://..., memory://...): docs/deployment.md.
    data_dir: Path | str = DEFAULT_DEMO_DIR
    # Empty means an SQLite file inside the data folder.
    database_url: str = ""
    model_path: Path | None = DEFAULT_MODEL
    # auto: CUDA when a CUDA session can really be created, else CPU.
    device: str = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    # Comma-separated Host names the server answers to besides the loopback names (DNS rebinding guard);
    # "*" answers any. Empty on a non-loopback host also answers any (serve warns).
    allowed_hosts: str = ""
    # None: Secure cookies whenever the server listens off loopback (a team server sits behind HTTPS).
    cookie_secure: bool | None = None
    # Plain windowed images (never overlays, raw pixels or review data) without sign-in.
    public_images: bool = False

    # Threads that run blocking handlers, and the database connections they share. Any sizes work: a request
    # holds a connection only while a thread runs its database work (see app.api.deps.get_db).
    worker_threads: int = Field(default=40, ge=1, le=1000)
    db_pool_size: int = Field(default=5, ge=1, le=1000)
    db_max_overflow: int = Field(default=10, ge=0, le=1000)
    db_pool_timeout_s: float = Field(default=30.0, gt=0, le=3600)

    # Object storage: fsspec storage options (JSON, e.g. {"client_kwargs": {"endpoint_url": ...}}; AWS_*
    # variables give credentials), the local disk cache of fetched objects, and how long an object's identity
    # (HEAD) or a folder listing is trusted.
    storage_options: dict[str, Any] = Field(default_factory=dict)
    cache_dir: Path | None = None
    cache_mb: float = Field(default=2048, ge=0, le=16 * 2**20)
    object_ttl_s: float = Field(default=5.0, ge=0, le=3600)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir(cls, value: object) -> object:
        from app.deeplesion.objectstore import normalize_data_dir

        return normalize_data_dir(value) if isinstance(value, str | Path) else value

    def data_on_object_storage(self) -> bool:
        """True when data_dir is an object-store URL."""
        return isinstance(self.data_dir, str)

    @field_validator("model_path", "cookie_secure", "cache_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # MODEL_PATH= is "no model", COOKIE_SECURE=auto (or empty) "decide by HOST", CACHE_DIR= the default.
        if isinstance(value, str) and value.strip().lower() in ("", "auto"):
            return None
        return value

    # The two byte-bounded image caches (docs/reliability.md "Memory"): decoded HU arrays, encoded responses.
    decoded_cache_mb: int = Field(default=256, ge=0, le=65536)
    encoded_cache_mb: int = Field(default=192, ge=0, le=65536)

    def on_loopback(self) -> bool:
        """True when the server listens on a loopback address only."""
        return is_loopback_name(self.host)

    def secure_cookies(self) -> bool:
        """Whether the session cookie carries `Secure`: as configured, else whenever off loopback."""
        return self.cookie_secure if self.cookie_secure is not None else not self.on_loopback()

    def extra_allowed_hosts(self) -> tuple[str, ...]:
        """The configured Host names (lower case, without port), besides the loopback ones."""
        return tuple(h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip())

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to an SQLite file in the data folder."""
        if self.database_url:
            return self.database_url
        if isinstance(self.data_dir, str):
            raise ValueError(
                "a dataset on object storage needs LESION_REVIEW_DATABASE_URL (or --database-url): "
                "the default SQLite file lives in a local data folder"
            )
        return f"sqlite:///{(self.data_dir / 'lesion_review.db').resolve()}"
