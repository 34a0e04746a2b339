// The public HTTP API, as the pages use it. Every failure becomes an ApiError carrying the
// server's `{"error": {"code", "message"}}`, so pages show friendly text, never a JSON blob.

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message || code);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  // worth retrying with the same idempotency key: the server may not have seen the request
  get retryable() {
    return this.status === 0 || this.status === 502 || this.status === 503 || this.status === 504;
  }
}

let token = null;

export function setToken(value) {
  token = value || null;
}

export async function request(method, path, { body, headers = {}, timeoutMs = 15000 } = {}) {
  const init = { method, headers: { Accept: "application/json", ...headers } };
  if (token) init.headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  init.signal = abort.signal;
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network", String(err && err.message ? err.message : err));
  } finally {
    clearTimeout(timer);
  }
  let payload = null;
  const text = await response.text().catch(() => "");
  if (text) {
    try {
      payload = JSON.parse(text);
    } catch {
      payload = null;
    }
  }
  if (!response.ok) {
    const error = payload && payload.error ? payload.error : {};
    const { code, message, ...details } = error;
    throw new ApiError(response.status, code || `http_${response.status}`, message || "", details);
  }
  return payload;
}

// "?limit=…&before=…" for a newest-first list; `before` is the previous page's `next_before`
function page(params = {}) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== false) query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `?${text}` : "";
}

export const api = {
  config: () => request("GET", "/api/config"),
  devToken: (sub, roles) => request("POST", "/api/dev/token", { body: { sub, roles } }),

  room: (roomId) => request("GET", `/api/rooms/${roomId}`),
  goLive: (roomId) => request("POST", `/api/rooms/${roomId}/live`),
  endRoom: (roomId) => request("POST", `/api/rooms/${roomId}/end`),
  pin: (roomId, productId) =>
    request("POST", `/api/rooms/${roomId}/pin`, { body: { product_id: String(productId) } }),
  unpin: (roomId) => request("DELETE", `/api/rooms/${roomId}/pin`),
  startDrop: (roomId, drop) => request("POST", `/api/rooms/${roomId}/drops`, { body: drop }),
  closeDrop: (dropId) => request("POST", `/api/drops/${dropId}/close`),
  leaderboard: (roomId) => request("GET", `/api/rooms/${roomId}/leaderboard`),
  // the room's paid orders added up, in all and per drop (the room's host only)
  sales: (roomId) => request("GET", `/api/rooms/${roomId}/sales`),

  // the caller's own products, newest first: {products, next_before}
  myProducts: ({ limit, before } = {}) =>
    request("GET", `/api/products${page({ mine: 1, limit, before })}`),
  product: (productId) => request("GET", `/api/products/${productId}`),
  createProduct: (product) => request("POST", "/api/products", { body: product }),

  // `couponClaimId`: a claim of the buyer's to discount this order (GET /api/me/coupons)
  buy: (dropId, quantity, idempotencyKey, couponClaimId = null) =>
    request("POST", `/api/drops/${dropId}/buy`, {
      body: couponClaimId ? { quantity, coupon_claim_id: String(couponClaimId) } : { quantity },
      headers: { "Idempotency-Key": idempotencyKey },
    }),
  order: (orderId) => request("GET", `/api/orders/${orderId}`),
  pay: (orderId, body) => request("POST", `/api/orders/${orderId}/pay`, { body }),

  // coupons: the host releases one in the room; viewers claim it (one tap, one key)
  createCoupon: (roomId, coupon) => request("POST", `/api/rooms/${roomId}/coupons`, { body: coupon }),
  claimCoupon: (couponId, idempotencyKey) =>
    request("POST", `/api/coupons/${couponId}/claim`, {
      headers: { "Idempotency-Key": idempotencyKey },
    }),
  // {claims: [{claim_id, coupon_id, room_id, product_id, title, amount_off_cents, percent_off_bps,
  // min_spend_cents, claimed_at, expires_at}]}: not applied to a live order, not expired
  myCoupons: () => request("GET", "/api/me/coupons"),
  // reserve a scheduled room (through the link the viewer came by, if any): {reservations, created}
  reserve: (roomId, linkCode) =>
    request("POST", `/api/rooms/${roomId}/reservations`, { body: linkCode ? { link_code: linkCode } : {} }),
  // the host's view: {count, reservers}
  reservations: (roomId) => request("GET", `/api/rooms/${roomId}/reservations`),

  enter: (roomId, linkCode) =>
    request("POST", `/api/rooms/${roomId}/enter`, { body: linkCode ? { link_code: linkCode } : {} }),
  becomeDistributor: (team) =>
    request("POST", "/api/distributors", { body: team ? { team } : {} }),
  me: () => request("GET", "/api/distributors/me"),
  createLink: (roomId) => request("POST", "/api/links", { body: { room_id: String(roomId) } }),
  // newest first: {links: [{code, url, room_id, product_id, created_at, clicks}], next_before}
  myLinks: ({ limit, before } = {}) =>
    request("GET", `/api/distributors/me/links${page({ limit, before })}`),
  // newest first: {payouts: [{batch_id, amount_cents, created_at, state}], next_before}
  payouts: ({ limit, before } = {}) =>
    request("GET", `/api/distributors/me/payouts${page({ limit, before })}`),
  // the distributor's referral code: {codes: [{code, distributor_id, created_at}]}; one is made
  // (from their id) the first time it is asked for
  myCodes: () => request("GET", "/api/distributors/me/codes"),
  createCode: () => request("POST", "/api/distributors/me/codes", { body: {} }),
  // {balance_cents, reserved_cents, available_cents, minimum_cents, fee_cents, fee_bps, withdrawals}
  myWithdrawals: () => request("GET", "/api/distributors/me/withdrawals"),
  requestWithdrawal: (amountCents) =>
    request("POST", "/api/distributors/me/withdrawals", { body: { amount_cents: amountCents } }),

  // operators (admin role)
  community: ({ team, from, to } = {}) =>
    request("GET", `/api/admin/community${page({ team, from, to })}`),
  funnel: (roomId) => request("GET", `/api/admin/rooms/${roomId}/funnel`),
  reviews: (status = "open") => request("GET", `/api/admin/reviews${page({ status })}`),
  decideReview: (orderId, decision, note) =>
    request("POST", `/api/admin/reviews/${orderId}`, { body: { decision, note: note || null } }),
  withdrawalQueue: (status = "requested") =>
    request("GET", `/api/admin/withdrawals${page({ status })}`),
  decideWithdrawal: (id, decision, note) =>
    request("POST", `/api/admin/withdrawals/${id}`, { body: { decision, note: note || null } }),
};
