"""The systems under test, how each starts, and the infrastructure they share.

Every run starts its own non-durable embedded Valkey (and PostgreSQL, which livesell's hub reads
room snapshots from) in a temporary directory, on loopback, and stops them at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from core.embedded import EmbeddedPostgres, EmbeddedValkey, free_port
from load_tests.fleet import LOOPBACK

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# pinned runs: the server has core 0 to itself; viewers, driver, Valkey, PostgreSQL share 1
SERVER_CPU = 0
CLIENT_CPUS = [1]


@dataclass(frozen=True)
class System:
    name: str
    label: str
    dialect: str  # how viewers join (see viewers.dialect)
    sink: str  # how the driver publishes: "lua" (livesell's Publisher) or "socketio"
    workers: int = 1

    def command(self, host: str, port: int, redis_url: str, channel: str) -> list[str]:
        peer = ["--host", host, "--port", str(port), "--redis", redis_url, "--channel", channel]
        if self.name == "livesell" or self.name.startswith("livesell-"):
            hub = [sys.executable, "-m", "livesell.cli", "hub", "--host", host]
            hub += ["--hub-port", str(port)]
            return hub + (["--workers", str(self.workers)] if self.workers > 1 else [])
        if self.name == "node-ws":
            from load_tests.peers.common import SNAPSHOT

            snapshot = ["--snapshot", SNAPSHOT.decode()]
            return ["node", str(HERE / "peers" / "node_ws.cjs"), *peer, *snapshot]
        module = {
            "python-socketio": "socketio_hub",
            "starlette": "starlette_ws",
            "uvloop-floor": "uvloop_floor",
        }[self.name]
        return [sys.executable, "-m", f"load_tests.peers.{module}", *peer]


LIVESELL = System("livesell", "livesell hub", "centrifugo", "lua")
NODE_WS = System("node-ws", "Node ws", "centrifugo", "lua")
SOCKETIO = System("python-socketio", "python-socketio + Redis", "socketio", "socketio")
STARLETTE = System("starlette", "Starlette send_text", "centrifugo", "lua")
FLOOR = System("uvloop-floor", "uvloop floor", "centrifugo", "lua")
ALL = [LIVESELL, NODE_WS, SOCKETIO, STARLETTE, FLOOR]
BY_NAME = {s.name: s for s in ALL}


def livesell_hub_available() -> bool:
    """True once the `live` package serves a hub (it is a placeholder before that)."""
    import live

    return hasattr(live, "run_hub_workers")


def node_available() -> bool:
    return shutil.which("node") is not None and (HERE / "node_modules" / "ws").is_dir()


def install_node_peers() -> bool:
    """`npm install` the Node peer's packages into load_tests/node_modules (gitignored)."""
    if (HERE / "node_modules" / "ws").is_dir() and (HERE / "node_modules" / "ioredis").is_dir():
        return True
    if shutil.which("npm") is None:
        return False
    result = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"],
        cwd=HERE,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        print(f"npm install failed, Node ws is skipped:\n{result.stderr}", file=sys.stderr)
    return node_available()


@dataclass
class Infra:
    """Embedded Valkey + PostgreSQL of one bench run, and the room every system serves."""

    root: Path
    redis_url: str
    database_url: str
    secret: str = "bench-secret-0123456789-0123456789-01234"
    room_id: int = 1
    # where the servers under test listen: loopback, unless the viewers run on another machine
    host: str = LOOPBACK
    logs: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))

    @property
    def channel(self) -> str:
        return f"room:{self.room_id}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            LIVESELL_DATA_DIR=str(self.root / "data"),
            LIVESELL_SECRET=self.secret,
            LIVESELL_LOG_LEVEL="warning",
            # every viewer of a run comes from one address: the hub's limit on handshakes per
            # address (off for loopback peers anyway) is off, as Node ws and the floor have none
            LIVESELL_HUB_CONNECT_RATE_PER_IP="0",
            PYTHONPATH=str(ROOT),
        )
        return env


@contextlib.asynccontextmanager
async def infrastructure(with_postgres: bool = True) -> AsyncIterator[Infra]:
    """Start Valkey and PostgreSQL (both pinned with the clients, off the server's core: the
    hub's snapshot queries would otherwise run a backend beside the server under test), and
    seed livesell's demo room."""
    root = Path(tempfile.mkdtemp(prefix="livesell-bench-"))
    valkey = EmbeddedValkey(root / "valkey", durable=False)
    pg = EmbeddedPostgres(root / "pg", durable=False)
    try:
        redis_url = valkey.start()
        pin_process_tree(root / "valkey" / "valkey.pid", CLIENT_CPUS)
        database_url = pg.start() if with_postgres else ""
        if with_postgres:
            pin_process_tree(root / "pg" / "postmaster.pid", CLIENT_CPUS)
        infra = Infra(root=root, redis_url=redis_url, database_url=database_url)
        if with_postgres:
            infra.room_id = await _seed_room(infra)
        yield infra
    finally:
        valkey.stop()
        if with_postgres:
            pg.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


async def _seed_room(infra: Infra) -> int:
    from core.db import migrate_url
    from core.resources import open_resources
    from core.settings import load_settings
    from livesell.demo import seed

    await migrate_url(infra.database_url)
    settings = load_settings(environ=infra.env(), dotenv=None)
    async with open_resources(settings, pool_max=2) as res:
        return (await seed(res)).room_id


def pin_process_tree(path: Path, cpus: list[int]) -> None:
    """Pin the process whose pid is the first line of `path` and the processes it started
    (PostgreSQL's postmaster and its background workers; Valkey has none); processes it forks
    later inherit the pinning."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        parent = int(path.read_text().split()[0])
        for pid in (parent, *children(parent)):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(pid, cpus)


@contextlib.contextmanager
def driver_off_server_core() -> Iterator[None]:
    """Run this process (the driver) on the clients' cores, and give it back the cores it had
    afterwards (a caller such as the test suite goes on with them)."""
    cpus = os.sched_getaffinity(0)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, CLIENT_CPUS)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (from /proc; none where there is no /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the fields after the command name (which may hold spaces and parentheses)
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not listen on {port} within {timeout:.0f}s")


@dataclass
class Running:
    system: System
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def serve(system: System, infra: Infra, *, pin: bool) -> Iterator[Running]:
    """Run one system's server; pinned to its own core when `pin` (single-process servers)."""
    port = free_port(infra.host)
    log = infra.logs / f"{system.name}-{port}.log"
    command = system.command(infra.host, port, infra.redis_url, infra.channel)
    if pin and shutil.which("taskset"):
        # from exec on, so every thread and forked worker inherits the core
        command = ["taskset", "-c", str(SERVER_CPU), *command]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=infra.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(infra.host, port, 60, proc)
        time.sleep(0.3)  # the relay's Redis subscription comes up right after the listener
        yield Running(system, port, proc, log)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
