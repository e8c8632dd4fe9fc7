"""AUTH=proxy through a real nginx with deploy/nginx/blf-panel-auth-request.conf and a
tiny auth endpoint; the same headers sent straight to the panel from elsewhere: 403."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.auth.proxy import parse_grants, trusted
from app.settings import load_settings
from tests.auth.conftest import DEMO, SECRET
from tests.conftest import _free_port, require_binary
from tests.helpers import tile_ids_in

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "nginx"
TOKENS = {
    "anna-token": ("anna", "staff, Sales"),
    "boss-token": ("boss", "blf-admins"),
    "eve-token": ("eve", "guests"),
}
GRANTS = "# group:role:scope\nblf-admins:admin:*\nsales:viewer:ext=101,102\n"


async def _auth_endpoint(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The sign-in service: 200 with Remote-User/Remote-Groups for a known bearer, else 401."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    token = next(
        (
            line.split("Bearer ", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("authorization: bearer ")
        ),
        "",
    )
    if token in TOKENS:
        user, groups = TOKENS[token]
        answer = (
            f"HTTP/1.1 200 OK\r\nRemote-User: {user}\r\nRemote-Groups: {groups}\r\nContent-Length: 0\r\n\r\n"
        )
    else:
        answer = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n"
    writer.write(answer.encode())
    await writer.drain()
    writer.close()


@pytest.fixture
async def auth_service() -> AsyncIterator[int]:
    server = await asyncio.start_server(_auth_endpoint, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[callable]:
    binary = require_binary("nginx", "the proxy test runs the shipped auth_request example")
    started: list[subprocess.Popen[bytes]] = []

    def start(panel_port: int, auth_port: int) -> int:
        port = _free_port()
        http = (
            (DEPLOY / "blf-panel-http.conf")
            .read_text()
            .replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{panel_port};")
        )
        snippet = (DEPLOY / "blf-panel-auth-request.conf").read_text()
        assert snippet.count("http://127.0.0.1:9091/") == 1
        (tmp_path / "http.conf").write_text(http)
        (tmp_path / "snippet.conf").write_text(snippet.replace("127.0.0.1:9091", f"127.0.0.1:{auth_port}"))
        temp = [
            f"{name}_temp_path {tmp_path}/{name};"
            for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        ]
        (tmp_path / "nginx.conf").write_text(
            f"daemon off; worker_processes 1; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;\n"
            f"events {{}}\nhttp {{ access_log off; {' '.join(temp)}\n include {tmp_path}/http.conf;\n"
            f" server {{ listen 127.0.0.1:{port}; include {tmp_path}/snippet.conf; }} }}\n"
        )
        process = subprocess.Popen(
            [binary, "-c", f"{tmp_path}/nginx.conf", "-p", str(tmp_path)], stderr=subprocess.PIPE
        )
        started.append(process)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1, trust_env=False)
                return port
            except httpx.TransportError:
                time.sleep(0.02)  # nginx's start cannot be awaited: a bounded poll
        raise AssertionError("nginx did not start")

    yield start
    for process in started:
        process.terminate()
        process.wait(10)
        process.stderr.close()


async def test_through_nginx_the_proxy_user_sees_their_scope_and_others_get_403(
    panel, nginx, auth_service: int, tmp_path: Path, logs
) -> None:
    grants = tmp_path / "grants"
    grants.write_text(GRANTS)
    server = await panel(
        **DEMO, AUTH="proxy", TRUSTED_PROXIES="127.0.0.1", PROXY_SCOPES_FILE=str(grants), SECRET_KEY=SECRET
    )
    await server.healthy()
    port = await asyncio.to_thread(nginx, server.port, auth_service)
    base = f"http://127.0.0.1:{port}/blf"
    async with httpx.AsyncClient(trust_env=False) as client:
        anna = {"Authorization": "Bearer anna-token"}
        embed = await client.get(f"{base}/embed?ext=101,102,105", headers=anna)
        assert embed.status_code == 200
        assert "ext-105" not in embed.text and {"ext-101", "ext-102"} <= set(tile_ids_in(embed.text))
        # A Remote-User the browser sends itself is replaced by the service's.
        forged = await client.get(
            f"{base}/embed?ext=105", headers={**anna, "Remote-User": "boss", "Remote-Groups": "blf-admins"}
        )
        assert "ext-105" not in forged.text
        boss = await client.get(f"{base}/embed?ext=105", headers={"Authorization": "Bearer boss-token"})
        assert "ext-105" in boss.text
        assert (await client.get(f"{base}/embed?ext=101")).status_code == 401  # the service said no
        eve = await client.get(f"{base}/embed?ext=101", headers={"Authorization": "Bearer eve-token"})
        assert eve.status_code == 403  # signed in, but no group of hers is mapped
        assert (await client.get(f"{base}/healthz")).json() == {"status": "ok"}
    # Straight to the panel from an address that is not the proxy's: 403 and a log line.
    transport = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
    async with httpx.AsyncClient(transport=transport, trust_env=False) as direct:
        spoof = {"Remote-User": "boss", "Remote-Groups": "blf-admins", "X-Forwarded-For": "127.0.0.1"}
        for path in ("/api/snapshot", "/events?ext=105", "/embed?ext=105", "/"):
            response = await direct.get(f"{server.url}{path}", headers=spoof)
            assert response.status_code == 403, path
            assert "ext-105" not in response.text
    await logs.wait_for("user header from 127.0.0.3, which is not in TRUSTED_PROXIES", count=4)


def test_grants_and_trusted_addresses() -> None:
    grants, problems = parse_grants("cn=x:y,dc=z:viewer:ext=1\nbad:king:*\nnothing\n", "grants")
    assert [g.group for g in grants] == ["cn=x:y,dc=z"] and len(problems) == 2
    networks = load_settings(environ={"TRUSTED_PROXIES": "10.0.0.0/24, ::1"}, env_file=None).trusted_proxies
    assert trusted("10.0.0.9", networks) and trusted("::ffff:10.0.0.9", networks) and trusted("::1", networks)
    assert not trusted("10.0.1.9", networks) and not trusted("not an address", networks)


def test_the_proxy_names_the_users_own_extension_or_none(tmp_path: Path) -> None:
    from app.auth.proxy import ProxyUsers

    grants = tmp_path / "grants"
    grants.write_text(GRANTS)
    networks = load_settings(environ={"TRUSTED_PROXIES": "127.0.0.1"}, env_file=None).trusted_proxies
    proxy = ProxyUsers(str(grants), networks, "remote-user", "remote-groups", "remote-extension")

    def user(*extension: bytes):
        headers = [(b"remote-user", b"anna"), (b"remote-groups", b"sales")]
        return proxy.identify(headers + [(b"remote-extension", value) for value in extension], "127.0.0.1")

    assert user(b"101").extension == "101"
    assert user().extension is None, "no header: no actions"
    assert user(b"101; drop").extension is None and user(b"101", b"102").extension is None
    plain = ProxyUsers(str(grants), networks, "remote-user", "remote-groups")
    headers = [(b"remote-user", b"anna"), (b"remote-groups", b"sales"), (b"remote-extension", b"101")]
    assert plain.identify(headers, "127.0.0.1").extension is None, "the header counts only when configured"
