"""The server's secrets: the audit chain's key and the key that signs list cursors.

Neither lives in the source nor in the database: someone who can write to
the database must not be able to forge an audit entry or a cursor.

`CASEAPI_AUDIT_KEY` keys the audit chain; `CASEAPI_CURSOR_SECRET`, when
set, signs cursors, else a key derived from the audit key does. Either may
come from a file instead (`..._FILE`, app.core.config), and each must be at
least 32 random bytes, hex or base64 encoded. On
PostgreSQL (a production database, reached by several hosts) the audit key
must be set: every worker on every host has to hold the same one. On
SQLite (one host) an unset key is generated once into `CASEAPI_KEY_FILE`,
readable by its owner only, so that a demo is keyed without a setting.
"""

import hashlib
import hmac
import os
import secrets
from functools import cache
from pathlib import Path

from app.core.config import ConfigError, Settings, require_strong_key


def _key_file(path: Path) -> bytes:
    """The key stored at `path`, created at random on first use.

    O_EXCL: of several workers starting at once, one creates the file and
    the others read what it wrote.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_text().strip()
        try:
            require_strong_key(key)
        except ValueError:
            raise ConfigError(f"CASEAPI_KEY_FILE: {path} holds no key (delete it for a new one)") from None
        return key.encode()
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key.encode()


@cache
def _generated_key(database_url: str, key_file: Path) -> bytes:
    if not database_url.startswith("sqlite"):
        raise ConfigError(
            "CASEAPI_AUDIT_KEY is not set: a server on PostgreSQL needs the audit chain's key "
            "(the same on every host; e.g. `python3 -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return _key_file(key_file)


def audit_key(settings: Settings) -> bytes:
    """The key of the audit chain's HMAC."""
    if secret := settings.audit_key or settings.audit_key_file:
        # Every change hashes with it: no look at the key file's path when it is set.
        return secret.get_secret_value().encode()
    return _generated_key(settings.database_url, settings.key_file.resolve())


def cursor_key(settings: Settings) -> bytes:
    """The key that signs list cursors."""
    if secret := settings.cursor_secret or settings.cursor_secret_file:
        return secret.get_secret_value().encode()
    return hmac.new(audit_key(settings), b"caseapi cursor signing v1", hashlib.sha256).digest()


def search_term_key(settings: Settings) -> bytes:
    """The key of the keyed hashes that record hit/no-hit searches without their values."""
    return hmac.new(audit_key(settings), b"caseapi hit search terms v1", hashlib.sha256).digest()


def webhook_key(settings: Settings) -> bytes:
    """The AES-256 key that seals webhook signing secrets at rest. Derived
    from the audit key: a copy of the database alone does not reveal them."""
    return hmac.new(audit_key(settings), b"caseapi webhook secrets v1", hashlib.sha256).digest()
