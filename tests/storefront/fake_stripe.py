"""A local Stripe API, for the adapter's tests: a real HTTP server on 127.0.0.1 that the SDK
reaches through its public `base_addresses` (LIVESELL_STRIPE_API_BASE). It keeps PaymentIntents
and refunds, honours Idempotency-Key as Stripe does (the same key answers the first response
again), and builds the events a buyer's payment or a refund produces, signed with the endpoint's
webhook secret in the Stripe-Signature header, for the test to deliver to livesell."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

SECRET_KEY = "sk_test_livesell_fake"
PUBLISHABLE_KEY = "pk_test_livesell_fake"


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes


def _nested(form: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's form encoding (`metadata[order_id]=7`) back into objects."""
    out: dict[str, Any] = {}
    for key, value in form:
        parts = key.replace("]", "").split("[")
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


@dataclass
class FakeStripe:
    webhook_secret: str = field(default_factory=lambda: "whsec_" + secrets.token_hex(16))
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    answered: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(
        self, path: str, auth: str, key: str | None, form: dict[str, Any]
    ) -> tuple[int, Any]:
        if auth != f"Bearer {SECRET_KEY}":
            return 401, {"error": {"type": "invalid_request_error", "message": "bad key"}}
        with self.lock:
            if key is not None and key in self.answered:
                return self.answered[key]
            if path == "/v1/payment_intents":
                status, answer = self._intent(form)
            elif path == "/v1/refunds":
                status, answer = self._refund(form)
            else:
                status, answer = 404, {"error": {"type": "invalid_request_error"}}
            if key is not None and status < 500:
                self.answered[key] = (status, answer)
            return status, answer

    def _intent(self, form: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        intent_id = "pi_" + secrets.token_hex(12)
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": int(form["amount"]),
            "amount_received": 0,
            "currency": form["currency"],
            "status": "requires_payment_method",
            "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}",
            "metadata": form.get("metadata", {}),
            "livemode": False,
        }
        self.intents[intent_id] = intent
        return 200, intent

    def _refund(self, form: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        intent = self.intents.get(form.get("payment_intent", ""))
        if intent is None or intent["status"] != "succeeded":
            return 400, {"error": {"type": "invalid_request_error", "code": "charge_not_paid"}}
        amount = int(form.get("amount", intent["amount"]))
        returned = sum(
            r["amount"] for r in self.refunds.values() if r["payment_intent"] == intent["id"]
        )
        if returned + amount > intent["amount"]:
            return 400, {"error": {"type": "invalid_request_error", "code": "amount_too_large"}}
        refund = {
            "id": "re_" + secrets.token_hex(12),
            "object": "refund",
            "amount": amount,
            "currency": intent["currency"],
            "payment_intent": intent["id"],
            "status": "pending",
            "metadata": form.get("metadata", {}),
        }
        self.refunds[refund["id"]] = refund
        return 200, refund

    def reset(self) -> None:
        with self.lock:
            self.intents.clear()
            self.refunds.clear()
            self.answered.clear()

    def refunded_cents(self) -> int:
        return sum(r["amount"] for r in self.refunds.values())

    # --- events ---

    def sign(self, body: bytes, at: int | None = None, secret: str | None = None) -> str:
        t = at or int(time.time())
        mac = hmac.new(
            (secret or self.webhook_secret).encode(), f"{t}.".encode() + body, hashlib.sha256
        ).hexdigest()
        return f"t={t},v1={mac}"

    def event(self, event_type: str, obj: dict[str, Any], **sign: Any) -> Delivery:
        body = json.dumps(
            {
                "id": "evt_" + secrets.token_hex(12),
                "object": "event",
                "api_version": "2024-06-20",
                "created": int(time.time()),
                "livemode": False,
                "pending_webhooks": 1,
                "type": event_type,
                "data": {"object": obj},
            }
        ).encode()
        headers = {"Content-Type": "application/json", "Stripe-Signature": self.sign(body, **sign)}
        return Delivery(headers, body)

    def confirm(self, intent_id: str, **sign: Any) -> Delivery:
        """The buyer's card went through (Stripe.js confirmed): payment_intent.succeeded."""
        intent = self.intents[intent_id]
        intent.update(status="succeeded", amount_received=intent["amount"])
        return self.event("payment_intent.succeeded", dict(intent), **sign)

    def decline(self, intent_id: str) -> Delivery:
        """A declined card: the PaymentIntent stays open for another attempt."""
        intent = self.intents[intent_id]
        return self.event(
            "payment_intent.payment_failed", {**intent, "status": "requires_payment_method"}
        )

    def cancel(self, intent_id: str) -> Delivery:
        intent = self.intents[intent_id]
        intent["status"] = "canceled"
        return self.event("payment_intent.canceled", dict(intent))

    def settle_refund(self, refund_id: str, status: str = "succeeded") -> Delivery:
        refund = self.refunds[refund_id]
        refund["status"] = status
        return self.event("refund.updated", dict(refund))


def _handler(fake: FakeStripe) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            status, answer = fake.answer(
                self.path,
                self.headers.get("Authorization", ""),
                self.headers.get("Idempotency-Key"),
                _nested(parse_qsl(raw)),
            )
            text = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(text)))
            self.send_header("Request-Id", "req_" + secrets.token_hex(8))
            self.end_headers()
            self.wfile.write(text)

    return Handler
