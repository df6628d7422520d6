"""MySQL DSNs take TLS options: parsed strictly, refused when they contradict, obeyed.

The real handshakes run against a MariaDB of the test's own (tests/tls/server.py), never
the shared testbed, which has no TLS: against it, ``ssl-mode=REQUIRED`` must fail before
any credentials are sent.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from power_loop import ConnectionLostError, InvalidDSNError, StoreAuthenticationError, open_store
from power_loop.store.dsn import connect, parse_dsn
from power_loop.store.mysql.tls import OPTIONS, SSLMode, TLSSettings, offers_tls, tls_settings
from tests.tls.server import TLSServer, open_to, sockets_released, tls_mariadb

MODES = [m.value for m in SSLMode]


def test_no_ssl_option_means_no_tls() -> None:
    settings_ = tls_settings({})
    assert settings_ == TLSSettings(SSLMode.DISABLED)
    assert settings_.context() is None


@pytest.mark.parametrize("raw", ["verify_identity", "Verify_Identity", "VERIFY_IDENTITY"])
def test_the_mode_is_read_in_any_case(raw: str) -> None:
    assert tls_settings({"ssl-mode": raw}).mode is SSLMode.VERIFY_IDENTITY


def test_the_dsn_query_carries_the_options_to_the_driver() -> None:
    parsed = parse_dsn("mysql://u:p@h/db?ssl-mode=VERIFY_CA&ssl-ca=/ca.pem&ssl-cert=/c.pem"
                       "&ssl-key=/k.pem&connect_timeout=3")
    assert {k: parsed.extra[k] for k in OPTIONS} == {
        "ssl-mode": "VERIFY_CA", "ssl-ca": "/ca.pem", "ssl-cert": "/c.pem", "ssl-key": "/k.pem"}
    assert tls_settings(parsed.extra) == TLSSettings(SSLMode.VERIFY_CA, "/ca.pem", "/c.pem",
                                                     "/k.pem")


@pytest.mark.parametrize(("mode", "hostname", "verify"), [
    ("PREFERRED", False, ssl.CERT_NONE),
    ("REQUIRED", False, ssl.CERT_NONE),
    ("VERIFY_CA", False, ssl.CERT_REQUIRED),
    ("VERIFY_IDENTITY", True, ssl.CERT_REQUIRED),
])
def test_each_mode_checks_what_it_says(mode: str, hostname: bool, verify: ssl.VerifyMode) -> None:
    context = tls_settings({"ssl-mode": mode}).context()
    assert context is not None
    assert (context.check_hostname, context.verify_mode) == (hostname, verify)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(("options", "says"), [
    ({"ssl-mode": "SOMETIMES"}, "is not a mode"),
    ({"ssl-ca": "/ca.pem"}, "no ssl-mode"),
    ({"ssl-mode": "DISABLED", "ssl-cert": "/c.pem"}, "ssl-mode=DISABLED, yet"),
    ({"ssl-mode": "REQUIRED", "ssl-ca": "/ca.pem"}, "not checked"),
    ({"ssl-mode": "PREFERRED", "ssl-ca": "/ca.pem"}, "not checked"),
    ({"ssl-mode": "VERIFY_CA", "ssl-key": "/k.pem"}, "ssl-key needs ssl-cert"),
])
def test_contradictions_are_refused(options: dict[str, str], says: str) -> None:
    with pytest.raises(InvalidDSNError) as info:
        tls_settings(options)
    assert says in info.value.message


def test_an_unreadable_file_is_an_invalid_dsn(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    for options in ({"ssl-mode": "VERIFY_CA", "ssl-ca": str(tmp_path / "absent.pem")},
                    {"ssl-mode": "VERIFY_CA", "ssl-ca": str(tmp_path / "junk.pem")},
                    {"ssl-mode": "REQUIRED", "ssl-cert": str(tmp_path / "junk.pem")}):
        with pytest.raises(InvalidDSNError) as info:
            tls_settings(options).context()
        assert "cannot load" in info.value.message


_VALUES = st.one_of(st.sampled_from([*MODES, "", "none", "verify-ca"]), st.text(max_size=12))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(OPTIONS)), _VALUES))
def test_any_options_give_settings_or_an_invalid_dsn(options: dict[str, str]) -> None:
    try:
        settings_ = tls_settings(options)
    except InvalidDSNError:
        return
    # What is accepted is consistent: no file under DISABLED, a CA only where it is read.
    if settings_.mode is SSLMode.DISABLED:
        assert not (settings_.ca or settings_.cert or settings_.key)
    if settings_.ca is not None:
        assert settings_.mode.verifies
    if settings_.key is not None:
        assert settings_.cert is not None


def _greeting(capabilities: int) -> bytes:
    return (b"\x0a" + b"10.11.6-MariaDB\x00" + (7).to_bytes(4, "little") + b"12345678\x00"
            + capabilities.to_bytes(2, "little") + b"\x21\x02\x00")


def test_the_greeting_says_whether_the_server_offers_tls() -> None:
    assert offers_tls(_greeting(0xFFFF)) is True
    assert offers_tls(_greeting(0xFFFF & ~0x0800)) is False
    assert offers_tls(b"\xff\x15\x04Host blocked") is None  # an error packet
    assert offers_tls(b"\x0a10.11") is None  # cut short


@pytest.mark.backends("mysql")
async def test_required_against_a_server_without_tls_fails_before_logging_in(
        backend: str, dsn: str) -> None:
    separator = "&" if "?" in dsn else "?"
    for mode in ("REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY"):
        with pytest.raises(ConnectionLostError) as info:
            await open_store(f"{dsn}{separator}ssl-mode={mode}", table_prefix="pl_",
                             connect_timeout=5)
        assert "does not offer TLS" in info.value.message
        assert info.value.backend == "mysql"
    # PREFERRED settles for plain text there, as the mysql client does.
    database = await connect(f"{dsn}{separator}ssl-mode=PREFERRED")
    try:
        async with database.transaction(write=False) as conn:
            assert await conn.fetch("SHOW SESSION STATUS LIKE 'Ssl_cipher'") == [("Ssl_cipher", "")]
    finally:
        await database.close()


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TLSServer]:
    # Not pytest's tmp_path: its root is private to this user, and the server runs as mysql.
    base = Path(tempfile.mkdtemp(prefix="power_loop_tls_"))
    try:
        with tls_mariadb(base) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def _cipher(dsn: str) -> str:
    database = await connect(dsn, connect_timeout=10)
    try:
        async with database.transaction(write=False) as conn:
            (_name, cipher), = await conn.fetch("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
    finally:
        await database.close()
    # Closed means closed: the TLS shutdown is over when close() returns.
    assert open_to(urlsplit(dsn).port or 3306) == 0
    return str(cipher)


@pytest.mark.backends("mysql")
async def test_verify_identity_connects_encrypted_and_the_store_works(
        backend: str, tls_server: TLSServer) -> None:
    dsn = tls_server.dsn("tls", ssl_mode="VERIFY_IDENTITY", ssl_ca=str(tls_server.ca))
    assert await _cipher(dsn) != ""
    assert await _cipher(tls_server.dsn("tls", ssl_mode="REQUIRED")) != ""
    async with await open_store(dsn, table_prefix="pl_") as store:
        await store.create_session("over-tls")
        assert (await store.get_session("over-tls")).id == "over-tls"


@pytest.mark.backends("mysql")
async def test_a_certificate_from_another_ca_is_refused(backend: str,
                                                        tls_server: TLSServer) -> None:
    dsn = tls_server.dsn("tls", ssl_mode="VERIFY_CA", ssl_ca=str(tls_server.wrong_ca))
    with pytest.raises(ConnectionLostError) as info:
        await connect(dsn, connect_timeout=10)
    assert "TLS handshake failed" in info.value.message
    assert isinstance(info.value.__cause__, Exception)
    await sockets_released(tls_server.port)


@pytest.mark.backends("mysql")
async def test_a_host_the_certificate_does_not_name_fails_verify_identity(
        backend: str, tls_server: TLSServer) -> None:
    # The certificate names 127.0.0.1 only; localhost reaches the same server.
    wrong_host = tls_server.dsn("tls", host="localhost", ssl_mode="VERIFY_IDENTITY",
                                ssl_ca=str(tls_server.ca))
    with pytest.raises(ConnectionLostError) as info:
        await connect(wrong_host, connect_timeout=10)
    assert "TLS handshake failed" in info.value.message
    await sockets_released(tls_server.port)


@pytest.mark.backends("mysql")
async def test_a_user_that_requires_x509_logs_in_with_a_client_certificate(
        backend: str, tls_server: TLSServer) -> None:
    with pytest.raises(StoreAuthenticationError):
        await connect(tls_server.dsn("x509", ssl_mode="VERIFY_CA", ssl_ca=str(tls_server.ca)),
                      connect_timeout=10)
    await sockets_released(tls_server.port)
    with_certificate = tls_server.dsn(
        "x509", ssl_mode="VERIFY_CA", ssl_ca=str(tls_server.ca),
        ssl_cert=str(tls_server.client_cert), ssl_key=str(tls_server.client_key))
    assert await _cipher(with_certificate) != ""
