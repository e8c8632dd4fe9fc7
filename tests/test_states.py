"""The pure AMI-to-state translation, including every real transcript."""

from pathlib import Path

import pytest

from app.states import (
    DEVICE_STATES,
    STATUS_TEXT,
    ExtensionRemoved,
    ExtensionState,
    InvalidFrame,
    aggregate_status,
    hint_devices,
    is_valid_key,
    parse_device_state,
    parse_extension_status,
    state_name,
    status_from_devices,
)

TRANSCRIPTS = Path(__file__).parent / "fixtures" / "ami"


def frame(**fields: str) -> dict[str, str]:
    base = {"Event": "ExtensionStatus", "Exten": "105", "Context": "ext-local", "Hint": "Custom:105"}
    base.update(fields)
    return base


@pytest.mark.parametrize(
    ("status", "state"),
    [
        (0, "idle"),
        (1, "inuse"),
        (2, "busy"),
        (4, "unavailable"),
        (8, "ringing"),
        (9, "inuse_ringing"),
        (16, "hold"),
        (17, "inuse_hold"),
        (-1, "unknown"),
        (3, "unknown"),
        (32, "unknown"),
        (-7, "unknown"),
    ],
)
def test_every_status_code(status: int, state: str) -> None:
    parsed = parse_extension_status(frame(Status=str(status)))
    assert parsed == ExtensionState("105", "ext-local", "Custom:105", status, state)
    assert parsed.key == "105@ext-local"


def test_removed_hint() -> None:
    assert parse_extension_status(frame(Status="-2")) == ExtensionRemoved("105", "ext-local")


@pytest.mark.parametrize(
    "bad",
    [
        {"Status": "abc"},
        {"Status": ""},
        {"Exten": ""},
        {"Exten": "10 5"},
        {"Exten": "105\r\nX"},
        {"Context": "ext local"},
        {"Context": "x" * 81},
        {"Exten": "é105"},
    ],
)
def test_invalid_frames_raise(bad: dict[str, str]) -> None:
    with pytest.raises(InvalidFrame):
        parse_extension_status(frame(**bad))


def test_missing_fields_raise() -> None:
    with pytest.raises(InvalidFrame):
        parse_extension_status({"Event": "ExtensionStatus", "Exten": "105", "Status": "0"})
    with pytest.raises(InvalidFrame):
        parse_device_state({"Event": "DeviceStateChange", "Device": "Custom:1"})


def test_hint_is_cleaned_and_capped() -> None:
    parsed = parse_extension_status(frame(Status="0", Hint="Custom:105\x07" + "x" * 1000))
    assert "\x07" not in parsed.hint and len(parsed.hint) == 512


def test_unknown_device_state_becomes_unknown() -> None:
    assert parse_device_state({"Device": "Custom:1", "State": "WEIRD"}).state == "UNKNOWN"
    assert parse_device_state({"Device": "Custom:1", "State": "inuse"}).state == "INUSE"


@pytest.mark.parametrize(
    ("device_state", "status"),
    [
        ("NOT_INUSE", 0),
        ("UNKNOWN", 0),
        ("INUSE", 1),
        ("BUSY", 2),
        ("INVALID", 4),
        ("UNAVAILABLE", 4),
        ("RINGING", 8),
        ("RINGINUSE", 9),
        ("ONHOLD", 16),
    ],
)
def test_single_device_hint(device_state: str, status: int) -> None:
    assert aggregate_status([device_state]) == status
    assert STATUS_TEXT[status]


def test_aggregation_matches_transcript_10() -> None:
    """PJSIP/105 stays UNAVAILABLE while Custom:105 cycles; transcript 10 shows which
    Custom:105 states changed the hint (and that INVALID and UNKNOWN did not)."""
    expected = {
        "INUSE": 1,
        "RINGING": 8,
        "ONHOLD": 16,
        "UNAVAILABLE": 4,
        "NOT_INUSE": 0,
        "BUSY": 2,
        "RINGINUSE": 9,
        "INVALID": 4,
        "UNKNOWN": 4,
    }
    for custom, status in expected.items():
        assert aggregate_status(["UNAVAILABLE", custom]) == status, custom
    # Replaying the CLI sequence through aggregate_status, keeping only changes, gives
    # exactly the ExtensionStatus events the real PBX sent for 105.
    sequence = ["INUSE", "RINGING", "ONHOLD", "UNAVAILABLE", "NOT_INUSE", "BUSY", "RINGINUSE"]
    sequence += ["INVALID", "UNKNOWN", "NOT_INUSE"]
    predicted, current = [], 4
    for custom in sequence:
        status = aggregate_status(["UNAVAILABLE", custom])
        if status != current:
            predicted.append(status)
            current = status
    sent = [
        int(block["Status"])
        for block in _frames("10-devstate-custom-105.txt")
        if block.get("Event") == "ExtensionStatus" and block.get("Exten") == "105" and "ActionID" not in block
    ]
    assert sent == predicted == [1, 8, 16, 4, 0, 2, 9, 4, 0]


def test_ringing_and_inuse_aggregate_to_ringinuse() -> None:
    assert aggregate_status(["RINGING", "INUSE"]) == 9
    assert aggregate_status(["ONHOLD", "RINGING"]) == 9
    assert aggregate_status([]) == 4  # a hint with no device: INVALID -> unavailable


def test_hint_devices_and_status_from_devices() -> None:
    hint = "PJSIP/105&Custom:105,CustomPresence:105"
    assert hint_devices(hint) == ("PJSIP/105", "Custom:105")
    assert status_from_devices(hint, {"PJSIP/105": "UNAVAILABLE"}) is None
    assert status_from_devices(hint, {"PJSIP/105": "UNAVAILABLE", "Custom:105": "INUSE"}) == 1


def test_state_names_and_keys() -> None:
    assert state_name(9) == "inuse_ringing" and state_name(99) == "unknown"
    assert len(DEVICE_STATES) == 9
    assert is_valid_key("105@ext-local")
    assert not is_valid_key("105 @ext-local") and not is_valid_key("105") and not is_valid_key("a@b c")


def _frames(name: str) -> list[dict[str, str]]:
    raw = (TRANSCRIPTS / name).read_bytes().decode("utf-8")
    blocks = []
    for chunk in raw.split("\r\n\r\n"):
        fields = dict(line.split(": ", 1) for line in chunk.split("\r\n") if ": " in line)
        if fields:
            blocks.append(fields)
    return blocks


SERVER_TRANSCRIPTS = sorted(p for p in TRANSCRIPTS.glob("*.txt") if not p.name.endswith(".client.txt"))


@pytest.mark.parametrize("path", SERVER_TRANSCRIPTS, ids=lambda p: p.name)
def test_every_transcript_parses(path: Path) -> None:
    """Every ExtensionStatus and DeviceStateChange a real Asterisk sent translates."""
    seen = 0
    for fields in _frames(path.name):
        if fields.get("Event") == "ExtensionStatus":
            parsed = parse_extension_status(fields)
            assert isinstance(parsed, ExtensionState)
            assert parsed.state == state_name(int(fields["Status"]))
            seen += 1
        elif fields.get("Event") == "DeviceStateChange" and "Device" in fields:
            assert parse_device_state(fields).state in DEVICE_STATES
            seen += 1
    if path.name.startswith(("03-", "10-", "11-", "20-")):
        assert seen > 0
