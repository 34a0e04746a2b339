"""Configuration: the one place that reads the process environment.

Every variable has a default that serves the embedded single-machine mode. A `.env` file in the
working directory may set variables too; the real environment wins over it.

Dev mode (`POST /api/dev/token`, the simulated payment provider) lets anyone who reaches the API
mint any token, so by default it is on only in embedded mode on a loopback address; elsewhere it
takes an explicit `LIVESELL_DEV=1`.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from pathlib import Path
from typing import Literal

import msgspec

from core.payment_settings import PaymentSettings, PaymentSettingsError, read_payment_settings

AttributionRule = Literal["last", "first"]
SelfReferralPolicy = Literal["flag", "reject"]

# HS256 keys shorter than the hash's output weaken it; RFC 7518 section 3.2 asks for at least this
SECRET_MIN_BYTES = 32


class SettingsError(ValueError):
    """A configuration value is malformed; the message names the variable."""


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".livesell")
    host: str = "127.0.0.1"
    api_port: int = 8000
    hub_port: int = 8001
    public_url: str | None = None
    secret: str = ""
    dev: bool = False
    hold_s: int = 900
    return_window_s: int = 604_800
    attribution: AttributionRule = "last"
    attribution_window_s: int = 604_800
    log_level: str = "info"
    # PostgreSQL connections a server process keeps open (all of them opened at start)
    db_pool: int = 20
    # hub tuning
    hub_flush_ms: int = 20
    hub_ping_s: int = 25
    hub_max_frame_bytes: int = 65_536
    hub_outbox_bytes: int = 1_048_576
    hub_history_size: int = 1000
    hub_history_ttl_s: int = 86_400
    hub_origins: tuple[str, ...] = ()
    # rate limits per 10-second window (0 = off)
    buy_rate_per_user: int = 30
    buy_rate_per_ip: int = 3000
    # referral codes looked up per user / per address in 10 s (0: unlimited); codes are short
    # enough to guess, so every lookup counts, found or not
    referral_lookups_per_user: int = 10
    referral_lookups_per_ip: int = 300
    hub_connect_rate_per_ip: int = 1000
    # integrity and money operations (attribution.integrity, attribution.withdrawals)
    self_referral: SelfReferralPolicy = "flag"
    review: bool = True
    review_window_s: int = 3600
    review_device_clicks: int = 10
    review_address_clicks: int = 500
    review_conversion_factor: int = 5
    review_min_visitors: int = 20
    review_counts_s: int = 5
    withdrawal_min_cents: int = 1000
    withdrawal_fee_cents: int = 0
    withdrawal_fee_bps: int = 0
    # room chat: accepted messages a second a room delivers whole (past it: host/moderator
    # messages and a fair sample of the rest), and words refused in every room's chat
    chat_fanout_per_s: int = 30
    chat_blocked_words: tuple[str, ...] = ()
    # scale-out (docs/scaling.md): REDIS_URL read as a cluster seed, and asyncpg's prepared
    # statement cache per connection (0 = off, for PgBouncer in transaction mode)
    redis_cluster: bool = False
    pg_statement_cache: int = 100
    # --- payments (core/payment_settings.py): None = no provider (pay answers 503) ---
    payments: PaymentSettings | None = None

    @property
    def embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None

    @property
    def loopback_only(self) -> bool:
        """Whether every listener (the API and the hub share `host`) is on a loopback address."""
        return is_loopback(self.host)

    @property
    def api_base_url(self) -> str:
        return self.public_url or f"http://{_display_host(self.host)}:{self.api_port}"

    @property
    def hub_url(self) -> str:
        return f"ws://{_display_host(self.host)}:{self.hub_port}/connection/websocket"


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback IP (127.0.0.0/8, ::1); a name or an "any" address is not."""
    host = host.strip().removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines; `#` comments and blank lines are skipped, quotes stripped."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _int(env: dict[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _bool(env: dict[str, str], name: str) -> bool | None:
    """The variable as a bool, or None when it is unset or empty."""
    raw = env.get(name)
    if raw is None or raw == "":
        return None
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be 1 or 0, got {raw!r}")


def load_settings(
    environ: dict[str, str] | None = None,
    dotenv: Path | None = Path(".env"),
    *,
    create_secret: bool = True,
    **overrides: object,
) -> Settings:
    """Build settings from `.env`, then the environment, then explicit overrides (CLI flags).

    Without LIVESELL_SECRET the secret is the data dir's; `create_secret=False` refuses (a
    SettingsError saying where it looked) rather than generate one when the data dir has none."""
    env: dict[str, str] = {}
    if dotenv is not None:
        env.update(read_dotenv(dotenv))
    env.update(os.environ if environ is None else environ)

    database_url = env.get("DATABASE_URL") or None
    redis_url = env.get("REDIS_URL") or None
    data_dir = Path(env.get("LIVESELL_DATA_DIR") or ".livesell")
    attribution = env.get("LIVESELL_ATTRIBUTION") or "last"
    if attribution not in ("last", "first"):
        raise SettingsError(f"LIVESELL_ATTRIBUTION must be 'last' or 'first', got {attribution!r}")
    origins = tuple(
        o.strip() for o in (env.get("LIVESELL_HUB_ORIGINS") or "").split(",") if o.strip()
    )

    values: dict[str, object] = dict(
        database_url=database_url,
        redis_url=redis_url,
        data_dir=data_dir,
        host=env.get("LIVESELL_HOST") or "127.0.0.1",
        api_port=_int(env, "LIVESELL_API_PORT", 8000),
        hub_port=_int(env, "LIVESELL_HUB_PORT", 8001),
        public_url=(env.get("LIVESELL_PUBLIC_URL") or None),
        secret=env.get("LIVESELL_SECRET") or "",
        dev=_bool(env, "LIVESELL_DEV"),
        hold_s=_int(env, "LIVESELL_HOLD_S", 900, minimum=1),
        return_window_s=_int(env, "LIVESELL_RETURN_WINDOW_S", 604_800),
        attribution=attribution,
        attribution_window_s=_int(env, "LIVESELL_ATTRIBUTION_WINDOW_S", 604_800, minimum=1),
        log_level=(env.get("LIVESELL_LOG_LEVEL") or "info").lower(),
        db_pool=_int(env, "LIVESELL_DB_POOL", 20, minimum=2),
        hub_flush_ms=_int(env, "LIVESELL_HUB_FLUSH_MS", 20, minimum=1),
        hub_ping_s=_int(env, "LIVESELL_HUB_PING_S", 25, minimum=1),
        hub_max_frame_bytes=_int(env, "LIVESELL_HUB_MAX_FRAME_BYTES", 65_536, minimum=1024),
        hub_outbox_bytes=_int(env, "LIVESELL_HUB_OUTBOX_BYTES", 1_048_576, minimum=4096),
        hub_history_size=_int(env, "LIVESELL_HUB_HISTORY_SIZE", 1000, minimum=1),
        hub_history_ttl_s=_int(env, "LIVESELL_HUB_HISTORY_TTL_S", 86_400, minimum=1),
        hub_origins=origins,
        buy_rate_per_user=_int(env, "LIVESELL_BUY_RATE_PER_USER", 30),
        buy_rate_per_ip=_int(env, "LIVESELL_BUY_RATE_PER_IP", 3000),
        referral_lookups_per_user=_int(env, "LIVESELL_REFERRAL_LOOKUPS_PER_USER", 10),
        referral_lookups_per_ip=_int(env, "LIVESELL_REFERRAL_LOOKUPS_PER_IP", 300),
        hub_connect_rate_per_ip=_int(env, "LIVESELL_HUB_CONNECT_RATE_PER_IP", 1000),
        chat_fanout_per_s=_int(env, "LIVESELL_CHAT_FANOUT_PER_S", 30, minimum=1),
        chat_blocked_words=tuple(
            word.strip()
            for word in (env.get("LIVESELL_CHAT_BLOCKED_WORDS") or "").split(",")
            if word.strip()
        ),
    )
    values.update(_integrity(env))
    values.update(_scale_out(env))
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values["dev"] is None:
        values["dev"] = values["database_url"] is None and is_loopback(str(values["host"]))
    secret = str(values["secret"])
    if secret:
        _check_secret(secret, "LIVESELL_SECRET")
    else:
        data_dir = Path(str(values["data_dir"]))
        values["secret"] = ensure_secret(data_dir) if create_secret else _stored_secret(data_dir)
    # payments: read once dev mode is settled (its default decides the simulated provider)
    if "payments" not in overrides:
        try:
            values["payments"] = read_payment_settings(
                env, dev=bool(values["dev"]), public_url=_optional_str(values["public_url"])
            )
        except PaymentSettingsError as exc:
            raise SettingsError(str(exc)) from None
    return Settings(**values)  # type: ignore[arg-type]


def _optional_str(value: object) -> str | None:
    return None if value is None else str(value)


def _check_secret(secret: str, source: str) -> None:
    size = len(secret.encode("utf-8"))
    if size < SECRET_MIN_BYTES:
        raise SettingsError(
            f"{source} is {size} bytes; a secret needs at least {SECRET_MIN_BYTES} "
            "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


def _read_secret(path: Path) -> str | None:
    """The secret stored at `path` (checked), or None when there is none."""
    if not path.is_file():
        return None
    existing = path.read_text(encoding="utf-8").strip()
    if not existing:
        return None
    _check_secret(existing, f"the secret in {path} (used when LIVESELL_SECRET is unset)")
    return existing


def _stored_secret(data_dir: Path) -> str:
    """The data dir's secret; without one, a SettingsError saying where it looked."""
    path = data_dir / "secret"
    existing = _read_secret(path)
    if existing is None:
        raise SettingsError(
            f"no secret: LIVESELL_SECRET is unset and {path.absolute()} does not exist. "
            "Point at the server's data dir (--data-dir or LIVESELL_DATA_DIR; `livesell serve` "
            "creates the secret there on first start), or set LIVESELL_SECRET to the server's "
            "secret."
        )
    return existing


def _integrity(env: dict[str, str]) -> dict[str, object]:
    """Self-referral policy, review thresholds and withdrawal terms (LIVESELL_SELF_REFERRAL,
    LIVESELL_REVIEW*, LIVESELL_WITHDRAWAL_*)."""
    policy = env.get("LIVESELL_SELF_REFERRAL") or "flag"
    if policy not in ("flag", "reject"):
        raise SettingsError(f"LIVESELL_SELF_REFERRAL must be 'flag' or 'reject', got {policy!r}")
    return dict(
        self_referral=policy,
        review=_bool(env, "LIVESELL_REVIEW") is not False,
        review_window_s=_int(env, "LIVESELL_REVIEW_WINDOW_S", 3600, minimum=1),
        review_device_clicks=_int(env, "LIVESELL_REVIEW_DEVICE_CLICKS", 10, minimum=2),
        review_address_clicks=_int(env, "LIVESELL_REVIEW_ADDRESS_CLICKS", 500, minimum=2),
        review_conversion_factor=_int(env, "LIVESELL_REVIEW_CONVERSION_FACTOR", 5, minimum=1),
        review_min_visitors=_int(env, "LIVESELL_REVIEW_MIN_VISITORS", 20, minimum=1),
        review_counts_s=_int(env, "LIVESELL_REVIEW_COUNTS_S", 5),
        withdrawal_min_cents=_int(env, "LIVESELL_WITHDRAWAL_MIN_CENTS", 1000, minimum=1),
        withdrawal_fee_cents=_int(env, "LIVESELL_WITHDRAWAL_FEE_CENTS", 0),
        withdrawal_fee_bps=_int(env, "LIVESELL_WITHDRAWAL_FEE_BPS", 0),
    )


def _scale_out(env: dict[str, str]) -> dict[str, object]:
    """LIVESELL_REDIS_CLUSTER (REDIS_URL is a cluster seed; a `redis+cluster://` URL says so
    itself) and LIVESELL_PG_STATEMENT_CACHE (prepared statements kept per PostgreSQL
    connection; 0 behind a transaction-mode pooler, where a connection is not the session)."""
    return dict(
        redis_cluster=_bool(env, "LIVESELL_REDIS_CLUSTER") is True,
        pg_statement_cache=_int(env, "LIVESELL_PG_STATEMENT_CACHE", 100),
    )


def ensure_secret(data_dir: Path) -> str:
    """The JWT and link-signing secret, generated once into the data dir and reused after."""
    path = data_dir / "secret"
    existing = _read_secret(path)
    if existing is not None:
        return existing
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    # O_EXCL: when two processes race to create it, the loser reads the winner's secret
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value)
    return value
