"""The one table of what the panel needs from its AMI user (app/capabilities.py): that it
names exactly what the collector sends and takes, that the README is rendered from it, that
its eventfilter lines pass those events on real Asterisk frames, and its verdicts."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import app.ami
import app.collector
from app.ami import AmiSession
from app.capabilities import (
    ACTIONS,
    CAPABILITIES,
    EVENTS,
    MISSING,
    NOT_SEEN,
    OK,
    Witness,
    action_finding,
    asks_for,
    event_finding,
    eventfilter_lines,
    events_not_asked,
    least_classes,
    list_changes,
    main,
    needed_events,
    readme_section,
    replace_section,
)
from app.collector import Collector
from app.sim.users import admits, parse_eventfilter

ROOT = Path(__file__).parent.parent
TRANSCRIPTS = ROOT / "tests" / "fixtures" / "ami"


def by_name(name: str):
    return next(c for c in CAPABILITIES if c.name == name)


# --- one table, checked against the code and the README ---


def test_readme_holds_the_rendered_section() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_section() in text, (
        "README's manager.conf section differs from app/capabilities.py: "
        "run `.venv/bin/python -m app.capabilities --write README.md`"
    )


def test_the_table_names_every_event_the_collector_takes() -> None:
    """What `Collector._take` and `AmiSession.dispatch` compare `.event` with, resolved."""
    taken: set[str] = set()
    for function, module in ((Collector._take, app.collector), (AmiSession.dispatch, app.ami)):
        source = inspect.getsource(function)
        taken.update(re.findall(r'\.event == "(\w+)"', source))
        for name in re.findall(r"\.event in (\w+)", source):
            taken.update(getattr(module, name))
    assert taken and set(needed_events()) == taken
    assert len(needed_events()) == len(set(needed_events()))  # each event in one row


def test_the_table_names_every_action_the_collector_sends() -> None:
    source = inspect.getsource(app.collector)
    sent = set(re.findall(r'request_list\(\s*"(\w+)"', source))
    sent |= set(re.findall(r'"Action": "(\w+)"', source))
    sent |= set(getattr(app.collector, "PARTS", {}).values())  # the lists of the full picture
    assert sent == {c.ami[0] for c in ACTIONS}


def test_least_privileges() -> None:
    assert least_classes("action") == ["reporting"]  # reads only: no call control, no configs
    assert least_classes("event") == ["call", "agent"]  # agent: the queue events
    assert by_name("PJSIPShowEndpoint").least_class == "system" and not by_name("PJSIPShowEndpoint").needed


def test_documented_filters_pass_the_collectors_events_in_real_asterisk_frames() -> None:
    """The eventfilter lines, run as Asterisk runs them (app/sim/users.py), over every event of
    the Asterisk 22.10.1 transcripts: each event the collector takes passes, the others do not
    (but HangupRequest: `Event: Hangup` is a regular expression, and matches it too)."""
    filters = tuple(parse_eventfilter(line) for line in eventfilter_lines())
    passed, dropped = set(), set()
    for path in sorted(TRANSCRIPTS.glob("[0-9]*[0-9a-z].txt")):
        if path.name.endswith(".client.txt"):
            continue
        for message in path.read_bytes().split(b"\r\n\r\n"):
            text = message.split(b"\r\n", 1)[-1] if message.startswith(b"Asterisk Call Manager/") else message
            if text.startswith(b"Event: ") and b"\r\nPrivilege: " in text:  # an event, not a list item
                name = text[7 : text.index(b"\r\n")].decode()
                (passed if admits(filters, text + b"\r\n\r\n") else dropped).add(name)
    needed = set(needed_events())
    assert passed - needed == {"HangupRequest"}
    assert not dropped & needed
    assert {"ExtensionStatus", "DeviceStateChange", "PresenceStateChange", "Newchannel", "Hold"} <= passed
    assert {"VarSet", "Newexten", "SuccessfulAuth"} <= dropped and "QueueMemberStatus" in passed


def test_the_section_is_rewritten_in_place(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    begin, end = readme_section().splitlines()[0], readme_section().splitlines()[-1]
    readme.write_text(f"# x\n\n{begin}\nold lines\n{end}\n\nafter\n", encoding="utf-8")
    assert main(["--write", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == f"# x\n\n{readme_section()}\n\nafter\n"
    with pytest.raises(ValueError, match="no"):
        replace_section("# a README without the markers\n")


# --- verdicts ---


def test_action_verdicts_from_asterisks_replies() -> None:
    pjsip = by_name("PJSIPShowEndpoint")
    refused = action_finding(pjsip, {"Response": "Error", "Message": "Permission denied"}, "blf")
    assert refused.status == MISSING and not refused.failing  # optional
    assert refused.line() == (
        "names from the PBX's PJSIP endpoints (their caller ID) unavailable: PJSIPShowEndpoint refused "
        "for AMI user 'blf' (Permission denied); fix: add system to the `write =` line of [blf] in "
        "manager.conf (DIRECTORY_FILE can give the names instead)"
    )
    unknown = {
        "Response": "Error",
        "Message": "Invalid/unknown command: DeviceStateList."
        " Use Action: ListCommands to show available commands.",
    }
    devices = action_finding(by_name("DeviceStateList"), unknown, "blf")
    assert devices.failing and "load res_manager_devicestate.so" in devices.fix
    assert "unknown to the PBX (Invalid/unknown command: DeviceStateList)" in devices.why
    presence = action_finding(by_name("PresenceStateList"), {"Message": "Permission denied"}, "blf")
    assert f"app.collector: AMI {presence.line()}\n" in (ROOT / "README.md").read_text()  # its example
    answered = {"Response": "Error", "Message": "Unable to retrieve endpoint 100\n"}
    assert action_finding(pjsip, answered, "blf").status == OK  # it ran: allowed
    assert action_finding(by_name("ExtensionStateList"), [], "blf").status == OK


def test_event_verdicts() -> None:
    channels, presence, boot = by_name("channel events"), by_name("presence events"), by_name("FullyBooted")
    assert event_finding(channels, "blf", {"Hangup"}, 3, 10).status == OK
    filtered = event_finding(presence, "blf", {"ExtensionStatus"}, 1, 10)
    assert filtered.failing and "eventfilter = Event: PresenceStateChange" in filtered.fix
    assert filtered.why == "none arrived while 1 item(s) of PresenceStateList changed"
    unread = event_finding(presence, "blf", {"FullyBooted"}, 1, 10)  # a system event proves no call
    assert unread.failing and unread.fix.startswith("add call to the `read =` line of [blf]")
    quiet = event_finding(channels, "blf", set(), 0, 10)
    assert quiet.status == NOT_SEEN and not quiet.failing and "make a call" in quiet.fix
    unbooted = event_finding(boot, "blf", {"ExtensionStatus"}, None, 10)
    assert unbooted.status == NOT_SEEN and "add system to the `read =` line" in unbooted.fix


def test_list_changes_counts_items_that_came_went_or_changed() -> None:
    witness = Witness("CoreShowChannels", ("Uniqueid",), ("ChannelState",))
    before = [{"Uniqueid": "1.1", "ChannelState": "4"}, {"Uniqueid": "1.2", "ChannelState": "6"}]
    assert list_changes(before, list(before), witness) == 0
    after = [{"Uniqueid": "1.2", "ChannelState": "5"}, {"Uniqueid": "1.3", "ChannelState": "4"}]
    assert list_changes(before, after, witness) == 3


def test_the_events_asked_for_at_login() -> None:
    assert asks_for("call,system", "call") and asks_for("on", "call") and asks_for("", "call")
    assert not asks_for("system", "call") and not asks_for("off", "system")
    assert events_not_asked("call,agent,system") == []
    lost = events_not_asked("system")
    queue_or_call = (("call",), ("agent",))
    assert {f.capability.name for f in lost} == {c.name for c in EVENTS if c.classes in queue_or_call}
    assert all(f.fix == "set AMI_EVENTS=call,agent" and f.failing for f in lost)
