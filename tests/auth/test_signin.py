"""AUTH=users over a real uvicorn: no route gives data without a session, sign-in and
sign-out, CSRF, the slow-down of password guessing, and no password in any log line."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import httpx

from app.auth.throttle import Throttle
from app.auth.users import format_line, hash_password
from tests.auth.conftest import PASSWORDS, csrf_of, sign_in
from tests.helpers import SseClient, watching_logs

ROUTES = ["/", "/?group=sales", "/embed?ext=101", "/events?ext=101", "/events", "/api/snapshot", "/nowhere"]


async def test_without_a_session_no_route_gives_data(panel, signed_in_settings) -> None:
    server = await panel(**signed_in_settings)
    await server.healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ROUTES:
            response = await client.get(path)
            if path.startswith("/?") or path == "/" or path == "/nowhere":
                assert response.status_code == 303, path
                assert response.headers["location"] == "/signin", path
            else:
                assert response.status_code == 401, path
            assert "ext-10" not in response.text and "extensions" not in response.text, path
        # A forged cookie is no session.
        forged = await client.get(
            "/api/snapshot", cookies={"blf_session": "eyJ1c2VyIjogImJvc3MifQ==.abc.def"}
        )
        assert forged.status_code == 401
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}  # nothing beyond status
        assert (await client.get("/static/panel.css")).status_code == 200  # the sign-in page's style


async def test_sign_in_sees_the_scope_and_sign_out_ends_the_session(panel, signed_in_settings) -> None:
    server = await panel(**signed_in_settings)
    await server.healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        signed = await sign_in(client, "anna", PASSWORDS["anna"])
        assert signed.status_code == 303 and signed.headers["location"] == "./"
        cookie = signed.headers["set-cookie"]
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        assert "secure" not in cookie.lower()  # plain http here; behind TLS it is set
        assert "Max-Age=43200" in cookie
        page = await client.get("/")
        assert page.status_code == 200 and 'action="signout"' in page.text
        assert server.app.state.auth is not None
        async with SseClient(
            f"{server.url}/events?ext=101", headers={"Cookie": f"blf_session={client.cookies['blf_session']}"}
        ) as stream:
            assert stream.response.status_code == 200  # the fast path knows the session too
            assert "content-security-policy" in stream.response.headers
        signout = await client.post("/signout", data={"csrf": csrf_of(page.text)})
        assert signout.status_code == 303 and signout.headers["location"] == "signin"
        assert (await client.get("/api/snapshot")).status_code == 401
        assert (await client.get("/events?ext=101")).status_code == 401


async def test_the_session_follows_the_users_file(panel, signed_in_settings, users_file: Path) -> None:
    """A changed password or a removed user ends that user's sessions (the file is re-read)."""
    server = await panel(**signed_in_settings)
    await server.healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        await sign_in(client, "carl", PASSWORDS["carl"])
        assert (await client.get("/api/snapshot")).status_code == 200
        text = (await asyncio.to_thread(users_file.read_text)).splitlines()
        text[2] = format_line("carl", hash_password("a brand new password"), "supervisor", "*", None)
        await asyncio.to_thread(users_file.write_text, "\n".join(text) + "\n")
        assert (await client.get("/api/snapshot")).status_code == 401


async def test_csrf_missing_or_wrong_is_403(panel, signed_in_settings) -> None:
    server = await panel(**signed_in_settings)
    async with httpx.AsyncClient(base_url=server.url) as client:
        await client.get("/signin")  # a session with a token exists
        for data in ({}, {"csrf": "wrong"}):
            response = await client.post(
                "/signin", data={**data, "name": "anna", "password": PASSWORDS["anna"]}
            )
            assert response.status_code == 403, data
            assert (
                "set-cookie" not in response.headers
                or "blf_session=null" not in response.headers["set-cookie"]
            )
        page = await sign_in(client, "anna", PASSWORDS["anna"])
        assert page.status_code == 303
        assert (await client.post("/signout", data={})).status_code == 403
        assert (await client.get("/api/snapshot")).status_code == 200  # still signed in
        cross = await client.post("/signout", data={}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403


async def test_guessing_is_slowed_and_tells_nothing_and_no_password_is_logged(
    panel, signed_in_settings
) -> None:
    server = await panel(**signed_in_settings)
    # The app's own throttle, on a clock that stands still: the 1 s wait cannot run out
    # between two requests of a slow machine.
    server.app.state.auth.throttle = Throttle(clock=lambda: 1000.0)
    with watching_logs(level=logging.DEBUG) as logs:
        async with httpx.AsyncClient(base_url=server.url) as client:
            unknown = await sign_in(client, "nobody-such", "guess-number-x")
            answers = [(await sign_in(client, "anna", f"guess-number-{n}")) for n in range(4)]
            assert [a.status_code for a in answers] == [401] * 4
            assert unknown.status_code == 401 and "Wrong name or password." in unknown.text
            assert "Wrong name or password." in answers[0].text  # the same words for both
            # The sixth attempt is refused unchecked: even the right password does not pass.
            refused = await sign_in(client, "anna", PASSWORDS["anna"])
            assert refused.status_code == 429
            assert refused.headers["retry-after"] == "1"
            assert (await client.get("/api/snapshot")).status_code == 401
            # From the same address, another name is slowed too (5 failures from it).
            other = await sign_in(client, "boss", PASSWORDS["boss"])
            assert other.status_code == 429
    assert logs.count("failed sign-in as 'anna' from 127.0.0.1") == 4
    assert logs.count("refused unchecked") == 2
    text = "\n".join(record.getMessage() + repr(record.args) for record in logs.records)
    for password in [*PASSWORDS.values(), "guess-number-"]:
        assert password not in text
