"""Safe defaults: dev mode only on loopback (or asked for), long secrets, a token CLI that signs
with the server's secret, root handling that widens nothing above the data dir, and error
messages that never quote Python's internals."""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from core.auth import mint_token, verify_token
from core.embedded import PG_SYSTEM_USER, EmbeddedPostgres, EmbeddedServerError, free_port
from core.embedded_root import share_install, system_user
from core.resources import Resources
from core.settings import SECRET_MIN_BYTES, Settings, SettingsError, load_settings
from livesell.app import create_app
from livesell.runner import announce_dev_mode
from tests.conftest import TEST_SECRET, Servers

ROOT = Path(__file__).resolve().parent.parent
MINT_HINT = "livesell token --sub alice --roles host"


def _settings(data_dir: Path, **environ: str) -> Settings:
    return load_settings(
        environ={"LIVESELL_DATA_DIR": str(data_dir), "LIVESELL_SECRET": TEST_SECRET, **environ},
        dotenv=None,
    )


# --- dev mode follows the listening address ---


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"])
def test_dev_mode_is_on_by_default_on_loopback(tmp_path: Path, host: str) -> None:
    assert _settings(tmp_path, LIVESELL_HOST=host).dev


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.1", "example.com"])
def test_dev_mode_is_off_by_default_on_other_addresses(tmp_path: Path, host: str) -> None:
    settings = _settings(tmp_path, LIVESELL_HOST=host)
    assert settings.embedded_postgres and not settings.dev


def test_dev_mode_follows_a_host_given_on_the_command_line(tmp_path: Path) -> None:
    environ = {"LIVESELL_DATA_DIR": str(tmp_path), "LIVESELL_SECRET": TEST_SECRET}
    assert load_settings(environ=environ, dotenv=None).dev
    assert not load_settings(environ=environ, dotenv=None, host="0.0.0.0").dev


def test_dev_mode_when_asked_for_and_never_by_itself_with_a_database(tmp_path: Path) -> None:
    assert _settings(tmp_path, LIVESELL_HOST="0.0.0.0", LIVESELL_DEV="1").dev
    assert not _settings(tmp_path, LIVESELL_DEV="0").dev
    assert not _settings(tmp_path, DATABASE_URL="postgresql://db/livesell").dev


def _app_with(resources: Resources, settings: Settings, servers: Servers) -> httpx.AsyncClient:
    # the servers resolved as `embedded_servers` resolves them: settings loaded in embedded mode
    resolved = msgspec.structs.replace(
        settings, database_url=servers.pg.url, redis_url=servers.valkey.url
    )
    res = dataclasses.replace(resources, settings=resolved)
    transport = httpx.ASGITransport(app=create_app(resolved, res))
    return httpx.AsyncClient(transport=transport, base_url="http://livesell.test")


@pytest.mark.parametrize(
    ("environ", "minted"),
    [
        ({"LIVESELL_HOST": "127.0.0.1"}, True),
        ({"LIVESELL_HOST": "0.0.0.0"}, False),
        ({"LIVESELL_HOST": "192.168.1.20"}, False),
        ({"LIVESELL_HOST": "0.0.0.0", "LIVESELL_DEV": "1"}, True),
    ],
)
async def test_dev_routes_exist_only_on_loopback_or_when_asked_for(
    servers: Servers,
    resources: Resources,
    tmp_path: Path,
    environ: dict[str, str],
    minted: bool,
) -> None:
    settings = _settings(tmp_path, **environ)
    buyer = {"Authorization": f"Bearer {mint_token(TEST_SECRET, 'bob', ['viewer'])}"}
    async with _app_with(resources, settings, servers) as http:
        response = await http.post("/api/dev/token", json={"sub": "mallory", "roles": ["admin"]})
        paid = await http.post("/api/orders/999999/pay", headers=buyer)
    if minted:
        assert response.status_code == 200, response.text
        assert paid.status_code == 404, "the simulated provider is there; the order is not"
    else:
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert "livesell token" in response.json()["error"]["message"]
        assert paid.status_code == 503
        assert paid.json()["error"]["code"] == "payments_unavailable"


def test_start_up_warns_loudly_when_dev_mode_is_forced_on_a_public_address(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="livesell"):
        announce_dev_mode(_settings(tmp_path, LIVESELL_HOST="0.0.0.0", LIVESELL_DEV="1"))
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "0.0.0.0" in record.message and "/api/dev/token" in record.message

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="livesell"):
        announce_dev_mode(_settings(tmp_path, LIVESELL_HOST="127.0.0.1", LIVESELL_DEV="1"))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# --- the secret ---


@pytest.mark.parametrize("secret", ["s", "x" * (SECRET_MIN_BYTES - 1), "密" * 10])
def test_short_secrets_are_refused_naming_the_variable(tmp_path: Path, secret: str) -> None:
    # "密" is 3 bytes in UTF-8: ten of them are 30 bytes, short although 10 characters
    with pytest.raises(SettingsError, match="LIVESELL_SECRET") as refused:
        _settings(tmp_path, LIVESELL_SECRET=secret)
    assert str(SECRET_MIN_BYTES) in str(refused.value)


@pytest.mark.parametrize("secret", ["x" * SECRET_MIN_BYTES, "密" * 11])
def test_secrets_of_32_bytes_are_accepted(tmp_path: Path, secret: str) -> None:
    assert _settings(tmp_path, LIVESELL_SECRET=secret).secret == secret


def test_a_short_secret_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("too-short")
    with pytest.raises(SettingsError, match="LIVESELL_SECRET") as refused:
        load_settings(environ={"LIVESELL_DATA_DIR": str(tmp_path)}, dotenv=None)
    assert str(tmp_path / "secret") in str(refused.value)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LIVESELL_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env["PYTHONPATH"] = str(ROOT)  # the worktree's code, whatever the working directory
    env.update(extra)
    return env


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "livesell.cli", *args],
        cwd=cwd,
        env=_clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("command", [["token", "--sub", "alice"], ["serve", "--no-demo"]])
def test_the_cli_refuses_a_short_secret_without_a_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    done = _cli(*command, cwd=tmp_path, LIVESELL_SECRET="short-secret")
    assert done.returncode == 2
    assert "LIVESELL_SECRET" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not (tmp_path / ".livesell").exists(), "nothing started, nothing created"


# --- `livesell token` signs with the server's secret or not at all ---


@pytest.mark.parametrize("exists", [True, False])
def test_token_refuses_without_a_secret_and_creates_nothing(tmp_path: Path, exists: bool) -> None:
    data_dir = tmp_path / "data"
    if exists:
        data_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _cli("token", "--data-dir", str(data_dir), "--sub", "alice", cwd=elsewhere)
    assert done.returncode == 2 and done.stdout == ""
    assert str(data_dir / "secret") in done.stderr, "says where it looked"
    assert "--data-dir" in done.stderr and "LIVESELL_SECRET" in done.stderr, "says how to fix it"
    assert "Traceback" not in done.stderr
    assert (list(data_dir.iterdir()) == []) if exists else not data_dir.exists()
    assert list(elsewhere.iterdir()) == []

    # without --data-dir: the default ./.livesell of the working directory, not created either
    done = _cli("token", "--sub", "alice", cwd=elsewhere)
    assert done.returncode == 2 and str(elsewhere / ".livesell" / "secret") in done.stderr
    assert list(elsewhere.iterdir()) == []


def test_token_reads_the_data_dir_secret_and_the_variable_over_it(tmp_path: Path) -> None:
    served = load_settings(environ={"LIVESELL_DATA_DIR": str(tmp_path / "data")}, dotenv=None)
    done = _cli("token", "--data-dir", str(tmp_path / "data"), "--sub", "alice", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE((tmp_path / "data" / "secret").stat().st_mode) == 0o600
    assert verify_token(served.secret, done.stdout.strip()).user_id == "alice"
    done = _cli("token", "--sub", "bob", cwd=tmp_path, LIVESELL_SECRET=TEST_SECRET)
    assert verify_token(TEST_SECRET, done.stdout.strip()).user_id == "bob"


# --- `livesell serve` on every interface, as a real process ---


def _wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"livesell serve exited early:\n{_stop(process)}"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} not healthy within {timeout}s:\n{_stop(process)}")


def _stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output


def _serve(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "livesell.cli", "serve", "--no-demo", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.slow
def test_serve_on_all_interfaces_has_no_dev_mode_and_token_cli_works_from_elsewhere(
    embedded_dir: Path, tmp_path: Path
) -> None:
    api_port, hub_port = free_port(), free_port()
    ports = ["--api-port", str(api_port), "--hub-port", str(hub_port)]
    process = _serve(
        ["--host", "0.0.0.0", *ports], _clean_env(LIVESELL_DATA_DIR=str(embedded_dir)), tmp_path
    )
    base = f"http://127.0.0.1:{api_port}"
    try:
        _wait_healthy(f"{base}/healthz", process)
        minted = httpx.post(f"{base}/api/dev/token", json={"sub": "x", "roles": ["admin"]})
        assert minted.status_code == 404

        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        done = _cli(
            "token", "--data-dir", str(embedded_dir), "--sub", "alice", "--roles", "host",
            cwd=elsewhere,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        headers = {"Authorization": f"Bearer {done.stdout.strip()}"}
        accepted = httpx.get(f"{base}/api/orders/999999", headers=headers)
        assert accepted.status_code == 404, "authenticated: the order is what is missing"
        forged = httpx.get(f"{base}/api/orders/999999", headers={"Authorization": "Bearer x.y.z"})
        assert forged.status_code == 401
        assert list(elsewhere.iterdir()) == [], "no secret of its own invented"
    finally:
        output = _stop(process)
    assert process.returncode == 0, output
    assert MINT_HINT in output
    assert "DEV MODE" not in output


@pytest.mark.slow
def test_serve_with_dev_forced_on_all_interfaces_warns_at_start(
    servers: Servers, tmp_path: Path
) -> None:
    api_port, hub_port = free_port(), free_port()
    env = _clean_env(
        DATABASE_URL=servers.pg.url,
        REDIS_URL=servers.valkey.url,
        LIVESELL_DATA_DIR=str(tmp_path / "data"),
        LIVESELL_SECRET=TEST_SECRET,
        LIVESELL_DEV="1",
    )
    process = _serve(
        ["--host", "0.0.0.0", "--api-port", str(api_port), "--hub-port", str(hub_port)],
        env,
        tmp_path,
    )
    try:
        _wait_healthy(f"http://127.0.0.1:{api_port}/healthz", process)
        minted = httpx.post(f"http://127.0.0.1:{api_port}/api/dev/token", json={"sub": "x"})
        assert minted.status_code == 200
    finally:
        output = _stop(process)
    assert process.returncode == 0, output
    [warning] = [line for line in output.splitlines() if "DEV MODE" in line]
    assert "WARNING" in warning and "0.0.0.0" in warning and "LIVESELL_DEV=1" in warning


# --- errors people can read ---

GARBAGE_TOKENS = [
    "t7e3.t7e3.t7e3",  # segments that decode to bytes that are not UTF-8
    "eyJhbGciOiJIUzI1NiJ9.t7e3.t7e3",
    "a.b.c",
    "...",
    "x",
    "eyJhbGciOiJub25lIn0.e30.",  # alg none
    "W10.W10.W10",  # JSON arrays, not objects
    "%%%.%%%.%%%",
]


@pytest.mark.parametrize("token", GARBAGE_TOKENS)
async def test_garbage_tokens_get_a_plain_invalid_token(
    client: httpx.AsyncClient, token: str
) -> None:
    response = await client.get("/api/orders/1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"] == {
        "code": "unauthorized",
        "message": "invalid token",
        "reason": "invalid",
    }


async def test_binary_tokens_get_a_plain_message(client: httpx.AsyncClient) -> None:
    for raw in (b"\xb7\xb7\xb7.\xff\xfe.\x80", b"eyJ\xb7.e30.x", bytes(range(0x80, 0x100))):
        response = await client.get("/api/orders/1", headers={"Authorization": b"Bearer " + raw})
        assert response.status_code == 401
        message = response.json()["error"]["message"]
        assert message in ("invalid token", "Authorization header must be 'Bearer <token>'")


# --- root: PostgreSQL's system user, and nothing widened above the data dir ---

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="root handling applies to root only")


def _modes(paths: list[Path]) -> dict[Path, tuple[int, int, int]]:
    return {p: (p.stat().st_mode, p.stat().st_uid, p.stat().st_gid) for p in paths}


@pytest.fixture
def base() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="livesell-root-"))
    yield path
    EmbeddedPostgres(path / "data" / "pg").stop(mode="immediate")
    subprocess.run(["rm", "-rf", str(path)], check=False)


@as_root
def test_as_root_nothing_above_the_data_dir_changes(
    base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base.chmod(0o711)  # passable, not readable, by others
    data_dir = base / "data"
    data_dir.mkdir(mode=0o700)
    above = list(data_dir.parents)
    before = _modes(above)
    modes_when_said: list[int] = []

    class Witness(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if str(data_dir) in record.getMessage() and "permission" in record.getMessage():
                modes_when_said.append(stat.S_IMODE(data_dir.stat().st_mode))

    witness = Witness()
    logging.getLogger("livesell.embedded").addHandler(witness)
    try:
        with caplog.at_level(logging.INFO, logger="livesell.embedded"):
            pg = EmbeddedPostgres(data_dir / "pg", durable=False)
            pg.start()
            pg.stop()
    finally:
        logging.getLogger("livesell.embedded").removeHandler(witness)

    assert _modes(above) == before, "no directory above the data dir changed"
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o701, "search permission only, no read"
    assert modes_when_said == [0o700], "the change was logged before it was made"
    owner = (data_dir / "pg").stat()
    assert pwd.getpwuid(owner.st_uid).pw_name == PG_SYSTEM_USER


@as_root
def test_as_root_an_unreachable_data_dir_is_refused_not_widened(base: Path) -> None:
    base.chmod(0o700)
    data_dir = base / "data"
    data_dir.mkdir(mode=0o700)
    with pytest.raises(EmbeddedServerError) as refused:
        EmbeddedPostgres(data_dir / "pg", durable=False).start()
    message = str(refused.value)
    assert str(base) in message and f"chmod o+x {base}" in message
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700


@as_root
def test_as_root_the_system_user_is_announced_then_created_without_a_login(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = f"lstest{os.getpid() % 100_000}"
    existed_when_said: list[bool] = []

    class Witness(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if name in record.getMessage():
                existed_when_said.append(name in {p.pw_name for p in pwd.getpwall()})

    witness = Witness()
    logging.getLogger("livesell.embedded").addHandler(witness)
    try:
        with caplog.at_level(logging.INFO, logger="livesell.embedded"):
            user = system_user(name)
        assert existed_when_said == [False], "said before it was created"
        assert user.pw_shell == "/usr/sbin/nologin" and user.pw_uid < 1000
        assert not Path(user.pw_dir).exists(), "no home directory"
        assert system_user(name) == user and existed_when_said == [False], "created once"
    finally:
        logging.getLogger("livesell.embedded").removeHandler(witness)
        subprocess.run(["userdel", name], check=False, capture_output=True)


@as_root
def test_as_root_only_unreadable_install_files_are_opened_and_said_first(
    base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    user = system_user()
    install = base / "pginstall"
    (install / "bin").mkdir(parents=True, mode=0o755)
    (install / "lib").mkdir(mode=0o700)
    program, library = install / "bin" / "postgres", install / "lib" / "x.so"
    program.write_text("")
    program.chmod(0o700)
    library.write_text("")
    library.chmod(0o600)
    readable = install / "bin" / "initdb"
    readable.write_text("")
    readable.chmod(0o755)
    with caplog.at_level(logging.INFO, logger="livesell.embedded"):
        share_install(install, user)
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "3 files" in caplog.records[0].getMessage()
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in (program, library, readable)}
    assert modes == {program: 0o705, library: 0o604, readable: 0o755}
    assert stat.S_IMODE((install / "lib").stat().st_mode) == 0o705

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="livesell.embedded"):
        share_install(install, user)
    assert caplog.records == [], "nothing left to change, nothing said"
