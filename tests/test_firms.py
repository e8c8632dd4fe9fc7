"""Firms in one install, through a real uvicorn and the real sign-in (AUTH=proxy from
127.0.0.1): a firm's user never receives another firm's extensions, names or numbers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.sim import Simulator

ACME, BETA = [str(n) for n in range(100, 105)], [str(n) for n in range(105, 110)]
NAMES = {**{e: f"Acme Person{e}" for e in ACME}, **{e: f"Zorro Betaman{e}" for e in BETA}}
OUTSIDE_B = ("+4930777666", "Quentin Outsider")  # calls firm B
OUTSIDE_A = "+4930555111"  # calls firm A, its name is its number
SECRET = "k" * 40


def user(name: str, group: str) -> dict[str, str]:
    return {"Remote-User": name, "Remote-Groups": group}


ANNA, NONUM, ADMIN = user("anna", "acme-staff"), user("otto", "acme-nonum"), user("root", "admins")


@pytest.fixture
async def firms(tmp_path: Path, panel) -> AsyncIterator[tuple[Simulator, str]]:
    directory = tmp_path / "directory.csv"
    rows = [f"{e},{NAMES[e]},Sales,{'acme' if e in ACME else 'beta'}" for e in ACME + BETA]
    directory.write_text("exten,name,group,tenant\n" + "\n".join(rows) + "\n")
    scopes = tmp_path / "scopes"
    scopes.write_text(
        "acme-staff:viewer:firm=acme\nacme-nonum:viewer:firm=acme; numbers=off\nadmins:admin:*\n"
    )
    async with Simulator(ACME + BETA, port=0, names=NAMES) as sim:
        server = await panel(
            AMI_HOST="127.0.0.1",
            AMI_PORT=str(sim.port),
            DIRECTORY_FILE=str(directory),
            AUTH="proxy",
            SECRET_KEY=SECRET,
            TRUSTED_PROXIES="127.0.0.1",
            PROXY_SCOPES_FILE=str(scopes),
            HEARTBEAT="1",
        )
        await server.until(
            lambda hub: hub.link.ok and any(e.get("tenant") == "beta" for e in hub.extensions.values())
        )
        yield sim, server.url


async def capture(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], sink: bytearray, done: str
) -> None:
    """Every raw byte of a stream until `done` shows in it."""
    async with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, url
        async for chunk in response.aiter_raw():
            sink.extend(chunk)
            if done.encode() in sink:
                return


async def test_a_firm_a_users_stream_bytes_hold_nothing_of_firm_b(firms: tuple[Simulator, str]) -> None:
    sim, url = firms
    urls = [
        "/events",
        "/events?ext=105,106,107,104",
        "/events?group=sales",
        "/events?q=o",  # matches names of both firms
        "/events?q=10&since=1",
    ]
    done = 'id="ext-104~acme" class="tile state-busy"'
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        sinks = [bytearray() for _ in urls]
        readers = [
            asyncio.create_task(
                capture(client, u, {**ANNA, "Last-Event-ID": "1"} if i == 0 else ANNA, sinks[i], done)
            )
            for i, u in enumerate(urls)
        ]
        resumed, everything = bytearray(), bytearray()
        readers.append(
            asyncio.create_task(
                capture(client, "/events", ADMIN, everything, 'id="ext-104~acme" class="tile state-busy"')
            )
        )
        try:
            for _ in range(3):  # many changes of firm B: states, calls from outside and inside
                for exten in BETA:
                    sim.set_device_state(f"Custom:{exten}", "INUSE")
                outside = sim.place_call(OUTSIDE_B[0], "105", caller_name=OUTSIDE_B[1])
                inside = sim.place_call("106", "107")
                outside.answer()
                inside.answer()
                for exten in BETA:
                    sim.set_device_state(f"Custom:{exten}", "NOT_INUSE")
                await asyncio.sleep(0.3)  # let the panel publish this round before the next
                outside.hang_up()
                inside.hang_up()
            # Firm A's own change marks the end: every stream has had all of B's by then.
            await asyncio.sleep(0.3)
            sim.set_device_state("Custom:104", "BUSY")
            async with asyncio.timeout(20):
                await asyncio.gather(*readers)
            async with asyncio.timeout(20):  # a reconnect from an old version: its catch-up
                await capture(
                    client, "/events?ext=100,105", {**ANNA, "Last-Event-ID": "2"}, resumed, 'id="link"'
                )
        finally:
            for reader in readers:
                reader.cancel()
        pages = [
            (await client.get(path, headers=ANNA)).content
            for path in ("/", "/embed?ext=105,106", "/?group=sales", "/?q=zorro", "/api/snapshot")
        ]
        admin = (await client.get("/api/snapshot", headers=ADMIN)).content
    for data in [*map(bytes, sinks), *pages[:1], pages[-1]]:
        assert b"~acme" in data or b"@ext-local" in data, data[:200]  # it did carry firm A
    for data in [*map(bytes, sinks), bytes(resumed), *pages]:
        for exten in BETA:
            assert f"ext-{exten}".encode() not in data and f"{exten}@ext-local".encode() not in data
            assert NAMES[exten].encode() not in data
        for secret in (b"Zorro", b"beta", b"Quentin", b"777666", OUTSIDE_B[0].encode()):
            assert secret not in data
    assert b"Zorro Betaman105" in admin and b"acme" in admin, "an admin sees every firm"
    assert b"Quentin Outsider" in everything and b"ext-107~beta" in everything, "B's changes did flow"


async def test_numbers_off_hides_an_outside_number_and_a_name_that_is_one(
    firms: tuple[Simulator, str],
) -> None:
    sim, url = firms
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        hidden, shown = bytearray(), bytearray()
        done = 'id="ext-101~acme" class="tile state-inuse"'
        readers = [
            asyncio.create_task(capture(client, "/events?ext=101", NONUM, hidden, done)),
            asyncio.create_task(capture(client, "/events?ext=101", ANNA, shown, done)),
        ]
        call = sim.place_call(OUTSIDE_A, "101", caller_name=OUTSIDE_A)
        call.answer()
        try:
            async with asyncio.timeout(20):
                await asyncio.gather(*readers)
        finally:
            for reader in readers:
                reader.cancel()
            with contextlib.suppress(Exception):
                call.hang_up()
    assert b"555111" in shown, "the other user of the same firm sees the number"
    assert b"555111" not in hidden and b"ext-101~acme" in hidden
