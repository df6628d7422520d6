"""TLS for MySQL and MariaDB: the DSN's ``ssl-*`` options, as the ``mysql`` client reads them.

    mysql://app:pw@db:3306/app?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ca.pem
    mysql://app:pw@db:3306/app?ssl-mode=VERIFY_CA&ssl-ca=ca.pem&ssl-cert=me.pem&ssl-key=me.key

``ssl-mode`` is one of:

* ``DISABLED``: no TLS (the default when the DSN names no ``ssl-*`` option);
* ``PREFERRED``: TLS when the server offers it, the certificate unchecked;
* ``REQUIRED``: TLS or no connection, the certificate unchecked;
* ``VERIFY_CA``: TLS, the certificate signed by ``ssl-ca`` (or a system CA);
* ``VERIFY_IDENTITY``: as ``VERIFY_CA``, and the certificate names the host.

``ssl-cert`` (with ``ssl-key``, unless the key is in the same file) is the client's
certificate, for servers that require one (``REQUIRE X509``). A DSN that contradicts
itself (a CA under a mode that does not verify, certificates with ``DISABLED``, a key
without a certificate) is refused rather than half-obeyed. This module imports no driver.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from power_loop.errors import InvalidDSNError

_T = TypeVar("_T")

OPTIONS = frozenset({"ssl-mode", "ssl-ca", "ssl-cert", "ssl-key"})
"""The DSN query parameters this module reads."""


class SSLMode(enum.Enum):
    """How much TLS a connection insists on (the ``mysql`` client's ``--ssl-mode``)."""

    DISABLED = "DISABLED"
    PREFERRED = "PREFERRED"
    REQUIRED = "REQUIRED"
    VERIFY_CA = "VERIFY_CA"
    VERIFY_IDENTITY = "VERIFY_IDENTITY"

    @property
    def required(self) -> bool:
        """No connection without TLS."""
        return self not in (SSLMode.DISABLED, SSLMode.PREFERRED)

    @property
    def verifies(self) -> bool:
        """The server's certificate is checked against a CA."""
        return self in (SSLMode.VERIFY_CA, SSLMode.VERIFY_IDENTITY)


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """The DSN's TLS options, checked.

    Attributes:
        mode: How much TLS the connection insists on.
        ca: File of CA certificates to verify the server with (``None``: the system's).
        cert: The client's certificate file, or ``None``.
        key: The client's private key file, or ``None`` (then it is in ``cert``).
    """

    mode: SSLMode
    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def context(self) -> ssl.SSLContext | None:
        """The context aiomysql takes as ``ssl=``, or ``None`` for ``DISABLED``.

        Raises:
            InvalidDSNError: a file cannot be read, or is not a PEM file of its kind.
        """
        if self.mode is SSLMode.DISABLED:
            return None
        if self.mode.verifies:
            context = _load("ssl-ca", self.ca, lambda: ssl.create_default_context(cafile=self.ca))
            context.check_hostname = self.mode is SSLMode.VERIFY_IDENTITY
        else:
            # PREFERRED and REQUIRED encrypt without checking who answers, as mysql's do.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None:
            cert, key = self.cert, self.key
            _load("ssl-cert", cert, lambda: context.load_cert_chain(cert, key))
        return context


def _load(option: str, path: str | None, load: Callable[[], _T]) -> _T:
    try:
        return load()
    except (OSError, ssl.SSLError, ValueError) as exc:
        what = "the client certificate and key" if option == "ssl-cert" else "the CA file"
        raise InvalidDSNError(
            f"mysql: {option}={path!r}: cannot load {what} ({exc}); check that the file "
            "exists, this process may read it, and it holds PEM data") from exc


def tls_settings(options: Mapping[str, str]) -> TLSSettings:
    """Read the ``ssl-*`` options of a DSN's query string.

    Raises:
        InvalidDSNError: an unknown mode, or options that contradict each other.
    """
    raw_mode = options.get("ssl-mode")
    ca, cert, key = (options.get(k) or None for k in ("ssl-ca", "ssl-cert", "ssl-key"))
    if raw_mode is None:
        if ca or cert or key:
            raise InvalidDSNError(
                "mysql: the DSN names TLS files but no ssl-mode; add ssl-mode=VERIFY_IDENTITY "
                "(or VERIFY_CA, REQUIRED) so it says how much TLS it insists on")
        return TLSSettings(SSLMode.DISABLED)
    try:
        mode = SSLMode(raw_mode.upper())
    except ValueError:
        raise InvalidDSNError(
            f"mysql: ssl-mode={raw_mode!r} is not a mode; use one of "
            f"{', '.join(m.value for m in SSLMode)}") from None
    if mode is SSLMode.DISABLED and (ca or cert or key):
        raise InvalidDSNError("mysql: ssl-mode=DISABLED, yet the DSN names TLS files: "
                              "drop them, or choose a mode that uses TLS")
    if ca and not mode.verifies:
        raise InvalidDSNError(
            f"mysql: ssl-ca is read only under VERIFY_CA and VERIFY_IDENTITY; under "
            f"ssl-mode={mode.value} the server's certificate is not checked: choose "
            "VERIFY_IDENTITY (or VERIFY_CA), or drop ssl-ca")
    if key and not cert:
        raise InvalidDSNError("mysql: ssl-key needs ssl-cert (the client certificate)")
    return TLSSettings(mode, ca, cert, key)


def offers_tls(greeting: bytes) -> bool | None:
    """Whether a server's handshake packet (its payload, without the 4-byte header)
    sets ``CLIENT_SSL``; ``None`` when it is not a handshake (an error packet...)."""
    if len(greeting) < 2 or greeting[0] != 10:  # protocol version 10
        return None
    end = greeting.find(b"\0", 1)  # the server version, NUL-terminated
    at = end + 1 + 4 + 8 + 1  # thread id, first 8 bytes of the scramble, filler
    if end < 0 or len(greeting) < at + 2:
        return None
    capabilities = int.from_bytes(greeting[at:at + 2], "little")
    return bool(capabilities & 0x0800)  # CLIENT_SSL
