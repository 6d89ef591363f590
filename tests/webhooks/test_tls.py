"""https deliveries go to the address that was checked, and the certificate
is still verified for the subscribed name (SNI and hostname check)."""

import socket
import ssl
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fastapi.testclient import TestClient

from app.core.db import utcnow
from app.webhooks.delivery import Deliverer
from tests.conftest import Caller
from tests.webhooks.conftest import API, deliver, subscribe
from tests.webhooks.receiver import receiving

NAME = "hooks.kz-mvd.test"


def _certificate(tmp_path: Path, name: str) -> tuple[ssl.SSLContext, bytes]:
    """A server context with a self-signed certificate for `name`, and that certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(utcnow() - timedelta(days=1))
        .not_valid_after(utcnow() + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / "cert.pem").write_bytes(pem)
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return server, pem


@pytest.fixture
def name_resolves_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        return real("127.0.0.1" if host == NAME else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(("certified", "delivered"), [(NAME, True), ("someone-else.test", False)])
def test_https_checks_the_certificate_of_the_name(
    hooks: TestClient,
    kz_admin: Caller,
    deliverer: Deliverer,
    tmp_path: Path,
    name_resolves_to_loopback: None,
    certified: str,
    delivered: bool,
) -> None:
    server_tls, pem = _certificate(tmp_path, certified)
    deliverer.tls.load_verify_locations(cadata=pem.decode())
    with receiving(tls=server_tls) as receiver:
        sub = subscribe(hooks, kz_admin, f"https://{NAME}:{receiver.port}/hook")
        deliver(deliverer)
        received = list(receiver.received)
    deliveries = hooks.get(f"{API}/subscriptions/{sub['id']}/deliveries", headers=kz_admin.headers).json()
    if delivered:
        assert [r.headers["host"] for r in received] == [f"{NAME}:{receiver.port}"]
        assert [d["status_code"] for d in deliveries["items"]] == [204]
    else:
        assert received == []
        assert [(d["status_code"], d["error"]) for d in deliveries["items"]] == [(None, "connection")]
