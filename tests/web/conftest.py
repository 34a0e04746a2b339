"""Browser fixtures: the real `livesell serve` as a subprocess and Debian's headless Chromium.

The server runs against the session's embedded PostgreSQL and Valkey (from tests/conftest.py),
on free ports, in dev mode (dev tokens, simulated payment provider). Tests seed it through the
public API, as any client would. When no Chromium is installed the browser tests skip, saying so.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.auth import mint_token
from core.embedded import free_port
from tests.conftest import TEST_SECRET, Servers
from web.pages import SDK_FILE

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}


def chromium_path() -> str | None:
    for candidate in (os.environ.get("LIVESELL_CHROMIUM"), *CHROMIUM_CANDIDATES):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return shutil.which("chromium")


@dataclass
class LiveServer:
    base_url: str
    hub_url: str
    ports: tuple[int, int]
    process: subprocess.Popen[bytes]
    log_path: Path
    routes: set[str] = field(default_factory=set)

    def need(self, *groups: tuple[str, ...]) -> None:
        """Skip, naming them, when routes a scenario needs are not in this build."""
        missing = [route for group in groups for route in group if route not in self.routes]
        if missing:
            pytest.skip(f"this build lacks routes the pages call: {', '.join(missing)}")

    def token(self, sub: str, *roles: str) -> str:
        return mint_token(TEST_SECRET, sub, roles or ("viewer",))

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        expect: int | tuple[int, ...] = (200, 201),
    ) -> Any:
        """A public API call; fails the test with the server's error when the status is off."""
        sent = dict(headers or {})
        if token:
            sent["Authorization"] = f"Bearer {token}"
        response = httpx.request(
            method, self.base_url + path, json=json, headers=sent, timeout=10,
            follow_redirects=False,
        )  # fmt: skip
        wanted = (expect,) if isinstance(expect, int) else expect
        assert response.status_code in wanted, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return (
            response.json()
            if response.content and "json" in response.headers.get("content-type", "")
            else response
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def _wait_healthy(server: LiveServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"livesell serve exited early:\n{server.log()}")
        try:
            if httpx.get(server.base_url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"livesell serve not healthy within {timeout}s:\n{server.log()}")


# What the pages call, by package: rooms and the hub, the storefront, attribution.
ROOM_ROUTES = ("/api/rooms/{id}", "/api/rooms/{id}/pin")
STORE_ROUTES = (
    "/api/products",
    "/api/rooms/{id}/drops",
    "/api/drops/{id}/buy",
    "/api/orders/{id}/pay",
)
ATTRIBUTION_ROUTES = ("/api/distributors/me", "/api/links", "/l/{code}")


@contextmanager
def running_server(
    servers: Servers, ports: tuple[int, int] | None = None, **extra_env: str
) -> Iterator[LiveServer]:
    """`livesell serve --no-demo` against the session's servers, until exit: on `ports` (API,
    hub) when given (a restart on the same address), else on free ones."""
    api_port, hub_port = ports or (free_port(), free_port())
    data_dir = Path(tempfile.mkdtemp(prefix="livesell-web-"))
    env = dict(os.environ)
    env.update(
        DATABASE_URL=servers.pg.url,
        REDIS_URL=servers.valkey.url,
        LIVESELL_DATA_DIR=str(data_dir),
        LIVESELL_SECRET=TEST_SECRET,
        LIVESELL_DEV="1",
        LIVESELL_LOG_LEVEL="warning",
    )
    env.update(extra_env)  # may override the above (LIVESELL_DEV="0")
    log_path = data_dir / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "livesell.cli", "serve", "--no-demo",
                "--api-port", str(api_port), "--hub-port", str(hub_port),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = LiveServer(
        base_url=f"http://127.0.0.1:{api_port}",
        hub_url=f"ws://127.0.0.1:{hub_port}/connection/websocket",
        ports=(api_port, hub_port),
        process=process,
        log_path=log_path,
    )
    try:
        _wait_healthy(server, 60)
        spec = httpx.get(server.base_url + "/api/openapi.json", timeout=5).json()
        server.routes = set(spec["paths"])
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def live_server(servers: Servers) -> Iterator[LiveServer]:
    with running_server(servers) as server:
        yield server


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not SDK_FILE.is_file():
        pytest.skip(
            f"{SDK_FILE} is missing: the pages would have no live updates; `make test` installs "
            "the hub client with npm (or `cd web && npm ci`)"
        )
    executable = chromium_path()
    if executable is None:
        pytest.skip(
            "no Chromium found (/usr/bin/chromium): install Debian's `chromium` package to run "
            "the browser tests (`.ci/run` does)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: `pip install -e '.[dev]'`")
    # Playwright gives every launch a fresh, temporary profile (its own --user-data-dir)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def unique() -> str:
    """A short id so tests never collide on SKUs or user names."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(autouse=True)
def clean_state() -> None:
    """Replaces the suite's table-emptying fixture for these tests: the pages are tested against
    one running server with unique names per test, and Playwright's sync API owns the thread's
    event loop while a browser is open, where the async original cannot run."""
