"""The pages as HTTP resources: served with their policy headers, modules with a JS type, config
for the hub, and every UI string present in both languages."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from core.http import exception_handlers
from core.resources import Resources
from core.settings import Settings
from tests.conftest import TEST_SECRET
from web import prefers_html
from web.pages import SDK_FILE, link_qr_svg, sdk_route

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
STATIC = WEB / "static"
# what Chromium sends when it opens a page
BROWSER_ACCEPT = (
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,image/apng,"
    "*/*;q=0.8,application/signed-exchange;v=b3;q=0.7"
)
FAVICON = '<link rel="icon" href="/static/favicon.svg"'


async def _room(client: httpx.AsyncClient, auth: Callable[..., dict[str, str]]) -> str:
    response = await client.post("/api/rooms", json={"title": "Tea"}, headers=auth("h", "host"))
    assert response.status_code == 201, response.text
    room_id: str = response.json()["id"]
    return room_id


@pytest.mark.parametrize(
    ("path", "marker"),
    [("/host/{room}", "/static/js/host.js"), ("/r/{room}", "/static/js/room.js"),
     ("/d", "distributor.js")],
)  # fmt: skip
async def test_pages_are_html_with_a_strict_policy(
    client: httpx.AsyncClient, auth: Callable[..., dict[str, str]], path: str, marker: str
) -> None:
    response = await client.get(path.format(room=await _room(client, auth)))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert marker in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert FAVICON in response.text


@pytest.mark.parametrize(
    "path", ["/r/abc", "/host/-1", "/r/1234567890123456789", "/r/999999", "/host/999999"]
)
async def test_a_room_page_for_a_room_that_does_not_exist_is_an_html_404(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path, headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html"), "a page, not a JSON blob"
    assert 'data-error="room_not_found"' in response.text
    assert "/static/js/error.js" in response.text and FAVICON in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("accept", "page"),
    [
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("application/json;q=0.5, text/html", True),
        ("application/json", False),
        ("*/*", False),
        ("", False),
        (None, False),
        ("text/html, application/json", False),
        ("text/html;q=0.4, */*;q=0.8", False),
        ("text/html;q=0", False),
        ("text/html;q=oops, application/json;q=0.1", False),
    ],
)
def test_only_a_request_that_ranks_html_above_json_prefers_a_page(
    accept: str | None, page: bool
) -> None:
    assert prefers_html(accept) is page


async def test_a_broken_share_link_is_a_page_for_a_browser_and_json_for_an_api_client(
    client: httpx.AsyncClient,
) -> None:
    for code in ("nope", "AAAAAAAAAAAAAAAAAAAAAA", "x" * 200):
        page = await client.get(f"/l/{code}", headers={"Accept": BROWSER_ACCEPT})
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html"), "a page, not a JSON blob"
        assert 'data-error="link_not_found"' in page.text and FAVICON in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for accept in ("application/json", "*/*"):
            api = await client.get(f"/l/{code}", headers={"Accept": accept})
            assert api.status_code == 404
            assert api.headers["content-type"].startswith("application/json")
            assert api.json()["error"]["code"] == "link_not_found"


async def test_every_page_names_the_favicon_and_it_is_served(client: httpx.AsyncClient) -> None:
    for html in STATIC.glob("*.html"):
        assert FAVICON in html.read_text(), f"{html.name} names no favicon"
    icon = await client.get("/static/favicon.svg")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    assert icon.text.lstrip().startswith("<svg")


async def test_modules_are_served_as_javascript(client: httpx.AsyncClient) -> None:
    for name in ("live.js", "room.js", "host.js", "distributor.js", "i18n.js", "error.js"):
        response = await client.get(f"/static/js/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith("text/javascript"), name
        assert response.headers["cache-control"] == "no-cache"
    missing = await client.get("/static/js/nothing-here.js")
    assert missing.status_code == 404


@pytest.mark.skipif(not SDK_FILE.is_file(), reason="web/node_modules missing (make installs it)")
async def test_the_hub_client_is_the_installed_npm_sdk_at_the_pinned_version(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/vendor/centrifuge.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content == SDK_FILE.read_bytes()
    # the SDK the pages run is the one the hub's SDK tests run, at the version web/ pins
    pinned = json.loads((WEB / "package.json").read_text())["dependencies"]["centrifuge"]
    tested = json.loads((ROOT / "tests" / "js" / "package-lock.json").read_text())
    assert pinned == tested["packages"]["node_modules/centrifuge"]["version"]
    installed = json.loads((WEB / "node_modules" / "centrifuge" / "package.json").read_text())
    assert installed["version"] == pinned
    assert not (STATIC / "js" / "hub.js").exists(), "no hand-written hub client besides the SDK"


async def test_without_the_installed_sdk_the_hub_client_is_not_found(tmp_path: Path) -> None:
    app = Starlette(
        routes=[sdk_route(tmp_path / "centrifuge.js")], exception_handlers=exception_handlers()
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://livesell.test") as http:
        response = await http.get("/vendor/centrifuge.js")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "npm" in response.json()["error"]["message"]


async def test_a_link_qr_code_is_an_svg_image_of_this_deployments_link_url(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/l/8kQ2mN7pRtAbCdEfGhIjKl/qr.svg")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("image/svg+xml")
    assert response.headers["content-security-policy"].startswith("default-src 'none'")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.text.startswith("<svg") and "<script" not in response.text
    assert response.content == link_qr_svg(f"{settings.api_base_url}/l/8kQ2mN7pRtAbCdEfGhIjKl")


@pytest.mark.parametrize("code", ["bad!code", "a" * 65, "%E7%9B%B4"])
async def test_a_qr_code_for_what_is_no_link_code_is_not_found(
    client: httpx.AsyncClient, code: str
) -> None:
    response = await client.get(f"/l/{code}/qr.svg")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_config_tells_pages_where_the_hub_is(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.get("/api/config")
    assert response.status_code == 200
    assert response.json() == {
        "hub_url": settings.hub_url,
        "hub_port": settings.hub_port,
        "dev": settings.dev,
    }
    spec = (await client.get("/api/openapi.json")).json()
    assert "/api/config" in spec["paths"]


def _used_keys() -> set[str]:
    keys: set[str] = set()
    for html in STATIC.glob("*.html"):
        keys |= set(re.findall(r'data-i18n(?:-placeholder|-title)?="([\w.]+)"', html.read_text()))
    for module in (STATIC / "js").glob("*.js"):
        keys |= set(re.findall(r'\bt\("([\w.]+)"', module.read_text()))
    return keys


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_every_ui_string_exists_in_chinese_and_english() -> None:
    source = base64.b64encode((STATIC / "js" / "i18n.js").read_bytes()).decode()
    script = f"""
const m = await import("data:text/javascript;base64,{source}");
console.log(JSON.stringify({{ en: m.KEYS, zh: m.ZH_KEYS,
  zhDefault: m.preferredLang(null, ["zh-CN", "en"]), enDefault: m.preferredLang(null, ["en-US"]),
  stored: m.preferredLang("en", ["zh-TW"]) }}));
"""
    node = shutil.which("node")
    assert node is not None
    out = subprocess.run(
        [node, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    found = json.loads(out.stdout)
    assert set(found["en"]) == set(found["zh"]), "every string has both languages"
    missing = _used_keys() - set(found["en"])
    assert not missing, f"keys used by the pages but not defined: {sorted(missing)}"
    assert (found["zhDefault"], found["enDefault"], found["stored"]) == ("zh", "en", "en")


async def test_serve_prints_page_links_signed_in_as_the_demo_users(
    resources: Resources, capsys: pytest.CaptureFixture[str]
) -> None:
    from core.auth import verify_token
    from livesell.demo import DEMO_DISTRIBUTOR, DEMO_HOST, DEMO_VIEWER, seed_and_print

    await seed_and_print(resources)
    printed = capsys.readouterr().out
    links = dict(re.findall(r"(/host/\d+|/r/\d+|/d)\S*#token=(\S+)", printed))
    assert {path.split("/")[1] for path in links} == {"host", "r", "d"}
    signed_in = {
        path.split("/")[1]: verify_token(TEST_SECRET, token) for path, token in links.items()
    }
    assert signed_in["host"].user_id == DEMO_HOST and "host" in signed_in["host"].roles
    assert signed_in["r"].user_id == DEMO_VIEWER
    assert signed_in["d"].user_id == DEMO_DISTRIBUTOR and "distributor" in signed_in["d"].roles
    host_link = next(line for line in printed.splitlines() if "/host/" in line)
    assert re.search(r"\?products=\d+,\d+,\d+#", host_link), "the console lists the demo products"
