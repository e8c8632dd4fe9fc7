"""Pure translation of AMI frames into extension states: no I/O, no asyncio.

Everything that comes from the PBX is untrusted here: a frame that does not
validate raises `InvalidFrame` and never reaches the store or a memcached key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from app.schema import MAX_HINT, MAX_PRESENCE_TEXT, PresenceJSON, clean_text

# ExtensionStatus "Status" codes (a bit mask in Asterisk) and the names we show.
STATUS_STATES: dict[int, str] = {
    0: "idle",
    1: "inuse",
    2: "busy",
    4: "unavailable",
    8: "ringing",
    9: "inuse_ringing",
    16: "hold",
    17: "inuse_hold",
}
STATUS_REMOVED = -2
STATUS_UNKNOWN = -1
UNKNOWN_STATE = "unknown"
STATE_NAMES: tuple[str, ...] = (*STATUS_STATES.values(), UNKNOWN_STATE)

# Asterisk's own StatusText for each code, as it sends it.
STATUS_TEXT: dict[int, str] = {
    -2: "Removed",
    -1: "Unknown",
    0: "Idle",
    1: "InUse",
    2: "Busy",
    4: "Unavailable",
    8: "Ringing",
    9: "InUse&Ringing",
    16: "Hold",
    17: "InUse&Hold",
}

# Device states (DeviceStateChange "State") as Asterisk names them.
DEVICE_STATES: tuple[str, ...] = (
    "UNKNOWN",
    "NOT_INUSE",
    "INUSE",
    "BUSY",
    "INVALID",
    "UNAVAILABLE",
    "RINGING",
    "RINGINUSE",
    "ONHOLD",
)

# ast_devstate_to_extenstate() in main/devicestate.c.
DEVICE_TO_STATUS: dict[str, int] = {
    "UNKNOWN": 0,
    "NOT_INUSE": 0,
    "INUSE": 1,
    "BUSY": 2,
    "INVALID": 4,
    "UNAVAILABLE": 4,
    "RINGING": 8,
    "RINGINUSE": 9,
    "ONHOLD": 16,
}

# The rank ast_devstate_aggregate_add() gives each device state: the highest wins.
_AGGREGATE_RANK: dict[str, int] = {
    "INVALID": 0,
    "UNKNOWN": 1,
    "UNAVAILABLE": 2,
    "NOT_INUSE": 3,
    "ONHOLD": 4,
    "RINGING": 5,
    "INUSE": 6,
    "BUSY": 7,
    "RINGINUSE": 8,
}

# What we accept from the PBX before a string may become part of a memcached key.
EXTEN_RE = re.compile(r"[A-Za-z0-9_+*#.\-]{1,64}")
CONTEXT_RE = re.compile(r"[A-Za-z0-9_.\-]{1,80}")
DEVICE_RE = re.compile(r"[A-Za-z0-9_+*#.:/@\-]{1,128}")
KEY_RE = re.compile(r"[A-Za-z0-9_+*#.\-]{1,64}@[A-Za-z0-9_.\-]{1,80}")


class InvalidFrame(ValueError):
    """An AMI frame that cannot be turned into a state; the caller logs and skips it."""


@dataclass(frozen=True, slots=True)
class ExtensionState:
    """One hint as the panel shows it."""

    exten: str
    context: str
    hint: str
    status: int
    state: str

    @property
    def key(self) -> str:
        return f"{self.exten}@{self.context}"


@dataclass(frozen=True, slots=True)
class ExtensionRemoved:
    """Asterisk removed the hint (Status -2): the extension leaves the panel."""

    exten: str
    context: str

    @property
    def key(self) -> str:
        return f"{self.exten}@{self.context}"


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device (PJSIP/101, Custom:105, ...) changed state."""

    device: str
    state: str


def state_name(status: int) -> str:
    """The name for a status code; -1 and anything unrecognised are `unknown`."""
    return STATUS_STATES.get(status, UNKNOWN_STATE)


def is_valid_key(key: str) -> bool:
    return KEY_RE.fullmatch(key) is not None


def _field(frame: Mapping[str, str], name: str) -> str:
    value = frame.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidFrame(f"missing field {name}")
    return value.strip()


def _exten_context(frame: Mapping[str, str]) -> tuple[str, str]:
    exten = _field(frame, "Exten")
    context = _field(frame, "Context")
    if not EXTEN_RE.fullmatch(exten):
        raise InvalidFrame(f"bad Exten {exten[:40]!r}")
    if not CONTEXT_RE.fullmatch(context):
        raise InvalidFrame(f"bad Context {context[:40]!r}")
    return exten, context


def parse_extension_status(frame: Mapping[str, str]) -> ExtensionState | ExtensionRemoved:
    """Translate an `ExtensionStatus` event (unsolicited or a list item)."""
    exten, context = _exten_context(frame)
    raw = _field(frame, "Status")
    try:
        status = int(raw)
    except ValueError:
        raise InvalidFrame(f"non-numeric Status {raw[:20]!r}") from None
    if status == STATUS_REMOVED:
        return ExtensionRemoved(exten, context)
    hint = clean_text(frame.get("Hint"), MAX_HINT)
    return ExtensionState(exten, context, hint, status, state_name(status))


def parse_device_state(frame: Mapping[str, str]) -> DeviceState:
    """Translate a `DeviceStateChange` event (unsolicited or a list item)."""
    device = _field(frame, "Device")
    state = _field(frame, "State").upper()
    if not DEVICE_RE.fullmatch(device):
        raise InvalidFrame(f"bad Device {device[:40]!r}")
    if state not in DEVICE_TO_STATUS:
        state = "UNKNOWN"
    return DeviceState(device, state)


def hint_devices(hint: str) -> tuple[str, ...]:
    """The devices a hint aggregates: `PJSIP/105&Custom:105,CustomPresence:105`
    gives ('PJSIP/105', 'Custom:105'); the part after the comma is presence."""
    devices, _, _presence = hint.partition(",")
    return tuple(d.strip() for d in devices.split("&") if d.strip())


def aggregate_status(device_states: Iterable[str]) -> int:
    """The extension status Asterisk derives from the states of a hint's devices
    (ast_devstate_aggregate_add, then ast_devstate_to_extenstate)."""
    result = "INVALID"
    ringing = inuse = False
    for state in device_states:
        state = state if state in _AGGREGATE_RANK else "UNKNOWN"
        if state == "RINGING":
            ringing = True
        elif state in ("INUSE", "ONHOLD", "BUSY"):
            inuse = True
        if ringing and inuse:
            result = "RINGINUSE"
        elif _AGGREGATE_RANK[state] > _AGGREGATE_RANK[result]:
            result = state
    return DEVICE_TO_STATUS[result]


def status_from_devices(hint: str, devices: Mapping[str, str]) -> int | None:
    """The status a hint has given known device states, or None when any of its
    devices is not known (then only Asterisk's own ExtensionStatus can tell)."""
    names = hint_devices(hint)
    if not names or any(name not in devices for name in names):
        return None
    return aggregate_status(devices[name] for name in names)


# The start of a state the PBX did not tell: a list at login says what is, not since when
# (ExtensionStateList, DeviceStateList, PresenceStateList). Shown as no duration at all.
UNKNOWN_START = 0.0

# Presence (func_presencestate): separate from the call state; a DND phone can still ring.
PRESENCE_STATES: tuple[str, ...] = ("available", "away", "xa", "chat", "dnd", "unavailable", "not_set")


@dataclass(frozen=True, slots=True)
class Presence:
    """A presentity's state, e.g. CustomPresence:100 is dnd / meeting / "In a meeting"."""

    state: str
    subtype: str = ""
    message: str = ""
    # When it began (epoch seconds), from events only: UNKNOWN_START for a presence listed at
    # login. Not part of equality: the same presence told again is no change, and keeps its start.
    since: float = field(default=UNKNOWN_START, compare=False)

    def as_dict(self) -> PresenceJSON:
        return {
            "state": self.state,
            "subtype": self.subtype,
            "message": self.message,
            "since": round(self.since, 3),
        }


def parse_presence(frame: Mapping[str, str]) -> Presence:
    """The presence of a `PresenceStateChange`/`PresenceStatus` event or list item;
    an unknown value becomes `not_set` (never an error: it is only shown)."""
    state = (frame.get("Status") or frame.get("State") or "").strip().lower()
    if state not in PRESENCE_STATES:
        state = "not_set"
    return Presence(
        state,
        clean_text(frame.get("Subtype"), MAX_PRESENCE_TEXT),
        clean_text(frame.get("Message"), MAX_PRESENCE_TEXT),
    )


def hint_presentity(hint: str) -> str | None:
    """`PJSIP/105&Custom:105,CustomPresence:105` gives 'CustomPresence:105'."""
    _devices, sep, presence = hint.partition(",")
    presence = presence.strip()
    return presence if sep and presence and DEVICE_RE.fullmatch(presence) else None


class HintIndex:
    """Which extensions a device, a presentity or an extension number belongs to, read
    off the hints. Built once per set of hints (rebuilt only when a hint changes): every
    device state change and every call event looks it up."""

    def __init__(self, states: Iterable[ExtensionState]) -> None:
        self._keys: dict[str, list[str]] = {}
        for state in states:
            self._keys.setdefault(f"exten:{state.exten}", []).append(state.key)
            presentity = hint_presentity(state.hint)
            for name in (*hint_devices(state.hint), *([presentity] if presentity else [])):
                self._keys.setdefault(name, []).append(state.key)

    def keys_holding(self, device: str) -> list[str]:
        """The extensions whose hint holds `device` (a phone, or a presentity)."""
        return self._keys.get(device, [])

    def keys_of_exten(self, exten: str) -> list[str]:
        return self._keys.get(f"exten:{exten}", [])

    def keys_of_phone(self, device: str) -> list[str]:
        """The extensions a phone's calls belong to: those whose hint holds the device, or,
        where no hint does (hints of Custom: lamps only), the extension named like the
        endpoint (`PJSIP/101` -> 101), as FreePBX names its endpoints."""
        keys = self.keys_holding(device)
        if keys:
            return keys
        _tech, _, endpoint = device.partition("/")
        return self.keys_of_exten(endpoint) if endpoint else []
