"""WeChat Pay API v3 through the wechatpayv3 SDK against a local WeChat Pay
(tests/storefront/fake_wechatpay.py): JSAPI and H5 orders, signed and AES-256-GCM-encrypted
notifications, refunds under livesell's out_refund_no completed by REFUND.SUCCESS; replays,
duplicates, out-of-order news, bad signatures, stale ones and an expired platform certificate
change nothing, and the money agrees everywhere after every step."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from core.resources import Resources
from tests.attribution.conftest import People
from tests.conftest import Servers
from tests.storefront.conftest import Auth, Buy, StartDrop
from tests.storefront.fake_wechatpay import (
    APPID,
    MCHID,
    MERCHANT_SERIAL,
    FakeWeChatPay,
    Notification,
)
from tests.storefront.provider_app import (
    ProviderApp,
    money_is_straight,
    provider_client,
    provider_settings,
)

NOTIFY = "/api/payments/wechatpay/notify"


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeWeChatPay]:
    wechat = FakeWeChatPay(tmp_path_factory.mktemp("wechatpay"))
    wechat.start()
    # requests (inside the SDK) trusts the fake gateway's test authority through its
    # documented variable; nothing else in these tests uses requests
    before = os.environ.get("REQUESTS_CA_BUNDLE")
    os.environ["REQUESTS_CA_BUNDLE"] = str(wechat.ca_bundle)
    yield wechat
    if before is None:
        os.environ.pop("REQUESTS_CA_BUNDLE", None)
    else:
        os.environ["REQUESTS_CA_BUNDLE"] = before
    wechat.stop()


def wechatpay_env(fake: FakeWeChatPay, cert_dir: Path) -> dict[str, str]:
    """The variables of docs/payments.md, "WeChat Pay", with the fake's keys and proxy."""
    return {
        "LIVESELL_PAYMENTS": "wechatpay",
        "LIVESELL_WECHATPAY_MCHID": MCHID,
        "LIVESELL_WECHATPAY_APPID": APPID,
        "LIVESELL_WECHATPAY_PRIVATE_KEY": str(fake.merchant_key_path),
        "LIVESELL_WECHATPAY_CERT_SERIAL_NO": MERCHANT_SERIAL,
        "LIVESELL_WECHATPAY_APIV3_KEY": fake.apiv3_key,
        "LIVESELL_WECHATPAY_PLATFORM_CERT_DIR": str(cert_dir),
        "LIVESELL_WECHATPAY_NOTIFY_URL": "https://shop.example.com" + NOTIFY,
        "LIVESELL_WECHATPAY_PROXY": fake.proxy_url,
    }


@pytest.fixture
async def paying(
    servers: Servers, resources: Resources, fake: FakeWeChatPay, tmp_path: Path
) -> AsyncIterator[ProviderApp]:
    fake.reset()
    settings = provider_settings(servers, **wechatpay_env(fake, tmp_path / "platform-certs"))
    async with provider_client(resources, settings) as opened:
        yield opened


async def _deliver(http: httpx.AsyncClient, notification: Notification) -> httpx.Response:
    return await http.post(NOTIFY, content=notification.body, headers=notification.headers)


async def _status(http: httpx.AsyncClient, auth: Auth, order_id: str) -> str:
    order = (await http.get(f"/api/orders/{order_id}", headers=auth("root", "admin"))).json()
    status: str = order["status"]
    return status


async def _pay(http: httpx.AsyncClient, auth: Auth, order_id: str, **body: str) -> dict[str, Any]:
    started = await http.post(f"/api/orders/{order_id}/pay", json=body, headers=auth("bob"))
    assert started.status_code == 200, started.text
    answer: dict[str, Any] = started.json()
    return answer


async def test_h5_payment_and_refund_round_trip(
    paying: ProviderApp,
    fake: FakeWeChatPay,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
) -> None:
    res, http = paying.res, paying.http
    drop = await start_drop()
    order_id = (await buy(drop["id"], "bob")).json()["order_id"]

    started = await _pay(http, auth, order_id)
    assert (started["provider"], started["flow"], started["order_status"]) == (
        "wechatpay",
        "wechat_h5",
        "held",
    )
    order = fake.orders[started["payment_id"]]
    assert started["h5_url"] == order["answer"]["h5_url"]
    assert (order["attach"], order["amount"]["total"]) == (order_id, 9_900)
    assert order["notify_url"] == "https://shop.example.com" + NOTIFY
    assert order["scene_info"]["payer_client_ip"] == "127.0.0.1"

    paid = fake.pay(started["payment_id"])
    answer = await _deliver(http, paid)
    assert answer.status_code == 200 and answer.json()["outcome"] == "paid", answer.text
    assert await _status(http, auth, order_id) == "paid"
    # WeChat Pay retries a notification until it hears 2xx: the same one again changes nothing
    replay = await _deliver(http, paid)
    assert replay.json() == {"received": True, "duplicate": True, "outcome": "paid"}
    # and the same news under a new notification id is acknowledged as known
    assert (await _deliver(http, fake.pay(started["payment_id"]))).json()[
        "outcome"
    ] == "already_settled"
    await money_is_straight(res, fake.refunded_cents())

    refund = await http.post(f"/api/orders/{order_id}/refund", headers=auth("bob"))
    assert refund.status_code == 200 and refund.json()["status"] == "refunded"
    async with res.pool.acquire() as conn:
        request = await conn.fetchrow("SELECT * FROM payment_refunds")
    assert request["status"] == "requested"
    wechat_refund = fake.refunds[request["refund_id"]]  # livesell's id is the out_refund_no
    assert wechat_refund["out_trade_no"] == started["payment_id"]
    assert wechat_refund["amount"] == {"refund": 9_900, "total": 9_900, "currency": "CNY"}
    await money_is_straight(res, fake.refunded_cents())

    done = fake.refund_settled(request["refund_id"])
    assert (await _deliver(http, done)).json()["outcome"] == "refund_succeeded"
    assert (await _deliver(http, done)).json()["duplicate"] is True
    # news that contradicts the final state, delivered late, is recorded and not applied
    late = await _deliver(http, fake.refund_settled(request["refund_id"], "ABNORMAL"))
    assert late.json()["outcome"] == "contradicts_final_state"
    async with res.pool.acquire() as conn:
        request = await conn.fetchrow("SELECT * FROM payment_refunds")
    assert (request["status"], request["provider_refund_id"]) == (
        "succeeded",
        wechat_refund["refund_id"],
    )
    await money_is_straight(res, fake.refunded_cents())


async def test_jsapi_payment_hands_the_page_signed_bridge_parameters(
    paying: ProviderApp,
    fake: FakeWeChatPay,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
) -> None:
    res, http = paying.res, paying.http
    drop = await start_drop()
    order_id = (await buy(drop["id"], "bob")).json()["order_id"]
    started = await _pay(http, auth, order_id, openid="oH5-bob")
    assert started["flow"] == "wechat_jsapi" and started["h5_url"] is None
    bridge = started["wechat_jsapi"]
    order = fake.orders[started["payment_id"]]
    assert order["payer"] == {"openid": "oH5-bob"}
    assert bridge["package"] == f"prepay_id={order['answer']['prepay_id']}"
    assert (bridge["appId"], bridge["signType"]) == (APPID, "RSA")
    # WeChat checks paySign with the merchant's certificate: appId, timeStamp, nonceStr, package
    message = f"{APPID}\n{bridge['timeStamp']}\n{bridge['nonceStr']}\n{bridge['package']}\n"
    fake.merchant_key.public_key().verify(
        base64.b64decode(bridge["paySign"]), message.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    # paying again while it is pending hands back the same WeChat order
    again = await _pay(http, auth, order_id, openid="oH5-bob")
    assert again["payment_id"] == started["payment_id"]
    assert again["wechat_jsapi"]["package"] == bridge["package"]
    assert len(fake.orders) == 1

    assert (await _deliver(http, fake.pay(started["payment_id"]))).json()["outcome"] == "paid"
    await money_is_straight(res, fake.refunded_cents())


async def test_forged_stale_and_expired_certificate_notifications_are_refused(
    paying: ProviderApp,
    fake: FakeWeChatPay,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
) -> None:
    res, http = paying.res, paying.http
    drop = await start_drop()
    order_id = (await buy(drop["id"], "bob")).json()["order_id"]
    payment_id = (await _pay(http, auth, order_id))["payment_id"]

    tampered = fake.pay(payment_id)
    tampered.body = tampered.body.replace(b'"TRANSACTION.SUCCESS"', b'"TRANSACTION.SUCCESS" ')
    expired = fake.pay(payment_id, expired=True)
    stale = fake.pay(payment_id, at=1_000_000_000)
    unsigned = Notification({"Content-Type": "application/json"}, fake.pay(payment_id).body)
    other_key = fake.pay(payment_id)
    other_key.headers["Wechatpay-Signature"] = expired.headers["Wechatpay-Signature"]
    for notification, reason in (
        (tampered, "mismatch"),
        (expired, "mismatch"),
        (stale, "stale"),
        (unsigned, "missing"),
        (other_key, "mismatch"),
    ):
        refused = await _deliver(http, notification)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == {
            "code": "invalid_signature",
            "message": f"webhook signature rejected: {reason}",
            "reason": reason,
        }
    assert await _status(http, auth, order_id) == "held"
    async with res.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM payment_events") == 0
    # once when the SDK started, once more for the expired certificate's serial, which the SDK
    # then refused to trust
    assert fake.requests.count(("GET", "/v3/certificates")) == 2


async def test_duplicates_at_once_and_news_of_unknown_refunds(
    paying: ProviderApp,
    fake: FakeWeChatPay,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
) -> None:
    res, http = paying.res, paying.http
    drop = await start_drop()
    order_id = (await buy(drop["id"], "bob")).json()["order_id"]
    payment_id = (await _pay(http, auth, order_id))["payment_id"]
    paid = fake.pay(payment_id)
    answers = await asyncio.gather(*(_deliver(http, paid) for _ in range(8)))
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 7
    assert await _status(http, auth, order_id) == "paid"

    # a refund notification naming no refund livesell asked for is refused (WeChat retries)
    fake.refunds["lsr_never_asked"] = {
        "out_trade_no": payment_id,
        "transaction_id": "4200",
        "refund_id": "50000x",
        "amount": {"total": 9_900, "refund": 9_900},
    }
    unknown = await _deliver(http, fake.refund_settled("lsr_never_asked"))
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "payment_mismatch"
    del fake.refunds["lsr_never_asked"]
    await money_is_straight(res, fake.refunded_cents())


async def test_the_route_of_a_provider_not_configured_is_not_found(
    client: httpx.AsyncClient, fake: FakeWeChatPay
) -> None:
    fake.orders["ls1"] = {
        "appid": APPID,
        "mchid": MCHID,
        "transaction_id": "1",
        "trade_type": "MWEB",
        "amount": {"total": 1},
    }
    refused = await _deliver(client, fake.pay("ls1"))
    assert refused.status_code == 404 and refused.json()["error"]["code"] == (
        "provider_not_configured"
    )


async def test_news_out_of_order_keeps_money_commission_and_states_straight(
    paying: ProviderApp,
    fake: FakeWeChatPay,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
    room_id: int,
) -> None:
    """A distributor's buyer pays for two units and returns them one at a time; WeChat Pay's
    news arrives late, twice and in the wrong order, and after every step the money, the
    commission and the payment state machine agree."""
    res, http = paying.res, paying.http
    people = People(http, auth)
    await people.distributor("dana")
    await people.enter("bob", room_id, await people.link("dana", room_id))
    drop = await start_drop()
    order_id = (await buy(drop["id"], "bob", 2)).json()["order_id"]
    payment_id = (await _pay(http, auth, order_id))["payment_id"]
    paid = fake.pay(payment_id)
    assert (await _deliver(http, paid)).json()["outcome"] == "paid"
    assert (await people.dashboard("dana"))["commission_cents"]["pending"] == 2_970
    await money_is_straight(res, fake.refunded_cents())

    for _ in range(2):
        refund = await http.post(
            f"/api/orders/{order_id}/refund", json={"quantity": 1}, headers=auth("bob")
        )
        assert refund.status_code == 200, refund.text
        await money_is_straight(res, fake.refunded_cents())
    async with res.pool.acquire() as conn:
        first, second = [
            r["refund_id"]
            for r in await conn.fetch("SELECT refund_id FROM payment_refunds ORDER BY id")
        ]
    assert fake.refunded_cents() == 19_800 and await _status(http, auth, order_id) == "refunded"
    assert (await people.dashboard("dana"))["commission_cents"]["pending"] == 0

    # the second refund's news first, then the first's (twice at once), then the payment's
    # notification retried after both: each settles once, and nothing moves backwards
    assert (await _deliver(http, fake.refund_settled(second))).json()["outcome"] == (
        "refund_succeeded"
    )
    await money_is_straight(res, fake.refunded_cents())
    done = fake.refund_settled(first)
    answers = await asyncio.gather(_deliver(http, done), _deliver(http, done))
    assert sorted(a.json()["duplicate"] for a in answers) == [False, True]
    assert {a.json()["outcome"] for a in answers} == {"refund_succeeded"}
    await money_is_straight(res, fake.refunded_cents())
    assert (await _deliver(http, paid)).json() == {
        "received": True,
        "duplicate": True,
        "outcome": "paid",
    }
    assert (await _deliver(http, fake.pay(payment_id))).json()["outcome"] == "already_settled"
    late = await _deliver(http, fake.refund_settled(first, "CLOSED"))
    assert late.json()["outcome"] == "contradicts_final_state"
    async with res.pool.acquire() as conn:
        states = await conn.fetch(
            "SELECT p.status, r.status AS refund FROM payments p JOIN payment_refunds r"
            " ON r.payment_id = p.id"
        )
    assert [tuple(s) for s in states] == [("refunded", "succeeded")] * 2
    assert await _status(http, auth, order_id) == "refunded"
    assert (await people.dashboard("dana"))["commission_cents"]["pending"] == 0
    await money_is_straight(res, fake.refunded_cents())
