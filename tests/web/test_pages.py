"""The pages as HTTP resources: served with their policy headers, modules with a JS type, config
for the hub, and every UI string present in both languages."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from core.resources import Resources
from core.settings import Settings
from tests.conftest import TEST_SECRET

STATIC = Path(__file__).resolve().parents[2] / "web" / "static"


@pytest.mark.parametrize(
    ("path", "marker"),
    [("/host/7", "/static/js/host.js"), ("/r/7", "/static/js/room.js"), ("/d", "distributor.js")],
)
async def test_pages_are_html_with_a_strict_policy(
    client: httpx.AsyncClient, path: str, marker: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert marker in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy


@pytest.mark.parametrize("path", ["/r/abc", "/host/-1", "/r/1234567890123456789"])
async def test_a_room_page_for_a_malformed_id_is_an_html_404(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html"), "a page, not a JSON blob"
    assert "notfound.js" in response.text


async def test_modules_are_served_as_javascript(client: httpx.AsyncClient) -> None:
    for name in ("hub.js", "room.js", "host.js", "distributor.js", "qr.js", "i18n.js"):
        response = await client.get(f"/static/js/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith("text/javascript"), name
        assert response.headers["cache-control"] == "no-cache"
    missing = await client.get("/static/js/nothing-here.js")
    assert missing.status_code == 404


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
