from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(Exception):
    """A setting the service cannot run with; the message names it, in one line."""


class Settings(BaseSettings):
    """Every setting comes from a `CASEAPI_` environment variable."""

    model_config = SettingsConfigDict(env_prefix="CASEAPI_", extra="ignore")

    database_url: str = "sqlite:///./caseapi.db"
    # Pool sized so that every worker thread can hold a connection: fewer
    # connections than threads deadlocks a sync service under load.
    pool_size: int = Field(default=20, ge=1, le=500)
    # Connections of the hot reads (app.reads), on PostgreSQL a pool of their
    # own: they wait on the event loop, not in a thread.
    read_pool_size: int = Field(default=10, ge=1, le=500)
    pool_timeout_seconds: float = Field(default=5.0, gt=0)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A bundle is a whole case in one document: a 10 000-item case is about 4 MiB.
    max_bundle_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # The audit chain's HMAC key and the cursors' signing key (app.secrets):
    # never in the source, never in the database.
    audit_key: SecretStr | None = None
    cursor_secret: SecretStr | None = None
    # Where an SQLite instance keeps the keys it generated when none is set.
    key_file: Path = Path("./caseapi.key")
    seed_dir: Path = PROJECT_ROOT / "seed"
    # Attachments (app.attachments): the largest file, and where the files live.
    max_attachment_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    storage_dir: Path = Path("./caseapi-files")
    idempotency_ttl_hours: int = Field(default=24, ge=1)
    # uvicorn's line per request. Off by default: the audit trail records
    # every change and disclosure and the security log every refusal, while
    # an access log would copy search terms (`q=`) into plain-text logs.
    access_log: bool = False
    # How long a worker trusts a key it looked up: a revocation takes effect
    # within this time (the CLI itself takes longer than that to revoke).
    auth_cache_seconds: float = Field(default=0.5, ge=0, le=1.0)


@lru_cache
def get_settings() -> Settings:
    return Settings()
