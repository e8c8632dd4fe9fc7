"""The collector's in-memory picture and the JSON contract it publishes."""

import json

from app.snapshot import PbxPicture
from app.states import UNKNOWN_START, ExtensionState


def state(exten: str, status: int, name: str = "", hint: str = "") -> ExtensionState:
    from app.states import state_name

    return ExtensionState(exten, "ext-local", hint or f"Custom:{exten}", status, name or state_name(status))


def test_publication_follows_the_contract() -> None:
    picture = PbxPicture(started_at=1000.0)
    picture.replace_all([state("100", 0), state("101", 1)], now=1001.0)
    picture.set_link(True, 1001.0)
    pub = picture.publication(version=7, now=1002.0, full=True)
    assert pub.full
    snapshot = json.loads(pub.snapshot)
    assert snapshot["version"] == 7 and snapshot["updated_at"] == 1002.0
    assert snapshot["pbx"] == {"connected": True, "since": 1001.0, "state": "up", "address": "", "error": ""}
    assert snapshot["extensions"]["101@ext-local"] == {
        "exten": "101",
        "context": "ext-local",
        "hint": "Custom:101",
        "status": 1,
        "state": "inuse",
        "changed_at": 1001.0,
        "version": 7,
        "name": "",
        "groups": [],
        "presence": None,
        "calls": [],
        "tenant": "",
        "queues": [],  # the queues it serves (app.queues)
    }
    assert set(pub.changed) == {"100@ext-local", "101@ext-local"}
    assert json.loads(pub.changed["100@ext-local"]) == snapshot["extensions"]["100@ext-local"]
    assert not picture.pending


def test_a_repeat_is_not_a_change() -> None:
    picture = PbxPicture(started_at=0.0)
    assert picture.apply(state("100", 0), now=1.0)
    picture.publication(1, now=1.0, full=False)
    assert not picture.apply(state("100", 0), now=2.0)
    assert not picture.pending
    assert picture.replace_all([state("100", 0)], now=3.0) == 0


def test_only_changed_extensions_get_the_new_version() -> None:
    picture = PbxPicture(started_at=0.0)
    picture.replace_all([state("100", 0), state("101", 0)], now=1.0)
    picture.publication(1, now=1.0, full=False)
    picture.apply(state("101", 8), now=2.0)
    pub = picture.publication(2, now=2.0, full=False)
    assert list(pub.changed) == ["101@ext-local"]
    extensions = json.loads(pub.snapshot)["extensions"]
    assert extensions["100@ext-local"]["version"] == 1 and extensions["101@ext-local"]["version"] == 2
    assert extensions["101@ext-local"]["changed_at"] == 2.0


def test_full_picture_removes_what_the_pbx_no_longer_lists() -> None:
    picture = PbxPicture(started_at=0.0)
    picture.replace_all([state("100", 0), state("101", 0)], now=1.0)
    picture.publication(1, now=1.0, full=False)
    picture.replace_all([state("101", 0), state("102", 4)], now=2.0)
    pub = picture.publication(2, now=2.0, full=False)
    assert pub.removed == ("100@ext-local",)
    assert set(json.loads(pub.snapshot)["extensions"]) == {"101@ext-local", "102@ext-local"}


def test_resend_after_store_loss_keeps_versions() -> None:
    picture = PbxPicture(started_at=0.0)
    picture.replace_all([state("100", 0)], now=1.0)
    picture.publication(1, now=1.0, full=False)
    picture.mark_all_dirty()
    pub = picture.publication(2, now=5.0, full=False)
    assert json.loads(pub.changed["100@ext-local"])["version"] == 1
    assert json.loads(pub.snapshot)["version"] == 2


def test_link_state_is_published_with_its_time() -> None:
    picture = PbxPicture(started_at=10.0)
    first = json.loads(picture.publication(1, now=10.0, full=False).snapshot)
    assert first["pbx"] == {
        "connected": False,
        "since": 10.0,
        "state": "connecting",
        "address": "",
        "error": "",
    }
    picture.set_link(True, 11.0)
    picture.set_link(False, 12.5)
    assert json.loads(picture.publication(2, now=13.0, full=False).snapshot)["pbx"] == {
        "connected": False,
        "since": 12.5,
        "state": "down",
        "address": "",
        "error": "",
    }


def test_device_change_updates_hints_whose_devices_are_all_known() -> None:
    picture = PbxPicture(started_at=0.0)
    picture.replace_all(
        [state("105", 4, hint="PJSIP/105&Custom:105,CustomPresence:105"), state("106", 0)], now=1.0
    )
    assert picture.apply_device("Custom:105", "INUSE", now=2.0) == 0  # PJSIP/105 not known yet
    picture.apply_device("PJSIP/105", "UNAVAILABLE", now=2.0)
    assert picture.apply_device("Custom:105", "RINGING", now=3.0) == 1
    assert picture.extensions["105@ext-local"].state.state == "ringing"
    assert picture.apply_device("Custom:106", "BUSY", now=3.0) == 1
    assert picture.extensions["106@ext-local"].state.status == 2


def test_hostile_strings_stay_inside_json() -> None:
    picture = PbxPicture(started_at=0.0)
    picture.apply(state("100", 0, hint='Custom:100"},"x":{"<script>'), now=1.0)
    snapshot = json.loads(picture.publication(1, now=1.0, full=False).snapshot)
    assert snapshot["extensions"]["100@ext-local"]["hint"] == 'Custom:100"},"x":{"<script>'


def test_details_change_without_touching_the_lamp() -> None:
    from app.states import Presence

    picture = PbxPicture(started_at=0.0)
    picture.replace_all([state("100", 0, hint="Custom:100,CustomPresence:100")], now=1.0)
    picture.publication(1, now=1.0, full=False)
    assert picture.set_details("100@ext-local", name="Anna", groups=("Sales",))
    assert not picture.set_details("100@ext-local", name="Anna")
    assert picture.index.keys_holding("CustomPresence:100") == ["100@ext-local"]
    picture.set_details("100@ext-local", presence=Presence("dnd", "meeting", "until 3pm", since=4.5))
    pub = picture.publication(2, now=5.0, full=False)
    extension = json.loads(pub.changed["100@ext-local"])
    assert extension["name"] == "Anna" and extension["groups"] == ["Sales"]
    assert extension["presence"] == {
        "state": "dnd",
        "subtype": "meeting",
        "message": "until 3pm",
        "since": 4.5,
    }
    assert extension["changed_at"] == 1.0 and extension["version"] == 2, "the lamp did not change"
    picture.apply(state("100", 1, hint="Custom:100,CustomPresence:100"), now=6.0)
    assert picture.extensions["100@ext-local"].details.name == "Anna", "a new state keeps the name"


def test_changes_key_holds_what_changed_in_the_last_versions() -> None:
    from app.snapshot import RECENT

    picture = PbxPicture(started_at=0.0)
    picture.replace_all([state("100", 0), state("101", 0), state("102", 0)], now=1.0)
    first = json.loads(picture.publication(1, now=1.0, full=False).changes)
    assert first["whole_at"] == 1, "new extensions: readers must take the whole snapshot"
    picture.apply(state("101", 1), now=2.0)
    changes = json.loads(picture.publication(2, now=2.0, full=False).changes)
    assert changes["version"] == 2 and changes["whole_at"] == 1 and changes["since"] == 0
    assert set(changes["extensions"]) == {"100@ext-local", "101@ext-local", "102@ext-local"}
    assert changes["extensions"]["101@ext-local"]["state"] == "inuse"
    assert changes["pbx"] == json.loads(picture.publication(3, now=3.0, full=False).snapshot)["pbx"]
    for version in range(4, 4 + RECENT):  # only 102 keeps changing
        picture.apply(state("102", version % 2), now=float(version))
        changes = json.loads(picture.publication(version, now=float(version), full=False).changes)
    assert changes["since"] == version - RECENT
    assert list(changes["extensions"]) == ["102@ext-local"], "older changes drop out"
    picture.remove("100@ext-local")
    assert (
        json.loads(picture.publication(version + 1, now=0.0, full=False).changes)["whole_at"] == version + 1
    )


# --- when a state began: told by events, never invented from a list (issue 13) ---


def test_a_listed_state_has_an_unknown_start_and_an_event_a_known_one() -> None:
    picture = PbxPicture(started_at=1000.0)
    picture.replace_all([state("100", 0), state("101", 1)])  # the list at login: since when?
    assert {k: r.changed_at for k, r in picture.extensions.items()} == {
        "100@ext-local": UNKNOWN_START,
        "101@ext-local": UNKNOWN_START,
    }, "not the collector's start: a restart must not pass for the start of every state"
    picture.apply(state("100", 8), now=1005.0)
    assert picture.extensions["100@ext-local"].changed_at == 1005.0
    # A login again (the link came back): what did not change keeps its start, what changed
    # while we were away began at an unknown time.
    picture.replace_all([state("100", 8), state("101", 0)])
    assert picture.extensions["100@ext-local"].changed_at == 1005.0
    assert picture.extensions["101@ext-local"].changed_at == UNKNOWN_START
    # A new hint for the same status (a dialplan reload) is no new state.
    picture.apply(state("100", 8, hint="PJSIP/100&Custom:100"), now=1010.0)
    assert picture.extensions["100@ext-local"].changed_at == 1005.0
    # A device state list (DeviceStateList at login) tells no start either.
    picture.replace_all([state("102", 0, hint="Custom:102")], now=1.0)
    assert picture.apply_device("Custom:102", "INUSE", UNKNOWN_START) == 1
    assert picture.extensions["102@ext-local"].changed_at == UNKNOWN_START
    snapshot = json.loads(picture.publication(1, now=1020.0, full=True).snapshot)
    assert snapshot["extensions"]["102@ext-local"]["changed_at"] == 0


def test_a_call_state_of_unknown_start_begins_with_its_newest_call() -> None:
    picture = PbxPicture(started_at=5000.0)
    picture.replace_all(
        [state("100", 1), state("101", 0), state("102", 16), state("103", 8), state("104", 1)]
    )
    picture.publication(1, now=5000.0, full=False)
    up = {"direction": "in", "party_name": "", "party_number": "7", "state": "up"}
    picture.set_details("100@ext-local", calls=({**up, "since": 1277.0}, {**up, "since": 4000.0}))
    picture.set_details("101@ext-local", calls=({**up, "since": 1277.0},))  # idle: not its start
    picture.set_details(
        "102@ext-local", calls=({**up, "since": 1277.0, "state": "hold"},)
    )  # hold began later
    picture.set_details("103@ext-local", calls=({**up, "since": 4988.0, "state": "ringing"},))
    picture.set_details("104@ext-local", calls=({**up, "since": 0.0},))  # its call's start unknown too
    dated = [picture.start_from_calls(key) for key in sorted(picture.extensions)]
    assert dated == [True, False, False, True, False]
    starts = {k: r.changed_at for k, r in picture.extensions.items()}
    assert starts == {
        "100@ext-local": 4000.0,
        "101@ext-local": UNKNOWN_START,
        "102@ext-local": UNKNOWN_START,
        "103@ext-local": 4988.0,
        "104@ext-local": UNKNOWN_START,
    }
    extension = json.loads(picture.publication(2, now=5000.0, full=False).changed["100@ext-local"])
    assert extension["changed_at"] == 4000.0 and extension["version"] == 2
    picture.apply(state("100", 0), now=5001.0)
    assert not picture.start_from_calls("100@ext-local"), "a known start is kept"
