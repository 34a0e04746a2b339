"""Debian's `pgbouncer` in transaction pool mode in front of the test PostgreSQL.

PgBouncer refuses to run as root, so under root it runs as the system user that runs the
embedded PostgreSQL (core.embedded_root.system_user), in a directory of its own given to that
user; otherwise it runs as the current user."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.embedded import free_port

# where Debian installs it (/usr/sbin is not on every user's PATH)
CANDIDATES = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer")
# server connections per (database, user): fewer than the clients' pools, as in production, so
# clients really share server sessions
POOL_SIZE = 8


def binary() -> str | None:
    """The pgbouncer program, or None when it is not installed."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((path for path in CANDIDATES if os.access(path, os.X_OK)), None)


@dataclass
class PgBouncer:
    """`PgBouncer(upstream_port, database).start()`: clients connect to `url(database)`."""

    upstream_port: int
    databases: tuple[str, ...]
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="livesell-pgb-")))
    port: int = 0
    process: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    @property
    def log_path(self) -> Path:
        return self.root / "pgbouncer.log"

    def _config(self) -> str:
        databases = "\n".join(
            f"{name} = host=127.0.0.1 port={self.upstream_port} dbname={name} user=postgres"
            for name in self.databases
        )
        return f"""[databases]
{databases}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.root / "users.txt"}
pool_mode = transaction
default_pool_size = {POOL_SIZE}
max_client_conn = 500
logfile = {self.log_path}
log_connections = 0
log_disconnections = 0
"""

    def start(self, timeout: float = 10.0) -> PgBouncer:
        program = binary()
        assert program, "pgbouncer is not installed"
        self.port = free_port()
        (self.root / "users.txt").write_text('"postgres" ""\n')
        config = self.root / "pgbouncer.ini"
        config.write_text(self._config())
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            from core.embedded_root import system_user

            user = system_user()
            for path in (self.root, *self.root.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
            run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self.process = subprocess.Popen(
            [program, str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **run_as,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer stopped at start:\n{self._log_tail()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {self.port}:\n{self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-20:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)
