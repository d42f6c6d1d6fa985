"""REDIS_URL as users write it: an ACL user (`redis://user:password@host`), TLS (`rediss://`,
the CA named in the query string), and both at once. The gateway serves through each (a cached
quote comes back from Redis), and the password never shows in its log, /ready or /metrics, not
even when Redis refuses it or goes away.

Each test owns its redis-server (never the shared one); the gateway is `python -m app.serve`, so
what is checked is its real log output, at DEBUG.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import PrivateRedis, free_port
from tests.emulator.control import EmulatorControl
from tests.emulator.process import EmulatorProcess
from tests.samples import QUOTE
from tests.served import ServedGateway, emulator_env

pytestmark = pytest.mark.integration

USER = "gateway"
NAMESPACE = "urls"


def password_marker() -> str:
    """A password no log line could contain by chance."""
    return f"pw-marker-{uuid.uuid4().hex}"


# Just what the gateway needs: its namespace's keys (`gw:...`, and the hash-tagged
# `{gw:...}` of the shared budget and breakers) and channels (`gw:landed`, `gw:breaker:...`).
KEY_PATTERNS = [f"{NAMESPACE}:*", f"{{{NAMESPACE}:*"]
CHANNEL_PATTERNS = [f"{NAMESPACE}:*"]


def acl_rule(password: str) -> list[str]:
    """The `gateway` user as an ACL SETUSER / `user` directive."""
    keys = [f"~{pattern}" for pattern in KEY_PATTERNS]
    channels = [f"&{pattern}" for pattern in CHANNEL_PATTERNS]
    return [USER, "on", f">{password}", *keys, *channels, "+@all"]


# --- servers -------------------------------------------------------------------------------------
@pytest.fixture
def acl_redis(private_redis: PrivateRedis) -> tuple[PrivateRedis, str]:
    """A private Redis whose only usable user is `gateway` (the default user is switched off)."""
    password = password_marker()
    admin = redis.Redis(port=private_redis.port)
    admin.acl_setuser(
        USER,
        enabled=True,
        passwords=[f"+{password}"],
        keys=KEY_PATTERNS,
        channels=CHANNEL_PATTERNS,
        commands=["+@all"],
    )
    admin.acl_setuser("default", enabled=False)
    admin.close()
    return private_redis, password


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is required for this test: apt-get install -y openssl")
    ca_key, ca, key, csr, cert = (
        directory / name for name in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    new_key = ["-newkey", "rsa:2048", "-nodes", "-keyout"]
    steps = [
        ["req", "-x509", *new_key, str(ca_key), "-out", str(ca), "-subj", "/CN=gateway-test-ca"],
        ["req", *new_key, str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-out", str(cert)],
    ]
    extra = [["-days", "1"], [], ["-days", "1", "-CAcreateserial", "-extfile", str(ext)]]
    for step, options in zip(steps, extra, strict=True):
        subprocess.run([openssl, *step, *options], check=True, capture_output=True)
    return ca, cert, key


class TlsRedis:
    """A redis-server answering only TLS, with the `gateway` ACL user; started on enter."""

    def __init__(self, directory: Path, password: str) -> None:
        self.port = free_port()
        self.ca, self._cert, self._key = make_certificates(directory)
        self._password = password
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, password: str) -> str:
        return f"rediss://{USER}:{password}@127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url(self._password), socket_timeout=2)

    def __enter__(self) -> TlsRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is required for this test: apt-get install -y redis-server")
        argv = [binary, "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(self.port)]
        argv += ["--tls-cert-file", str(self._cert), "--tls-key-file", str(self._key)]
        argv += ["--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no"]
        argv += ["--save", "", "--appendonly", "no"]
        # Each word its own argument: redis-server joins them into the `user` directive.
        argv += ["--user", *acl_rule(self._password), "--user", "default", "off"]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as client:
                    client.ping()
                return self
            except redis.RedisError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    output = self._stop()
                    pytest.fail(f"TLS redis-server did not start ({exc}):\n{output}")
            time.sleep(0.05)

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> str:
        process, self.process = self.process, None
        if process is None:
            return ""
        process.kill()
        output, _ = process.communicate(timeout=10)
        return output.decode(errors="replace")[-3000:]


# --- the checks ----------------------------------------------------------------------------------
def served_env(emulator: EmulatorProcess, url: str, **settings: str) -> dict[str, str]:
    env = emulator_env(
        emulator,
        REDIS_URL=url,
        CACHE_NAMESPACE=NAMESPACE,
        GATEWAY_ANONYMOUS_DATA="true",
        CLOCK_POLL_INTERVAL_S="0",
        ORDER_SWEEP_INTERVAL_S="0",
        LOG_LEVEL="DEBUG",  # the most a log can say: still no password
        CACHE_QUOTE_TTL_S="60",
        **settings,
    )
    env.pop("DATABASE_URL", None)
    return env


async def get(gateway: ServedGateway, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client:
        return await client.get(path)


async def assert_password_hidden(gateway: ServedGateway, password: str) -> None:
    for path in ("/ready", "/metrics", "/health"):
        assert password not in (await get(gateway, path)).text, path
    gateway.stop()  # its shutdown lines too
    log = gateway.log_path.read_text()
    assert log, "the gateway logged nothing: nothing was checked"
    assert password not in log


async def redis_state(gateway: ServedGateway) -> str:
    ready = (await get(gateway, "/ready")).json()
    state: str = ready["dependencies"]["cache"]["state"]
    return state


async def serves_through_redis(gateway: ServedGateway, stored: redis.Redis) -> None:
    """A quote answered, and its entry really in this Redis (so the URL's user and TLS work)."""
    answer = await get(gateway, "/v1/stocks/AAPL/quote")
    assert answer.status_code == 200, answer.text
    assert answer.json()["bid_price"] == QUOTE["bp"]
    assert stored.exists(f"{NAMESPACE}:v1:quote:iex:AAPL") == 1
    assert await redis_state(gateway) == "up"
    # Nothing refused on the way (a key or channel outside the ACL would say NoPermissionError).
    warnings = [line for line in gateway.log_lines() if "WARNING" in line or "ERROR" in line]
    assert warnings == []


async def test_an_acl_user_in_the_url_is_used_and_its_password_never_shown(
    emulator: EmulatorControl,
    emulator_process: EmulatorProcess,
    acl_redis: tuple[PrivateRedis, str],
    tmp_path: Path,
) -> None:
    server, password = acl_redis
    await emulator.set_quote("AAPL", QUOTE)
    url = f"redis://{USER}:{password}@127.0.0.1:{server.port}/0"
    stored = redis.Redis.from_url(url)
    with ServedGateway(served_env(emulator_process, url), tmp_path / "acl.log") as gateway:
        await serves_through_redis(gateway, stored)
        server.stop()  # an outage's warnings and errors are logged: still no password
        answer = await get(gateway, "/v1/stocks/MSFT/quote")
        assert answer.status_code in (200, 404), answer.text  # Alpaca answers, not Redis
        assert await redis_state(gateway) == "down"
        await assert_password_hidden(gateway, password)
    stored.close()


async def test_a_refused_password_is_an_outage_that_never_shows_the_password(
    emulator: EmulatorControl,
    emulator_process: EmulatorProcess,
    acl_redis: tuple[PrivateRedis, str],
    tmp_path: Path,
) -> None:
    server, _ = acl_redis
    await emulator.set_quote("AAPL", QUOTE)
    wrong = password_marker()
    url = f"redis://{USER}:{wrong}@127.0.0.1:{server.port}/0"
    with ServedGateway(served_env(emulator_process, url), tmp_path / "wrong.log") as gateway:
        answer = await get(gateway, "/v1/stocks/AAPL/quote")
        assert answer.status_code == 200, answer.text  # served from Alpaca, uncached
        assert await redis_state(gateway) == "down"
        await assert_password_hidden(gateway, wrong)
    assert "AuthenticationError" in gateway.log_path.read_text()  # says why, not with what


async def test_rediss_with_an_acl_user_serves_over_tls(
    emulator: EmulatorControl, emulator_process: EmulatorProcess, tmp_path: Path
) -> None:
    password = password_marker()
    await emulator.set_quote("AAPL", QUOTE)
    with TlsRedis(tmp_path, password) as server, server.client() as stored:
        # The first connection includes the TLS handshake, slower than 0.1 s on a busy machine.
        env = served_env(emulator_process, server.url(password), REDIS_TIMEOUT_S="1.0")
        with ServedGateway(env, tmp_path / "tls.log") as gateway:
            await serves_through_redis(gateway, stored)
            await assert_password_hidden(gateway, password)
