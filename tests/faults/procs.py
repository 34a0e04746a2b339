"""Real `livesell` processes for fault tests, and in-process access to the same servers.

Each fault test owns its PostgreSQL and/or Valkey when it stops or restarts them (never the
session's), runs `livesell api|hub|worker|serve` as subprocesses pointed at them, and talks to
them over real HTTP and WebSockets.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from core.auth import mint_token
from core.db import migrate_url
from core.resources import Resources, open_resources
from core.settings import Settings, load_settings
from tests.conftest import TEST_SECRET


def env_for(database_url: str, redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        LIVESELL_SECRET=TEST_SECRET,
        LIVESELL_DEV="1",
        LIVESELL_DATA_DIR=str(data_dir),
        LIVESELL_LOG_LEVEL="info",
        LIVESELL_HUB_PING_S="5",
    )
    env.update(extra)
    return env


class Proc:
    """One `livesell ...` subprocess with its log file."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.env, self.log = args, env, log
        with log.open("ab") as handle:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "livesell.cli", *args],
                env=env,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    async def wait_port(self, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                await asyncio.sleep(0.1)
        raise AssertionError(f"port {port} never opened:\n{self.output()}")


async def wait_healthy(base: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base, timeout=2) as http:
        while True:
            try:
                if (await http.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"{base} not healthy in {timeout}s"
            await asyncio.sleep(0.1)


def settings_for(
    database_url: str, redis_url: str, data_dir: Path, **overrides: object
) -> Settings:
    environ = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LIVESELL_SECRET": TEST_SECRET,
        "LIVESELL_DEV": "1",
        "LIVESELL_DATA_DIR": str(data_dir),
    }
    return load_settings(environ=environ, dotenv=None, **overrides)


@asynccontextmanager
async def own_resources(settings: Settings) -> AsyncIterator[Resources]:
    assert settings.database_url
    await migrate_url(settings.database_url)
    async with open_resources(settings, pool_max=10) as res:
        yield res


def bearer(sub: str, *roles: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + mint_token(TEST_SECRET, sub, roles or ("viewer",))}
