"""The foundation: migrations, embedded servers, health, auth and the error shape."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from core.db import migrate_url, migration_files
from core.embedded import EmbeddedPostgres, EmbeddedValkey, free_port
from core.http import JSON, exception_handlers, require
from core.resources import Resources, open_resources
from core.settings import Settings, SettingsError, load_settings
from livesell.app import create_app
from tests.conftest import TEST_SECRET, Servers, make_settings


async def _fresh_database(servers: Servers, name: str) -> str:
    admin = await asyncpg.connect(servers.pg.url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return servers.pg.url.rsplit("/", 1)[0] + f"/{name}"


async def test_migrations_apply_once_under_concurrency(servers: Servers) -> None:
    url = await _fresh_database(servers, "migrations_race")
    results = await asyncio.gather(*(migrate_url(url) for _ in range(5)))
    applied = [name for result in results for name in result]
    expected = [name for _, name, _ in migration_files()]
    assert sorted(applied) == sorted(expected), "each migration applied exactly once"
    assert await migrate_url(url) == [], "a second run applies nothing"
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT name FROM schema_migrations ORDER BY version")
    finally:
        await conn.close()
    assert [r["name"] for r in rows] == expected


async def test_embedded_postgres_keeps_data_across_restart_and_crash(embedded_dir: Path) -> None:
    pg = EmbeddedPostgres(embedded_dir / "pg", durable=True)
    url = pg.start()
    conn = await asyncpg.connect(url)
    await conn.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before restart')")
    await conn.close()
    pg.stop()

    url = pg.start()
    conn = await asyncpg.connect(url)
    assert await conn.fetchval("SELECT v FROM kept") == "before restart"
    await conn.execute("INSERT INTO kept VALUES ('before crash')")
    await conn.close()

    pg.kill()  # a crash leaves postmaster.pid behind
    assert (embedded_dir / "pg" / "postmaster.pid").exists()
    deadline = time.monotonic() + 20
    while True:
        try:
            url = EmbeddedPostgres(embedded_dir / "pg").start()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)  # children of the killed postmaster are still exiting
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT v FROM kept ORDER BY v")
    finally:
        await conn.close()
    assert [r["v"] for r in rows] == ["before crash", "before restart"]
    EmbeddedPostgres(embedded_dir / "pg").stop()


async def test_embedded_valkey_persists_and_is_adopted(tmp_path: Path) -> None:
    import redis.asyncio as aioredis

    valkey = EmbeddedValkey(tmp_path / "valkey", durable=True)
    url = valkey.start()
    client = aioredis.Redis.from_url(url)
    await client.set("kept", "yes")
    await client.aclose()

    second = EmbeddedValkey(tmp_path / "valkey")
    assert second.start() == url and second.adopted, "a running server on the data dir is reused"

    valkey.stop()
    url = EmbeddedValkey(tmp_path / "valkey").start()
    client = aioredis.Redis.from_url(url)
    try:
        assert await client.get("kept") == b"yes", "append-only file survives a restart"
    finally:
        await client.aclose()
        EmbeddedValkey(tmp_path / "valkey").stop()


async def test_healthz_reports_redis_down_then_recovers(servers: Servers, tmp_path: Path) -> None:
    valkey = EmbeddedValkey(tmp_path / "valkey", durable=False)
    redis_url = valkey.start()
    settings = make_settings(servers)
    settings = load_settings(
        environ={
            "DATABASE_URL": servers.pg.url,
            "REDIS_URL": redis_url,
            "LIVESELL_SECRET": settings.secret,
        },
        dotenv=None,
    )
    async with open_resources(settings) as res:
        transport = httpx.ASGITransport(app=create_app(settings, res))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/healthz")).json() == {
                "ok": True,
                "postgres": "up",
                "redis": "up",
            }
            valkey.stop()
            down = await http.get("/healthz")
            assert down.status_code == 503
            body = down.json()
            assert (body["ok"], body["postgres"], body["redis"]) == (False, "up", "down")
            # the node that failed, with its error
            assert list(body["errors"]) == [f"redis 127.0.0.1:{valkey.port}"], body
            assert "Error" in body["errors"][f"redis 127.0.0.1:{valkey.port}"]
            valkey.restart()
            deadline = time.monotonic() + 15
            while (await http.get("/healthz")).status_code != 200:
                assert time.monotonic() < deadline, "healthz did not recover"
                await asyncio.sleep(0.2)
    valkey.stop()


# --- auth and the error shape, on a route guarded the way every package guards its routes ---


async def _guarded(request: Request) -> Response:
    who = require(request, "host", "admin")
    return JSON({"user": who.user_id})


@pytest.fixture
async def guarded_client(resources: Resources) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/guarded", _guarded)], exception_handlers=exception_handlers())
    app.state.resources = resources
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer eyJhbGciOiJub25lIn0.e30."],
)
async def test_missing_or_bad_token_is_401_json(
    guarded_client: httpx.AsyncClient, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    response = await guarded_client.get("/guarded", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


async def test_token_signed_with_another_secret_is_401(guarded_client: httpx.AsyncClient) -> None:
    from core.auth import mint_token

    forged = mint_token("some-other-secret-of-sufficient-length", "mallory", ["admin"])
    response = await guarded_client.get("/guarded", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


async def test_expired_token_is_401(guarded_client: httpx.AsyncClient, settings: Settings) -> None:
    import jwt

    expired = jwt.encode(
        {"sub": "alice", "roles": ["host"], "exp": int(time.time()) - 600},
        settings.secret,
        algorithm="HS256",
    )
    response = await guarded_client.get("/guarded", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert "expired" in response.json()["error"]["message"]


async def test_wrong_role_is_403_and_right_role_passes(
    guarded_client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
) -> None:
    denied = await guarded_client.get("/guarded", headers=auth("bob", "viewer"))
    assert denied.status_code == 403
    assert denied.json()["error"]["code"] == "forbidden"
    allowed = await guarded_client.get("/guarded", headers=auth("alice", "host"))
    assert allowed.status_code == 200 and allowed.json() == {"user": "alice"}


async def test_unknown_route_is_404_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (b'{"sub": 42}', 422, "sub"),
        (b'{"roles": ["viewer"]}', 422, None),
        (b'{"sub": "a", "roles": "host"}', 422, "roles"),
        (b'{"sub": "a", "roles": ["emperor"]}', 422, None),
        (b'{"sub": "a", "surprise": 1}', 422, None),
    ],
)
async def test_malformed_body_is_a_json_error_naming_the_field(
    client: httpx.AsyncClient, body: bytes, status: int, field: str | None
) -> None:
    response = await client.post(
        "/api/dev/token", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] and error["message"]
    if field is not None:
        assert error["field"] == field


async def test_dev_token_works_in_dev_and_is_404_otherwise(
    servers: Servers, client: httpx.AsyncClient, resources: Resources
) -> None:
    minted = await client.post("/api/dev/token", json={"sub": "alice", "roles": ["host"]})
    assert minted.status_code == 200 and minted.json()["token"].count(".") == 2

    production = make_settings(servers, dev=False)
    prod_resources = dataclasses.replace(resources, settings=production)
    transport = httpx.ASGITransport(app=create_app(production, prod_resources))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        assert (await http.post("/api/dev/token", json={"sub": "x"})).status_code == 404


async def test_metrics_and_openapi(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert (
        'livesell_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics.text
    )
    spec = (await client.get("/api/openapi.json")).json()
    assert spec["openapi"].startswith("3.") and "/healthz" in spec["paths"]


def test_settings_refuse_malformed_values() -> None:
    with pytest.raises(SettingsError, match="LIVESELL_API_PORT"):
        load_settings(
            environ={"LIVESELL_API_PORT": "eighty", "LIVESELL_SECRET": TEST_SECRET}, dotenv=None
        )
    with pytest.raises(SettingsError, match="LIVESELL_ATTRIBUTION"):
        load_settings(
            environ={"LIVESELL_ATTRIBUTION": "middle", "LIVESELL_SECRET": TEST_SECRET}, dotenv=None
        )


def test_settings_defaults_serve_embedded_mode(tmp_path: Path) -> None:
    settings = load_settings(environ={"LIVESELL_DATA_DIR": str(tmp_path)}, dotenv=None)
    assert settings.embedded_postgres and settings.embedded_redis and settings.dev
    assert (settings.api_port, settings.hub_port, settings.hold_s) == (8000, 8001, 900)
    assert settings.secret == (tmp_path / "secret").read_text(), "secret generated once, reused"
    assert load_settings(environ={"LIVESELL_DATA_DIR": str(tmp_path)}, dotenv=None).secret == (
        settings.secret
    )
    external = load_settings(
        environ={"DATABASE_URL": "postgresql://x/y", "LIVESELL_SECRET": TEST_SECRET}, dotenv=None
    )
    assert not external.dev, "dev mode is off once a real database is configured"


# --- the front door: `livesell serve` as a real process ---


SERVE_SECRET = "serve-test-secret-0123456789abcdef"


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "livesell serve exited early"
        try:
            response = httpx.get(url, timeout=1)
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} not healthy within {timeout}s")


def _serve(env: dict[str, str], api_port: int, hub_port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "livesell.cli",
            "serve",
            "--api-port",
            str(api_port),
            "--hub-port",
            str(hub_port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _stop(process: subprocess.Popen[bytes]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    return output.decode(errors="replace")


@pytest.mark.slow
def test_serve_embedded_becomes_healthy_and_stops_cleanly(embedded_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(LIVESELL_DATA_DIR=str(embedded_dir), LIVESELL_SECRET=SERVE_SECRET)
    api_port, hub_port = free_port(), free_port()
    process = _serve(env, api_port, hub_port)
    started = time.monotonic()
    try:
        health = _wait_healthy(f"http://127.0.0.1:{api_port}/healthz", process, 60)
        assert health == {"ok": True, "postgres": "up", "redis": "up"}
        elapsed = time.monotonic() - started
        room = httpx.get(f"http://127.0.0.1:{api_port}/api/openapi.json", timeout=5)
        assert room.status_code == 200
    finally:
        output = _stop(process)
    assert process.returncode == 0, output
    assert elapsed < 60
    assert "livesell is up" in output and "Bearer" in output
    pg_pid = embedded_dir / "pg" / "postmaster.pid"
    assert not pg_pid.exists(), f"embedded PostgreSQL still running after exit:\n{output}"

    # a second run on the same data dir reuses the data (demo seeded once, not twice)
    process = _serve(env, api_port, hub_port)
    try:
        _wait_healthy(f"http://127.0.0.1:{api_port}/healthz", process, 60)
    finally:
        output = _stop(process)
    assert process.returncode == 0, output


@pytest.mark.slow
def test_serve_with_urls_starts_nothing_embedded(servers: Servers, tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=servers.pg.url,
        REDIS_URL=servers.valkey.url,
        LIVESELL_DATA_DIR=str(tmp_path / "data"),
        LIVESELL_SECRET=SERVE_SECRET,
    )
    api_port, hub_port = free_port(), free_port()
    process = _serve(env, api_port, hub_port)
    try:
        assert _wait_healthy(f"http://127.0.0.1:{api_port}/healthz", process, 60)["ok"] is True
    finally:
        output = _stop(process)
    assert process.returncode == 0, output
    assert not (tmp_path / "data" / "pg").exists() and not (tmp_path / "data" / "valkey").exists()
