"""HTTP Message Signatures (RFC 9421, `ed25519`) on every request between
instances, with the body's Content-Digest (RFC 9530).

A signature covers `@method`, `@target-uri` and `content-digest`, and
carries `created`, `keyid` (the sender's instance id), a random `nonce` and
the tag `caseapi-federation`. A receiver accepts it only from a peer it
knows, within 300 s of its own clock either way, and only once: a nonce seen
before is a replay.
"""

import datetime
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import httpx
import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    MappingKeyResolver,
    algorithms,
)
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import OKPKey

from app.federation.identity import Identity

TAG = "caseapi-federation"
COVERED = ("@method", "@target-uri", "content-digest")
# How far a signature's `created` may lie from the receiver's clock, either way.
CLOCK_SKEW = datetime.timedelta(seconds=300)


class BadSignature(Exception):
    """Why a request between instances was refused, in words safe to log."""


@dataclass
class _Message:
    """The parts of a request a signature covers, as the library reads them."""

    method: str
    url: str
    headers: httpx.Headers


def sign(
    identity: Identity, method: str, url: str, body: bytes, *, now: datetime.datetime | None = None
) -> dict[str, str]:
    """The headers that sign this request as coming from `identity`."""
    message = _Message(method.upper(), url, httpx.Headers())
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(
            public_keys={}, private_keys={identity.instance_id: identity.private_key}
        ),
    )
    signer.sign(
        message,
        key_id=identity.instance_id,
        created=now or datetime.datetime.now(datetime.UTC),
        nonce=secrets.token_urlsafe(24),
        tag=TAG,
        label="caseapi",
        covered_component_ids=COVERED,
        body=body,
    )
    return dict(message.headers)


@dataclass(frozen=True)
class Signed:
    """A verified request: who sent it, and the nonce to record against replays."""

    instance_id: str
    nonce: str


class _Verifier(HTTPMessageVerifier):
    max_clock_skew = CLOCK_SKEW


def verify(
    method: str,
    url: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    peers: Mapping[str, Ed25519PublicKey],
) -> Signed:
    """Who signed this request, if one of `peers` did, now, over exactly this
    method, URL and body; else BadSignature. Replays are the caller's to refuse
    (`Signed.nonce`): they need a store shared by every worker."""
    message = _Message(method.upper(), url, httpx.Headers(list(headers)))
    verifier = _Verifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys=dict(peers), private_keys={}),
    )
    try:
        [result] = verifier.verify(
            message, max_age=datetime.timedelta(0), expect_tag=TAG, require_components=COVERED, body=body
        )
    except ValueError:
        raise BadSignature("more than one signature") from None
    except HTTPMessageSignaturesException as exc:
        raise BadSignature(_reason(exc)) from None
    params = result.parameters
    nonce = params.get("nonce")
    if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
        raise BadSignature("the signature carries no nonce")
    return Signed(str(params["keyid"]), nonce)


def _reason(exc: HTTPMessageSignaturesException) -> str:
    text = str(exc)
    if text == "Unable to resolve verification key":
        return "unknown key"
    return text[:200] or type(exc).__name__


# A receipt is a compact JWS (RFC 7515) signed with the receiver's instance key,
# algorithm Ed25519 (RFC 9864): anyone holding the peer's public key can check it later.
RECEIPT_ALGORITHMS = ["Ed25519"]


def sign_receipt(identity: Identity, receipt: Mapping[str, object]) -> str:
    key = OKPKey.import_key(identity.private_key)
    return jws.serialize_compact(
        {"alg": "Ed25519", "kid": identity.instance_id},
        orjson.dumps(receipt, option=orjson.OPT_SORT_KEYS),
        key,
        algorithms=RECEIPT_ALGORITHMS,
    )


def open_receipt(token: str, public_key: Ed25519PublicKey) -> dict[str, object]:
    """The content of a receipt signed by the holder of `public_key`; else BadSignature."""
    try:
        opened = jws.deserialize_compact(token, OKPKey.import_key(public_key), algorithms=RECEIPT_ALGORITHMS)
        content = orjson.loads(opened.payload)
    except (JoseError, ValueError, TypeError) as exc:
        raise BadSignature(f"the receipt does not verify ({type(exc).__name__})") from None
    if not isinstance(content, dict):
        raise BadSignature("the receipt holds no object")
    return content
