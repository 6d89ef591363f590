import base64
import binascii
from importlib import resources
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.core.ratelimit.rate import Rate

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# The dialect+driver pairs the service is built and tested on.
DATABASE_SCHEMES = ("sqlite", "sqlite+pysqlite", "postgresql+psycopg")


class ConfigError(Exception):
    """A setting the service cannot run with; the message names it, in one line."""


def shipped(name: str) -> Path:
    """A data folder that ships with the code: `migrations` or `seed`.

    An installed package carries it inside as `app/_<name>` (setup.py maps
    it there); a checkout has it at the top of the repository.
    """
    installed = Path(str(resources.files("app"))) / f"_{name}"
    if installed.is_dir():
        return installed
    checkout = PROJECT_ROOT / name
    if (PROJECT_ROOT / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    raise ConfigError(f"caseapi is installed without its {name}/ folder: reinstall the package")


# A key is at least this many bytes, decoded from hex or base64.
KEY_BYTES = 32


def require_strong_key(text: str) -> None:
    """ValueError unless `text` encodes, as hex or base64, at least KEY_BYTES
    bytes that look random: a key of few distinct bytes ("000...", a word
    repeated) is refused, as it would make every key derived from it weak."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        try:
            padded = text + "=" * (-len(text) % 4)
            raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
        except binascii.Error:
            raw = b""
    if len(raw) < KEY_BYTES or len(set(raw)) < KEY_BYTES // 2:
        raise ValueError(
            f"not a key of {KEY_BYTES} random bytes, hex or base64 encoded "
            "(make one: `python3 -c 'import secrets; print(secrets.token_hex(32))'`)"
        )


class Settings(BaseSettings):
    """Every setting comes from a `CASEAPI_` environment variable."""

    model_config = SettingsConfigDict(env_prefix="CASEAPI_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./caseapi.db",
        description=(
            "SQLite file, or `postgresql+psycopg://user:pass@host:5432/db`; any other scheme "
            "is refused at start"
        ),
    )
    # Pool sized so that every worker thread can hold a connection: fewer
    # connections than threads deadlocks a sync service under load.
    pool_size: int = Field(
        default=20,
        ge=1,
        le=500,
        description=(
            "requests a worker works on at once, each with a database connection of its own (the "
            "pool holds 3 more, for the worker's background tasks); more wait their turn"
        ),
    )
    pool_timeout_seconds: float = Field(
        default=5.0, gt=0, description="how long a request waits for its turn before a 503 with `Retry-After`"
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="larger request bodies answer 413")
    # A bundle is a whole case in one document: a 10 000-item case is about 4 MiB.
    max_bundle_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        description="the same for `POST /bundles`, whose body is a whole case",
    )
    # The audit chain's HMAC key and the cursors' signing key (app.core.secrets):
    # never in the source, never in the database. Each is at least 32 random
    # bytes, hex or base64 encoded; every other key is derived from the audit key.
    audit_key: SecretStr | None = Field(
        default=None,
        description=(
            "keys the audit chain (HMAC-SHA256); keys derived from it seal webhook secrets "
            "and hash hit/no-hit searches. See [the audit key](../security/audit-key.md). "
            "Unset: required on PostgreSQL; on SQLite generated into `CASEAPI_KEY_FILE`"
        ),
    )
    cursor_secret: SecretStr | None = Field(
        default=None,
        description=(
            "signs list cursors (integrity, not secrecy: visibility never depends on it). "
            "Unset: derived from the audit key"
        ),
    )
    # Or read from a file (docker compose secrets): the setting names the file,
    # whose content, stripped, is the key; not together with the key itself.
    audit_key_file: SecretStr | None = Field(
        default=None,
        description=(
            "a file whose content, stripped, is the audit key (docker compose secrets); not "
            "together with `CASEAPI_AUDIT_KEY` itself"
        ),
    )
    cursor_secret_file: SecretStr | None = Field(
        default=None,
        description=(
            "a file whose content, stripped, is the cursor secret; not together with "
            "`CASEAPI_CURSOR_SECRET` itself"
        ),
    )
    # Where an SQLite instance keeps the keys it generated when none is set.
    key_file: Path = Field(
        default=Path("./caseapi.key"),
        description="where an SQLite instance keeps the audit key it generated (mode 0600)",
    )
    # Federation (app.federation): this instance's id among its peers (lower-case
    # letters, digits, `.` and `-`; unset: it does not federate), and the file
    # holding its Ed25519 private key, made on first use (share it between the
    # hosts of one instance; never in the database).
    instance_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9](?:[a-z0-9.-]{0,61}[a-z0-9])?$",
        description=(
            "this instance's id among its federation peers (lower-case letters, digits, `.` "
            "and `-`); unset: it does not federate"
        ),
    )
    instance_key_file: Path = Field(
        default=Path("./caseapi-instance.key"),
        description=(
            "the file holding the instance's Ed25519 private key, made on first use (mode "
            "0600); share it between the hosts of one instance, never in the database"
        ),
    )
    federation_delivery: bool = Field(
        default=True,
        description=(
            "`caseapi serve` workers of a federating instance deliver its cases to the peers "
            "that mirror them; `false` stops delivery (the peers' `pending` grows)"
        ),
    )
    federation_directory_seconds: float = Field(
        default=60,
        gt=0,
        le=86_400,
        description=(
            "how often a worker asks each peer for the agencies it hosts and holds them (those "
            "made or changed at their home since); a place under another instance's agency is "
            "taken only at `caseapi peer add`"
        ),
    )
    federation_poll_seconds: float = Field(
        default=0.25,
        gt=0,
        le=60,
        description=(
            "how often a worker looks for changes to deliver to its peers (the lag of a change "
            "to a mirror is about this much plus one request)"
        ),
    )
    federation_hit_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description=(
            "how long a federated `POST /hits` waits for each peer; one that has not answered "
            "by then is named with status `timeout`"
        ),
    )
    max_delivery_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description=(
            "the largest delivery a peer may send this instance; a delivery holds whole "
            "cases, so a case whose snapshot is larger cannot be mirrored here; also the most "
            "this instance reads of a peer's answer to a forwarded write or a search"
        ),
    )
    seed_dir: Path = Field(
        default_factory=lambda: shipped("seed"),
        description="where `caseapi seed` reads. Unset: the `seed/` shipped in the package",
    )
    # Attachments (app.attachments): the largest file, and where the files live.
    max_attachment_bytes: int = Field(
        default=100 * 1024 * 1024,
        ge=1024,
        description="the largest attachment; the same limit for the upload routes' bodies",
    )
    storage_dir: Path = Field(
        default=Path("./caseapi-files"),
        description="where attachment files live (see [Attachments](../guides/attachments.md))",
    )
    # The most an agency's attachments may take together (the sizes of the files it
    # uploaded); an upload past it answers 507 and stores nothing. Unset: no quota.
    storage_quota_bytes_per_agency: int | None = Field(
        default=None,
        ge=0,
        description=(
            "the most one agency's attachments may take together (the sizes of the files it "
            "uploaded); an upload past it answers 507 and stores nothing. Unset: no quota"
        ),
    )
    # The longest an upload may go without sending more of its body: past it the
    # request ends (408) and its staging file is removed.
    body_chunk_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "the longest an upload may go without sending more of its body: past it the "
            "request ends with 408 and its staging file is removed"
        ),
    )
    # Processes per worker that run bundle imports (app.bundles.imports):
    # imports beyond this many at once wait for one to finish, up to
    # `import_queue` of them; more answer 503 at once. Each waiting import
    # holds one of the worker's `pool_size` admitted requests.
    import_processes: int = Field(
        default=1,
        ge=1,
        le=32,
        description="processes per worker that run bundle imports; more imports at once wait for one",
    )
    import_queue: int = Field(
        default=2,
        ge=0,
        le=100,
        description=(
            "bundle imports per worker that may wait for an import process; more answer `503` at once"
        ),
    )
    idempotency_ttl_hours: int = Field(
        default=24, ge=1, description="how long an `Idempotency-Key` is remembered; older records are purged"
    )
    # uvicorn's line per request. Off by default: the audit trail records
    # every change and disclosure and the security log every refusal, while
    # an access log would copy search terms (`q=`) into plain-text logs.
    access_log: bool = Field(
        default=False,
        description=(
            "one log line per request from uvicorn; off because it would copy search terms "
            "(`q=`) into plain-text logs"
        ),
    )
    # The service's own line per request instead (method, path without the
    # query string, route template, status, duration, request id, API client),
    # in either log format; it carries no search term. False: none.
    request_log: bool = Field(
        default=True,
        description=(
            "one log line per request (method, path without the query string, route, status, "
            "duration, request id, API client), in either log format; `false`: none"
        ),
    )
    # How long a worker trusts a key it looked up: a revocation takes effect
    # within this time (the CLI itself takes longer than that to revoke).
    auth_cache_seconds: float = Field(
        default=0.5,
        ge=0,
        le=1.0,
        description="how long a worker trusts a key it looked up; a revocation takes effect within it",
    )
    # A client with this many 404s on id routes within the window is reported
    # to the security log (app.core.probes), and again at each further multiple.
    probe_log_threshold: int = Field(
        default=20,
        ge=1,
        description=(
            "404s on id routes after which a client is reported to the security log (and "
            "again at each multiple)"
        ),
    )
    probe_log_window_seconds: float = Field(
        default=60.0, gt=0, description="the window those 404s are counted in, per worker"
    )

    @field_validator("audit_key", "cursor_secret")
    @classmethod
    def _strong_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None  # unset (app.core.secrets: generated on SQLite, refused on PostgreSQL)
        require_strong_key(value.get_secret_value().strip())
        return SecretStr(value.get_secret_value().strip())

    @field_validator("audit_key_file", "cursor_secret_file", mode="before")
    @classmethod
    def _key_from_file(cls, value: object, info: ValidationInfo) -> object:
        # Read here, once: the file's content replaces its path, so the key
        # is then used as one set directly would be.
        if value is None or isinstance(value, SecretStr) or not str(value).strip():
            return None
        setting = info.field_name.removesuffix("_file") if info.field_name else ""
        if info.data.get(setting) is not None:
            raise ValueError(f"set CASEAPI_{setting.upper()} or this file, not both")
        try:
            key = Path(str(value)).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read the key file: {getattr(exc, 'strerror', None) or exc}") from None
        require_strong_key(key)
        return key

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str) -> str:
        # Checked here so that a wrong URL is one line naming the setting, not
        # a driver's traceback on the first query. The URL is never echoed:
        # it may hold a password.
        try:
            scheme = make_url(url).drivername
        except ArgumentError:
            raise ValueError("not a database URL") from None
        if scheme not in DATABASE_SCHEMES:
            raise ValueError(
                f"unsupported database {scheme!r}: use sqlite:///PATH or "
                "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
            )
        return url

    # app.core.observability: one JSON object per line, or a readable line.
    log_format: Literal["text", "json"] = Field(
        default="text", description="`json`: one JSON object per line; `text`: one readable line per event"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO", description="the level of every logger (uvicorn's too)"
    )
    # GET /metrics answers only `Authorization: Bearer <token>` when set; unset, only clients on this host.
    metrics_token: SecretStr | None = Field(
        default=None, description="when set, `GET /metrics` needs `Authorization: Bearer <token>`"
    )
    # Per API client, e.g. "20/second" or "600/minute"; unset: no limit.
    rate_limit: str | None = Field(
        default=None,
        description=(
            "requests per API client, `N/second`, `N/minute` or `N/hour` (e.g. `20/second`); "
            "past it, 429. Unset: no limit"
        ),
    )
    # Shared rate-limit state for every worker and host.
    redis_url: str | None = Field(
        default=None,
        description=("e.g. `redis://127.0.0.1:6379/0`: the rate limit holds across all workers and hosts"),
    )
    redis_prefix: str = Field(
        default="caseapi:",
        description=("prefix of the rate-limit keys in Redis (instances sharing a Redis use different ones)"),
    )
    # Hit/no-hit searches (POST /hits), counted in distinct searched items, e.g. "10000/hour";
    # unset: no limit. Each must allow one full search (1 000 items) at once.
    hit_rate_limit: str | None = Field(
        default="10000/hour",
        description=(
            "hit/no-hit searches per API client, counted in distinct searched items (e.g. "
            "`10000/hour`); it must allow one full search of 1 000 items; empty: no limit"
        ),
    )
    hit_agency_rate_limit: str | None = Field(
        default="50000/hour", description="the same per agency, all its API clients together"
    )
    # Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (a proxy
    # on this host by default); "" believes none, "*" every peer.
    forwarded_allow_ips: str = Field(
        default="127.0.0.1,::1",
        description=(
            "peers whose `X-Forwarded-For`/`-Proto` `caseapi serve` believes (a proxy on this"
            " host); empty: none"
        ),
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator(
        "rate_limit",
        "hit_rate_limit",
        "hit_agency_rate_limit",
        "redis_url",
        "metrics_token",
        "instance_id",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("rate_limit", "hit_rate_limit", "hit_agency_rate_limit")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            Rate.parse(value)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        # Checked here, not at the first rate-limited request.
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("redis", "rediss", "unix"):
                raise ValueError("expected redis://host:port/db, rediss://... or unix://...")
            _ = parts.port  # raises ValueError for a port that is not a number
        return value

    # How far in the future an instant of something that happened (a seizure,
    # a search) may lie: the clocks of the agencies' systems differ a little.
    clock_skew_seconds: int = Field(
        default=300,
        ge=0,
        le=86_400,
        description="how far in the future an instant of something that happened may lie",
    )

    # Hit/no-hit (app.identifiers.notices): whether `caseapi serve` sends the
    # hit.received notifications of searches and purges old search terms (else
    # run `caseapi hits process`), how often it looks for searches, how long a
    # searching agency's match of one identifier is notified only once, and how
    # long the keyed hashes of searched values are kept.
    hit_notices: bool = Field(
        default=True,
        description=(
            "whether `caseapi serve` writes the `hit.received` notices of searches and purges"
            " old search terms (else run `caseapi hits process` often)"
        ),
    )
    hit_notice_poll_seconds: float = Field(
        default=1.0, gt=0, le=60, description="how often a worker looks for searches to notify"
    )
    hit_notice_window_hours: float = Field(
        default=24.0,
        ge=0,
        description=(
            "a searching agency's match of one identifier is notified once within this "
            "window; 0: at every search"
        ),
    )
    hit_search_retention_days: int = Field(
        default=90, ge=1, description="how long the keyed hashes of searched values are kept, then purged"
    )

    # Webhooks (app.webhooks). Whether `caseapi serve` delivers (else run `caseapi deliver`).
    webhook_delivery: bool = Field(
        default=True,
        description="`caseapi serve` workers deliver webhooks; `false` leaves it to `caseapi deliver`",
    )
    # Private addresses and plain http allowed as webhook URLs: tests and closed networks only.
    webhook_allow_private: bool = Field(
        default=False,
        description=(
            "allow webhook URLs on private addresses and plain `http` (tests and closed networks only)"
        ),
    )
    # The time one delivery attempt may take in all: connecting, sending and the whole answer.
    webhook_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description=(
            "the time one delivery attempt may take in all: connecting, sending and the whole answer"
        ),
    )
    # Consecutive failed attempts after which a subscription is disabled.
    webhook_max_attempts: int = Field(
        default=16,
        ge=1,
        le=1000,
        description=("failed attempts in a row before a subscription is disabled (16: about three days)"),
    )
    # How often an idle deliverer looks for events to deliver.
    webhook_poll_seconds: float = Field(
        default=1.0, gt=0, le=60, description="how often an idle deliverer looks for new events"
    )
    # How many subscriptions one process delivers to at once.
    webhook_concurrency: int = Field(
        default=20, ge=1, le=500, description="subscriptions one process delivers to at once"
    )
    # How many of those one agency's subscriptions may take; the rest stay free for other agencies.
    webhook_agency_concurrency: int = Field(
        default=5,
        ge=1,
        le=500,
        description=(
            "how many of a process's delivery slots one agency's subscriptions may take at "
            "once; the rest stay free for other agencies"
        ),
    )
