"""Who this instance is to its peers: its id and its Ed25519 key pair.

The private key is kept as the audit key is: never in the database (someone
who can write there must not be able to speak for the instance), made on
first use into `CASEAPI_INSTANCE_KEY_FILE` (PKCS#8 PEM, readable by its owner
only) and stable across restarts. Several hosts of one instance share that
file. Peers know the instance by its public key's RFC 7638 thumbprint, which
an operator compares out of band before trusting it (`caseapi peer add`).
"""

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from joserfc.jwk import OKPKey

from app.core.config import ConfigError, Settings


@dataclass(frozen=True)
class Identity:
    instance_id: str
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def jwk(self) -> dict[str, Any]:
        return public_jwk(self.public_key)

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.jwk)


def public_jwk(key: Ed25519PublicKey) -> dict[str, Any]:
    """The public key as a JWK (RFC 8037: kty OKP, crv Ed25519)."""
    return dict(OKPKey.import_key(key).as_dict(private=False))


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of a public Ed25519 JWK.

    Raises ValueError for anything but a public Ed25519 key: a peer's
    document is input from the network.
    """
    return key_of(jwk)[1]


def key_of(jwk: dict[str, Any]) -> tuple[Ed25519PublicKey, str]:
    """The public key a JWK holds, and its thumbprint."""
    if not isinstance(jwk, dict) or jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "d" in jwk:
        raise ValueError("not a public Ed25519 JWK")
    try:
        key = OKPKey.import_key({"kty": "OKP", "crv": "Ed25519", "x": jwk["x"]})
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError("not a public Ed25519 JWK") from exc
    public = key.public_key
    assert isinstance(public, Ed25519PublicKey)
    return public, key.thumbprint()


def identity(settings: Settings) -> Identity:
    """This instance's identity; a ConfigError when it does not federate or its key is unusable."""
    if settings.instance_id is None:
        raise ConfigError("CASEAPI_INSTANCE_ID is not set: this instance does not federate")
    return Identity(settings.instance_id, _private_key(settings.instance_key_file.resolve()))


@cache
def _private_key(path: Path) -> Ed25519PrivateKey:
    """The key stored at `path`, made at random on first use.

    O_EXCL: of several workers starting at once, one creates the file and the
    others read what it wrote.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    except OSError as exc:
        raise ConfigError(f"CASEAPI_INSTANCE_KEY_FILE: cannot create {path}: {exc.strerror}") from None
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return key


def _read_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(f"CASEAPI_INSTANCE_KEY_FILE: cannot read {path}: {exc.strerror}") from None
    except ValueError:
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"CASEAPI_INSTANCE_KEY_FILE: {path} holds no Ed25519 private key")
    return key
