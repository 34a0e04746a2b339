"""LIVESELL_PAYMENTS and its credentials are checked when settings load, and a shop with no
provider says which variable to set."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.resources import Resources
from core.settings import SettingsError, load_settings
from tests.conftest import TEST_SECRET, Servers
from tests.storefront.conftest import Auth, Buy, StartDrop
from tests.storefront.provider_app import provider_client, provider_settings


def _load(tmp_path: Path, **env: str) -> object:
    environ = {"LIVESELL_SECRET": TEST_SECRET, "LIVESELL_DATA_DIR": str(tmp_path), **env}
    return load_settings(environ=environ, dotenv=None).payments


def test_the_provider_defaults_to_simulated_in_dev_mode_only(tmp_path: Path) -> None:
    dev = _load(tmp_path, LIVESELL_DEV="1")
    assert dev is not None and dev.provider == "simulated"  # type: ignore[attr-defined]
    assert _load(tmp_path, LIVESELL_DEV="0") is None
    with pytest.raises(SettingsError, match="LIVESELL_PAYMENTS=simulated .* LIVESELL_DEV=1"):
        _load(tmp_path, LIVESELL_DEV="0", LIVESELL_PAYMENTS="simulated")
    with pytest.raises(SettingsError, match="LIVESELL_PAYMENTS must be one of"):
        _load(tmp_path, LIVESELL_PAYMENTS="paypal")


STRIPE = {
    "LIVESELL_PAYMENTS": "stripe",
    "LIVESELL_STRIPE_SECRET_KEY": "sk_test_1",
    "LIVESELL_STRIPE_WEBHOOK_SECRET": "whsec_1",
    "LIVESELL_STRIPE_PUBLISHABLE_KEY": "pk_test_1",
}


@pytest.mark.parametrize("missing", sorted(k for k in STRIPE if k != "LIVESELL_PAYMENTS"))
def test_a_missing_stripe_credential_names_its_variable(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in STRIPE.items() if k != missing}
    with pytest.raises(SettingsError, match=f"{missing} is required when LIVESELL_PAYMENTS=stripe"):
        _load(tmp_path, **env)


def _wechatpay(tmp_path: Path) -> dict[str, str]:
    key = tmp_path / "apiclient_key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n")
    return {
        "LIVESELL_PAYMENTS": "wechatpay",
        "LIVESELL_WECHATPAY_MCHID": "1900000109",
        "LIVESELL_WECHATPAY_APPID": "wxd678efh567hg6787",
        "LIVESELL_WECHATPAY_PRIVATE_KEY": str(key),
        "LIVESELL_WECHATPAY_CERT_SERIAL_NO": "444F4864EA9B34415",
        "LIVESELL_WECHATPAY_APIV3_KEY": "a" * 32,
        "LIVESELL_WECHATPAY_NOTIFY_URL": "https://shop.example.com/api/payments/wechatpay/notify",
    }


@pytest.mark.parametrize(
    "missing",
    [
        "LIVESELL_WECHATPAY_MCHID",
        "LIVESELL_WECHATPAY_APPID",
        "LIVESELL_WECHATPAY_PRIVATE_KEY",
        "LIVESELL_WECHATPAY_CERT_SERIAL_NO",
        "LIVESELL_WECHATPAY_APIV3_KEY",
        "LIVESELL_WECHATPAY_NOTIFY_URL",
    ],
)
def test_a_missing_wechatpay_credential_names_its_variable(tmp_path: Path, missing: str) -> None:
    env = {k: v for k, v in _wechatpay(tmp_path).items() if k != missing}
    with pytest.raises(SettingsError, match=missing):
        _load(tmp_path, **env)


def test_wechatpay_credentials_are_checked_for_shape(tmp_path: Path) -> None:
    env = _wechatpay(tmp_path)
    with pytest.raises(SettingsError, match="LIVESELL_WECHATPAY_APIV3_KEY must be the 32"):
        _load(tmp_path, **{**env, "LIVESELL_WECHATPAY_APIV3_KEY": "short"})
    with pytest.raises(SettingsError, match="LIVESELL_WECHATPAY_PRIVATE_KEY names"):
        _load(tmp_path, **{**env, "LIVESELL_WECHATPAY_PRIVATE_KEY": str(tmp_path / "nope.pem")})
    with pytest.raises(SettingsError, match="LIVESELL_WECHATPAY_PUBLIC_KEY_ID"):
        key = tmp_path / "pub.pem"
        key.write_text("x")
        _load(tmp_path, **{**env, "LIVESELL_WECHATPAY_PUBLIC_KEY": str(key)})
    # the notify URL follows LIVESELL_PUBLIC_URL when it is not given
    derived = _load(
        tmp_path,
        **{k: v for k, v in env.items() if k != "LIVESELL_WECHATPAY_NOTIFY_URL"},
        LIVESELL_PUBLIC_URL="https://live.example.com/",
    )
    assert derived.wechatpay.notify_url == (  # type: ignore[attr-defined]
        "https://live.example.com/api/payments/wechatpay/notify"
    )


async def test_without_a_provider_pay_answers_503_naming_the_setting(
    servers: Servers,
    resources: Resources,
    auth: Auth,
    start_drop: StartDrop,
    buy: Buy,
) -> None:
    drop = await start_drop()
    order_id = (await buy(drop["id"], "bob")).json()["order_id"]
    settings = provider_settings(servers)  # LIVESELL_DEV=0 and no LIVESELL_PAYMENTS
    assert settings.payments is None
    async with provider_client(resources, settings) as paying:
        refused = await paying.http.post(f"/api/orders/{order_id}/pay", headers=auth("bob"))
    assert refused.status_code == 503
    error = refused.json()["error"]
    assert error["code"] == "payments_unavailable" and "LIVESELL_PAYMENTS" in error["message"]
