"""docs/payments.md, followed as written: each provider's section is read from the file, its
variables are set with the values it shows (a placeholder `…` takes the local provider's
credential), and its steps lead from those credentials to a first paid order against the local
WeChat Pay and the local Stripe. A variable the doc names wrongly, a step that does not work as
described, or a route that moved, fails here."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from core.resources import Resources
from tests.conftest import Servers
from tests.storefront.conftest import Auth, Buy, StartDrop
from tests.storefront.fake_stripe import PUBLISHABLE_KEY, SECRET_KEY, FakeStripe
from tests.storefront.fake_wechatpay import MERCHANT_SERIAL, FakeWeChatPay
from tests.storefront.provider_app import money_is_straight, provider_client, provider_settings

DOC = (Path(__file__).parents[2] / "docs" / "payments.md").read_text(encoding="utf-8")
SETTING = re.compile(r"^(#\s*)?(LIVESELL_[A-Z0-9_]+)=(\S*)")


def section(title: str) -> str:
    """The text of `## title`, up to the next section."""
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end > 0 else None]


def documented(text: str) -> tuple[dict[str, str], set[str]]:
    """The `sh` block's settings: (set ones with their values, commented-out ones)."""
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    active: dict[str, str] = {}
    commented: set[str] = set()
    for line in block.splitlines():
        found = SETTING.match(line.strip())
        if found is None:
            continue
        if found[1]:
            commented.add(found[2])
        else:
            active[found[2]] = found[3]
    return active, commented


def follow(text: str, credentials: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The environment the doc's block sets: its values, a placeholder (…) replaced by the
    local provider's credential; `extra` only with variables the section names."""
    active, commented = documented(text)
    env = {
        name: credentials[name] if "…" in value or name in credentials else value
        for name, value in active.items()
    }
    for name in extra:
        assert name in commented or f"`{name}`" in text, f"docs/payments.md never names {name}"
    return {**env, **extra}


@pytest.fixture
def wechat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWeChatPay]:
    fake = FakeWeChatPay(tmp_path / "wechatpay")
    fake.start()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(fake.ca_bundle))
    yield fake
    fake.stop()


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe()
    fake.start()
    yield fake
    fake.stop()


async def test_wechat_pay_from_credentials_to_a_first_paid_order(
    servers: Servers,
    resources: Resources,
    wechat: FakeWeChatPay,
    tmp_path: Path,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
) -> None:
    text = section("WeChat Pay")
    cert_dir = tmp_path / "wechatpay-certs"
    env = follow(
        text,
        {
            "LIVESELL_WECHATPAY_PRIVATE_KEY": str(wechat.merchant_key_path),
            "LIVESELL_WECHATPAY_CERT_SERIAL_NO": MERCHANT_SERIAL,
            "LIVESELL_WECHATPAY_APIV3_KEY": wechat.apiv3_key,
            "LIVESELL_WECHATPAY_PLATFORM_CERT_DIR": str(cert_dir),
        },
        # the one departure: the SDK reaches the local WeChat Pay through its proxy setting
        {"LIVESELL_WECHATPAY_PROXY": wechat.proxy_url},
    )
    assert env["LIVESELL_PAYMENTS"] == "wechatpay"
    notify = urlsplit(env["LIVESELL_WECHATPAY_NOTIFY_URL"])
    assert notify.scheme == "https"
    # step 3: start livesell, buy, and pay
    async with provider_client(resources, provider_settings(servers, **env)) as paying:
        http = paying.http
        drop = await start_drop()
        outside = (await buy(drop["id"], "bob")).json()["order_id"]
        started = await http.post(f"/api/orders/{outside}/pay", headers=auth("bob"))
        assert started.status_code == 200, started.text
        h5 = started.json()
        assert (h5["flow"], h5["order_status"]) == ("wechat_h5", "held") and h5["h5_url"]
        inside = (await buy(drop["id"], "carol")).json()["order_id"]
        jsapi = await http.post(
            f"/api/orders/{inside}/pay", json={"openid": "oH5-carol"}, headers=auth("carol")
        )
        assert jsapi.json()["flow"] == "wechat_jsapi" and jsapi.json()["wechat_jsapi"]["paySign"]
        # step 4: WeChat Pay posts TRANSACTION.SUCCESS to the notify URL
        notification = wechat.pay(h5["payment_id"])
        answer = await http.post(
            notify.path, content=notification.body, headers=notification.headers
        )
        assert answer.status_code == 200 and answer.json()["outcome"] == "paid", answer.text
        order = await http.get(f"/api/orders/{outside}", headers=auth("bob"))
        assert order.json()["status"] == "paid"
        # the platform certificates were downloaded into the (empty) directory
        assert any(cert_dir.iterdir())
        await money_is_straight(paying.res, wechat.refunded_cents())


async def test_stripe_from_credentials_to_a_first_paid_order(
    servers: Servers,
    resources: Resources,
    stripe: FakeStripe,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
) -> None:
    text = section("Stripe")
    # step 1: the webhook endpoint the dashboard is given
    endpoint = re.search(r"`(https://\S+/api/payments/stripe/webhook)`", text)
    assert endpoint is not None
    env = follow(
        text,
        {
            "LIVESELL_STRIPE_SECRET_KEY": SECRET_KEY,
            "LIVESELL_STRIPE_WEBHOOK_SECRET": stripe.webhook_secret,
            "LIVESELL_STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        },
        {"LIVESELL_STRIPE_API_BASE": stripe.api_base},
    )
    assert env["LIVESELL_PAYMENTS"] == "stripe"
    async with provider_client(resources, provider_settings(servers, **env)) as paying:
        http = paying.http
        drop = await start_drop()
        order_id = (await buy(drop["id"], "bob")).json()["order_id"]
        # step 3: pay; the answer carries the PaymentIntent's client secret and the key
        started = await http.post(f"/api/orders/{order_id}/pay", headers=auth("bob"))
        assert started.status_code == 200, started.text
        body = started.json()
        assert (body["flow"], body["publishable_key"]) == ("stripe", PUBLISHABLE_KEY)
        (intent,) = stripe.intents.values()
        assert intent["client_secret"] == body["client_secret"]
        assert intent["metadata"]["livesell_payment_id"] == body["payment_id"]
        assert intent["currency"] == env["LIVESELL_STRIPE_CURRENCY"]
        # step 4: Stripe posts payment_intent.succeeded to the endpoint
        delivery = stripe.confirm(intent["id"])
        answer = await http.post(
            urlsplit(endpoint[1]).path, content=delivery.body, headers=delivery.headers
        )
        assert answer.status_code == 200 and answer.json()["outcome"] == "paid", answer.text
        order = await http.get(f"/api/orders/{order_id}", headers=auth("bob"))
        assert order.json()["status"] == "paid"
        await money_is_straight(paying.res, stripe.refunded_cents())
