"""A throwaway PostgreSQL server on loopback for tests (Debian's `postgresql` package).

`start_postgres()` runs initdb into a fresh temp dir (trust auth, no fsync), starts the server on
127.0.0.1 with a free port and creates a database; `PostgresServer.stop()` stops it and deletes
the dir. initdb and postgres refuse to run as root, so as root they run as the `postgres` system
user (created by the Debian package) through runuser or setpriv. A missing component fails under
CI and skips elsewhere (`tests/support/components.py`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests.support.components import missing
from tests.support.stub_upstream import free_port

SUPERUSER = "postgres"
"""The database superuser initdb creates (trust auth on loopback: no password)."""


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres (newest Debian version first)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parent.name.split(".")],
        reverse=True,
    )
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(out.stdout.strip())
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(str(Path(initdb).resolve().parent))
    for bindir in map(Path, candidates):
        if all((bindir / b).is_file() for b in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _as_user_prefix(user: str) -> list[str]:
    """A command prefix running the rest as `user` (root only)."""
    runuser = shutil.which("runuser")
    if runuser is not None:
        return [runuser, "-u", user, "--"]
    setpriv = shutil.which("setpriv")
    if setpriv is not None:
        return [setpriv, f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
    missing("running PostgreSQL as root needs runuser or setpriv (Debian package: util-linux)")
    raise AssertionError("unreachable")


@dataclass
class PostgresServer:
    """A running throwaway server; `url()` addresses one of its databases."""

    bindir: Path
    base: Path
    """Temp dir: data/ (the cluster), the socket and server.log."""
    port: int
    prefix: list[str] = field(default_factory=list)
    """Command prefix that drops root (empty when not root)."""
    start_seconds: float = 0.0
    """initdb + start + createdb, for the report."""

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def log(self) -> Path:
        return self.base / "server.log"

    def url(self, dbname: str = "infersight", search_path: str | None = None) -> str:
        """A `postgresql://` URL; `search_path` confines unqualified tables to one schema."""
        url = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"
        if search_path is not None:
            url += "?options=" + quote(f"-csearch_path={search_path}", safe="")
        return url

    def _pg_ctl(self, *args: str, timeout: float = 60.0) -> None:
        cmd = [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        done = subprocess.run(cmd, cwd=self.base, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(
                f"pg_ctl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}\n"
                f"server log:\n{self.server_log()}"
            )

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return "(no log)"

    def start(self) -> None:
        self._pg_ctl("start", "-w", "-t", "60", "-l", str(self.log))

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are closed)."""
        self._pg_ctl("stop", "-w", "-t", "60", "-m", "fast")

    def restart(self) -> None:
        """Stop and start again (connections are lost; data is kept)."""
        self._pg_ctl("restart", "-w", "-t", "60", "-m", "fast", "-l", str(self.log))

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def cleanup(self) -> None:
        """Stop the server if it runs and delete its dir."""
        try:
            if self.is_running():
                self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def _init_cluster(bindir: Path, prefix: list[str], base: Path, port: int) -> None:
    data = base / "data"
    cmd = [
        *prefix,
        str(bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        SUPERUSER,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
        "--no-instructions",
    ]
    done = subprocess.run(cmd, cwd=base, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
    # Loopback TCP only, the socket in our own dir, and no durability (a throwaway cluster).
    settings = {
        "listen_addresses": "'127.0.0.1'",
        "port": str(port),
        "unix_socket_directories": f"'{base}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "100",
        "logging_collector": "off",
    }
    with (data / "postgresql.conf").open("a") as conf:
        conf.write("\n# tests/support/postgres.py\n")
        conf.writelines(f"{k} = {v}\n" for k, v in settings.items())


def start_postgres(dbname: str = "infersight") -> PostgresServer:
    """Start a fresh server with database `dbname` (fails under CI when PostgreSQL is missing)."""
    began = time.monotonic()
    bindir = find_bindir()
    if bindir is None:
        missing(
            "PostgreSQL server binaries (initdb, pg_ctl) not found (Debian package: postgresql)"
        )
        raise AssertionError("unreachable")
    prefix: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            missing("running PostgreSQL as root needs the `postgres` system user (postgresql)")
            raise AssertionError("unreachable") from None
        prefix = _as_user_prefix(owner.pw_name)
    last_error: Exception | None = None
    for _ in range(3):  # the free port may be taken before the server binds it
        base = Path(tempfile.mkdtemp(prefix="infersight-pg-"))
        if owner is not None:
            os.chown(base, owner.pw_uid, owner.pw_gid)
        server = PostgresServer(bindir, base, free_port(), prefix)
        try:
            _init_cluster(bindir, prefix, base, server.port)
            server.start()
            server.create_database(dbname)
        except Exception as exc:
            last_error = exc
            server.cleanup()
            continue
        server.start_seconds = time.monotonic() - began
        return server
    raise RuntimeError(f"could not start PostgreSQL: {last_error}")
