"""`cloudward server --tls-cert/--tls-key`: a real server speaking HTTPS with a certificate made
here (its own CA, so the client verifies the chain rather than switching checks off), and the
clear errors for a key that is missing, unreadable, or does not fit the certificate."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.server._support import ApiServer, start_api


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_pki(folder: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1 signed by it; PEM files in `folder`."""
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("cloudward test CA")).issuer_name(_name("cloudward test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    other_key = ec.generate_private_key(ec.SECP256R1())
    files = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key",
             "other_key": folder / "other.key"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    for name, value in (("key", key), ("other_key", other_key)):
        files[name].write_bytes(_pem_key(value))
        files[name].chmod(0o600)
    return files


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_api(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]) -> Iterator[ApiServer]:
    server = start_api(f"sqlite:///{tmp_path_factory.mktemp('api-tls')}/cloudward.db", "sqlite", jobs=0,
                       extra_args=["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])],
                       tls_ca=str(pki["ca"]))
    try:
        yield server
    finally:
        server.service.stop()


def test_server_speaks_https_verified_against_its_ca(tls_api: ApiServer, pki: dict[str, Path]) -> None:
    assert tls_api.base.startswith("https://127.0.0.1:")
    with tls_api.client("read-only") as client:  # verify= the test CA: the chain and the IP name are checked
        answer = client.get("/api/v1/auth/me")
        assert answer.status_code == 200 and answer.json()["role"] == "read-only"
    # plain HTTP on the same port is not served, and a client that trusts only the system CAs refuses it
    with pytest.raises(httpx.HTTPError):
        httpx.get(tls_api.base.replace("https://", "http://") + "/api/v1/health", timeout=5, trust_env=False)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(tls_api.base + "/api/v1/health", timeout=5, trust_env=False)


def test_login_cookie_is_secure_over_https(tls_api: ApiServer) -> None:
    from tests.server._dashboard import PASSWORD, make_user

    name = make_user(tls_api, "read-only")
    with httpx.Client(base_url=tls_api.base, verify=tls_api.verify, trust_env=False, timeout=30) as browser:
        answer = browser.post("/api/v1/auth/login", json={"name": name, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        cookies = answer.headers.get_list("set-cookie")
        assert cookies and all("Secure" in c for c in cookies)


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "CLOUDWARD_DB_URL": f"sqlite:///{tmp_path}/c.db",
           "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "cloudward", "server", "--port", "1", "--init-admin", "admin",
                           *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_a_missing_key_stops_the_server_with_a_clear_error(tmp_path: Path, pki: dict[str, Path]) -> None:
    missing = tmp_path / "nowhere.key"
    answer = _serve(tmp_path, "--tls-cert", str(pki["cert"]), "--tls-key", str(missing))
    assert answer.returncode != 0 and f"--tls-key {missing}: cannot read it" in answer.stderr, answer.stderr
    assert "Traceback" not in answer.stderr
    answer = _serve(tmp_path, "--tls-cert", str(pki["cert"]))
    assert answer.returncode != 0 and "--tls-cert and --tls-key go together" in answer.stderr
    assert not (tmp_path / "c.db").exists()  # refused before the store was touched


def test_unusable_files_are_named_in_the_error(tmp_path: Path, pki: dict[str, Path]) -> None:
    """The same check the command runs first (above), called directly for each kind of problem."""
    from cloudward.cli.server import _check_tls
    from cloudward.core.errors import UsageError

    cert, key = pki["cert"], pki["key"]
    unreadable = tmp_path / "a-directory.key"  # unreadable as a file even for root (tests may run as root)
    unreadable.mkdir()
    locked = tmp_path / "encrypted.key"
    locked.write_bytes(serialization.load_pem_private_key(key.read_bytes(), None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"a passphrase")))
    cases = [
        (cert, unreadable, f"--tls-key {unreadable}: cannot read it"),
        (tmp_path / "nowhere.pem", key, f"--tls-cert {tmp_path / 'nowhere.pem'}: cannot read it"),
        (cert, pki["other_key"], f"--tls-key {pki['other_key']} does not go with --tls-cert {cert}"),
        (cert, locked, f"--tls-key {locked}: the private key is encrypted"),
        (key, key, f"--tls-cert {key}: not a PEM certificate"),
        (cert, cert, f"--tls-key {cert}: not a PEM private key"),
    ]
    for cert_path, key_path, message in cases:
        with pytest.raises(UsageError) as caught:
            _check_tls(cert_path, key_path)
        assert message in str(caught.value)
    _check_tls(cert, key)  # and the right pair passes
