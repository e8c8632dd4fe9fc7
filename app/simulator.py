"""An AMI server that plays an Asterisk 22 PBX, for tests, the demo and `blf-panel simulate`.

It speaks the real wire protocol, byte for byte as recorded in tests/fixtures/ami/, so the
collector can be exercised end to end without a PBX. Each extension N has the hint
`N => Custom:N,CustomPresence:N` and a caller ID name. Device states change through
`Setvar DEVICE_STATE(Custom:N)`, presence through `Setvar PRESENCE_STATE(CustomPresence:N)`,
the control API (`set_device_state`, `set_presence`, `place_call`, `simulate_call`, `restart`,
`drop_all`, `freeze`) or random traffic ("churn": calls between extensions and from outside,
now and then a presence change). Calls send the channel events of a real one (transcript 14).
Where the brief and Asterisk differ, Asterisk's behaviour (main/manager.c, funcs/func_devstate.c,
funcs/func_presencestate.c, main/db.c, res/res_pjsip) wins, because the point is to find the
collector's bugs before a real PBX does.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import csv
import functools
import heapq
import hmac
import itertools
import logging
import os
import random
import re
import socket
import struct
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.settings import MAX_EXTENSIONS
from app.states import (
    CONTEXT_RE,
    DEVICE_STATES,
    EXTEN_RE,
    STATUS_TEXT,
    aggregate_status,
    hint_devices,
)

log = logging.getLogger(__name__)

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
MAX_FRAME_BYTES = 64 * 1024  # one client message; a client sending more is dropped
MAX_PENDING_BYTES = 8 * 1024 * 1024  # unread output before a client is dropped
WRITE_TIMEOUT = 5.0  # Asterisk drops a client that does not read (writetimeout)
CLOSE_TIMEOUT = 1.0  # time a graceful close may take before the socket is aborted

# manager.h EVENT_FLAG_* and the names manager.c perms[] gives them; "all" is INT_MAX.
EVENT_CLASSES: dict[str, int] = {
    name: 1 << bit
    for bit, name in enumerate(
        "system call log verbose command agent user config dtmf reporting cdr dialplan"
        " originate agi cc aoc test security message".split()
    )
}
ALL_EVENTS = 0x7FFFFFFF
SYSTEM = EVENT_CLASSES["system"]
CALL = EVENT_CLASSES["call"]
SECURITY = EVENT_CLASSES["security"]
_TRUE = frozenset({"yes", "true", "y", "t", "1", "on"})  # ast_true()
_FALSE = frozenset({"no", "false", "n", "f", "0", "off"})  # ast_false()

# The states func_devstate accepts (ast_devstate_val); UNKNOWN means "not a state" there.
SETTABLE_STATES = frozenset(DEVICE_STATES) - {"UNKNOWN"}
_DEVICE_STATE_FUNC = re.compile(r"DEVICE_STATE\((.*)\)", re.IGNORECASE | re.DOTALL)

# func_presencestate: PRESENCE_STATE(CustomPresence:N) = state[,subtype[,message[,options]]];
# the states of presencestate.c state2string, matched in any case, sent in lower case.
PRESENCE_STATES = ("not_set", "unavailable", "available", "away", "xa", "chat", "dnd")
_PRESENCE_STATE_FUNC = re.compile(r"PRESENCE_STATE\((.*)\)", re.IGNORECASE | re.DOTALL)
_CUSTOM_PRESENCE = "custompresence:"

# Churn: each step starts something, with these weights; the later steps of a call come from
# its schedule. Ring, talk, hold and offline lengths are nominal seconds; churn shortens them
# when R is high for the number of extensions, so that about R state changes a second happen
# with at most _BUSY_SHARE of the extensions in calls.
_CHURN_KINDS = {"internal": 0.55, "trunk": 0.35, "presence": 0.05, "offline": 0.05}
_MISSED_SHARE = 0.2  # calls nobody answers: the caller gives up while it rings
_HOLD_SHARE = 0.25  # answered calls with a hold in them
_BUSY_SHARE = 0.3
_RING_SECONDS = (2.0, 6.0)
_TALK_MEAN = 25.0
_HOLD_SECONDS = (3.0, 10.0)
_OFFLINE_SECONDS = (5.0, 30.0)
_CHURN_PRESENCE = (
    ("available", "", ""),
    ("away", "lunch", "Back at 2"),
    ("away", "", ""),
    ("dnd", "meeting", "In a meeting"),
    ("xa", "vacation", "On holiday"),
    ("chat", "", ""),
)
# The device changes a churn step makes on average: an answered call between extensions 5
# (callee RINGING, caller INUSE, callee INUSE, both NOT_INUSE) and 2 more with a hold, a missed
# one 4; a call from outside 3 or 2 (the trunk has no lamp, and the extension is the one that
# holds); a presence change counts 1, a phone going offline and back 2.
_INTERNAL_CHANGES = (1 - _MISSED_SHARE) * (5 + 2 * _HOLD_SHARE) + _MISSED_SHARE * 4
_TRUNK_CHANGES = (1 - _MISSED_SHARE) * 3 + _MISSED_SHARE * 2
_CHANGES_PER_STEP = (
    _CHURN_KINDS["internal"] * _INTERNAL_CHANGES
    + _CHURN_KINDS["trunk"] * _TRUNK_CHANGES
    + _CHURN_KINDS["presence"] * 1
    + _CHURN_KINDS["offline"] * 2
)
_CALL_SHARE = _CHURN_KINDS["internal"] + _CHURN_KINDS["trunk"]
_PARTIES_PER_CALL = (2 * _CHURN_KINDS["internal"] + _CHURN_KINDS["trunk"]) / _CALL_SHARE
_NOMINAL_CALL_SECONDS = sum(_RING_SECONDS) / 2 + _TALK_MEAN + _HOLD_SHARE * sum(_HOLD_SECONDS) / 2
# The CLI commands the `Command` action knows; anything else is "No such command".
_RELOAD_COMMANDS = frozenset({"dialplan reload"})
_RESTART_COMMANDS = frozenset({"core restart now", "core restart gracefully", "core restart when convenient"})
_SHOW_CONNECTED = "manager show connected"
# A few real commands more, only so the "No such command" text names the right prefix.
_OTHER_COMMANDS = (
    "core show channels",
    "core show uptime",
    "core show version",
    "core show hints",
    "devstate change",
    "dialplan show",
    "module reload",
    "pjsip show endpoints",
)


# --- wire format ---


def encode(headers: Iterable[tuple[str, object]]) -> bytes:
    """One AMI message: `Key: Value` lines and a blank line, all CRLF."""
    text = "".join(f"{key}: {value}\r\n" for key, value in headers) + "\r\n"
    return text.encode("latin-1", "replace")


def response(status: str, action_id: str, *headers: tuple[str, object]) -> bytes:
    """A reply; `ActionID` comes right after `Response` and only when the client sent one."""
    lead: list[tuple[str, object]] = [("Response", status)]
    if action_id:
        lead.append(("ActionID", action_id))
    return encode([*lead, *headers])


def error(action_id: str, message: str) -> bytes:
    return response("Error", action_id, ("Message", message))


def extension_status(
    exten: str, context: str, hint: str, status: int, *, list_id: str | None = None
) -> bytes:
    """An ExtensionStatus event: unsolicited it carries `Privilege: call,all`; as an item of
    ExtensionStateList (list_id given) it carries the ActionID instead (transcript 03)."""
    if list_id is None:
        lead = [("Privilege", "call,all")]
    else:
        lead = [("ActionID", list_id)] if list_id else []
    return encode(
        [
            ("Event", "ExtensionStatus"),
            *lead,
            ("Exten", exten),
            ("Context", context),
            ("Hint", hint),
            ("Status", status),
            ("StatusText", STATUS_TEXT.get(status, "Unknown")),
        ]
    )


def device_state_change(device: str, state: str, *, list_id: str | None = None) -> bytes:
    """A DeviceStateChange event, unsolicited or as a DeviceStateList item (transcript 04)."""
    if list_id is None:
        lead = [("Privilege", "call,all")]
    else:
        lead = [("ActionID", list_id)] if list_id else []
    return encode([("Event", "DeviceStateChange"), *lead, ("Device", device), ("State", state)])


def list_complete(event: str, action_id: str, count: int) -> bytes:
    lead = [("ActionID", action_id)] if action_id else []
    return encode([("Event", event), *lead, ("EventList", "Complete"), ("ListItems", count)])


def command_output(status: str, action_id: str, lines: Iterable[str]) -> bytes:
    """The reply to `Action: Command` since Asterisk 14: one `Output:` header per line."""
    output = [("Output", line) for line in lines]
    return response(status, action_id, ("Message", "Command output follows"), *output)


# manager.c handle_showmanconn(): the header and one line per session, same widths.
_CONNECTED_ROW = "  {:<15.15}  {:<55.55}  {:<10}  {:<10}  {:<8}  {:<8}  {:<50.50} {:<50.50}"
_CONNECTED_HEADER = (
    *("Username", "IP Address", "Start", "Elapsed"),
    *("FileDes", "HttpCnt", "ReadPerms", "WritePerms"),
)


def authority_to_str(mask: int) -> str:
    """manager.c authority_to_str(): the class names a permission mask holds, comma-joined."""
    names = [name for name, bit in EVENT_CLASSES.items() if mask & bit]
    return ",".join(names) or "<none>"


def connected_lines(sessions: Iterable[tuple[str, str, int, int, int]], now: float) -> list[str]:
    """`manager show connected`: (username, ip, start epoch, fd, perms) per logged-in session,
    then the count. Lines are right-trimmed, as the header the CLI prints."""
    rows = [_CONNECTED_ROW.format(*_CONNECTED_HEADER).rstrip()]
    for username, ip, start, fd, perms in sessions:
        perm_text = authority_to_str(perms)
        rows.append(
            _CONNECTED_ROW.format(username, ip, start, int(now) - start, fd, 0, perm_text, perm_text).rstrip()
        )
    rows.append(f"{len(rows) - 1} users connected.")
    return rows


def shutdown_event() -> bytes:
    return encode(
        [
            ("Event", "Shutdown"),
            ("Privilege", "system,all"),
            ("Shutdown", "Cleanly"),
            ("Restart", "True"),
        ]
    )


def event_mask(text: str) -> int | None:
    """The event classes an `Events:`/`EventMask:` value asks for, as manager.c's
    strings_to_mask(): a number, on/off words, or a comma list of class names (matched
    exactly, as ast_instring does). None for an empty value: the mask stays as it was."""
    if not text:
        return None
    if re.fullmatch(r"[0-9]+", text):
        return int(text) & ALL_EVENTS
    if text.lower() in _FALSE:
        return 0
    if text.lower() in _TRUE:
        return ALL_EVENTS
    mask = 0
    for name in text.split(","):
        mask |= ALL_EVENTS if name == "all" else EVENT_CLASSES.get(name, 0)
    return mask


def devstate_write(argument: str, value: str) -> tuple[str, str] | None:
    """The (device, state) `Set(DEVICE_STATE(argument)=value)` sets, or None where
    func_devstate's devstate_write() refuses: not a `Custom:` device, or a value that
    ast_devstate_val() does not know (UNKNOWN included). Asterisk then answers
    "Variable not set" and changes nothing."""
    prefix, name = argument[:7], argument[7:]
    state = value.upper()
    if prefix.lower() != "custom:" or not name or state not in SETTABLE_STATES:
        return None
    return f"Custom:{name}", state


def presence_write(argument: str, value: str) -> tuple[str, Presence] | None:
    """The (presentity, presence) `Set(PRESENCE_STATE(argument)=value)` sets, or None where
    func_presencestate's presence_write() refuses: not a `CustomPresence:` provider, no name
    after it, or a value parse_data() rejects. Asterisk then answers "Variable not set"."""
    if argument[: len(_CUSTOM_PRESENCE)].lower() != _CUSTOM_PRESENCE or not argument[len(_CUSTOM_PRESENCE) :]:
        return None
    presence = parse_presence_value(value)
    return None if presence is None else (argument, presence)


def _ami_address(sockaddr: Any) -> str:
    """`IPV4/TCP/127.0.0.1/15038`, as security events name an address."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        return "IPV4/TCP/0.0.0.0/0"
    host, port = sockaddr[0], sockaddr[1]
    return f"IPV{6 if ':' in host else 4}/TCP/{host}/{port}"


def _event_tv() -> str:
    """`2026-11-26T15:21:30.236+0000`: local time, milliseconds, numeric zone."""
    now = datetime.now().astimezone()
    return f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}{now:%z}"


def _timestamp() -> str:
    """Ping's `Timestamp`: epoch seconds with 6 decimals (%ld.%06lu)."""
    ns = time.time_ns()
    return f"{ns // 1_000_000_000}.{ns // 1000 % 1_000_000:06d}"


# --- presence (func_presencestate) ---


@dataclass(frozen=True)
class Presence:
    """A presence as events carry it: state in lower case, subtype and message."""

    state: str
    subtype: str = ""
    message: str = ""


def parse_presence_value(value: str) -> Presence | None:
    """func_presencestate parse_data(): `state[,subtype[,message[,options]]]` split at every
    comma (a message cannot hold one), the state matched in any case; option `e` means
    subtype and message are base64. None where Asterisk refuses the value."""
    parts = value.split(",")
    state = parts[0].lower()
    subtype, message, options = (parts[1:4] + ["", "", ""])[:3]
    if state not in PRESENCE_STATES or (options and "e" not in options):
        return None
    if "e" in options:
        subtype, message = _base64_text(subtype), _base64_text(message)
    return Presence(state, subtype, message)


def _base64_text(text: str) -> str:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4)).decode("latin-1")  # bytes as they are
    except (binascii.Error, ValueError):
        return ""


def presence_state_change(presentity: str, presence: Presence, *, list_id: str | None = None) -> bytes:
    """A PresenceStateChange event, unsolicited or as a PresenceStateList item (transcript 12)."""
    if list_id is None:
        lead = [("Privilege", "call,all")]
    else:
        lead = [("ActionID", list_id)] if list_id else []
    return encode(
        [
            ("Event", "PresenceStateChange"),
            *lead,
            ("Presentity", presentity),
            ("Status", presence.state),
            ("Subtype", presence.subtype),
            ("Message", presence.message),
        ]
    )


def presence_status(exten: str, context: str, hint: str, presence: Presence) -> bytes:
    """The PresenceStatus event a hint sends when its presence changed (transcript 12)."""
    return encode(
        [
            ("Event", "PresenceStatus"),
            ("Privilege", "call,all"),
            ("Exten", exten),
            ("Context", context),
            ("Hint", hint),
            ("Status", presence.state),
            ("Subtype", presence.subtype),
            ("Message", presence.message),
        ]
    )


# --- names ---

_FIRST_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Felix", "Greta", "Hannah", "Ivan", "Julia",
    "Karim", "Laura", "Marco", "Nina", "Oliver", "Paula", "Quentin", "Rosa", "Samir", "Tanja",
    "Umut", "Vera", "Walter", "Xenia", "Yusuf", "Zoe", "Aylin", "Jonas", "Mia", "Lukas",
    "Sofia", "Emil", "Leonie", "Noah", "Clara", "Finn", "Ida", "Mateo", "Lea", "Tom",
)  # fmt: skip
_SURNAMES = (
    "Smith", "Müller", "Schmidt", "Rossi", "Novak", "García", "Jansen", "Kowalski", "Dubois",
    "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Hoffmann", "Schulz", "Koch", "Richter",
    "Klein", "Wolf", "Yilmaz", "Neumann", "Schwarz", "Braun", "Zimmermann", "Hartmann",
    "Lange", "Krüger", "Lehmann", "Kaiser", "Peters", "Berg", "Lindqvist", "Moreau", "Silva",
    "Horvat", "Nagy", "O'Brien", "Costa", "Keller",
)  # fmt: skip
MAX_NAME = 80


def generated_name(exten: str, seed: int | None = None) -> str:
    """A plausible first name and surname for an extension; the same for the same seed."""
    rng = random.Random(f"blf-panel/names/{seed}/{exten}")
    return f"{rng.choice(_FIRST_NAMES)} {rng.choice(_SURNAMES)}"


def check_name(exten: str, name: str) -> str:
    """A caller ID name as the simulator accepts it: one line of text, not too long."""
    if not EXTEN_RE.fullmatch(exten):
        raise ValueError(f"invalid extension {exten!r}")
    if not name.strip() or len(name) > MAX_NAME or re.search(r"[\x00-\x1f\x7f]", name):
        raise ValueError(f"bad name for {exten}: {name[:40]!r} (1-{MAX_NAME} characters, one line)")
    return name.strip()


def load_names(path: str | os.PathLike[str]) -> dict[str, str]:
    """Names from a CSV file of `exten,name` lines (the panel's directory file works too:
    further columns are ignored). A header line `exten,...`, blank lines and lines starting
    with `#` are skipped; quote a name that holds a comma. A bad line raises ValueError."""
    names: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as file:
        for number, row in enumerate(csv.reader(file), 1):
            if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                continue
            if not names and row[0].strip().lower() == "exten":
                continue
            if len(row) < 2:
                raise ValueError(f"{path}, line {number}: expected exten,name")
            try:
                names[row[0].strip()] = check_name(row[0].strip(), row[1])
            except ValueError as problem:
                raise ValueError(f"{path}, line {number}: {problem}") from None
    return names


def wire_text(text: str) -> str:
    """Text as Asterisk sends it, UTF-8, held as latin-1 characters like everything the
    simulator reads from clients (`encode` writes latin-1, so the bytes go out unchanged)."""
    return text.encode("utf-8").decode("latin-1")


def callerid_merge(name: str, number: str) -> str:
    """callerid.c ast_callerid_merge(): `"Anna Smith" <101>`, quotes and backslashes escaped."""
    if name and number:
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{number}>'
    return name or number or "<unknown>"


# ast_devstate2str(): the DeviceState text of PJSIP endpoints.
_DEVICE_STATE_TEXT = {
    "UNKNOWN": "Unknown",
    "NOT_INUSE": "Not in use",
    "INUSE": "In use",
    "BUSY": "Busy",
    "INVALID": "Invalid",
    "UNAVAILABLE": "Unavailable",
    "RINGING": "Ringing",
    "RINGINUSE": "Ring+Inuse",
    "ONHOLD": "On Hold",
}

# The EndpointDetail of a phone. Asterisk lists the sorcery fields in the order of its hash
# container. The fields up to SrtpTag32 are in the order of a real Asterisk 22 dump (asterisk
# issue #1254); no transcript covers the rest, which come in an order of our own, shortened.
_ENDPOINT_FIELDS: tuple[tuple[str, str], ...] = (
    ("RpidImmediate", "false"),
    ("Webrtc", "no"),
    ("Ignore183WithoutSdp", "false"),
    ("SendAoc", "false"),
    ("DeviceStateBusyAt", "0"),
    ("T38UdptlMaxdatagram", "0"),
    ("CodecPrefsIncomingAnswer", "prefer:pending, operation:intersect, keep:all, transcode:allow"),
    ("SecurityNegotiation", "no"),
    ("DtlsRekey", "0"),
    ("NamedPickupGroup", ""),
    ("DirectMediaMethod", "invite"),
    ("SendRpid", "false"),
    ("PickupGroup", ""),
    ("SdpSession", "Asterisk"),
    ("DtlsVerify", "No"),
    ("MessageContext", ""),
    ("Tenantid", ""),
    ("Mailboxes", ""),
    ("RecordOnFeature", "automixmon"),
    ("DtlsPrivateKey", ""),
    ("DtlsFingerprint", "SHA-256"),
    ("OverlapContext", ""),
    ("OutgoingCallOfferPref", "remote_merge"),
    ("FromDomain", ""),
    ("TimersSessExpires", "1800"),
    ("NamedCallGroup", ""),
    ("DtlsCipher", ""),
    ("MediaEncryptionOptimistic", "false"),
    ("SuppressQ850ReasonHeaders", "false"),
    ("Aors", "{exten}"),
    ("IdentifyBy", "username,ip"),
    ("CalleridPrivacy", "allowed_not_screened"),
    ("MwiSubscribeReplacesUnsolicited", "no"),
    ("CosAudio", "0"),
    ("FollowEarlyMediaFork", "true"),
    ("Context", "{context}"),
    ("RtpSymmetric", "true"),
    ("Transport", "transport-udp"),
    ("MohSuggest", "default"),
    ("T38Udptl", "false"),
    ("FaxDetect", "false"),
    ("T38BindUdptlToMediaAddress", "false"),
    ("TosVideo", "0"),
    ("SrtpTag32", "false"),
    ("Auth", "{exten}"),
    ("OutboundAuth", ""),
    ("Callerid", "{callerid}"),
    ("CalleridTag", ""),
    ("Allow", "(ulaw|alaw)"),
    ("DtmfMode", "rfc4733"),
    ("DirectMedia", "false"),
    ("ForceRport", "true"),
    ("RewriteContact", "true"),
    ("TrustIdInbound", "false"),
    ("TrustIdOutbound", "false"),
    ("SendPai", "false"),
    ("Language", ""),
    ("AllowSubscribe", "true"),
    ("SubscribeContext", ""),
    ("AccountCode", ""),
)


def endpoint_detail(
    exten: str, name: str, context: str, device_state: str, channels: int, action_id: str
) -> bytes:
    """res_pjsip format_ami_endpoint(): the sorcery fields, then DeviceState and
    ActiveChannels (a count of the endpoint's channels since asterisk issue #1254's fix)."""
    values = {"exten": exten, "context": context, "callerid": callerid_merge(name, exten)}
    lead = [("ActionID", action_id)] if action_id else []
    return encode(
        [
            ("Event", "EndpointDetail"),
            *lead,
            ("ObjectType", "endpoint"),
            ("ObjectName", exten),
            *((key, value.format(**values)) for key, value in _ENDPOINT_FIELDS),
            ("DeviceState", _DEVICE_STATE_TEXT.get(device_state, "Unknown")),
            ("ActiveChannels", channels),
        ]
    )


# --- calls: channels, bridges and the events of one call (transcript 14) ---

_STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}
DOWN, RING, RINGING, UP = 0, 4, 5, 6
TRUNK = "trunk"  # the PJSIP endpoint outside calls come in on
TRUNK_CONTEXT = "from-trunk"
_OUTSIDE_NUMBER = re.compile(r"\+?[0-9]{3,20}")
_NORMAL_CLEARING = (("Cause", 16), ("Cause-txt", "Normal Clearing"))


@dataclass(eq=False)
class Channel:
    """A channel snapshot as manager_channels.c prints it (the fields of every channel event)."""

    name: str
    uniqueid: str
    linkedid: str
    caller_num: str
    caller_name: str
    context: str
    exten: str
    state: int = DOWN
    priority: int = 1
    connected_num: str = ""
    connected_name: str = ""
    application: str = ""
    app_data: str = ""
    bridge_id: str = ""
    created: float = field(default_factory=time.monotonic)

    def headers(self, prefix: str = "") -> list[tuple[str, object]]:
        return [
            (f"{prefix}Channel", self.name),
            (f"{prefix}ChannelState", self.state),
            (f"{prefix}ChannelStateDesc", _STATE_DESC[self.state]),
            (f"{prefix}CallerIDNum", self.caller_num or "<unknown>"),
            (f"{prefix}CallerIDName", self.caller_name or "<unknown>"),
            (f"{prefix}ConnectedLineNum", self.connected_num or "<unknown>"),
            (f"{prefix}ConnectedLineName", self.connected_name or "<unknown>"),
            (f"{prefix}Language", "en"),
            (f"{prefix}AccountCode", ""),
            (f"{prefix}Context", self.context),
            (f"{prefix}Exten", self.exten),
            (f"{prefix}Priority", self.priority),
            (f"{prefix}Uniqueid", self.uniqueid),
            (f"{prefix}Linkedid", self.linkedid),
        ]

    def connect(self, other: Channel) -> None:
        self.connected_num, self.connected_name = other.caller_num, other.caller_name


@dataclass(eq=False)
class Bridge:
    """A basic two-party bridge; Asterisk moves it from simple_bridge to native_rtp once both
    channels are in, without an event (transcript 14)."""

    id: str
    technology: str = "simple_bridge"
    channels: int = 0

    def headers(self) -> list[tuple[str, object]]:
        return [
            ("BridgeUniqueid", self.id),
            ("BridgeType", "basic"),
            ("BridgeTechnology", self.technology),
            ("BridgeCreator", "<unknown>"),
            ("BridgeName", "<unknown>"),
            ("BridgeNumChannels", self.channels),
            ("BridgeVideoSourceMode", "none"),
        ]


def channel_event(event: str, channel: Channel, *extra: tuple[str, object]) -> bytes:
    return encode([("Event", event), ("Privilege", "call,all"), *channel.headers(), *extra])


def dial_event(event: str, caller: Channel, callee: Channel, *extra: tuple[str, object]) -> bytes:
    """DialBegin/DialState/DialEnd: the caller's snapshot, then the callee's as Dest*."""
    headers = [*caller.headers(), *callee.headers("Dest"), *extra]
    return encode([("Event", event), ("Privilege", "call,all"), *headers])


def bridge_event(event: str, bridge: Bridge, channel: Channel | None = None) -> bytes:
    headers = [*bridge.headers(), *(channel.headers() if channel else [])]
    return encode([("Event", event), ("Privilege", "call,all"), *headers])


def core_show_channel(channel: Channel, action_id: str, now: float) -> bytes:
    """A CoreShowChannel item (transcript 15): no Privilege, Duration HH:MM:SS."""
    seconds = max(0, int(now - channel.created))
    lead = [("ActionID", action_id)] if action_id else []
    return encode(
        [
            ("Event", "CoreShowChannel"),
            *lead,
            *channel.headers(),
            ("Application", channel.application),
            ("ApplicationData", channel.app_data),
            ("Duration", f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"),
            ("BridgeId", channel.bridge_id),
        ]
    )


@dataclass(frozen=True)
class Party:
    """One end of a call: a phone (`exten` set) or an outside caller on the trunk."""

    number: str
    name: str
    exten: str | None

    @property
    def endpoint(self) -> str:
        return self.exten or TRUNK


class SimulatedCall:
    """One call through the simulated PBX, from the moment it rings (`Simulator.place_call`)
    to `hang_up` or `give_up`, sending what Asterisk 22 sends for `exten => _10X,1,NoOp()`,
    `n,Dial(PJSIP/${EXTEN},30)` (transcript 14; VarSet and Newexten, dialplan class, are left
    out) and moving the phones' device states in step: callee RINGING, caller INUSE, answered
    INUSE, the party hearing music on hold ONHOLD, NOT_INUSE at the end."""

    def __init__(self, pbx: Simulator, caller: Party, callee: Party) -> None:
        self.pbx = pbx
        self.caller = caller
        self.callee = callee
        self.held_by = ""
        self._bridge: Bridge | None = None
        context = pbx.context if caller.exten else TRUNK_CONTEXT
        self.a = pbx._open_channel(caller, context=context, exten=str(callee.exten), state=RING)
        self.b = pbx._open_channel(callee, context=pbx.context, exten="s", linkedid=self.a.uniqueid)
        self.state = "ringing"  # up, held, ended
        self._ring()

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    def _ring(self) -> None:
        """The caller dials: both channels, the dial, the callee ringing."""
        a, b, callee = self.a, self.b, self.callee
        self._emit(channel_event("Newchannel", a))
        a.priority, a.application, a.app_data = 2, "Dial", f"PJSIP/{callee.exten},30"
        self._emit(channel_event("Newchannel", b))
        b.connect(a)
        b.exten, b.application, b.app_data = str(callee.exten), "AppDial", "(Outgoing Line)"
        self._emit(channel_event("NewConnectedLine", b))
        self._emit(dial_event("DialBegin", a, b, ("DialString", callee.exten)))
        a.connect(b)
        self._emit(channel_event("NewConnectedLine", a))
        b.state = RINGING
        self._emit(channel_event("Newstate", b))
        self.pbx._set_phone(callee, "RINGING")
        self._emit(dial_event("DialState", a, b, ("DialStatus", "RINGING")))
        self.pbx._set_phone(self.caller, "INUSE")

    def answer(self) -> None:
        """The callee picks up: both channels Up, into a bridge."""
        self._expect("ringing")
        a, b = self.a, self.b
        b.state = UP
        self._emit(channel_event("Newstate", b))
        self.pbx._set_phone(self.callee, "INUSE")
        b.exten = ""
        self._emit(dial_event("DialEnd", a, b, ("DialStatus", "ANSWER")))
        a.state = UP
        self._emit(channel_event("Newstate", a))
        bridge = self._bridge = Bridge(str(uuid.uuid4()))
        self._emit(bridge_event("BridgeCreate", bridge))
        for channel in (b, a):
            bridge.channels += 1
            channel.bridge_id = bridge.id
            self._emit(bridge_event("BridgeEnter", bridge, channel))
        bridge.technology = "native_rtp"
        self.state = "up"

    def hold(self, by: str = "caller") -> None:
        """`by` ("caller" or "callee") puts the other party on hold: Hold is on the holder's
        channel, the other one hears music and its device goes ONHOLD."""
        self._expect("up")
        holder, held, party = self._sides(by)
        self._emit(channel_event("Hold", holder, ("MusicClass", "default")))
        self._emit(channel_event("MusicOnHoldStart", held, ("Class", "default")))
        self.pbx._set_phone(party, "ONHOLD")
        self.state, self.held_by = "held", by

    def unhold(self) -> None:
        self._expect("held")
        holder, held, party = self._sides(self.held_by)
        self._emit(channel_event("Unhold", holder))
        self.pbx._set_phone(party, "INUSE")
        self._emit(channel_event("MusicOnHoldStop", held))
        self.state, self.held_by = "up", ""

    def hang_up(self) -> None:
        """The caller hangs up an answered call (taken off hold first)."""
        if self.state == "held":
            self.unhold()
        self._expect("up")
        a, b, bridge = self.a, self.b, self._bridge
        assert bridge is not None
        self._emit(channel_event("HangupRequest", a, ("Cause", 16)))
        self._leave(bridge, a)
        self._emit(channel_event("SoftHangupRequest", a, ("Cause", 16)))
        self._leave(bridge, b)
        self._emit(bridge_event("BridgeDestroy", bridge))
        self._finish(a, b)

    def give_up(self) -> None:
        """The caller hangs up while it still rings (a missed call). No transcript covers
        this: the events are app_dial's CANCEL path as we read it."""
        self._expect("ringing")
        self._emit(channel_event("HangupRequest", self.a, ("Cause", 16)))
        self._emit(dial_event("DialEnd", self.a, self.b, ("DialStatus", "CANCEL")))
        self._finish(self.b, self.a)  # Dial hangs up the dialed leg, then the caller goes

    def drop(self) -> None:
        """Forget the call without a word (the PBX restarted)."""
        for channel in (self.a, self.b):
            self.pbx._close_channel(channel)
        self.state = "ended"
        self.pbx._end_call(self, quiet=True)

    def _finish(self, first: Channel, second: Channel) -> None:
        for channel in (first, second):
            self._emit(channel_event("Hangup", channel, *_NORMAL_CLEARING))
            self.pbx._close_channel(channel)
        self.state = "ended"
        self.pbx._end_call(self)

    def _leave(self, bridge: Bridge, channel: Channel) -> None:
        bridge.channels -= 1
        channel.bridge_id = ""
        self._emit(bridge_event("BridgeLeave", bridge, channel))

    def _sides(self, by: str) -> tuple[Channel, Channel, Party]:
        """(holder's channel, held channel, held party)."""
        if by == "caller":
            return self.a, self.b, self.callee
        if by == "callee":
            return self.b, self.a, self.caller
        raise ValueError(f"hold by 'caller' or 'callee', not {by!r}")

    def _expect(self, state: str) -> None:
        if self.state != state:
            raise RuntimeError(f"the call {self.caller.number} -> {self.callee.number} is {self.state}")

    def _emit(self, data: bytes) -> None:
        self.pbx._broadcast(CALL, data)


def call_schedule(
    call: SimulatedCall,
    *,
    ring: float,
    talk: float,
    hold: float | None = None,
    hold_by: str = "caller",
    answer: bool = True,
) -> list[tuple[float, Callable[[], None]]]:
    """The steps of a ringing call, each with the seconds to wait before it: it rings `ring`
    seconds, then the caller gives up or the callee answers; they talk `talk` seconds (with
    a hold of `hold` seconds in the middle, when given) and the caller hangs up."""
    if not answer:
        return [(ring, call.give_up)]
    steps: list[tuple[float, Callable[[], None]]] = [(ring, call.answer)]
    if hold is None:
        return [*steps, (talk, call.hang_up)]
    return [
        *steps,
        (talk / 2, functools.partial(call.hold, hold_by)),
        (hold, call.unhold),
        (talk / 2, call.hang_up),
    ]


def _step_unless_ended(call: SimulatedCall, step: Callable[[], None]) -> None:
    """A scheduled step of a call that may have ended meanwhile (a restart dropped it) or
    been moved on by hand."""
    if call.ended:
        return
    try:
        step()
    except RuntimeError as problem:
        log.debug("churn: %s", problem)


# --- reading client messages ---


class FrameTooLarge(Exception):
    """A client message grew past MAX_FRAME_BYTES without its blank line: garbage."""


class Frame:
    """One client message. Lookups are case-insensitive and the first match wins, and only
    the blanks after the colon are skipped, as astman_get_header() does."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines

    def get(self, name: str) -> str:
        prefix = name.lower() + ":"
        for line in self.lines:
            if line[: len(prefix)].lower() == prefix:
                return line[len(prefix) :].lstrip(" \t")
        return ""


async def read_frame(reader: asyncio.StreamReader) -> Frame:
    """The next message: lines up to a blank line (CRLF, or a bare LF from sloppy clients).
    Raises IncompleteReadError at EOF and FrameTooLarge/LimitOverrunError for garbage."""
    lines: list[str] = []
    size = 0
    while True:
        raw = await reader.readuntil(b"\n")
        size += len(raw)
        if size > MAX_FRAME_BYTES:
            raise FrameTooLarge(f"message over {MAX_FRAME_BYTES} bytes")
        line = raw.rstrip(b"\r\n").decode("latin-1")
        if line:
            lines.append(line)
        elif lines:
            return Frame(lines)
        else:
            size = 0  # blank lines between messages are not part of one


# --- the server ---


class Simulator:
    """A fake Asterisk PBX listening on a TCP port: hints `N => Custom:N,CustomPresence:N` in
    `context`, a PJSIP endpoint per extension whose caller ID name comes from `names` (else a
    generated one), device states kept per device, presences in astdb, calls with their
    channels, and events to every logged-in client that asked for them."""

    def __init__(
        self,
        extensions: list[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = "blf",
        secret: str = "blfsecret",
        context: str = "ext-local",
        churn: float = 0.0,
        seed: int | None = None,
        names: Mapping[str, str] | None = None,
    ) -> None:
        if not CONTEXT_RE.fullmatch(context):
            raise ValueError(f"invalid dialplan context {context!r}")
        if churn < 0:
            raise ValueError("churn must be 0 or more changes per second")
        self.host = host
        self.port = port
        self.username = username
        self.secret = secret
        self.context = context
        self.churn = churn
        self.logins = 0
        self.peak_sessions = 0  # most logged-in clients at once (one collector: 1)
        self._rng = random.Random(seed)
        self._seed = seed
        self._names = {exten: check_name(exten, name) for exten, name in (names or {}).items()}
        self._hints: dict[str, str] = {}  # exten -> hint, in dialplan order
        self._device_hints: dict[str, list[str]] = {}  # device -> extens whose hint has it
        self._presence_hints: dict[str, list[str]] = {}  # presentity (lower case) -> extens
        self._devices: dict[str, str] = {}  # device -> state; kept across restarts, like astdb
        self._astdb: dict[tuple[str, str], str] = {}  # (family, key) -> value, kept across restarts
        self._presences: dict[str, Presence] = {}  # the stasis cache, newest last; lost on restart
        self._channels: dict[str, Channel] = {}  # name -> channel, oldest first
        self._calls: dict[str, SimulatedCall] = {}  # exten -> the call it is in
        self._offline: set[str] = set()  # extensions churn took off the network
        self._channel_seq = itertools.count()  # chan_pjsip's channel number (hex in names)
        self._uniqueid_seq = itertools.count()  # the counter after the dot of a Uniqueid
        self._agenda: list[tuple[float, int, Callable[[], None]]] = []  # churn's later steps
        self._agenda_seq = itertools.count()
        self._clock = 0.0  # churn's virtual time, seconds since it started
        self._set_extensions(extensions)
        self._server: asyncio.Server | None = None
        self._sessions: set[_Session] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._churn_task: asyncio.Task[None] | None = None
        self._thawed = asyncio.Event()
        self._thawed.set()
        self._started_at = self._reloaded_at = time.monotonic()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # --- lifecycle ---

    async def start(self) -> None:
        """Bind and serve; with port 0 the chosen port is in `self.port` afterwards."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._server = await asyncio.start_server(
            self._on_connect, self.host, self.port, limit=MAX_FRAME_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._started_at = self._reloaded_at = time.monotonic()
        if self.churn > 0:
            self._churn_task = asyncio.create_task(self._churn(), name=f"ami-simulator-churn-{self.port}")
        log.info(
            "simulated Asterisk on %s:%d: %d hints in %s, churn %g/s",
            self.host,
            self.port,
            len(self._hints),
            self.context,
            self.churn,
        )

    async def stop(self) -> None:
        """Stop churn and restarts, close the listener and every client; safe to call twice."""
        tasks = [task for task in (self._churn_task, *self._tasks) if task is not None]
        self._churn_task = None
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        server, self._server = self._server, None
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
            if server is not None:
                server.close()
            sessions = list(self._sessions)
            for session in sessions:
                session.abort()
            self._thawed.set()  # sessions still waiting for a thaw end at once too
            await asyncio.gather(*(s.close("abort") for s in sessions))
            if server is not None:
                await server.wait_closed()
        finally:
            self._thawed.set()
            if server is not None:
                log.info("simulated Asterisk on port %d stopped", self.port)

    # --- control API (tests, demo) ---

    @property
    def sessions(self) -> int:
        """Clients connected and logged in right now."""
        return sum(1 for session in self._sessions if session.authenticated)

    @property
    def extensions(self) -> list[str]:
        return list(self._hints)

    @property
    def frozen(self) -> bool:
        return not self._thawed.is_set()

    def device_state(self, device: str) -> str:
        return self._devices.get(device, "UNKNOWN")

    def extension_status(self, exten: str) -> int:
        return self._status(exten)

    def set_device_state(self, device: str, state: str) -> None:
        """Change a device as `devstate change` / Setvar DEVICE_STATE would. Unlike Setvar,
        UNKNOWN is allowed (a real channel driver can report it)."""
        state = state.upper()
        if state not in DEVICE_STATES:
            raise ValueError(f"{state!r} is not one of {', '.join(DEVICE_STATES)}")
        self._change_device(device, state)

    def name_of(self, exten: str) -> str:
        """The caller ID name of an extension: from `names`, else a generated one."""
        if exten not in self._names:
            self._names[exten] = generated_name(exten, self._seed)
        return self._names[exten]

    def set_presence(self, who: str, state: str, subtype: str = "", message: str = "") -> None:
        """Change a presence as `presencestate change CustomPresence:N state,subtype,message`
        does; `who` is an extension or a `CustomPresence:` presentity."""
        presentity = who if who.lower().startswith(_CUSTOM_PRESENCE) else f"CustomPresence:{who}"
        if "," in subtype or "," in message:
            raise ValueError("a presence subtype or message cannot hold a comma")
        self.write_presence(presentity, wire_text(f"{state},{subtype},{message}"))

    def presence(self, who: str) -> Presence | None:
        """The presence set for an extension or presentity (as astdb keeps it), or None."""
        name = who[len(_CUSTOM_PRESENCE) :] if who.lower().startswith(_CUSTOM_PRESENCE) else who
        return parse_presence_value(self._astdb.get(("CustomPresence", name), ""))

    def place_call(self, caller: str, callee: str, *, caller_name: str | None = None) -> SimulatedCall:
        """Start a call to extension `callee` and let it ring; step it on with the call's
        `answer`, `hold`, `unhold`, `hang_up` or `give_up`. `caller` is an extension, or an
        outside number (`+4930123456`) that comes in on `PJSIP/trunk-...` with `caller_name`
        (default: a generated name)."""
        if callee not in self._hints:
            raise ValueError(f"{callee!r} is not an extension")
        if caller == callee:
            raise ValueError("a phone cannot call itself")
        source = self._party(caller, caller_name)
        for exten in (source.exten, callee):
            if exten is not None and exten in self._calls:
                raise ValueError(f"extension {exten} is already in a call")
        call = SimulatedCall(self, source, Party(callee, wire_text(self.name_of(callee)), callee))
        for exten in (source.exten, callee):
            if exten is not None:
                self._calls[exten] = call
        return call

    async def simulate_call(
        self,
        caller: str,
        callee: str,
        *,
        ring: float = 3.0,
        talk: float = 10.0,
        hold: float | None = None,
        hold_by: str = "caller",
        answer: bool = True,
        caller_name: str | None = None,
    ) -> SimulatedCall:
        """A whole call on its schedule (`call_schedule`): it rings `ring` seconds, is
        answered (or the caller gives up), talks `talk` seconds with a hold of `hold`
        seconds in the middle when given, and the caller hangs up. With zero times it steps
        through at once: `await sim.simulate_call("100", "101", ring=0, talk=0, hold=0)`."""
        if hold_by not in ("caller", "callee"):
            raise ValueError(f"hold_by is 'caller' or 'callee', not {hold_by!r}")
        call = self.place_call(caller, callee, caller_name=caller_name)
        steps = call_schedule(call, ring=ring, talk=talk, hold=hold, hold_by=hold_by, answer=answer)
        for delay, step in steps:
            await asyncio.sleep(delay)
            if call.ended:  # a restart dropped it
                break
            step()
        return call

    @property
    def calls(self) -> list[SimulatedCall]:
        """The calls in progress, oldest first."""
        return list(dict.fromkeys(self._calls.values()))

    @property
    def channels(self) -> list[str]:
        """The names of the channels up, oldest first."""
        return list(self._channels)

    def inject(self, data: bytes) -> None:
        """Send raw bytes to every logged-in client, whatever its event mask: malformed or
        hostile frames for the collector's input checks. Nothing goes out while frozen."""
        if self.frozen:
            return
        for session in list(self._sessions):
            if session.authenticated:
                session.send(data)

    async def drop_all(self) -> None:
        """Reset every client connection (a network failure); keep listening."""
        victims = list(self._sessions)
        log.info("dropping %d client connections", len(victims))
        await asyncio.gather(*(s.close("reset") for s in victims))

    async def restart(self, extensions: list[str] | None = None) -> None:
        """`core restart now`: Shutdown to every client, close them, optionally load a new
        set of extensions, and come back at once on the same port with uptime 0."""
        if extensions is not None:
            self._set_extensions(extensions)  # a bad list raises before anyone is told
        victims = list(self._sessions)
        log.info("restarting: %d clients get Shutdown", len(victims))
        self._broadcast(SYSTEM, shutdown_event(), victims)
        self._started_at = self._reloaded_at = time.monotonic()
        await asyncio.gather(*(s.close("graceful") for s in victims))
        for call in self.calls:  # the calls die with the PBX; nobody is left to tell
            call.drop()
        self._channels.clear()
        self._presences.clear()  # the stasis cache is gone; astdb keeps the presences
        self._channel_seq, self._uniqueid_seq = itertools.count(), itertools.count()

    def freeze(self) -> None:
        """Become a silent peer: sockets stay open, nothing is answered or sent."""
        log.info("frozen: no answers, no events")
        self._thawed.clear()

    def thaw(self) -> None:
        log.info("thawed")
        self._thawed.set()

    # --- what sessions ask for ---

    def check_credentials(self, username: str, secret: str) -> bool:
        """Asterisk finds the user case-insensitively; the secret must match exactly."""
        return username.lower() == self.username.lower() and hmac.compare_digest(
            secret.encode(), self.secret.encode()
        )

    async def wait_thawed(self) -> None:
        await self._thawed.wait()

    def fully_booted(self) -> bytes:
        now = time.monotonic()
        return encode(
            [
                ("Event", "FullyBooted"),
                ("Privilege", "system,all"),
                ("Uptime", int(now - self._started_at)),
                ("LastReload", int(now - self._reloaded_at)),
                ("Status", "Fully Booted"),
            ]
        )

    def extension_state_list(self, action_id: str) -> bytes:
        """ExtensionStateList, as transcript 03: ack, one item per hint, completion."""
        if not self._hints:
            return error(action_id, "No dialplan hints are available")
        items = [
            extension_status(exten, self.context, hint, self._status(exten), list_id=action_id)
            for exten, hint in self._hints.items()
        ]
        return b"".join(
            [
                response(
                    "Success",
                    action_id,
                    ("EventList", "start"),
                    ("Message", "Extension Statuses will follow"),
                ),
                *items,
                list_complete("ExtensionStateListComplete", action_id, len(items)),
            ]
        )

    def device_state_list(self, action_id: str) -> bytes:
        """DeviceStateList, as transcript 04."""
        items = [
            device_state_change(device, state, list_id=action_id) for device, state in self._devices.items()
        ]
        return b"".join(
            [
                response(
                    "Success",
                    action_id,
                    ("EventList", "start"),
                    ("Message", "Device State Changes will follow"),
                ),
                *items,
                list_complete("DeviceStateListComplete", action_id, len(items)),
            ]
        )

    def connected(self) -> list[str]:
        """The `manager show connected` output lines for every logged-in session."""
        rows = [s.listing() for s in self._sessions if s.authenticated]
        return connected_lines(rows, time.time())

    def write_presence(self, presentity: str, value: str) -> None:
        """`PRESENCE_STATE(presentity)=value`: astdb keeps the value; PresenceStateChange goes
        out every time, PresenceStatus for each hint with that presentity only when the
        presence differs from the hint's last one (pbx.c presence_state_cb)."""
        target = presence_write(presentity, value)
        if target is None:
            raise ValueError(f"PRESENCE_STATE({presentity})={value!r} is not set by Asterisk")
        key = ("CustomPresence", presentity[len(_CUSTOM_PRESENCE) :])
        previous = parse_presence_value(self._astdb.get(key, ""))
        presence = target[1]
        self._astdb[key] = value
        self._presences.pop(presentity, None)
        self._presences[presentity] = presence
        log.debug("presence of %s: %s", presentity, presence)
        self._broadcast(CALL, presence_state_change(presentity, presence))
        if presence != previous:
            for exten in self._presence_hints.get(presentity.lower(), []):
                self._broadcast(CALL, presence_status(exten, self.context, self._hints[exten], presence))

    def presence_state_list(self, action_id: str) -> bytes:
        """PresenceStateList (transcripts 06, 12): the presences set since the start, the
        newest first (the order transcript 12 shows)."""
        items = [
            presence_state_change(presentity, presence, list_id=action_id)
            for presentity, presence in reversed(self._presences.items())
        ]
        return b"".join(
            [
                response(
                    "Success",
                    action_id,
                    ("EventList", "start"),
                    ("Message", "Presence State Changes will follow"),
                ),
                *items,
                list_complete("PresenceStateListComplete", action_id, len(items)),
            ]
        )

    def core_show_channels(self, action_id: str) -> bytes:
        """CoreShowChannels (transcript 15): one item per channel, oldest first."""
        now = time.monotonic()
        items = [core_show_channel(channel, action_id, now) for channel in self._channels.values()]
        return b"".join(
            [
                response("Success", action_id, ("EventList", "start"), ("Message", "Channels will follow")),
                *items,
                list_complete("CoreShowChannelsComplete", action_id, len(items)),
            ]
        )

    def db_get(self, family: str, key: str) -> str | None:
        """An astdb value: what PRESENCE_STATE wrote, and FreePBX's AMPUSER/N/cidname and
        AMPUSER/N/cidnum for every extension. Keys match exactly, as in sqlite."""
        if (family, key) in self._astdb:
            return self._astdb[(family, key)]
        exten, _, item = key.rpartition("/")
        if family == "AMPUSER" and exten in self._hints:
            return {"cidname": wire_text(self.name_of(exten)), "cidnum": exten}.get(item)
        return None

    def endpoint_detail(self, endpoint: str, action_id: str) -> bytes | None:
        """The EndpointDetail of a phone's PJSIP endpoint, None if there is none."""
        if endpoint not in self._hints:
            return None
        prefix = f"PJSIP/{endpoint}-"
        active = sum(1 for name in self._channels if name.startswith(prefix))
        state = self._devices.get(f"Custom:{endpoint}", "UNKNOWN")
        name = wire_text(self.name_of(endpoint))
        return endpoint_detail(endpoint, name, self.context, state, active, action_id)

    def has_channel(self, name: str) -> bool:
        return name in self._channels

    def reload_dialplan(self) -> None:
        """`dialplan reload`: every hint is re-sent, changed or not (transcript 20)."""
        self._reloaded_at = time.monotonic()
        for exten in self._hints:
            self._broadcast(CALL, self._extension_event(exten))

    def schedule_restart(self) -> None:
        """A restart asked for by a client runs apart from that client's session, which it
        closes."""
        self._spawn(self.restart(), name=f"ami-simulator-restart-{self.port}")

    # --- internals ---

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just as stop() ran
            writer.transport.abort()
            return
        session = _Session(self, reader, writer)
        self._sessions.add(session)
        try:
            await session.run()
        finally:
            self._sessions.discard(session)

    def _set_extensions(self, extensions: Iterable[str]) -> None:
        hints: dict[str, str] = {}
        for exten in extensions:
            if not EXTEN_RE.fullmatch(exten):
                raise ValueError(f"invalid extension {exten!r}")
            hints[exten] = f"Custom:{exten},CustomPresence:{exten}"
        if len(hints) > MAX_EXTENSIONS:
            raise ValueError(f"more than {MAX_EXTENSIONS} extensions")
        self._hints = hints
        self._device_hints = {}
        self._presence_hints = {}
        for exten, hint in hints.items():
            for device in hint_devices(hint):
                self._device_hints.setdefault(device, []).append(exten)
                self._devices.setdefault(device, "NOT_INUSE")
            presentity = hint.partition(",")[2].strip().lower()
            self._presence_hints.setdefault(presentity, []).append(exten)

    def _status(self, exten: str) -> int:
        return aggregate_status(
            self._devices.get(device, "UNKNOWN") for device in hint_devices(self._hints[exten])
        )

    def _extension_event(self, exten: str) -> bytes:
        return extension_status(exten, self.context, self._hints[exten], self._status(exten))

    def _change_device(self, device: str, state: str) -> None:
        """Set a device; a DeviceStateChange when its state changed, and an ExtensionStatus
        for each hint whose aggregate status changed with it (as the stasis cache does)."""
        if self._devices.get(device) == state:
            return
        extens = self._device_hints.get(device, [])
        before = {exten: self._status(exten) for exten in extens}
        self._devices[device] = state
        log.debug("%s is now %s", device, state)
        self._broadcast(CALL, device_state_change(device, state))
        for exten in extens:
            if self._status(exten) != before[exten]:
                self._broadcast(CALL, self._extension_event(exten))

    def _broadcast(self, category: int, data: bytes, sessions: Iterable[_Session] | None = None) -> None:
        if self.frozen:
            return
        for session in list(self._sessions if sessions is None else sessions):
            session.send_event(category, data)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- calls ---

    def _open_channel(
        self, party: Party, *, context: str, exten: str, state: int = DOWN, linkedid: str = ""
    ) -> Channel:
        """A new PJSIP channel: `PJSIP/101-0000000a` (chan_pjsip's hex counter) and a
        Uniqueid of epoch seconds and a counter, `1795706568.2`."""
        uniqueid = f"{int(time.time())}.{next(self._uniqueid_seq)}"
        channel = Channel(
            name=f"PJSIP/{party.endpoint}-{next(self._channel_seq):08x}",
            uniqueid=uniqueid,
            linkedid=linkedid or uniqueid,
            caller_num=party.number,
            caller_name=party.name,
            context=context,
            exten=exten,
            state=state,
        )
        self._channels[channel.name] = channel
        return channel

    def _close_channel(self, channel: Channel) -> None:
        self._channels.pop(channel.name, None)

    def _set_phone(self, party: Party, state: str) -> None:
        """A call moved a phone: its device (the hint's Custom:N) follows."""
        if party.exten is not None and party.exten in self._hints:
            self._change_device(f"Custom:{party.exten}", state)

    def _end_call(self, call: SimulatedCall, *, quiet: bool = False) -> None:
        """Free the call's phones; they are idle again (silently after a restart)."""
        for party in (call.caller, call.callee):
            if party.exten is None or self._calls.get(party.exten) is not call:
                continue
            del self._calls[party.exten]
            if quiet:
                self._devices[f"Custom:{party.exten}"] = "NOT_INUSE"
            else:
                self._set_phone(party, "NOT_INUSE")

    def _party(self, number: str, name: str | None) -> Party:
        if number in self._hints:
            return Party(
                number, wire_text(check_name(number, name) if name else self.name_of(number)), number
            )
        if not _OUTSIDE_NUMBER.fullmatch(number):
            raise ValueError(f"{number!r} is neither an extension nor an outside number")
        name = check_name(number, name) if name else generated_name(number, self._seed)
        return Party(number, wire_text(name), None)

    def _outside_caller(self) -> tuple[str, str]:
        """A random outside caller: a German number and a name."""
        number = f"+49{self._rng.choice(('30', '40', '89', '221', '69', '711'))}"
        number += "".join(self._rng.choice("0123456789") for _ in range(self._rng.randint(6, 8)))
        return number, f"{self._rng.choice(_FIRST_NAMES)} {self._rng.choice(_SURNAMES)}"

    # --- churn ---

    async def _churn(self) -> None:
        """Random traffic: new calls (now and then a presence change or a phone going off the
        network) as a Poisson process, and the later steps of each call from its schedule,
        on one virtual clock: a seed gives the same traffic however busy the event loop is."""
        loop = asyncio.get_running_loop()
        origin = loop.time()
        self._agenda.clear()
        self._clock = 0.0
        rate = self.churn / _CHANGES_PER_STEP
        next_start = self._rng.expovariate(rate)
        while True:
            if self._agenda and self._agenda[0][0] <= next_start:
                at, _, action = heapq.heappop(self._agenda)
            else:
                at, action = next_start, self._churn_step
                next_start += self._rng.expovariate(rate)
            await asyncio.sleep(max(0.0, origin + at - loop.time()))
            self._clock = at
            action()

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._agenda, (self._clock + delay, next(self._agenda_seq), action))

    def _churn_step(self) -> None:
        kind = self._rng.choices(list(_CHURN_KINDS), list(_CHURN_KINDS.values()))[0]
        free = [e for e in self._hints if e not in self._calls and e not in self._offline]
        free = [e for e in free if self._devices.get(f"Custom:{e}") == "NOT_INUSE"]
        if kind == "internal" and len(free) >= 2:
            caller, callee = self._rng.sample(free, 2)
            self._churn_call(caller, callee, None, self._rng.choice(("caller", "callee")))
        elif kind == "trunk" and free:
            callee = self._rng.choice(free)
            number, name = self._outside_caller()
            self._churn_call(number, callee, name, "callee")
        elif kind == "presence" and self._hints:
            exten = self._rng.choice(list(self._hints))
            self.set_presence(exten, *self._rng.choice(_CHURN_PRESENCE))
        elif kind == "offline" and free:
            self._churn_offline(self._rng.choice(free))

    def _churn_call(self, caller: str, callee: str, name: str | None, hold_by: str) -> None:
        scale = self._churn_scale()
        call = self.place_call(caller, callee, caller_name=name)
        hold = None
        if self._rng.random() < _HOLD_SHARE:
            hold = self._rng.uniform(*_HOLD_SECONDS) * scale
        steps = call_schedule(
            call,
            ring=self._rng.uniform(*_RING_SECONDS) * scale,
            talk=max(2.0, self._rng.expovariate(1 / _TALK_MEAN)) * scale,
            hold=hold,
            hold_by=hold_by,
            answer=self._rng.random() >= _MISSED_SHARE,
        )
        at = 0.0
        for delay, step in steps:
            at += delay
            self._later(at, functools.partial(_step_unless_ended, call, step))

    def _churn_offline(self, exten: str) -> None:
        """A phone drops off the network and comes back a while later."""
        device = f"Custom:{exten}"
        self._offline.add(exten)
        self._change_device(device, "UNAVAILABLE")

        def back() -> None:
            self._offline.discard(exten)
            if self._devices.get(device) == "UNAVAILABLE":
                self._change_device(device, "NOT_INUSE")

        self._later(self._rng.uniform(*_OFFLINE_SECONDS) * self._churn_scale(), back)

    def _churn_scale(self) -> float:
        """How much shorter than nominal churn's calls are, so that R changes a second fit
        into the extensions (Little's law: calls at once = call rate x call length)."""
        call_rate = self.churn / _CHANGES_PER_STEP * _CALL_SHARE
        longest = _BUSY_SHARE * max(1, len(self._hints)) / (_PARTIES_PER_CALL * call_rate)
        return min(1.0, longest / _NOMINAL_CALL_SECONDS)


class _Session:
    """One client connection: reads actions, answers them, and passes on the events its
    event mask asks for once it has logged in."""

    def __init__(
        self, simulator: Simulator, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._sim = simulator
        self._reader = reader
        self._writer = writer
        self._task = asyncio.current_task()
        self._done = asyncio.Event()
        self.peer = _ami_address(writer.get_extra_info("peername"))
        self.authenticated = False
        self.username = ""
        self.started = int(time.time())  # Asterisk's sessionstart: when the client connected
        self.event_mask = ALL_EVENTS  # Asterisk's default is "Events: on"
        self._actions: dict[str, Callable[[Frame, str], bool]] = {
            "login": self._login,
            "logoff": self._logoff,
            "ping": self._ping,
            "events": self._events,
            "extensionstatelist": self._extension_state_list,
            "devicestatelist": self._device_state_list,
            "setvar": self._setvar,
            "command": self._command,
            "presencestatelist": self._presence_state_list,
            "coreshowchannels": self._core_show_channels,
            "pjsipshowendpoint": self._pjsip_show_endpoint,
            "dbget": self._db_get,
        }

    # --- connection ---

    async def run(self) -> None:
        log.debug("AMI client connected from %s", self.peer)
        try:
            await self._converse()
        except (asyncio.IncompleteReadError, ConnectionError):
            log.debug("AMI client %s went away", self.peer)
        except (asyncio.LimitOverrunError, FrameTooLarge):
            log.warning("dropping AMI client %s: message over %d bytes", self.peer, MAX_FRAME_BYTES)
            self._writer.transport.abort()
        except TimeoutError:
            log.warning("dropping AMI client %s: it does not read its replies", self.peer)
            self._writer.transport.abort()
        finally:
            self.authenticated = False
            self._close_transport()
            self._done.set()

    async def _converse(self) -> None:
        await self._sim.wait_thawed()  # a frozen PBX does not even send its banner
        self.send(BANNER)
        while True:
            frame = await read_frame(self._reader)
            if self._sim.frozen:
                log.debug("frozen: %s's %r goes unanswered", self.peer, frame.get("Action"))
                continue
            keep_open = self._handle(frame)
            await asyncio.wait_for(self._writer.drain(), WRITE_TIMEOUT)
            if not keep_open:
                return

    async def close(self, how: str) -> None:
        """End the connection: "graceful" flushes what was sent (Shutdown, Goodbye) first,
        "abort" throws it away, "reset" also sends a TCP RST, like a broken network."""
        if how == "graceful":
            self._writer.close()
        else:
            self.abort(reset=how == "reset")
        try:
            await asyncio.wait_for(self._done.wait(), CLOSE_TIMEOUT)
        except TimeoutError:  # e.g. a session still waiting for a thaw
            self._writer.transport.abort()
            if self._task is not None and self._task is not asyncio.current_task():
                self._task.cancel()
            await self._done.wait()

    def abort(self, *, reset: bool = False) -> None:
        """Drop the connection now, unsent data and all; `reset` sends a TCP RST."""
        if reset:
            sock = self._writer.get_extra_info("socket")
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._writer.transport.abort()

    def _close_transport(self) -> None:
        """Flush and close; abort instead if the client still has not read it in a while."""
        if self._writer.transport.is_closing():
            return
        self._writer.close()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._writer.transport.abort)

    def send(self, data: bytes) -> None:
        if self._writer.transport.is_closing():
            return
        self._writer.write(data)
        if self._writer.transport.get_write_buffer_size() > MAX_PENDING_BYTES:
            log.warning("dropping AMI client %s: it does not read its events", self.peer)
            self._writer.transport.abort()

    def listing(self) -> tuple[str, str, int, int, int]:
        """This session as a `manager show connected` row: user, IP, start, fd, perms. The
        simulator has no manager.conf: every user may read and write everything."""
        peer = self._writer.get_extra_info("peername")
        ip = peer[0] if isinstance(peer, tuple) else ""
        sock = self._writer.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else -1
        return self.username, ip, self.started, fd, ALL_EVENTS

    def send_event(self, category: int, data: bytes) -> None:
        if self.authenticated and self.event_mask & category == category:
            self.send(data)

    # --- actions; each answers and says whether the connection stays open ---

    def _handle(self, frame: Frame) -> bool:
        action = frame.get("Action")
        action_id = frame.get("ActionID")
        if not action:
            self.send(error(action_id, "Missing action in request"))
            return True
        name = action.lower()
        if not self.authenticated and name not in ("login", "logoff"):
            self.send(error(action_id, "Permission denied"))
            return True
        handler = self._actions.get(name)
        if handler is None:
            self.send(
                error(
                    action_id,
                    f"Invalid/unknown command: {action}."
                    " Use Action: ListCommands to show available commands.",
                )
            )
            return True
        log.debug("%s: %s", self.peer, action)
        return handler(frame, action_id)

    def _login(self, frame: Frame, action_id: str) -> bool:
        if self.authenticated:
            self.send(response("Success", action_id, ("Message", "Already authenticated")))
            return True
        username = frame.get("Username")
        if not self._sim.check_credentials(username, frame.get("Secret")):
            log.info("AMI login of %r from %s failed", username, self.peer)
            self.send(error(action_id, "Authentication failed"))
            return False  # Asterisk hangs up at once (transcript 02)
        mask = event_mask(frame.get("Events"))
        if mask is not None:
            self.event_mask = mask
        self.authenticated = True
        self.username = username
        self._sim.logins += 1
        self._sim.peak_sessions = max(self._sim.peak_sessions, self._sim.sessions)
        log.info("AMI user %s logged in from %s", username, self.peer)
        self.send(response("Success", action_id, ("Message", "Authentication accepted")))
        if self.event_mask & SYSTEM:
            self.send(self._sim.fully_booted())
        if self.event_mask & SECURITY:
            self.send(self._successful_auth(username))
        return True

    def _successful_auth(self, username: str) -> bytes:
        """The security event Asterisk queues after a login (transcript 01)."""
        now = _event_tv()
        return encode(
            [
                ("Event", "SuccessfulAuth"),
                ("Privilege", "security,all"),
                ("EventTV", now),
                ("Severity", "Informational"),
                ("Service", "AMI"),
                ("EventVersion", "1"),
                ("AccountID", username),
                ("SessionID", f"0x{id(self):x}"),
                ("LocalAddress", _ami_address(self._writer.get_extra_info("sockname"))),
                ("RemoteAddress", self.peer),
                ("UsingPassword", "0"),
                ("SessionTV", now),
            ]
        )

    def _logoff(self, frame: Frame, action_id: str) -> bool:
        self.send(response("Goodbye", action_id, ("Message", "Thanks for all the fish.")))
        return False

    def _ping(self, frame: Frame, action_id: str) -> bool:
        self.send(response("Success", action_id, ("Ping", "Pong"), ("Timestamp", _timestamp())))
        return True

    def _events(self, frame: Frame, action_id: str) -> bool:
        mask = event_mask(frame.get("EventMask"))
        if mask is None:
            self.send(error(action_id, "Invalid event mask"))
            return True
        self.event_mask = mask
        self.send(response("Success", action_id, ("Events", "On" if mask else "Off")))
        return True

    def _extension_state_list(self, frame: Frame, action_id: str) -> bool:
        self.send(self._sim.extension_state_list(action_id))
        return True

    def _device_state_list(self, frame: Frame, action_id: str) -> bool:
        self.send(self._sim.device_state_list(action_id))
        return True

    def _setvar(self, frame: Frame, action_id: str) -> bool:
        variable = frame.get("Variable")
        value = frame.get("Value")
        if not variable:
            self.send(error(action_id, "No variable specified"))
        elif frame.get("Channel") and not self._sim.has_channel(frame.get("Channel")):
            self.send(error(action_id, "No such channel"))
        elif match := _DEVICE_STATE_FUNC.fullmatch(variable):
            target = devstate_write(match.group(1), value)
            if target is None:
                self.send(error(action_id, "Variable not set"))
            else:  # the reply goes out before the events (transcript 11)
                self.send(response("Success", action_id, ("Message", "Variable Set")))
                self._sim.set_device_state(*target)
        elif match := _PRESENCE_STATE_FUNC.fullmatch(variable):
            if presence_write(match.group(1), value) is None:
                self.send(error(action_id, "Variable not set"))
            else:  # the reply goes out before the events (transcript 12)
                self.send(response("Success", action_id, ("Message", "Variable Set")))
                self._sim.write_presence(match.group(1), value)
        elif variable.endswith(")"):  # some other dialplan function: not registered here
            self.send(error(action_id, "Variable not set"))
        else:
            self.send(response("Success", action_id, ("Message", "Variable Set")))
        return True

    def _presence_state_list(self, frame: Frame, action_id: str) -> bool:
        self.send(self._sim.presence_state_list(action_id))
        return True

    def _core_show_channels(self, frame: Frame, action_id: str) -> bool:
        self.send(self._sim.core_show_channels(action_id))
        return True

    def _pjsip_show_endpoint(self, frame: Frame, action_id: str) -> bool:
        """res_pjsip ami_show_endpoint(); its error texts end in a newline, which Asterisk
        sends as it is, inside the Message line."""
        endpoint = frame.get("Endpoint")
        if endpoint[:6].lower() == "pjsip/":
            endpoint = endpoint[6:]
        detail = self._sim.endpoint_detail(endpoint, action_id) if endpoint else None
        if not frame.get("Endpoint"):
            self.send(error(action_id, "PJSIPShowEndpoint requires an endpoint name\n"))
        elif detail is None:
            self.send(error(action_id, f"Unable to retrieve endpoint {endpoint}\n"))
        else:
            message = "Following are Events for each object associated with the Endpoint"
            self.send(response("Success", action_id, ("EventList", "start"), ("Message", message)))
            self.send(detail)
            self.send(list_complete("EndpointDetailComplete", action_id, 1))
        return True

    def _db_get(self, frame: Frame, action_id: str) -> bool:
        """main/db.c manager_dbget(): the value comes in a DBGetResponse whose ActionID is last."""
        family, key = frame.get("Family"), frame.get("Key")
        value = self._sim.db_get(family, key) if family and key else None
        if not family:
            self.send(error(action_id, "No family specified."))
        elif not key:
            self.send(error(action_id, "No key specified."))
        elif value is None:
            self.send(error(action_id, "Database entry not found"))
        else:
            self.send(
                response("Success", action_id, ("EventList", "start"), ("Message", "Result will follow"))
            )
            tail = [("ActionID", action_id)] if action_id else []
            self.send(
                encode([("Event", "DBGetResponse"), ("Family", family), ("Key", key), ("Val", value), *tail])
            )
            self.send(list_complete("DBGetComplete", action_id, 1))
        return True

    def _command(self, frame: Frame, action_id: str) -> bool:
        command = frame.get("Command")
        words = command.split()
        line = " ".join(words).lower()
        if not words:
            self.send(error(action_id, "No command provided"))
        elif line in _RELOAD_COMMANDS:
            self.send(command_output("Success", action_id, ["Dialplan reloaded."]))
            self._sim.reload_dialplan()
        elif line == _SHOW_CONNECTED:
            self.send(command_output("Success", action_id, self._sim.connected()))
        elif line in _RESTART_COMMANDS:
            # The CLI handler never returns (Asterisk exec()s itself): no reply, only Shutdown.
            self._sim.schedule_restart()
        else:
            best = _best_command_prefix(words)
            self.send(
                command_output(
                    "Error",
                    action_id,
                    [
                        f"No such command '{command}'"
                        f" (type 'core show help {best}' for other possible commands)"
                    ],
                )
            )
        return True


def _best_command_prefix(words: list[str]) -> str:
    """cli.c find_best(): the words up to and including the first one no command starts with."""
    known = [c.split() for c in (*_RELOAD_COMMANDS, *_RESTART_COMMANDS, _SHOW_CONNECTED, *_OTHER_COMMANDS)]
    for count in range(1, len(words) + 1):
        prefix = [w.lower() for w in words[:count]]
        if not any(command[:count] == prefix for command in known):
            return " ".join(words[:count])
    return " ".join(words)


# --- helpers for the CLI ---


async def run_simulator(
    host: str,
    port: int,
    extensions: list[str],
    username: str,
    secret: str,
    churn: float,
    context: str,
    names: Mapping[str, str] | None = None,
) -> None:
    """Serve a simulated PBX until cancelled (`blf-panel simulate`)."""
    simulator = Simulator(
        extensions,
        host=host,
        port=port,
        username=username,
        secret=secret,
        context=context,
        churn=churn,
        names=names,
    )
    async with simulator:
        await asyncio.Event().wait()
