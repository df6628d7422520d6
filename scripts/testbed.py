"""Throwaway PostgreSQL and MariaDB servers on 127.0.0.1 for the test suite.

    python scripts/testbed.py start DIR   # prints `export ...=...` lines for the DSNs
    python scripts/testbed.py stop DIR

Each server gets its own data directory under DIR, owned by the engine's system user
(PostgreSQL refuses to run as root), listens on a free loopback port, and is torn down
with `stop`. Any failure to start is fatal: the suite never silently skips a backend.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

PG_BIN = Path(os.environ.get("POWER_LOOP_PG_BIN", "/usr/lib/postgresql/15/bin"))
DB_NAME = "power_loop_test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], *, user: str | None = None, **kw: object) -> None:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


def _ensure_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        _run(["useradd", "--system", "--no-create-home", "--shell", "/bin/false", name])


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in [*dirs, *files])]:
            os.chown(name, entry.pw_uid, entry.pw_gid)


def _wait_port(port: int, what: str, timeout: float = 60.0,
               alive: Callable[[], int | None] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive() is not None:
            raise SystemExit(f"testbed: {what} exited during start-up; see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"testbed: {what} did not accept connections on 127.0.0.1:{port}")


def start_postgres(base: Path) -> str:
    _ensure_user("postgres")
    data, sock = base / "pg", base / "pg-sock"
    data.mkdir(parents=True)
    sock.mkdir()
    _chown_tree(base / "pg", "postgres")
    _chown_tree(sock, "postgres")
    _run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
          "-E", "UTF8", "--locale=C.UTF-8"], user="postgres", stdout=subprocess.DEVNULL)
    port = _free_port()
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c max_connections=300 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    _run([str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(sock / "pg.log"),
          "-w", "-t", "60", "start"], user="postgres", stdout=subprocess.DEVNULL)
    _wait_port(port, "PostgreSQL")
    _run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", DB_NAME])
    return f"postgresql://postgres@127.0.0.1:{port}/{DB_NAME}"


def _mariadb_binary(name: str) -> str:
    for candidate in (name, f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        found = shutil.which(candidate)
        if found:
            return found
    raise SystemExit(f"testbed: {name} not found; install Debian's mariadb-server")


def start_mariadb(base: Path) -> str:
    _ensure_user("mysql")
    data, run = base / "my", base / "my-run"
    data.mkdir(parents=True)
    run.mkdir()
    _chown_tree(data, "mysql")
    _chown_tree(run, "mysql")
    _run([_mariadb_binary("mariadb-install-db"), "--no-defaults", f"--datadir={data}",
          "--user=mysql", "--auth-root-authentication-method=socket", "--skip-test-db"],
         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = _free_port()
    sock = run / "my.sock"
    log = open(base / "my.log", "wb")  # noqa: SIM115 - the server outlives this process
    proc = subprocess.Popen(
        [_mariadb_binary("mariadbd"), "--no-defaults", f"--datadir={data}", "--user=mysql",
         f"--socket={sock}", f"--port={port}", "--bind-address=127.0.0.1",
         f"--pid-file={run / 'my.pid'}", "--max-connections=400",
         "--innodb-flush-log-at-trx-commit=2", "--innodb-buffer-pool-size=256M",
         "--character-set-server=utf8mb4", "--collation-server=utf8mb4_bin",
         "--skip-log-bin", "--max-allowed-packet=256M"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    (base / "my.server-pid").write_text(str(proc.pid))
    _wait_port(port, "MariaDB", alive=proc.poll)
    sql = (f"CREATE DATABASE {DB_NAME} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;"
           "CREATE USER 'pl'@'127.0.0.1' IDENTIFIED BY 'pl';"
           f"GRANT ALL ON {DB_NAME}.* TO 'pl'@'127.0.0.1';")
    _run([_mariadb_binary("mariadb"), f"--socket={sock}", "-uroot", "-e", sql])
    return f"mysql://pl:pl@127.0.0.1:{port}/{DB_NAME}"


def stop(base: Path) -> None:
    if (base / "pg").exists():
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D",
                        str(base / "pg"), "-m", "immediate", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    pid_file = base / "my.server-pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, 15)
            for _ in range(100):
                os.kill(pid, 0)
                time.sleep(0.1)
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[0] not in {"start", "stop"}:
        raise SystemExit(__doc__)
    base = Path(argv[1]).resolve()
    if argv[0] == "stop":
        stop(base)
        return
    if os.geteuid() != 0:
        raise SystemExit("testbed: run as root (servers run as their own system users), or "
                         "point POWER_LOOP_TEST_PG_DSN / POWER_LOOP_TEST_MYSQL_DSN at your servers")
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    env: dict[str, str] = {}
    if not os.environ.get("POWER_LOOP_TEST_PG_DSN"):
        env["POWER_LOOP_TEST_PG_DSN"] = start_postgres(base)
    if not os.environ.get("POWER_LOOP_TEST_MYSQL_DSN"):
        env["POWER_LOOP_TEST_MYSQL_DSN"] = start_mariadb(base)
    for key, value in env.items():
        print(f"export {key}='{value}'")


if __name__ == "__main__":
    main(sys.argv[1:])
