"""The door of `serve` and the app: AUTH=none only on loopback unless said, header caps
beyond loopback, ALLOWED_HOSTS, the script policy, /healthz saying only its status."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from tests.auth.conftest import DEMO, SECRET

SERVE = {**DEMO, "MEMCACHED_URL": "", "WORKERS": "1", "LOG_LEVEL": "WARNING", "ALLOWED_HOSTS": ""}


def _wait_healthy(port: int, process) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.proc.poll() is None, process.proc.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)  # another process's start cannot be awaited: a bounded poll
    raise AssertionError("serve did not answer")


def test_an_open_panel_beyond_loopback_must_be_said(blf, free_port) -> None:
    refused = blf("serve", "--host", "0.0.0.0", env={**SERVE, "AUTH": "", "PORT": str(free_port())})
    assert refused.proc.wait(30) == 2
    message = refused.proc.stderr.read()
    assert "AUTH=users" in message and "AUTH=none" in message and message.count("\n") == 1


def test_the_demo_on_loopback_opens_at_once_without_a_word(blf, free_port) -> None:
    port = free_port()
    process = blf("serve", env={**SERVE, "AUTH": "", "PORT": str(port)})
    _wait_healthy(port, process)
    assert process.terminate() == 0
    assert "AUTH" not in process.proc.stderr.read()


def _flood(port: int, limit: int) -> tuple[int, bytes]:
    """A request whose one header grows in 64 KB pieces until the server answers or
    `limit` bytes are sent; (bytes sent, the first bytes of the answer)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setblocking(False)
        sent = 0
        head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
        chunk = b"a" * 65536
        data = head
        deadline = time.monotonic() + 30
        while sent < limit and time.monotonic() < deadline:
            try:
                answer = sock.recv(4096)
                return sent, answer
            except BlockingIOError:
                pass
            except ConnectionResetError:
                return sent, b""
            try:
                sent += sock.send(data)
                data = chunk
            except BlockingIOError:
                time.sleep(0.001)  # the server reads at its own pace
            except (BrokenPipeError, ConnectionResetError):
                return sent, b""
        return sent, b""


def test_beyond_loopback_a_huge_header_is_cut_and_health_stays_quick(blf, free_port) -> None:
    port = free_port()
    process = blf("serve", "--host", "0.0.0.0", env={**SERVE, "AUTH": "none", "PORT": str(port)})
    _wait_healthy(port, process)
    sent, answer = _flood(port, 300 * 1024 * 1024)
    assert sent < 4 * 1024 * 1024, f"{sent} bytes of one header were read"
    assert answer.startswith(b"HTTP/1.1 400") or answer == b""  # h11's answer to an oversized head
    started = time.monotonic()
    assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5, trust_env=False).status_code == 200
    assert time.monotonic() - started < 1.0
    assert process.terminate() == 0
    assert "AUTH=none on 0.0.0.0: anyone who can reach this address" in process.proc.stderr.read()


def test_on_loopback_the_header_is_not_capped_so_nginx_goes_in_front(blf, free_port) -> None:
    """What the cap beyond loopback prevents: httptools reads 8 MB of one header."""
    port = free_port()
    process = blf("serve", env={**SERVE, "AUTH": "", "PORT": str(port)})
    _wait_healthy(port, process)
    sent, answer = _flood(port, 8 * 1024 * 1024)
    assert sent >= 8 * 1024 * 1024 and answer == b""


@pytest.mark.parametrize("auth", ["none", "users"])
async def test_only_allowed_hosts_are_answered(panel, signed_in_settings, auth: str) -> None:
    settings = signed_in_settings if auth == "users" else DEMO
    server = await panel(**settings, ALLOWED_HOSTS="panel.example.com")
    await server.healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ("/", "/events?ext=101", "/healthz", "/signin"):
            rebound = await client.get(path, headers={"Host": f"attacker.example:{server.port}"})
            assert rebound.status_code == 400, path
            assert "content-security-policy" in rebound.headers
        for host in ("localhost", "127.0.0.1", "panel.example.com"):
            answer = await client.get("/healthz", headers={"Host": f"{host}:{server.port}"})
            assert answer.status_code == 200, host


async def test_health_says_only_its_status_behind_a_door(panel, signed_in_settings) -> None:
    open_panel = await panel(**DEMO)
    closed = await panel(**signed_in_settings)
    await asyncio.gather(open_panel.healthy(), closed.healthy())
    async with httpx.AsyncClient() as client:
        assert "pbx_connected" in (await client.get(f"{open_panel.url}/healthz")).json()
        assert (await client.get(f"{closed.url}/healthz")).json() == {"status": "ok"}


async def test_the_stream_and_its_refusals_carry_the_script_policy(panel, signed_in_settings) -> None:
    server = await panel(**signed_in_settings)
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ("/events?ext=101", "/signin", "/"):
            headers = (await client.get(path)).headers
            assert headers.get_list("content-security-policy") == [
                "frame-ancestors 'self'; script-src 'self'; object-src 'none'; base-uri 'none'"
            ], path


def test_secret_key_is_required_and_long_enough(blf, free_port) -> None:
    for secret, words in (("", "SECRET_KEY: required with AUTH=users"), ("short", "SECRET_KEY: is 5 bytes")):
        env = {
            **SERVE,
            "AUTH": "users",
            "USERS_FILE": "/nonexistent",
            "SECRET_KEY": secret,
            "PORT": str(free_port()),
        }
        process = blf("serve", env=env)
        assert process.proc.wait(30) == 2
        assert words in process.proc.stderr.read()
    assert len(SECRET) >= 32
