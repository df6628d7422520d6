"""A short-lived MariaDB that speaks TLS, for the TLS tests (never the shared testbed).

Certificates come from the ``openssl`` CLI: a CA, a server certificate for 127.0.0.1
and ``localhost`` signed by it, a client certificate signed by it, and a second CA that
signed nothing (a wrong ``ssl-ca``). The server runs as the ``mysql`` user, in a
directory of its own, on a free port, until the fixture stops it.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_DB = "power_loop_tls"


@dataclass(frozen=True)
class TLSServer:
    """Where the server listens, and the files a client needs."""

    port: int
    ca: Path
    wrong_ca: Path
    client_cert: Path
    client_key: Path

    def dsn(self, user: str, host: str = "127.0.0.1", **query: str) -> str:
        """A DSN for ``user`` (password ``pw``), with ``query`` as its options."""
        options = "&".join(f"{k.replace('_', '-')}={v}" for k, v in query.items())
        return f"mysql://{user}:pw@{host}:{self.port}/{_DB}" + (f"?{options}" if options else "")


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _certificates(folder: Path) -> None:
    def authority(name: str) -> None:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                 "-subj", f"/CN=power_loop test {name}", "-keyout", folder / f"{name}.key",
                 "-out", folder / f"{name}.pem")

    def signed(name: str, extensions: str) -> None:
        (folder / f"{name}.ext").write_text(extensions)
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", folder / f"{name}.key", "-out", folder / f"{name}.csr")
        _openssl("x509", "-req", "-in", folder / f"{name}.csr", "-CA", folder / "ca.pem",
                 "-CAkey", folder / "ca.key", "-CAcreateserial", "-days", "2",
                 "-extfile", folder / f"{name}.ext", "-out", folder / f"{name}.pem")

    authority("ca")
    authority("wrong-ca")
    signed("server", "subjectAltName=IP:127.0.0.1\n")
    signed("client", "extendedKeyUsage=clientAuth\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str:
    for candidate in (name, f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        found = shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(f"{name} is not installed: the TLS tests need Debian's mariadb-server")


@contextmanager
def tls_mariadb(base: Path) -> Iterator[TLSServer]:
    """Start a TLS MariaDB under ``base``; stop it (and only it) on exit."""
    certs, data, run = base / "certs", base / "data", base / "run"
    for folder in (certs, data, run):
        folder.mkdir(parents=True)
    _certificates(certs)
    shutil.chown(base, "mysql", "mysql")
    for path in [data, run, certs, *certs.iterdir()]:
        shutil.chown(path, "mysql", "mysql")
    subprocess.run([_binary("mariadb-install-db"), "--no-defaults", f"--datadir={data}",
                    "--user=mysql", "--auth-root-authentication-method=socket",
                    "--skip-test-db"], check=True, capture_output=True)
    port, sock = _free_port(), run / "my.sock"
    log = (base / "server.log").open("wb")
    server = subprocess.Popen(
        [_binary("mariadbd"), "--no-defaults", f"--datadir={data}", "--user=mysql",
         f"--socket={sock}", f"--port={port}", "--bind-address=127.0.0.1",
         f"--pid-file={run / 'my.pid'}", "--innodb-buffer-pool-size=16M",
         "--skip-log-bin", "--skip-name-resolve", "--character-set-server=utf8mb4",
         "--collation-server=utf8mb4_bin",
         f"--ssl-ca={certs / 'ca.pem'}", f"--ssl-cert={certs / 'server.pem'}",
         f"--ssl-key={certs / 'server.key'}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the TLS MariaDB did not start; see {base / 'server.log'}")
            time.sleep(0.1)
        sql = (f"CREATE DATABASE {_DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
               "CREATE USER 'tls'@'127.0.0.1' IDENTIFIED BY 'pw' REQUIRE SSL;"
               "CREATE USER 'x509'@'127.0.0.1' IDENTIFIED BY 'pw' REQUIRE X509;"
               f"GRANT ALL ON {_DB}.* TO 'tls'@'127.0.0.1';"
               f"GRANT ALL ON {_DB}.* TO 'x509'@'127.0.0.1';")
        subprocess.run([_binary("mariadb"), f"--socket={sock}", "-uroot", "-e", sql],
                       check=True, capture_output=True)
        yield TLSServer(port, certs / "ca.pem", certs / "wrong-ca.pem",
                        certs / "client.pem", certs / "client.key")
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def open_to(port: int) -> int:
    """How many sockets of this process are connected to 127.0.0.1:``port`` (Linux)."""
    ours = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            link = fd.readlink().name
        except OSError:
            continue
        if link.startswith("socket:["):
            ours.add(link[len("socket:["):-1])
    count = 0
    for row in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = row.split()
        remote, inode = fields[2], fields[9]
        if inode in ours and int(remote.split(":")[1], 16) == port:
            count += 1
    return count


async def sockets_released(port: int, within: float = 10.0) -> None:
    """Wait until this process holds no socket to the server at ``port``, failing after
    ``within`` seconds: a connection that failed inside TLS is shut down by the driver some turns
    of the loop later, and a test that ended first would leave the socket to the garbage
    collector (a ResourceWarning in a later test)."""
    async with asyncio.timeout(within):
        while open_to(port):  # noqa: ASYNC110 (the kernel's table is polled; nothing signals)
            await asyncio.sleep(0.01)
