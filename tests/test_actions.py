"""Acting from the panel over HTTP: a real simulator, a real uvicorn, signed in (AUTH=users)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.action_session import ActionSession, PbxUnreachable
from app.actions import AMI_ACTIONS, LOOKUP, WRITE_CLASSES
from app.auth.users import format_line, hash_password
from app.sim import Simulator
from app.sim.client import AmiClient
from app.sim.users import ACTIONS as SIM_ACTIONS
from app.sim.users import ManagerUser, perm_mask
from tests.auth.conftest import csrf_of, sign_in
from tests.helpers import watching_logs

SECRET = "s" * 40
ACT_SECRET = "act-secret"
PASSWORD = "a-long-enough-password"
EXTENSIONS = ["100", "101", "102", "103", "104"]
README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.fixture(scope="module")
def users_text() -> str:
    hashed = hash_password(PASSWORD)
    return "\n".join(
        [
            format_line("op", hashed, "viewer", "ext=100,101,102,104", "100"),
            format_line("eve", hashed, "viewer", "ext=100,101,102,103", "103"),
            format_line("noext", hashed, "admin", "all", None),
            format_line("sup", hashed, "supervisor", "all", "103"),
        ]
    )


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    action_user = ManagerUser("blf-actions", ACT_SECRET, read="none", write=WRITE_CLASSES)
    async with Simulator(EXTENSIONS, port=0, users=[action_user]) as simulator:
        yield simulator


@pytest.fixture
def settings(tmp_path: Path, users_text: str, sim: Simulator) -> dict[str, str]:
    users = tmp_path / "users"
    users.write_text(users_text + "\n")
    return {
        "AMI_HOST": "127.0.0.1",
        "AMI_PORT": str(sim.port),
        "AUTH": "users",
        "USERS_FILE": str(users),
        "SECRET_KEY": SECRET,
        "ACTIONS": "on",
        "AMI_ACTION_SECRET": ACT_SECRET,
        "ACTION_IDLE_TIMEOUT": "0.5",
    }


async def signed_in(client: httpx.AsyncClient, name: str) -> str:
    """Sign in as `name`; the session's CSRF token (from the page's sign-out form)."""
    assert (await sign_in(client, name, PASSWORD)).status_code == 303
    return csrf_of((await client.get("/")).text)


def call_state(server, exten: str) -> tuple[str, list[str]]:
    ext = next(e for e in server.app.state.hub.extensions.values() if e["exten"] == exten)
    return ext["state"], [c["state"] for c in ext["calls"]]


async def on_a_call(server, sim: Simulator, caller: str, callee: str):
    """An answered call, once the hub shows the callee on it; the simulator's call."""
    call = sim.place_call(caller, callee)
    call.answer()
    await server.until(lambda hub: call_state(server, callee)[0] == "inuse")
    return call


async def test_an_operator_transfers_the_caller_to_a_free_colleague(panel, settings, sim) -> None:
    server = await (await panel(**settings)).healthy()
    await on_a_call(server, sim, "+4930123456", "100")
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        with watching_logs("blf-panel.audit") as audit:
            answer = await client.post("/actions/transfer", data={"csrf": csrf, "target": "101"})
        assert answer.status_code == 200, answer.text
        assert "transferred to 101" in answer.text
        assert "user='op'" in audit.records[0].getMessage() and "result=ok" in audit.records[0].getMessage()
    # the colleague rings, then talks to the caller; the operator is free
    await server.until(lambda hub: call_state(server, "101")[0] == "ringing")
    await server.until(
        lambda hub: call_state(server, "101")[0] == "inuse" and call_state(server, "100")[0] == "idle"
    )
    assert call_state(server, "100")[1] == []
    (moved,) = sim.calls
    assert moved.caller.number == "+4930123456" and moved.callee.exten == "101"


async def test_a_call_rings_the_colleague(panel, settings, sim) -> None:
    server = await (await panel(**settings)).healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        answer = await client.post("/actions/call", data={"csrf": csrf, "target": "102"})
    assert answer.status_code == 200, answer.text
    await server.until(
        lambda hub: (
            call_state(server, "102")[0] in ("ringing", "inuse") and call_state(server, "100")[0] != "idle"
        )
    )


async def test_a_transfer_of_a_call_that_is_not_mine_is_refused(panel, settings, sim) -> None:
    server = await (await panel(**settings)).healthy()
    theirs = await on_a_call(server, sim, "101", "102")
    other = theirs.a.name  # 101's channel: the form may name it, the panel must not use it
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        with watching_logs("blf-panel.audit") as audit:
            answer = await client.post(
                "/actions/transfer", data={"csrf": csrf, "target": "104", "channel": other}
            )
        assert answer.status_code == 409
        assert answer.text == '<p class="action-result action-refused">You have no call to transfer.</p>'
        assert "result=refused" in audit.records[0].getMessage()
        assert theirs.state == "up" and sim.calls == [theirs]
        # on a call of my own, the form's channel is still ignored: my call moves, theirs stays
        await on_a_call(server, sim, "+4930123456", "100")
        forged = {"csrf": csrf, "target": "104", "channel": other}
        answer = await client.post("/actions/transfer", data=forged)
    assert answer.status_code == 200, answer.text
    assert theirs.state == "up" and theirs.a.name == other
    (moved,) = [call for call in sim.calls if call is not theirs]
    assert moved.caller.number == "+4930123456" and moved.callee.exten == "104"


async def test_a_user_without_the_right_gets_403_and_an_audit_line(panel, settings) -> None:
    server = await panel(**settings, ACTION_ROLES="supervisor=all;admin=all")
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        with watching_logs("blf-panel.audit") as audit:
            answer = await client.post("/actions/transfer", data={"csrf": csrf, "target": "101"})
    assert answer.status_code == 403
    assert "may not transfer" in answer.text
    assert (
        "user='op'" in audit.records[0].getMessage() and "result=forbidden" in audit.records[0].getMessage()
    )
    assert 'blf_actions_total{action="transfer",result="forbidden"} 1.0' in _metrics(server)


async def test_no_extension_no_scope_no_csrf_no_action(panel, settings) -> None:
    server = await (await panel(**settings)).healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "noext")
        answer = await client.post("/actions/call", data={"csrf": csrf, "target": "101"})
        assert answer.status_code == 403 and "no extension of your own" in answer.text
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        answer = await client.post("/actions/call", data={"csrf": csrf, "target": "103"})
        assert answer.status_code == 403 and "not on your panel" in answer.text  # out of scope
        answer = await client.post("/actions/call", data={"target": "101"})
        assert answer.status_code == 403 and "form has expired" in answer.text  # no CSRF
        answer = await client.post("/actions/call", data={"csrf": csrf + "x", "target": "101"})
        assert answer.status_code == 403
        assert (await client.post("/actions/shutdown", data={"csrf": csrf})).status_code == 404


async def test_the_rate_limit(panel, settings) -> None:
    server = await panel(**settings, ACTION_RATE="2")
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        for _ in range(2):  # the count's window is the minute: tried again if one began meanwhile
            minute = int(time.time()) // 60
            statuses = []
            for _ in range(3):  # a bad target: counted, refused after the count, no PBX needed
                answer = await client.post("/actions/call", data={"csrf": csrf, "target": "!"})
                statuses.append(answer.status_code)
            if int(time.time()) // 60 == minute:
                break
            await asyncio.sleep(61 - time.time() % 60)  # noqa: ASYNC110 - past the next boundary
    assert statuses == [400, 400, 429]
    assert "wait" in answer.text and "s." in answer.text


async def test_actions_off_is_a_404(panel, settings) -> None:
    server = await panel(**{**settings, "ACTIONS": "off"})
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        assert (await client.post("/actions/call", data={"csrf": csrf, "target": "101"})).status_code == 404


async def test_the_action_session_opens_on_first_use_and_closes_when_idle(panel, settings, sim) -> None:
    server = await (await panel(**settings)).healthy()
    counter = await AmiClient.login(sim.port)
    try:
        assert await counter.sessions() == 2  # the collector and this counter
        async with httpx.AsyncClient(base_url=server.url) as client:
            csrf = await signed_in(client, "op")
            with watching_logs("app.action_session") as log:
                answer = await client.post("/actions/presence", data={"csrf": csrf, "state": "dnd"})
                assert answer.status_code == 200, answer.text
                assert await counter.sessions() == 3
                answer = await client.post("/actions/presence", data={"csrf": csrf, "state": "available"})
                assert answer.status_code == 200
                assert server.app.state.actions.session.opened == 1  # one session for both
                await log.wait_for("closed (idle)")
        assert await counter.sessions() == 2
    finally:
        await counter.close()


def test_the_readme_names_the_write_classes_asterisk_checks() -> None:
    """WRITE_CLASSES allows exactly the AMI actions sent, by Asterisk's own table (sim.users)."""
    mask = perm_mask(WRITE_CLASSES)
    for name, _ in [*AMI_ACTIONS.values(), LOOKUP]:
        assert SIM_ACTIONS[name.lower()][2] & mask, name
    assert f"write = {WRITE_CLASSES}" in README.read_text()


def _metrics(server) -> str:
    from prometheus_client import generate_latest

    return generate_latest(server.app.state.metrics.registry).decode()


async def test_pause_myself_in_my_queues_with_a_reason(panel, settings, sim) -> None:
    sim.queues.add_queue("support", [("PJSIP/100", "Op", "Custom:100"), ("PJSIP/101", "Ann", "Custom:101")])
    server = await (await panel(**settings)).healthy()
    await server.until(lambda hub: "support" in hub.queues)
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        answer = await client.post("/actions/pause", data={"csrf": csrf, "reason": "lunch", "target": "101"})
    assert answer.status_code == 200, answer.text

    def paused(hub) -> dict[str, tuple[bool, str]]:
        return {m["interface"]: (m["paused"], m["reason"]) for m in hub.queues["support"]["members"]}

    await server.until(lambda hub: paused(hub)["PJSIP/100"] == (True, "lunch"))
    assert paused(server.app.state.hub)["PJSIP/101"] == (False, "")  # the target field is ignored


async def test_set_my_presence(panel, settings, sim) -> None:
    server = await (await panel(**settings)).healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        answer = await client.post(
            "/actions/presence", data={"csrf": csrf, "state": "dnd", "message": "a, b"}
        )
        assert answer.status_code == 200, answer.text
        bad = await client.post("/actions/presence", data={"csrf": csrf, "state": "asleep"})
        assert bad.status_code == 400
    assert sim.presence("CustomPresence:100").state == "dnd"


async def test_pick_up_a_ringing_colleague(panel, settings, sim) -> None:
    server = await (await panel(**settings)).healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        early = await client.post("/actions/pickup", data={"csrf": csrf, "target": "101"})
        assert early.status_code == 409 and "not ringing" in early.text
        sim.place_call("+4930123456", "101")
        await server.until(lambda hub: call_state(server, "101")[0] == "ringing")
        answer = await client.post("/actions/pickup", data={"csrf": csrf, "target": "101"})
    assert answer.status_code == 200, answer.text
    await server.until(
        lambda hub: call_state(server, "100")[0] == "inuse" and call_state(server, "101")[0] == "idle"
    )


async def test_listen_in_is_for_supervisors(panel, settings, sim) -> None:
    server = await (await panel(**settings)).healthy()
    await on_a_call(server, sim, "101", "102")
    await server.until(lambda hub: bool(call_state(server, "101")[1]))  # the caller's side too
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        refused = await client.post("/actions/listen", data={"csrf": csrf, "target": "101"})
        assert refused.status_code == 403 and "may not listen" in refused.text
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "sup")
        answer = await client.post("/actions/listen", data={"csrf": csrf, "target": "101"})
        assert answer.status_code == 200 and "listening in" in answer.text
        await server.until(lambda hub: call_state(server, "103")[0] == "inuse")  # rang, answered
        assert call_state(server, "101")[0] == "inuse" and sim.busy("103")
        idle = await client.post("/actions/listen", data={"csrf": csrf, "target": "100"})
        assert idle.status_code == 409 and "not on a call" in idle.text


async def test_an_attended_transfer_is_asked_of_my_own_channel(panel, settings, sim) -> None:
    server = await (await panel(**settings)).healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        none = await client.post("/actions/attended", data={"csrf": csrf, "target": "101"})
        assert none.status_code == 409 and "no call to transfer" in none.text
        await on_a_call(server, sim, "+4930123456", "100")
        answer = await client.post("/actions/attended", data={"csrf": csrf, "target": "101"})
    assert answer.status_code == 200, answer.text
    # the caller waits on hold while 101 is consulted; the operator hangs up (attended.CONSULT_FOR)
    await server.until(
        lambda hub: call_state(server, "100")[0] == "idle" and call_state(server, "101")[0] == "inuse"
    )
    (moved,) = sim.calls
    assert moved.caller.number == "+4930123456" and moved.callee.exten == "101"


async def test_in_the_demo_a_call_rings_the_colleague_on_the_demo_pbx(panel, tmp_path, users_text) -> None:
    """AMI_HOST empty: the panel's own simulator, on a port it takes at start; ACTIONS=on acts
    on it as a manager user of its own (write = WRITE_CLASSES, a secret made up for it)."""
    users = tmp_path / "users"
    users.write_text(users_text + "\n")
    demo = {"DEMO_CHURN": "0", "DEMO_EXTENSIONS": "100-104"}  # a still demo: 102 is free
    server = await panel(AUTH="users", USERS_FILE=str(users), SECRET_KEY=SECRET, ACTIONS="on", **demo)
    await server.healthy()
    session = server.app.state.actions.session
    assert (session.host, session.opened) == ("127.0.0.1", 0)  # the demo PBX's port, not yet used
    async with httpx.AsyncClient(base_url=server.url) as client:
        csrf = await signed_in(client, "op")
        answer = await client.post("/actions/call", data={"csrf": csrf, "target": "102"})
    assert answer.status_code == 200, answer.text
    assert "Your phone rings" in answer.text

    def talking(hub) -> bool:
        ext = next(e for e in hub.extensions.values() if e["exten"] == "102")
        return ext["state"] == "inuse" and [(c["direction"], c["party_number"]) for c in ext["calls"]] == [
            ("in", "100")
        ]

    await server.until(talking)  # my phone rang and answered, then the colleague's
    counter = await AmiClient.login(session.port)  # the collector's user, on the demo PBX
    try:
        users = [line.split()[0] for line in (await counter.command("manager show connected"))[1:-1]]
    finally:
        await counter.close()
    assert sorted(users) == ["blf", "blf", "blf-actions"]  # the collector, this counter, the actions


async def test_without_the_demo_pbx_in_this_process_actions_say_so() -> None:
    session = ActionSession("", 5038, "blf-actions", "", 1.0)
    with pytest.raises(PbxUnreachable, match="demo PBX does not run in this process"):
        await session.run("Ping")


async def test_the_pause_form_is_for_queue_members_only(panel, settings, sim) -> None:
    sim.queues.add_queue("support", [("PJSIP/100", "Op", "Custom:100")])
    server = await (await panel(**settings)).healthy()
    await server.until(lambda hub: "support" in hub.queues)
    async with httpx.AsyncClient(base_url=server.url) as client:
        await signed_in(client, "op")  # 100: in the support queue
        assert 'class="me-pause"' in (await client.get("/")).text
    async with httpx.AsyncClient(base_url=server.url) as client:
        await signed_in(client, "eve")  # 103: in no queue
        page = (await client.get("/")).text
    assert 'class="me-pause"' not in page and 'class="me-presence"' in page
