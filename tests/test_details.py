"""Names, presence and calls on the tiles: real Asterisk transcripts replayed through the
collector's own frame parser and event handling, and the directory file end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.ami import AmiProtocol, AmiTarget
from app.collector import Collector
from app.details import DetailTracker, callerid_name
from app.directory import parse_directory
from app.sim.events import callerid_merge
from app.snapshot import PbxPicture
from app.states import UNKNOWN_START, ExtensionState, Presence, parse_extension_status
from app.store import MemoryStore

TRANSCRIPTS = Path(__file__).parent / "fixtures" / "ami"


def frames(name: str) -> list[Any]:
    """The transcript as panoramisk Messages, through the collector's own protocol."""
    protocol = AmiProtocol()
    protocol.connection_made(_Null())
    seen: list[Any] = []
    protocol.handle_message = seen.append  # type: ignore[method-assign]
    protocol.data_received((TRANSCRIPTS / name).read_bytes())
    return seen


class _Null:
    def write(self, data: bytes) -> None:  # pragma: no cover
        pass

    def close(self) -> None:  # pragma: no cover
        pass


def collector_with_hints(name: str) -> Collector:
    """A collector whose picture holds the hints listed in transcript `name`."""
    collector = Collector(AmiTarget("127.0.0.1", 1, "blf", "x"), MemoryStore())
    states = [
        parse_extension_status(m) for m in frames(name) if m.event == "ExtensionStatus" and "actionid" in m
    ]
    collector.picture.replace_all([s for s in states if isinstance(s, ExtensionState)], now=0.0)
    return collector


def replay(collector: Collector, name: str, watch: list[str]) -> list[dict[str, list[tuple]]]:
    """Feed every unsolicited event; after each, note the calls of the watched extensions."""
    steps: list[dict[str, list[tuple]]] = []
    for number, message in enumerate(frames(name)):
        if "actionid" in message:
            continue
        if collector._take(message, now=float(number)):
            snapshot = {}
            for key in watch:
                calls = collector.picture.extensions[key].details.calls
                snapshot[key] = [(c["direction"], c["party_number"], c["state"]) for c in calls]
            if not steps or steps[-1] != snapshot:
                steps.append(snapshot)
    return steps


def test_transcript_14_call_with_hold_on_both_tiles() -> None:
    collector = collector_with_hints("14-sip-call-100-to-101-hold.txt")
    steps = replay(collector, "14-sip-call-100-to-101-hold.txt", ["100@blf", "101@blf"])
    caller = [s["100@blf"] for s in steps]
    callee = [s["101@blf"] for s in steps]
    assert [("out", "101", "up")] in caller and [("in", "100", "up")] in callee
    assert [("out", "101", "hold")] in caller and [("in", "100", "hold")] in callee
    assert any(c and c[0][2] == "ringing" for c in callee), "101 rang first"
    hold = caller.index([("out", "101", "hold")])
    assert [("out", "101", "up")] in caller[hold:], "unhold brings the call back up"
    assert caller[-1] == [] and callee[-1] == [], "after the hangup no call is left"
    extension = json.loads(json.dumps(collector.picture.extensions["101@blf"].as_dict()))
    assert extension["calls"] == [] and extension["state"] in ("idle", "unavailable")


def test_transcript_16_originate_to_101() -> None:
    collector = collector_with_hints("13-sip-register-100-101.txt")
    steps = replay(collector, "16-originate-to-pjsip-101.txt", ["101@blf"])
    calls = [s["101@blf"] for s in steps]
    assert [("in", "700", "up")] in calls and calls[-1] == []


def test_transcript_12_presence_on_the_tiles() -> None:
    collector = collector_with_hints("12-presencestate-change.txt")
    seen: dict[str, set[str]] = {"100@blf": set(), "101@blf": set()}
    messages: set[str] = set()
    for message in frames("12-presencestate-change.txt"):
        if "actionid" in message:
            continue
        collector._take(message, now=1.0)
        for key in seen:
            presence = collector.picture.extensions[key].details.presence
            if presence:
                seen[key].add(presence.state)
                messages.add(presence.message)
    assert {"away", "dnd", "available"} <= seen["100@blf"]
    assert {"xa", "chat", "not_set"} <= seen["101@blf"]
    assert "In a meeting until 3pm" in messages


def test_presence_starts_with_its_event_and_a_listed_one_is_unknown() -> None:
    """issue 13: a presence changed by an event began then; one listed at login
    (PresenceStateList) began at an unknown time, and told again it keeps its start."""
    picture = PbxPicture(started_at=0.0)
    picture.replace_all([ExtensionState("100", "ext-local", "Custom:100,CustomPresence:100", 0, "idle")])
    details = DetailTracker(picture)
    listed = {"Event": "PresenceStateChange", "Presentity": "CustomPresence:100", "Status": "away"}
    assert details.take_presence(listed)
    assert picture.extensions["100@ext-local"].details.presence == Presence("away")
    assert picture.extensions["100@ext-local"].details.presence.since == UNKNOWN_START
    assert details.take_presence({**listed, "Status": "dnd", "Message": "In a meeting"}, now=500.0)
    assert not details.take_presence({**listed, "Status": "dnd", "Message": "In a meeting"}, now=600.0)
    presence = picture.extensions["100@ext-local"].as_dict()["presence"]
    assert presence == {"state": "dnd", "subtype": "", "message": "In a meeting", "since": 500.0}
    assert not details.take_presence({**listed, "Status": "dnd", "Message": "In a meeting"})
    assert picture.extensions["100@ext-local"].details.presence.since == 500.0, "a list again keeps it"


def test_calls_at_login_tell_when_a_call_state_began() -> None:
    """A collector (re)started mid-call: the lamps list says "on a call" but not since
    when; CoreShowChannels' Duration says how long the call has lasted."""
    picture = PbxPicture(started_at=9000.0)
    picture.replace_all(
        [
            ExtensionState(e, "ext-local", f"PJSIP/{e}", s, n)
            for e, s, n in (("100", 1, "inuse"), ("101", 0, "idle"))
        ]
    )
    details = DetailTracker(picture)
    up = {"Event": "CoreShowChannel", "ChannelStateDesc": "Up", "Application": "Dial", "Linkedid": "1.1"}
    listed = [{**up, "Channel": "PJSIP/100-00000001", "Uniqueid": "1.1", "Duration": "00:04:05"}]
    assert details.rebuild_calls(listed, 9000.0)
    assert picture.extensions["100@ext-local"].changed_at == 9000.0 - 245
    assert picture.extensions["100@ext-local"].details.calls[0]["since"] == 9000.0 - 245
    assert picture.extensions["101@ext-local"].changed_at == UNKNOWN_START, "free since when: unknown"


def test_transcript_13_registration_gives_no_calls() -> None:
    collector = collector_with_hints("13-sip-register-100-101.txt")
    steps = replay(collector, "13-sip-register-100-101.txt", ["100@blf", "101@blf"])
    assert all(not calls for step in steps for calls in step.values())


def test_directory_names_and_groups_win_over_the_pbx() -> None:
    picture = PbxPicture(started_at=0.0)
    picture.replace_all(
        [ExtensionState(e, "ext-local", f"Custom:{e}", 0, "idle") for e in ("100", "101")], 0.0
    )
    details = DetailTracker(picture)
    directory, problems = parse_directory("exten,name,group\n100,Anna Smith,Sales;Front desk\n")
    assert problems == []
    details.take_pbx_names({"100": '"Reception" <100>', "101": '"Boris <b>" <101>'})
    details.use_directory(directory)
    assert picture.extensions["100@ext-local"].details.name == "Anna Smith"
    assert picture.extensions["100@ext-local"].details.groups == ("Sales", "Front desk")
    assert picture.extensions["101@ext-local"].details.name == "Boris <b>"  # text; templates escape it
    assert details.unnamed() == ["101"]


def test_outside_numbers_hidden_when_asked() -> None:
    collector = collector_with_hints("14-sip-call-100-to-101-hold.txt")
    collector.details.show_numbers = False
    steps = replay(collector, "14-sip-call-100-to-101-hold.txt", ["100@blf"])
    assert [("out", "101", "up")] in [s["100@blf"] for s in steps], "internal numbers stay"


async def test_a_panel_started_mid_call_shows_the_call(panel) -> None:
    """The collector rebuilds calls in progress from CoreShowChannels at login."""
    import httpx

    from app.sim import Simulator

    async with Simulator(["100", "101", "102"], port=0, names={"100": "Anna", "101": "Boris"}) as sim:
        call = sim.place_call("100", "101")
        call.answer()
        call.hold()
        outside = sim.place_call("+4930123456", "102", caller_name="Carla Caller")
        outside.answer()
        server = await (await panel(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), MEMCACHED_URL="")).healthy()
        async with httpx.AsyncClient(base_url=server.url) as client:
            snapshot = (await client.get("/api/snapshot")).json()
            page = (await client.get("/")).text
    calls = {key: ext["calls"] for key, ext in snapshot["extensions"].items()}
    assert [(c["direction"], c["party_number"]) for c in calls["100@ext-local"]] == [("out", "101")]
    assert [(c["direction"], c["party_number"]) for c in calls["101@ext-local"]] == [("in", "100")]
    assert [(c["direction"], c["party_name"]) for c in calls["102@ext-local"]] == [("in", "Carla Caller")]
    assert '<span class="dir">from</span> Carla Caller (+4930123456)' in page


@pytest.mark.parametrize(
    ("callerid", "name"),
    [
        ('"Anna \\"The Boss\\" Smith" <101>', 'Anna "The Boss" Smith'),  # as ast_callerid_merge writes it
        ('"C:\\\\Temp\\\\" <102>', "C:\\Temp\\"),
        ('"Boris <b>" <101>', "Boris <b>"),  # the last < starts the number
        ("Anna Smith <101>", "Anna Smith"),
        ('  "Anna Smith"\t <101>  ', "Anna Smith"),
        ('"Anna Smith"', "Anna Smith"),
        ("Anna Smith", "Anna Smith"),
        ('Anna "The Boss" Smith', 'Anna "The Boss" Smith'),  # a name alone is not quoted
        ('"Anna" Smith <101>', '"Anna" Smith'),  # quotes count only around the whole name
        ('"101"', "101"),  # quoted: a name
        ("101", ""),  # a number alone
        ("+49 (30) 123-456", ""),
        ("<unknown>", ""),  # a PJSIP endpoint without a caller ID
        ("", ""),
    ],
)
def test_caller_id_names_read_as_asterisk_reads_them(callerid: str, name: str) -> None:
    """main/callerid.c ast_callerid_parse: quoted name with backslash escapes, an unquoted
    name before `<`, or a number only."""
    assert callerid_name(callerid) == name


def test_any_name_the_simulator_writes_reads_back() -> None:
    for name in ['Anna "The Boss" Smith', "C:\\Temp\\", '\\"<b>"\\', "Zoë <Z> Ünal", '"']:
        assert callerid_name(callerid_merge(name, "101")) == name


async def test_escaped_quotes_reach_the_tile_from_the_pbx(panel) -> None:
    """PJSIPShowEndpoint over TCP from the simulator, through the collector, to the page."""
    import httpx

    from app.sim import Simulator

    async with Simulator(["100", "101"], port=0, names={"101": 'Anna "The Boss" Smith'}) as sim:
        server = await (await panel(AMI_HOST="127.0.0.1", AMI_PORT=str(sim.port), MEMCACHED_URL="")).healthy()
        await server.until(lambda hub: hub.extensions.get("101@ext-local", {}).get("name"))
        async with httpx.AsyncClient(base_url=server.url) as client:
            snapshot = (await client.get("/api/snapshot")).json()
            page = (await client.get("/")).text
    assert snapshot["extensions"]["101@ext-local"]["name"] == 'Anna "The Boss" Smith'
    assert "Anna &#34;The Boss&#34; Smith" in page or "Anna &quot;The Boss&quot; Smith" in page
