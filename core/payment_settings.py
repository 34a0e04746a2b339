"""Payment provider settings: which provider takes the buyers' money, and its credentials.

    LIVESELL_PAYMENTS = simulated | wechatpay | stripe

Unset, it is `simulated` in dev mode and nothing otherwise (pay then answers 503
`payments_unavailable`). The simulated provider approves every payment, so it is refused outside
dev mode. Each real provider's credentials are checked when settings load: a missing or
malformed one is a SettingsError naming its variable, not a failure at the first order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

ProviderName = Literal["simulated", "wechatpay", "stripe"]
PROVIDERS: tuple[ProviderName, ...] = ("simulated", "wechatpay", "stripe")

WECHATPAY_NOTIFY_PATH = "/api/payments/wechatpay/notify"


class WeChatPaySettings(msgspec.Struct, frozen=True, kw_only=True):
    mchid: str
    appid: str
    # the merchant API private key (apiclient_key.pem) and its certificate's serial number
    private_key_path: Path
    cert_serial_no: str
    apiv3_key: str
    notify_url: str
    # how livesell checks WeChat Pay's signatures: the platform public key (and its id), or
    # platform certificates kept in a directory (downloaded from WeChat Pay when it is empty)
    public_key_path: Path | None = None
    public_key_id: str | None = None
    platform_cert_dir: Path | None = None
    # an outbound HTTP(S) proxy for calls to WeChat Pay, e.g. http://egress.internal:3128
    proxy: str | None = None


class StripeSettings(msgspec.Struct, frozen=True, kw_only=True):
    secret_key: str
    webhook_secret: str
    publishable_key: str
    currency: str = "cny"
    # another API address (stripe-mock, a local fake); None is Stripe's own
    api_base: str | None = None


class PaymentSettings(msgspec.Struct, frozen=True, kw_only=True):
    provider: ProviderName
    wechatpay: WeChatPaySettings | None = None
    stripe: StripeSettings | None = None


class PaymentSettingsError(ValueError):
    """A payment setting is missing or malformed; the message names the variable."""


def _required(env: dict[str, str], name: str, provider: str) -> str:
    value = (env.get(name) or "").strip()
    if not value:
        raise PaymentSettingsError(f"{name} is required when LIVESELL_PAYMENTS={provider}")
    return value


def _readable_file(env: dict[str, str], name: str, provider: str) -> Path:
    path = Path(_required(env, name, provider))
    if not path.is_file():
        raise PaymentSettingsError(f"{name} names {str(path)!r}, which is not a readable file")
    return path


def read_payment_settings(
    env: dict[str, str], *, dev: bool, public_url: str | None
) -> PaymentSettings | None:
    """The payment provider and its credentials from `env`; None when there is none."""
    chosen = (env.get("LIVESELL_PAYMENTS") or "").strip().lower()
    if not chosen:
        return PaymentSettings(provider="simulated") if dev else None
    if chosen not in PROVIDERS:
        raise PaymentSettingsError(
            f"LIVESELL_PAYMENTS must be one of {', '.join(PROVIDERS)}, got {chosen!r}"
        )
    if chosen == "simulated":
        if not dev:
            raise PaymentSettingsError(
                "LIVESELL_PAYMENTS=simulated approves every payment and needs LIVESELL_DEV=1"
            )
        return PaymentSettings(provider="simulated")
    if chosen == "wechatpay":
        return PaymentSettings(provider="wechatpay", wechatpay=_wechatpay(env, public_url))
    return PaymentSettings(provider="stripe", stripe=_stripe(env))


def _wechatpay(env: dict[str, str], public_url: str | None) -> WeChatPaySettings:
    p = "wechatpay"
    apiv3_key = _required(env, "LIVESELL_WECHATPAY_APIV3_KEY", p)
    if len(apiv3_key.encode()) != 32:
        raise PaymentSettingsError(
            "LIVESELL_WECHATPAY_APIV3_KEY must be the 32-character APIv3 key of the merchant"
        )
    notify_url = (env.get("LIVESELL_WECHATPAY_NOTIFY_URL") or "").strip()
    if not notify_url:
        if not public_url:
            raise PaymentSettingsError(
                "LIVESELL_WECHATPAY_NOTIFY_URL is required when LIVESELL_PAYMENTS=wechatpay "
                "(or set LIVESELL_PUBLIC_URL and it is <LIVESELL_PUBLIC_URL>"
                f"{WECHATPAY_NOTIFY_PATH})"
            )
        notify_url = public_url.rstrip("/") + WECHATPAY_NOTIFY_PATH
    if not notify_url.startswith("https://"):
        raise PaymentSettingsError(
            f"LIVESELL_WECHATPAY_NOTIFY_URL must be an https:// address, got {notify_url!r}"
        )
    public_key_path: Path | None = None
    public_key_id: str | None = None
    if env.get("LIVESELL_WECHATPAY_PUBLIC_KEY"):
        public_key_path = _readable_file(env, "LIVESELL_WECHATPAY_PUBLIC_KEY", p)
        public_key_id = _required(env, "LIVESELL_WECHATPAY_PUBLIC_KEY_ID", p)
    cert_dir = env.get("LIVESELL_WECHATPAY_PLATFORM_CERT_DIR") or None
    return WeChatPaySettings(
        mchid=_required(env, "LIVESELL_WECHATPAY_MCHID", p),
        appid=_required(env, "LIVESELL_WECHATPAY_APPID", p),
        private_key_path=_readable_file(env, "LIVESELL_WECHATPAY_PRIVATE_KEY", p),
        cert_serial_no=_required(env, "LIVESELL_WECHATPAY_CERT_SERIAL_NO", p),
        apiv3_key=apiv3_key,
        notify_url=notify_url,
        public_key_path=public_key_path,
        public_key_id=public_key_id,
        platform_cert_dir=Path(cert_dir) if cert_dir else None,
        proxy=env.get("LIVESELL_WECHATPAY_PROXY") or None,
    )


def _stripe(env: dict[str, str]) -> StripeSettings:
    p = "stripe"
    secret_key = _required(env, "LIVESELL_STRIPE_SECRET_KEY", p)
    if not secret_key.startswith(("sk_", "rk_")):
        raise PaymentSettingsError(
            "LIVESELL_STRIPE_SECRET_KEY must be a secret (sk_…) or restricted (rk_…) key"
        )
    webhook_secret = _required(env, "LIVESELL_STRIPE_WEBHOOK_SECRET", p)
    if not webhook_secret.startswith("whsec_"):
        raise PaymentSettingsError(
            "LIVESELL_STRIPE_WEBHOOK_SECRET must be the endpoint's signing secret (whsec_…)"
        )
    publishable_key = _required(env, "LIVESELL_STRIPE_PUBLISHABLE_KEY", p)
    if not publishable_key.startswith("pk_"):
        raise PaymentSettingsError("LIVESELL_STRIPE_PUBLISHABLE_KEY must be a pk_… key")
    currency = (env.get("LIVESELL_STRIPE_CURRENCY") or "cny").strip().lower()
    if len(currency) != 3 or not currency.isalpha():
        raise PaymentSettingsError(
            f"LIVESELL_STRIPE_CURRENCY must be a three-letter ISO code, got {currency!r}"
        )
    return StripeSettings(
        secret_key=secret_key,
        webhook_secret=webhook_secret,
        publishable_key=publishable_key,
        currency=currency,
        api_base=env.get("LIVESELL_STRIPE_API_BASE") or None,
    )
