"""Security fixtures: the populated world, and apps with other settings or client addresses."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import msgspec
import pytest

from core.resources import Resources
from core.settings import Settings
from livesell.app import create_app
from tests.security.world import World, build_world


@pytest.fixture
async def world(
    client: httpx.AsyncClient,
    auth: Callable[..., dict[str, str]],
    settings: Settings,
    resources: Resources,
) -> World:
    return await build_world(client, auth, settings, resources)


@asynccontextmanager
async def app_client(
    resources: Resources, *, address: str = "127.0.0.1", **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An API client whose requests come from `address`, on settings with `overrides`."""
    settings = msgspec.structs.replace(resources.settings, **overrides)
    res = dataclasses.replace(resources, settings=settings)
    transport = httpx.ASGITransport(
        app=create_app(settings, res), raise_app_exceptions=False, client=(address, 40_000)
    )
    async with httpx.AsyncClient(transport=transport, base_url="http://livesell.test") as http:
        yield http
