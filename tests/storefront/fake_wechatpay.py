"""A local WeChat Pay API v3, for the adapter's tests: a real HTTPS server on 127.0.0.1 that
speaks the provider's protocol with keys and certificates generated here.

The wechatpayv3 SDK always calls https://api.mch.weixin.qq.com (its gateway is not a public
setting), so the fake is reached through the SDK's public `proxy` parameter: it answers the
CONNECT, then serves TLS for api.mch.weixin.qq.com with a certificate of a test authority that
the tests hand to `requests` through its documented REQUESTS_CA_BUNDLE variable.

It checks every request's merchant signature (Authorization: WECHATPAY2-SHA256-RSA2048 ...),
signs every answer with its platform key, serves its platform certificates encrypted with the
APIv3 key, and builds the signed, AES-256-GCM-encrypted notifications a buyer's payment or a
refund produces, for the test to deliver to livesell.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.x509.oid import NameOID

GATEWAY_HOST = "api.mch.weixin.qq.com"
MCHID = "1900000109"
APPID = "wxd678efh567hg6787"
MERCHANT_SERIAL = "444F4864EA9B34415A0000000000000000000001"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(
    key: rsa.RSAPrivateKey,
    name: str,
    *,
    issuer: tuple[x509.Name, rsa.RSAPrivateKey] | None = None,
    days: tuple[int, int] = (-1, 365),
    dns: str | None = None,
    ca: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days[0]))
        .not_valid_after(now + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if dns:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _serial(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "X")


def _sign(key: rsa.RSAPrivateKey, message: str) -> str:
    signature = key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(signature).decode()


@dataclass
class Notification:
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeWeChatPay:
    root: Path
    apiv3_key: str = field(default_factory=lambda: secrets.token_hex(16))
    merchant_key: rsa.RSAPrivateKey = field(default_factory=_key)
    platform_key: rsa.RSAPrivateKey = field(default_factory=_key)
    expired_key: rsa.RSAPrivateKey = field(default_factory=_key)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.platform_cert = _certificate(self.platform_key, "Tenpay.com platform")
        # a platform certificate that has run out: notifications signed with it never verify
        self.expired_cert = _certificate(self.expired_key, "Tenpay.com old", days=(-400, -1))
        ca_key = _key()
        ca = _certificate(ca_key, "livesell test CA", days=(-1, 30), ca=True)
        tls_key = _key()
        tls_cert = _certificate(
            tls_key, GATEWAY_HOST, issuer=(ca.subject, ca_key), dns=GATEWAY_HOST
        )
        self.ca_bundle = self.root / "ca.pem"
        self.ca_bundle.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (self.root / "tls.pem").write_bytes(
            tls_cert.public_bytes(serialization.Encoding.PEM) + _pem_key(tls_key)
        )
        self.merchant_key_path = self.root / "apiclient_key.pem"
        self.merchant_key_path.write_bytes(_pem_key(self.merchant_key))
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(self.root / "tls.pem")
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the protocol's pieces ---

    def encrypt(self, plaintext: dict[str, Any], associated_data: str) -> dict[str, str]:
        nonce = secrets.token_hex(6)  # 12 characters, as WeChat Pay's nonces
        sealed = AESGCM(self.apiv3_key.encode()).encrypt(
            nonce.encode(), json.dumps(plaintext).encode(), associated_data.encode()
        )
        return {
            "algorithm": "AEAD_AES_256_GCM",
            "ciphertext": base64.b64encode(sealed).decode(),
            "nonce": nonce,
            "associated_data": associated_data,
        }

    def signed_headers(self, body: str, *, expired: bool = False, at: int | None = None) -> dict:
        key, cert = (
            (self.expired_key, self.expired_cert)
            if expired
            else (
                self.platform_key,
                self.platform_cert,
            )
        )
        timestamp, nonce = str(at or int(time.time())), secrets.token_hex(16)
        return {
            "Wechatpay-Timestamp": timestamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": _sign(key, f"{timestamp}\n{nonce}\n{body}\n"),
            "Wechatpay-Serial": _serial(cert),
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        }

    def _notification(
        self, event_type: str, original_type: str, resource: dict[str, Any], **sign: Any
    ) -> Notification:
        body = json.dumps(
            {
                "id": "EV-" + secrets.token_hex(10),
                "create_time": dt.datetime.now(dt.UTC).isoformat(),
                "resource_type": "encrypt-resource",
                "event_type": event_type,
                "summary": "支付成功" if event_type.startswith("TRANSACTION") else "退款成功",
                "resource": {
                    "original_type": original_type,
                    **self.encrypt(resource, original_type),
                },
            }
        )
        return Notification(
            headers={"Content-Type": "application/json", **self.signed_headers(body, **sign)},
            body=body.encode(),
        )

    def pay(self, out_trade_no: str, **sign: Any) -> Notification:
        """The buyer paid: the TRANSACTION.SUCCESS notification WeChat Pay sends."""
        order = self.orders[out_trade_no]
        order["paid"] = True
        return self._notification(
            "TRANSACTION.SUCCESS",
            "transaction",
            {
                "appid": order["appid"],
                "mchid": order["mchid"],
                "out_trade_no": out_trade_no,
                "transaction_id": order["transaction_id"],
                "trade_type": order["trade_type"],
                "trade_state": "SUCCESS",
                "trade_state_desc": "支付成功",
                "bank_type": "OTHERS",
                "attach": order.get("attach", ""),
                "success_time": dt.datetime.now(dt.UTC).isoformat(),
                "payer": {"openid": order.get("payer", {}).get("openid", "oH5-buyer")},
                "amount": {
                    "total": order["amount"]["total"],
                    "payer_total": order["amount"]["total"],
                    "currency": "CNY",
                    "payer_currency": "CNY",
                },
            },
            **sign,
        )

    def refund_settled(
        self, out_refund_no: str, status: str = "SUCCESS", **sign: Any
    ) -> Notification:
        """A refund finished: REFUND.SUCCESS (or REFUND.ABNORMAL / REFUND.CLOSED)."""
        refund = self.refunds[out_refund_no]
        return self._notification(
            f"REFUND.{status}",
            "refund",
            {
                "mchid": MCHID,
                "out_trade_no": refund["out_trade_no"],
                "transaction_id": refund["transaction_id"],
                "out_refund_no": out_refund_no,
                "refund_id": refund["refund_id"],
                "refund_status": status,
                "user_received_account": "支付用户零钱",
                "amount": {
                    "total": refund["amount"]["total"],
                    "refund": refund["amount"]["refund"],
                    "payer_total": refund["amount"]["total"],
                    "payer_refund": refund["amount"]["refund"],
                },
            },
            **sign,
        )

    # --- the API ---

    def answer(self, method: str, path: str, auth: str, body: str) -> tuple[int, dict[str, Any]]:
        if not self._merchant_signed(method, path, auth, body):
            return 401, {"code": "SIGN_ERROR", "message": "签名错误"}
        self.requests.append((method, path))
        data = json.loads(body) if body else {}
        with self.lock:
            if method == "GET" and path == "/v3/certificates":
                return 200, {
                    "data": [self._cert_entry(c) for c in (self.expired_cert, self.platform_cert)]
                }
            if method == "POST" and path in (
                "/v3/pay/transactions/jsapi",
                "/v3/pay/transactions/h5",
            ):
                return self._place(path.rsplit("/", 1)[1], data)
            if method == "POST" and path == "/v3/refund/domestic/refunds":
                return self._refund(data)
        return 404, {"code": "NOT_FOUND", "message": path}

    def _merchant_signed(self, method: str, path: str, auth: str, body: str) -> bool:
        scheme, _, rest = auth.partition(" ")
        fields = dict(item.split("=", 1) for item in rest.split(",") if "=" in item)
        fields = {k.strip(): v.strip().strip('"') for k, v in fields.items()}
        if scheme != "WECHATPAY2-SHA256-RSA2048" or fields.get("mchid") != MCHID:
            return False
        if fields.get("serial_no") != MERCHANT_SERIAL:
            return False
        message = f"{method}\n{path}\n{fields['timestamp']}\n{fields['nonce_str']}\n{body}\n"
        try:
            self.merchant_key.public_key().verify(
                base64.b64decode(fields["signature"]),
                message.encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except Exception:  # noqa: BLE001 - any failure is a bad signature
            return False
        return True

    def _cert_entry(self, cert: x509.Certificate) -> dict[str, Any]:
        pem = cert.public_bytes(serialization.Encoding.PEM)
        nonce = secrets.token_hex(6)
        sealed = AESGCM(self.apiv3_key.encode()).encrypt(nonce.encode(), pem, b"certificate")
        return {
            "serial_no": _serial(cert),
            "effective_time": cert.not_valid_before_utc.isoformat(),
            "expire_time": cert.not_valid_after_utc.isoformat(),
            "encrypt_certificate": {
                "algorithm": "AEAD_AES_256_GCM",
                "nonce": nonce,
                "associated_data": "certificate",
                "ciphertext": base64.b64encode(sealed).decode(),
            },
        }

    def _place(self, trade_type: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        required = ("appid", "mchid", "description", "out_trade_no", "notify_url", "amount")
        missing = [name for name in required if not data.get(name)]
        if trade_type == "jsapi" and not data.get("payer", {}).get("openid"):
            missing.append("payer.openid")
        if trade_type == "h5" and not data.get("scene_info", {}).get("payer_client_ip"):
            missing.append("scene_info.payer_client_ip")
        if missing or data["mchid"] != MCHID or data["appid"] != APPID:
            return 400, {"code": "PARAM_ERROR", "message": f"missing or wrong: {missing}"}
        known = self.orders.get(data["out_trade_no"])
        if known is not None:
            # the same out_trade_no again: the same order when nothing changed, else refused
            if known["request"] != data:
                return 400, {"code": "INVALID_REQUEST", "message": "201 商户订单号重复"}
            return 200, known["answer"]
        prepay_id = "wx" + secrets.token_hex(14)
        answer = (
            {"prepay_id": prepay_id}
            if trade_type == "jsapi"
            else {
                "h5_url": f"https://wx.tenpay.com/cgi-bin/mmpayweb-bin/checkmweb?prepay_id={prepay_id}&package=1"
            }
        )
        self.orders[data["out_trade_no"]] = {
            **data,
            "request": data,
            "answer": answer,
            "trade_type": trade_type.upper() if trade_type == "jsapi" else "MWEB",
            "transaction_id": "42000" + secrets.token_hex(10),
            "refunded": 0,
        }
        return 200, answer

    def _refund(self, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        order = self.orders.get(data.get("out_trade_no", ""))
        if order is None or not order.get("paid"):
            return 404, {"code": "RESOURCE_NOT_EXISTS", "message": "订单不存在"}
        known = self.refunds.get(data["out_refund_no"])
        if known is not None:
            return 200, known["answer"]  # out_refund_no is unique: the money goes back once
        amount = data["amount"]
        if amount["total"] != order["amount"]["total"]:
            return 400, {"code": "PARAM_ERROR", "message": "订单金额不一致"}
        if order["refunded"] + amount["refund"] > amount["total"]:
            return 403, {"code": "NOT_ENOUGH", "message": "退款金额超过可退金额"}
        order["refunded"] += amount["refund"]
        answer = {
            "refund_id": "50000" + secrets.token_hex(10),
            "out_refund_no": data["out_refund_no"],
            "transaction_id": order["transaction_id"],
            "out_trade_no": data["out_trade_no"],
            "status": "PROCESSING",
            "amount": {**amount, "payer_total": amount["total"], "payer_refund": amount["refund"]},
        }
        self.refunds[data["out_refund_no"]] = {
            **data,
            "answer": answer,
            "refund_id": answer["refund_id"],
            "transaction_id": order["transaction_id"],
        }
        return 200, answer

    def reset(self) -> None:
        with self.lock:
            self.orders.clear()
            self.refunds.clear()
            self.requests.clear()

    def refunded_cents(self) -> int:
        return sum(order["refunded"] for order in self.orders.values())


def _handler(fake: FakeWeChatPay) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_CONNECT(self) -> None:
            if self.path != f"{GATEWAY_HOST}:443":
                self.send_error(403)
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            self.connection = fake.tls.wrap_socket(self.connection, server_side=True)
            self.rfile = self.connection.makefile("rb")
            self.wfile = self.connection.makefile("wb")
            self.close_connection = False  # the tunnel's requests follow on this connection

        def finish(self) -> None:
            super().finish()
            if self.connection is not self.request:  # the tunnel's TLS socket took over its fd
                self.connection.close()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            status, answer = fake.answer(
                self.command, self.path, self.headers.get("Authorization", ""), body
            )
            text = json.dumps(answer)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(text.encode())))
            if 200 <= status < 300:
                for name, value in fake.signed_headers(text).items():
                    self.send_header(name, value)
            self.end_headers()
            self.wfile.write(text.encode())

        do_GET = _serve
        do_POST = _serve

    return Handler
