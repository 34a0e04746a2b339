// A coupon's terms as words, and what it takes off an order: the same rule as the server's
// coupon_discount (migration 0041): nothing below the minimum spend; a fixed amount or a rate
// rounded down; never more than the order.

import { t } from "./i18n.js";
import { money, percentFromBps } from "./ui.js";

export function couponTerms(coupon) {
  const off = coupon.amount_off_cents
    ? t("coupon.amountOff", { amount: money(coupon.amount_off_cents) })
    : t("coupon.percentOff", { percent: percentFromBps(coupon.percent_off_bps) });
  const floor = coupon.min_spend_cents
    ? t("coupon.minSpend", { amount: money(coupon.min_spend_cents) })
    : t("coupon.noMin");
  return `${off} · ${floor}`;
}

export function discountCents(coupon, grossCents) {
  if (!coupon || grossCents < (coupon.min_spend_cents || 0)) return 0;
  const off = coupon.amount_off_cents
    ? coupon.amount_off_cents
    : Math.floor((grossCents * coupon.percent_off_bps) / 10000);
  return Math.min(grossCents, off);
}

// a claim applies to a drop of this room whose product it names (or any product)
export function claimFits(claim, roomId, productId) {
  return String(claim.room_id) === String(roomId) && (!claim.product_id || String(claim.product_id) === String(productId));
}
