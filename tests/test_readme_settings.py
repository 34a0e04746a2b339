"""Every setting livesell reads from the environment is in the README's configuration table
(the payment providers' credentials by their prefix, each listed in docs/payments.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented() -> None:
    read = set()
    for source in ("core/settings.py", "core/payment_settings.py"):
        read |= set(re.findall(r'"(LIVESELL_[A-Z0-9_]+)"', (ROOT / source).read_text()))
    readme = (ROOT / "README.md").read_text()
    payments = (ROOT / "docs/payments.md").read_text()
    missing = []
    for name in sorted(read):
        if name.startswith(("LIVESELL_WECHATPAY_", "LIVESELL_STRIPE_")):
            if name not in payments:
                missing.append(f"{name} (docs/payments.md)")
        elif f"`{name}`" not in readme:
            missing.append(name)
    assert len(read) > 40
    assert missing == []
