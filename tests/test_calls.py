"""The calls on each tile, replayed from real Asterisk 22 transcripts (tests/fixtures/ami)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from app.calls import Call, CallTracker, channel_device
from app.schema import MAX_NAME, MAX_NUMBER

FIXTURES = Path(__file__).parent / "fixtures" / "ami"


def frames(name: str) -> list[dict[str, str]]:
    """The server's messages: CRLF frames split on the blank line, `Key: Value` lines
    (the first of a repeated key wins; `Key:` with nothing after it is "")."""
    result = []
    for raw in (FIXTURES / name).read_bytes().split(b"\r\n\r\n"):
        frame: dict[str, str] = {}
        for line in raw.decode().split("\r\n"):
            key, sep, value = line.partition(": ")
            if sep:
                frame.setdefault(key, value)
            elif line.endswith(":"):
                frame.setdefault(line[:-1], "")
        if frame:
            result.append(frame)
    return result


def summary(tracker: CallTracker, device: str) -> list[tuple[str, str, str, str]]:
    return [(c.direction, c.party_number, c.party_name, c.state) for c in tracker.calls_for(device)]


def replay(name: str, tracker: CallTracker | None = None, start: int = 0):
    """Feed a transcript to a tracker; yields (index, frame, changed devices) per frame."""
    tracker = tracker if tracker is not None else CallTracker()
    for index, frame in enumerate(frames(name)):
        if index >= start:
            yield index, frame, tracker.apply(frame, 1000.0 + index)


def find(items: list[dict[str, str]], **match: str) -> int:
    """Index of the first frame with all these fields."""
    return next(i for i, f in enumerate(items) if all(f.get(k) == v for k, v in match.items()))


CALL_14 = "14-sip-call-100-to-101-hold.txt"
A, B = "PJSIP/100", "PJSIP/101"


def test_channel_device() -> None:
    assert channel_device("PJSIP/101-00000007") == "PJSIP/101"
    assert channel_device("SIP/101-0000000a") == "SIP/101"
    assert channel_device("PJSIP/trunk-provider-0000003") == "PJSIP/trunk-provider"
    assert channel_device("IAX2/trunk-1234") == "IAX2/trunk"
    assert channel_device("Local/101@blf-queue-00000001;1") is None
    assert channel_device("Local/1999@blf-00000000;2") is None
    for garbage in ("", "PJSIP/101", "PJSIP/-0001", "101-0001", "PJSIP/10 1-0001", "PJSIP/101-0001<ZOMBIE>"):
        assert channel_device(garbage) is None, garbage
    assert channel_device(None) is None  # type: ignore[arg-type]
    assert channel_device("PJSIP/" + "1" * 5000 + "-0001") is None


def test_call_100_to_101_ring_answer_hold_unhold_hangup() -> None:
    """Transcript 14, step by step, as both tiles see it."""
    tracker = CallTracker()
    seen: dict[str, list[tuple[str, str, str, str]]] = {}
    steps: list[tuple[str, str | None, dict[str, list[tuple[str, str, str, str]]]]] = []
    for _index, frame, changed in replay(CALL_14, tracker):
        for device in changed:
            seen[device] = summary(tracker, device)
        if changed:
            steps.append((frame["Event"], frame.get("Channel"), {d: seen[d] for d in sorted(changed)}))
        assert changed <= {A, B}

    assert steps == [
        # 100 sends INVITE: its channel is in state "Ring"; it dialed 101 (Exten)
        ("Newchannel", "PJSIP/100-00000000", {A: [("out", "101", "", "dialing")]}),
        # Dial creates 101's channel (state Down): it is being called
        ("Newchannel", "PJSIP/101-00000001", {B: [("in", "", "", "ringing")]}),
        ("NewConnectedLine", "PJSIP/101-00000001", {B: [("in", "100", "Ext 100", "ringing")]}),
        ("NewConnectedLine", "PJSIP/100-00000000", {A: [("out", "101", "Ext 101", "dialing")]}),
        # 101 answers, then the caller's channel goes Up
        ("Newstate", "PJSIP/101-00000001", {B: [("in", "100", "Ext 100", "up")]}),
        ("Newstate", "PJSIP/100-00000000", {A: [("out", "101", "Ext 101", "up")]}),
        # Hold is on 100's channel (it pressed hold); 101 hears MOH: both say hold
        (
            "Hold",
            "PJSIP/100-00000000",
            {A: [("out", "101", "Ext 101", "hold")], B: [("in", "100", "Ext 100", "hold")]},
        ),
        (
            "Unhold",
            "PJSIP/100-00000000",
            {A: [("out", "101", "Ext 101", "up")], B: [("in", "100", "Ext 100", "up")]},
        ),
        ("Hangup", "PJSIP/100-00000000", {A: []}),
        ("Hangup", "PJSIP/101-00000001", {B: []}),
    ]
    assert tracker.devices() == set()


def test_call_14_channels_and_since() -> None:
    """`since` is the creation while ringing, the answer once up; hold keeps it."""
    items = frames(CALL_14)
    tracker = CallTracker()
    for index, frame in enumerate(items):
        tracker.apply(frame, 1000.0 + index)
        if frame.get("ActionID") == "blf-2":  # the ExtensionStateList while 101 rings
            ringing = tracker.calls_for(B)
    created_b = find(items, Event="Newchannel", Channel="PJSIP/101-00000001")
    assert ringing == [Call("PJSIP/101-00000001", "in", "Ext 100", "100", 1000.0 + created_b, "ringing")]

    tracker = CallTracker()
    hold = find(items, Event="Hold")
    for index, frame in enumerate(items[: hold + 1]):
        tracker.apply(frame, 1000.0 + index)
    answered_a = find(items, Event="Newstate", Channel="PJSIP/100-00000000", ChannelStateDesc="Up")
    answered_b = find(items, Event="Newstate", Channel="PJSIP/101-00000001", ChannelStateDesc="Up")
    (call_a,) = tracker.calls_for(A)
    (call_b,) = tracker.calls_for(B)
    assert (call_a.channel, call_a.since, call_a.state) == ("PJSIP/100-00000000", 1000.0 + answered_a, "hold")
    assert (call_b.channel, call_b.since, call_b.state) == ("PJSIP/101-00000001", 1000.0 + answered_b, "hold")
    assert call_b.as_dict() == {
        "direction": "in",
        "party_name": "Ext 100",
        "party_number": "100",
        "since": 1000.0 + answered_b,
        "state": "hold",
    }
    assert json.loads(json.dumps(call_a.as_dict()))["state"] == "hold"
    assert tracker.devices() == {A, B}


def test_originate_to_pjsip_101() -> None:
    """Transcript 16: Asterisk calls the phone (a DialBegin without a caller channel),
    then runs 1999 on it: one incoming call from the Originate's caller ID."""
    tracker = CallTracker()
    states = []
    for _index, _frame, changed in replay("16-originate-to-pjsip-101.txt", tracker):
        assert changed <= {B}
        if changed:
            states.append(summary(tracker, B))
    assert states == [
        [("in", "", "", "ringing")],
        [("in", "700", "Panel", "ringing")],
        [("in", "700", "Panel", "up")],
        [],
    ]
    assert tracker.devices() == set()


def test_originate_local_channels_are_no_phones() -> None:
    """Transcript 15: only Local/1999@blf-...;1 and ;2; no device gets a call."""
    tracker = CallTracker()
    for _index, _frame, changed in replay("15-originate-local-wait5.txt", tracker):
        assert changed == set()
        assert tracker.devices() == set()


def test_registration_has_no_calls() -> None:
    tracker = CallTracker()
    for _index, _frame, changed in replay("13-sip-register-100-101.txt", tracker):
        assert changed == set()
    assert tracker.devices() == set()


def test_rebuild_from_status_mid_call() -> None:
    """Restarted while on hold (blf-4 `Status` of 14): the call shows, and the rest of
    the transcript ends it."""
    items = frames(CALL_14)
    status = [f for f in items if f.get("Event") == "Status"]
    assert [f["Channel"] for f in status] == ["PJSIP/101-00000001", "PJSIP/100-00000000"]
    tracker = CallTracker()
    assert tracker.rebuild(status, 2000.0) == {A, B}
    # AppDial (the dialed leg) is "in", Dial is "out"; Seconds: 6 is the channel's age
    assert tracker.calls_for(B) == [Call("PJSIP/101-00000001", "in", "Ext 100", "100", 1994.0, "up")]
    assert tracker.calls_for(A) == [Call("PJSIP/100-00000000", "out", "Ext 101", "101", 1994.0, "up")]
    # the lists do not say "hold": it shows up; Unhold then changes nothing
    after = find(items, Event="StatusComplete")
    changes = {
        frame.get("Event", ""): changed for _i, frame, changed in replay(CALL_14, tracker, start=after)
    }
    assert changes["Unhold"] == set()
    assert tracker.devices() == set()


def core_show_channel(channel: str, uid: str, linkedid: str, **fields: str) -> dict[str, str]:
    base = {
        "Event": "CoreShowChannel",
        "ActionID": "blf-3",
        "Channel": channel,
        "ChannelState": "6",
        "ChannelStateDesc": "Up",
        "CallerIDNum": "",
        "CallerIDName": "",
        "ConnectedLineNum": "<unknown>",
        "ConnectedLineName": "<unknown>",
        "Language": "en",
        "AccountCode": "",
        "Context": "blf",
        "Exten": "",
        "Priority": "1",
        "Uniqueid": uid,
        "Linkedid": linkedid,
        "Application": "",
        "ApplicationData": "",
        "Duration": "00:00:00",
        "BridgeId": "",
    }
    return base | fields


def test_rebuild_from_core_show_channels() -> None:
    """A restart with calls in progress: a bridged call, a phone ringing, a stale one gone."""
    tracker = CallTracker()
    for frame in frames(CALL_14)[: find(frames(CALL_14), Event="Hold") + 1]:
        tracker.apply(frame, 1000.0)
    assert tracker.devices() == {A, B}
    listed = [
        core_show_channel(
            "PJSIP/102-0000000a",
            "1795709000.20",
            "1795709000.20",
            CallerIDNum="102",
            CallerIDName="Carol",
            ConnectedLineNum="103",
            ConnectedLineName="Dave",
            Application="Dial",
            ApplicationData="PJSIP/103,30",
            Duration="01:02:03",
            BridgeId="b-1",
        ),
        core_show_channel(
            "PJSIP/103-0000000b",
            "1795709000.21",
            "1795709000.20",
            CallerIDNum="103",
            CallerIDName="Dave",
            # no connected line: the bridged peer's caller ID stands in
            Application="AppDial",
            ApplicationData="(Outgoing Line)",
            Duration="01:02:01",
            BridgeId="b-1",
        ),
        core_show_channel(
            "PJSIP/104-0000000c",
            "1795709100.30",
            "1795709100.29",
            ChannelState="5",
            ChannelStateDesc="Ringing",
            CallerIDNum="104",
            ConnectedLineNum="+4930123456",
            ConnectedLineName="Customer",
            Application="AppDial",
            Duration="00:00:04",
        ),
        core_show_channel(
            "PJSIP/trunk-0000000d",
            "1795709100.29",
            "1795709100.29",
            ChannelState="4",
            ChannelStateDesc="Ring",
            CallerIDNum="+4930123456",
            CallerIDName="Customer",
            Application="Dial",
            Duration="00:00:05",
        ),
        {"Event": "CoreShowChannelsComplete", "EventList": "Complete", "ListItems": "4"},
    ]
    assert tracker.rebuild(listed, 5000.0) == {A, B, "PJSIP/102", "PJSIP/103", "PJSIP/104", "PJSIP/trunk"}
    assert tracker.calls_for(A) == tracker.calls_for(B) == []
    assert tracker.calls_for("PJSIP/102") == [
        Call("PJSIP/102-0000000a", "out", "Dave", "103", 5000.0 - 3723, "up")
    ]
    assert tracker.calls_for("PJSIP/103") == [
        Call("PJSIP/103-0000000b", "in", "Carol", "102", 5000.0 - 3721, "up")
    ]
    assert summary(tracker, "PJSIP/104") == [("in", "+4930123456", "Customer", "ringing")]
    assert tracker.calls_for("PJSIP/104")[0].since == 4996.0
    assert summary(tracker, "PJSIP/trunk") == [("out", "", "", "dialing")]
    # the same list again changes nothing
    assert tracker.rebuild(listed, 5000.0) == set()
    # CoreShowChannels of transcript 15: only Local channels
    locals_only = [f for f in frames("15-originate-local-wait5.txt") if f.get("Event") == "CoreShowChannel"]
    assert len(locals_only) == 2
    assert tracker.rebuild(locals_only, 6000.0) == {"PJSIP/102", "PJSIP/103", "PJSIP/104", "PJSIP/trunk"}
    assert tracker.devices() == set()


def test_a_start_the_pbx_did_not_tell_is_unknown_never_the_time_we_looked() -> None:
    """issue 13: a call's start is its age in CoreShowChannels; without a readable Duration,
    or for a channel first seen already answered (its Newchannel missed), it is unknown (0)
    and its tile shows no duration, rather than one counting from when the panel looked."""
    tracker = CallTracker()
    listed = [
        core_show_channel("PJSIP/102-0000000a", "1.1", "1.1", ConnectedLineNum="103", Duration="12:34:56"),
        core_show_channel("PJSIP/104-0000000c", "1.3", "1.3", ConnectedLineNum="105", Duration="ages"),
        core_show_channel(
            "PJSIP/106-0000000e", "1.5", "1.5", Duration="00:00:12", ChannelStateDesc="Ringing"
        ),
    ]
    tracker.rebuild(listed, 50_000.0)
    assert [c.since for c in tracker.calls_for("PJSIP/102")] == [50_000.0 - 45_296]
    assert [c.since for c in tracker.calls_for("PJSIP/104")] == [0.0]
    assert [(c.since, c.state) for c in tracker.calls_for("PJSIP/106")] == [(50_000.0 - 12, "ringing")]
    adopted = {**core_show_channel("PJSIP/108-00000010", "1.7", "1.7"), "Event": "Newstate"}
    adopted.pop("Duration")
    tracker.apply(adopted, 60_000.0)
    assert [c.since for c in tracker.calls_for("PJSIP/108")] == [0.0]
    ringing = {**adopted, "Channel": "PJSIP/109-00000011", "Uniqueid": "1.9", "ChannelStateDesc": "Ringing"}
    tracker.apply(ringing, 60_001.0)
    assert [c.since for c in tracker.calls_for("PJSIP/109")] == [60_001.0], "it rings from now on"
    tracker.apply({**ringing, "ChannelStateDesc": "Up"}, 60_009.0)
    assert [c.since for c in tracker.calls_for("PJSIP/109")] == [60_009.0], "answered now: up since now"


def event(
    kind: str, channel: str, uid: str, linkedid: str, state: str = "Up", **fields: str
) -> dict[str, str]:
    """A channel event the way Asterisk 22 writes one (see transcript 14)."""
    device = channel.split("/", 1)[1].rsplit("-", 1)[0]
    base = {
        "Event": kind,
        "Privilege": "call,all",
        "Channel": channel,
        "ChannelState": {"Down": "0", "Ring": "4", "Ringing": "5", "Up": "6"}.get(state, "0"),
        "ChannelStateDesc": state,
        "CallerIDNum": device,
        "CallerIDName": f"Ext {device}",
        "ConnectedLineNum": "<unknown>",
        "ConnectedLineName": "<unknown>",
        "Language": "en",
        "AccountCode": "",
        "Context": "blf",
        "Exten": "s",
        "Priority": "1",
        "Uniqueid": uid,
        "Linkedid": linkedid,
    }
    return base | fields


def test_call_waiting_keeps_calls_ordered_by_since() -> None:
    tracker = CallTracker()
    for index, frame in enumerate(frames(CALL_14)[: find(frames(CALL_14), Event="Hold")]):
        tracker.apply(frame, 1000.0 + index)
    second = event(
        "Newchannel",
        "PJSIP/101-00000009",
        "9.2",
        "9.1",
        "Down",
        ConnectedLineNum="102",
        ConnectedLineName="Carol",
    )
    assert tracker.apply(second, 5000.0) == {B}
    assert summary(tracker, B) == [("in", "100", "Ext 100", "up"), ("in", "102", "Carol", "ringing")]
    assert [c.channel for c in tracker.calls_for(B)] == ["PJSIP/101-00000001", "PJSIP/101-00000009"]
    assert tracker.apply(event("Hangup", "PJSIP/101-00000009", "9.2", "9.1"), 5001.0) == {B}
    assert summary(tracker, B) == [("in", "100", "Ext 100", "up")]


def test_hold_and_party_through_local_channels() -> None:
    """A queue call: 100 <-> Local;1 ~ Local;2 <-> 101. The far end is found through the
    Local halves; hold on one side shows on both, the Local channels on no tile."""
    tracker = CallTracker()
    chans = [
        ("PJSIP/100-00000010", "10.1", "b-a"),
        ("Local/101@blf-queue-00000001;1", "10.2", "b-a"),
        ("Local/101@blf-queue-00000001;2", "10.3", "b-b"),
        ("PJSIP/101-00000011", "10.4", "b-b"),
    ]
    for name, uid, bridge in chans:
        tracker.apply(event("Newchannel", name, uid, "10.1", "Up", CallerIDNum="", CallerIDName=""), 1.0)
        tracker.apply(event("BridgeEnter", name, uid, "10.1", BridgeUniqueid=bridge), 2.0)
    tracker.apply(event("NewCallerid", "PJSIP/100-00000010", "10.1", "10.1", CallerIDNum="100"), 3.0)
    tracker.apply(event("NewCallerid", "PJSIP/101-00000011", "10.4", "10.1", CallerIDNum="101"), 3.0)
    assert tracker.devices() == {A, B}
    assert summary(tracker, A) == [("out", "101", "Ext 101", "up")]
    assert summary(tracker, B) == [("in", "100", "Ext 100", "up")]
    assert tracker.apply(event("Hold", "PJSIP/101-00000011", "10.4", "10.1"), 4.0) == {A, B}
    assert [c.state for c in tracker.calls_for(A) + tracker.calls_for(B)] == ["hold", "hold"]
    assert tracker.apply(event("Unhold", "PJSIP/101-00000011", "10.4", "10.1"), 5.0) == {A, B}
    assert [c.state for c in tracker.calls_for(A) + tracker.calls_for(B)] == ["up", "up"]
    # the Local halves go away (optimised out): the phones keep their calls
    for name, uid, _bridge in chans[1:3]:
        tracker.apply(event("Hangup", name, uid, "10.1"), 6.0)
    assert tracker.devices() == {A, B}


def test_hold_does_not_spread_through_a_conference() -> None:
    tracker = CallTracker()
    names = [f"PJSIP/10{i}-0000002{i}" for i in range(3)]
    for i, name in enumerate(names):
        tracker.apply(event("BridgeEnter", name, f"20.{i}", f"20.{i}", BridgeUniqueid="conf"), 1.0)
    assert tracker.apply(event("Hold", names[0], "20.0", "20.0"), 2.0) == {A}
    assert [summary(tracker, f"PJSIP/10{i}")[0][3] for i in range(3)] == ["hold", "up", "up"]


def test_hostile_caller_id_is_cleaned_and_capped() -> None:
    tracker = CallTracker()
    script = '"><script>alert(1)</script>'
    tracker.apply(event("Newchannel", "PJSIP/101-00000030", "30.1", "30.0", "Down"), 1.0)
    tracker.apply(
        event(
            "NewConnectedLine",
            "PJSIP/101-00000030",
            "30.1",
            "30.0",
            "Down",
            ConnectedLineNum="\x1b[2J0301234\r\n",
            ConnectedLineName=script,
        ),
        2.0,
    )
    (call,) = tracker.calls_for(B)
    assert call.party_name == script  # kept as text: the templates escape it
    assert call.party_number == "[2J0301234"
    huge = ("A\x00\x07\x1b\r\n\u202eB\u200b\x7f\x85" * 1000) + "x" * 10_000
    assert len(huge) > 10_000
    tracker.apply(
        event(
            "NewConnectedLine",
            "PJSIP/101-00000030",
            "30.1",
            "30.0",
            ConnectedLineNum=huge,
            ConnectedLineName=huge,
        ),
        3.0,
    )
    (call,) = tracker.calls_for(B)
    # Line breaks and U+0085 are white space: one space each; every other control,
    # bidi and zero-width character is gone.
    assert call.party_name == ("A B " * 40)[:MAX_NAME].rstrip()
    assert call.party_number == ("A B " * 20)[:MAX_NUMBER].rstrip()
    assert json.loads(json.dumps(call.as_dict()))["party_name"] == call.party_name


@pytest.mark.parametrize(
    "garbage",
    [
        {},
        {"Event": "Hangup"},
        {"Event": "Newchannel", "Channel": "PJSIP/101-00000001"},
        {"Event": "Newchannel", "Uniqueid": "1.1"},
        {"Event": "Newchannel", "Channel": None, "Uniqueid": None},
        {"Event": "Newchannel", "Channel": ["PJSIP/101-1", "PJSIP/102-2"], "Uniqueid": "1.1"},
        {"Event": "Newchannel", "Channel": "PJSIP/101-1", "Uniqueid": "1" * 10_000},
        {"Event": "Newchannel", "Channel": "PJSIP/101-1\x00", "Uniqueid": "1.1"},
        {"Event": "DialBegin"},
        {"Event": "DialBegin", "DestChannel": 7, "DestUniqueid": 8},
        {"Event": "BridgeEnter", "Channel": "PJSIP/101-1", "Uniqueid": "1.1", "BridgeUniqueid": None},
        {"Event": "Hold", "Channel": "", "Uniqueid": ""},
        {"Event": 42},
        {"Event": None},
        {"Event": "ExtensionStatus", "Exten": "101"},
    ],
)
def test_garbage_events_do_not_raise(garbage: dict) -> None:
    tracker = CallTracker()
    tracker.apply(garbage, 1.0)
    assert tracker.devices() <= {B}


def test_fuzzed_events_never_raise() -> None:
    """Real frames with fields dropped, swapped and replaced by junk, in random order."""
    real = [
        f
        for name in (CALL_14, "15-originate-local-wait5.txt", "16-originate-to-pjsip-101.txt")
        for f in frames(name)
    ]
    junk: list[object] = [
        None,
        "",
        0,
        -1.5,
        [],
        ["a", "b"],
        "<unknown>",
        "\x00" * 50,
        "x" * 5000,
        "Up",
        "Local/x;1",
    ]
    rng = random.Random(1234)
    tracker = CallTracker()
    for _ in range(3000):
        frame: dict[str, object] = dict(rng.choice(real))
        for key in rng.sample(sorted(frame), k=min(len(frame), rng.randint(0, 4))):
            roll = rng.random()
            if roll < 0.4:
                del frame[key]
            elif roll < 0.8:
                frame[key] = rng.choice(junk)
            else:
                frame[key] = str(rng.choice(real).get(key, ""))
        now = rng.choice([1.0, 2.5, float("nan"), float("inf"), True, None])
        changed = tracker.apply(frame, now)  # type: ignore[arg-type]
        assert isinstance(changed, set)
        for device in tracker.devices():
            for call in tracker.calls_for(device):
                json.dumps(call.as_dict())
                assert call.state in ("ringing", "dialing", "up", "hold")
                assert call.direction in ("in", "out")
    tracker.rebuild([None, 3, {"Channel": 5}, *rng.sample(real, 50)], float("nan"))  # type: ignore[list-item]
    assert isinstance(tracker.rebuild("not a list", 1.0), set)  # type: ignore[arg-type]
    assert tracker.apply(None, 1.0) == set()  # type: ignore[arg-type]
