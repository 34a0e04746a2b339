"""Which distributor an order credits: decided once, when the order is created.

The decision is the SQL function `attribution_credit_order` (migration 0008): the buyer's link
entry into the room within the window before the order, the newest under the `last` rule, the
oldest under `first`; only entries made by the identified buyer bind (anonymous clicks count as
visits). Storefront's statement that places an order runs it inside, with the terms
`credit_terms` gives, so that an order and its attribution are one round trip.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from core.settings import Settings


@dataclass(frozen=True, slots=True)
class CreditTerms:
    """What `attribution_credit_order` needs besides the order: the rule and the window."""

    rule: str
    window: timedelta


def credit_terms(settings: Settings) -> CreditTerms:
    return CreditTerms(settings.attribution, timedelta(seconds=settings.attribution_window_s))
