"""Viewer processes for a benchmark driven from another machine.

On one machine the viewers and the server under test share the cores, so a join storm's rate is
set by both; on a second machine the viewers leave the server's cores to it. Run this on the
viewers' machine, then point the driver at it (`--fleet` of `python -m load_tests`,
`load_tests.hubs` or `load_tests.join_costs`, with `--dial`, the driver machine's address):

    LIVESELL_BENCH_KEY=... python -m load_tests.viewer_agent --listen 0.0.0.0:7070
    LIVESELL_BENCH_KEY=... python -m load_tests.join_costs --fleet 10.0.0.2:7070 --dial 10.0.0.1

Every connection the driver opens (one per viewer process it wants) is authenticated with the
shared key and then served by a viewer process of its own (`load_tests.viewers`), which runs
the driver's commands until the driver closes it. The agent serves one run after another until
stopped (Ctrl-C). The commands are pickled Python objects, so whoever holds the key can run
code here: use a key of your own, on a benchmark network.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import pickle
import sys
from collections.abc import Callable
from multiprocessing.connection import Listener
from typing import Any

from load_tests.fleet import HELLO, KEY_ENV, MIN_KEY_BYTES, address, key_from_env
from load_tests.viewers import raise_open_files_limit, serve_commands

HELLO_TIMEOUT_S = 10.0


def serve(
    listen: tuple[str, int],
    authkey: bytes,
    cpus: list[int] | None,
    say: Callable[[str], None] = print,
    runs: int | None = None,
) -> None:
    """Accept driver connections on `listen` and start a viewer process for each; return after
    `runs` connections (None: never)."""
    context = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    with Listener(listen, authkey=authkey, backlog=64) as listener:
        say(f"viewer agent listening on {listen[0]}:{listen[1]}")
        accepted = 0
        while runs is None or accepted < runs:
            try:
                conn = listener.accept()
            except (OSError, EOFError, multiprocessing.AuthenticationError) as exc:
                say(f"refused a connection: {exc!r}")
                continue
            accepted += 1
            with conn:
                try:
                    if not conn.poll(HELLO_TIMEOUT_S):
                        say(f"a driver said nothing for {HELLO_TIMEOUT_S:.0f} s; closed")
                        continue
                    name, sample_every = conn.recv()
                except (EOFError, OSError, ValueError, TypeError, pickle.UnpicklingError) as exc:
                    say(f"a driver left before saying hello: {exc!r}")
                    continue
                if name != HELLO or not isinstance(sample_every, int) or sample_every < 1:
                    say(f"a driver sent {name!r} instead of {HELLO!r}; closed")
                    continue
                proc = context.Process(
                    target=serve_commands, args=(conn, sample_every, cpus), daemon=True
                )
                proc.start()
            procs = [p for p in procs if p.is_alive()]
            procs.append(proc)
            say(
                f"viewer process {proc.pid} started for {listener.last_accepted}"
                f" ({len(procs)} running)"
            )
    for proc in procs:
        proc.join()


def _cpus(text: str) -> list[int]:
    try:
        cpus = [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected core numbers such as 2,3, got {text!r}"
        ) from None
    if any(c < 0 for c in cpus):
        raise argparse.ArgumentTypeError(f"core numbers start at 0, got {text!r}")
    return cpus


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m load_tests.viewer_agent",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=f"The key is read from {KEY_ENV} (at least {MIN_KEY_BYTES} characters), the same "
        "on both machines.",
    )
    parser.add_argument(
        "--listen",
        type=address,
        metavar="HOST:PORT",
        default=("127.0.0.1", 7070),
        help="HOST:PORT the driver connects to (default: 127.0.0.1:7070; 0.0.0.0:7070 for every "
        "interface)",
    )
    parser.add_argument(
        "--cpus",
        type=_cpus,
        metavar="N,N,...",
        help="comma-separated cores to pin the viewer processes to (default: any)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        authkey = key_from_env()
    except ValueError as exc:
        parser.error(str(exc))
    raise_open_files_limit()
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.listen, authkey, args.cpus, lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
