"""WeChat Pay API v3 through the `wechatpayv3` SDK: JSAPI orders (inside WeChat, the page calls
WeixinJSBridge with parameters the SDK signs) or H5 orders (the page goes to `h5_url`), refunds,
and the payment and refund notifications, whose RSA signature (by a platform certificate or the
platform public key) the SDK verifies and whose AES-256-GCM resource it decrypts.

Livesell's payment id is the order's out_trade_no and the order id rides in `attach`; a refund's
id is its out_refund_no, which WeChat Pay keeps unique per merchant: a refund sent twice returns
the money once. The SDK is synchronous (requests): its calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Mapping
from typing import Any

import msgspec
from wechatpayv3 import WeChatPay, WeChatPayType

from core.payment_settings import WeChatPaySettings
from storefront.errors import InvalidSignature
from storefront.payments import (
    WECHATPAY_HEADERS,
    Checkout,
    ClientAction,
    EventType,
    PaymentEvent,
    PaymentEventData,
    ProviderRefund,
    Started,
    WeChatJsapiParams,
    is_order_id,
)
from storefront.providers import Notice

# how old a signed notification may be: a captured one cannot be replayed later
TOLERANCE_S = 300

_TRADE_STATES: dict[str, EventType] = {
    "SUCCESS": "payment.succeeded",
    "CLOSED": "payment.failed",
    "PAYERROR": "payment.failed",
    "REVOKED": "payment.failed",
}
_REFUND_EVENTS: dict[str, EventType] = {
    "REFUND.SUCCESS": "refund.succeeded",
    "REFUND.ABNORMAL": "refund.failed",
    "REFUND.CLOSED": "refund.failed",
}


class _Amount(msgspec.Struct, kw_only=True):
    total: int = 0
    refund: int = 0


class _Transaction(msgspec.Struct, kw_only=True):
    out_trade_no: str
    trade_state: str
    amount: _Amount
    attach: str | None = None


class _Refund(msgspec.Struct, kw_only=True):
    out_trade_no: str
    out_refund_no: str
    amount: _Amount
    refund_id: str | None = None


class WeChatPayError(RuntimeError):
    """WeChat Pay refused a request (its status and answer are in the message)."""


class WeChatPayProvider:
    name = "wechatpay"

    def __init__(self, config: WeChatPaySettings) -> None:
        self._config = config
        self._sdk: WeChatPay | None = None
        self._building = asyncio.Lock()

    async def _wxpay(self) -> WeChatPay:
        # built on first use: without the platform public key the SDK downloads the platform
        # certificates when it starts
        if self._sdk is None:
            async with self._building:
                if self._sdk is None:
                    self._sdk = await asyncio.to_thread(self._build)
        return self._sdk

    def _build(self) -> WeChatPay:
        config = self._config
        return WeChatPay(
            wechatpay_type=WeChatPayType.JSAPI,
            mchid=config.mchid,
            private_key=config.private_key_path.read_text(encoding="utf-8"),
            cert_serial_no=config.cert_serial_no,
            appid=config.appid,
            apiv3_key=config.apiv3_key,
            notify_url=config.notify_url,
            cert_dir=str(config.platform_cert_dir) if config.platform_cert_dir else None,
            proxy={"https": config.proxy} if config.proxy else None,
            timeout=(5, 15),
            public_key=(
                config.public_key_path.read_text(encoding="utf-8")
                if config.public_key_path
                else None
            ),
            public_key_id=config.public_key_id,
        )

    def new_payment_id(self) -> str:
        # out_trade_no: 6 to 32 of [0-9A-Za-z_-|*]
        return "ls" + secrets.token_hex(12)

    async def start(self, payment_id: str, checkout: Checkout) -> Started:
        wx = await self._wxpay()
        order: dict[str, Any] = {
            "description": f"livesell order {checkout.order_id}",
            "out_trade_no": payment_id,
            "amount": {"total": checkout.amount_cents, "currency": "CNY"},
            "attach": str(checkout.order_id),
        }
        if checkout.openid:
            answer = await _call(
                wx.pay, **order, payer={"openid": checkout.openid}, pay_type=WeChatPayType.JSAPI
            )
            package = f"prepay_id={answer['prepay_id']}"
            timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
            params = WeChatJsapiParams(
                appId=self._config.appid,
                timeStamp=timestamp,
                nonceStr=nonce,
                package=package,
                signType="RSA",
                paySign=wx.sign([self._config.appid, timestamp, nonce, package]),
            )
            return Started(action=ClientAction(flow="wechat_jsapi", wechat_jsapi=params))
        scene = {"payer_client_ip": checkout.client_ip or "127.0.0.1", "h5_info": {"type": "Wap"}}
        answer = await _call(wx.pay, **order, scene_info=scene, pay_type=WeChatPayType.H5)
        return Started(action=ClientAction(flow="wechat_h5", h5_url=answer["h5_url"]))

    async def resume(self, payment_id: str, checkout: Checkout) -> Started:
        # placed again under the same out_trade_no: WeChat Pay answers with the same order
        return await self.start(payment_id, checkout)

    async def refund(self, refund: ProviderRefund) -> None:
        wx = await self._wxpay()
        await _call(
            wx.refund,
            out_refund_no=refund.refund_id,
            out_trade_no=refund.payment_id,
            amount={
                "refund": refund.amount_cents,
                "total": refund.payment_amount_cents,
                "currency": "CNY",
            },
            notify_url=self._config.notify_url,
        )

    async def decode_notification(self, headers: Mapping[str, str], body: bytes) -> Notice | None:
        signed = {name: headers.get(name, "") for name in WECHATPAY_HEADERS}
        if not signed["Wechatpay-Signature"]:
            raise InvalidSignature("missing")
        try:
            timestamp = int(signed["Wechatpay-Timestamp"])
            text = body.decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise InvalidSignature("malformed") from None
        if abs(time.time() - timestamp) > TOLERANCE_S:
            raise InvalidSignature("stale")
        wx = await self._wxpay()
        try:
            # verifies the signature (fetching the platform certificates when the serial is new;
            # expired ones never verify) and decrypts the resource with the APIv3 key
            verified = await asyncio.to_thread(wx.callback, signed, text)
        except Exception:  # noqa: BLE001 - the SDK raises bare Exception for unknown algorithms
            raise InvalidSignature("malformed") from None
        if not verified:
            raise InvalidSignature("mismatch")
        return _notice(verified, timestamp)


async def _call(method: Any, **params: Any) -> dict[str, Any]:
    """One SDK request in a worker thread; the answer's JSON, or WeChatPayError."""
    code, message = await asyncio.to_thread(method, **params)
    if not 200 <= code < 300:
        raise WeChatPayError(f"WeChat Pay answered {code}: {message!r}")
    answer: dict[str, Any] = json.loads(message) if message else {}
    return answer


def _notice(verified: dict[str, Any], timestamp: int) -> Notice | None:
    event_type = verified.get("event_type", "")
    event_id = verified.get("id")
    if not isinstance(event_id, str) or not event_id:
        return None
    try:
        if event_type.startswith("TRANSACTION."):
            paid = msgspec.convert(verified.get("resource"), type=_Transaction)
            kind = _TRADE_STATES.get(paid.trade_state)
            if kind is None or not is_order_id(paid.attach):
                return None
            data = PaymentEventData(
                payment_id=paid.out_trade_no,
                order_id=str(paid.attach),
                amount_cents=paid.amount.total,
            )
            return Notice(_event(event_id, kind, timestamp, data))
        if event_type in _REFUND_EVENTS:
            refunded = msgspec.convert(verified.get("resource"), type=_Refund)
            data = PaymentEventData(
                payment_id=refunded.out_trade_no,
                order_id="0",  # a refund notification does not say; its refund id does
                amount_cents=refunded.amount.refund,
                refund_id=refunded.out_refund_no,
            )
            kind = _REFUND_EVENTS[event_type]
            return Notice(_event(event_id, kind, timestamp, data), refunded.refund_id)
    except msgspec.ValidationError:
        return None
    return None


def _event(event_id: str, kind: EventType, timestamp: int, data: PaymentEventData) -> PaymentEvent:
    return PaymentEvent(id=event_id, provider="wechatpay", type=kind, created=timestamp, data=data)
