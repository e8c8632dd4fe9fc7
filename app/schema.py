"""The typed shape of what travels: the snapshot, an extension, a call, presence, a queue, the
`changes` key; the one sanitiser and the length limits for untrusted text.

Every room that writes or reads the store contract uses these types, so a field renamed
here is renamed everywhere. Keep them in step with README.md's store contract.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Literal, NotRequired, TypedDict

# --- untrusted text: names, numbers, presence messages, hints, groups ---

# Lengths a field may have once cleaned; longer values are cut, never refused.
MAX_NAME = 80
MAX_NUMBER = 40
MAX_PRESENCE_TEXT = 120
MAX_GROUP = 40
MAX_TENANT = 40  # a firm's name, as in URLs and scopes (a slug)
MAX_HINT = 512

# Zero-width (non-)joiner: some scripts and emoji need them; every other format character
# (bidi overrides like U+202E, zero-width spaces like U+200B, the BOM) can disguise a name.
_KEEP_FORMAT = frozenset(("\u200c", "\u200d"))
# Categories dropped: controls (Cc, incl. U+0085), format (Cf), line/paragraph separators
# (Zl U+2028, Zp U+2029), surrogates and unassigned/private code points that render as boxes.
_DROP_CATEGORIES = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"))
_PLAIN = re.compile(r"[ -~]*")  # printable ASCII: nothing to clean but spaces


def clean_text(value: object, limit: int) -> str:
    """Text from strangers (the phone network, a CSV file) made safe to show: NFC, no
    control, format, separator or private-use characters, every run of white space one
    space, at most `limit` characters. Non-strings give "". HTML escaping is left to the
    templates: this only keeps a name from hiding or reordering what is around it."""
    if not isinstance(value, str):
        return ""
    text = value[: limit * 8]  # NFC and the scan below are linear: bound them first
    if not _PLAIN.fullmatch(text):
        text = unicodedata.normalize("NFC", text)
        text = "".join(
            c
            for c in text
            if c.isspace() or c in _KEEP_FORMAT or unicodedata.category(c) not in _DROP_CATEGORIES
        )
    return " ".join(text.split())[:limit].rstrip()


# --- the store contract ---

State = Literal[
    "idle", "inuse", "busy", "unavailable", "ringing", "inuse_ringing", "hold", "inuse_hold", "unknown"
]
CallState = Literal["ringing", "dialing", "up", "hold"]


class PresenceJSON(TypedDict):
    state: str  # available, away, xa, chat, dnd, unavailable, not_set
    subtype: str
    message: str
    since: NotRequired[float]  # epoch seconds; 0 (or absent): unknown, e.g. listed at login


class CallJSON(TypedDict):
    direction: Literal["in", "out"]
    party_name: str
    party_number: str
    since: float  # epoch seconds; 0: unknown (a call found at login without a Duration)
    state: CallState


class ExtensionJSON(TypedDict):
    exten: str
    context: str
    hint: str
    status: int  # Asterisk's raw ExtensionStatus code, kept for unknown codes too
    state: State
    changed_at: float  # epoch seconds; 0: unknown (a state listed at login: no invented start)
    version: int  # the version in which it last changed
    name: str
    groups: list[str]
    presence: PresenceJSON | None
    calls: list[CallJSON]
    queues: NotRequired[list[ExtensionQueueJSON]]  # the queues it serves (absent before queues)


class ExtensionQueueJSON(TypedDict):
    """One queue an extension serves, with its pause there."""

    queue: str  # a key of the snapshot's `queues`
    paused: bool
    reason: str  # PausedReason while paused ("lunch"), cleaned; "" when none or not paused
    paused_since: float | None  # epoch seconds (Asterisk's LastPause) while paused, else None


# Asterisk's enum ast_device_state in lower case, as a member's `status`.
MemberStatus = Literal[
    "unknown", "not_inuse", "inuse", "busy", "invalid", "unavailable", "ringing", "ringinuse", "onhold"
]


class QueueCallerJSON(TypedDict):
    position: int  # 1 is next
    joined_at: float  # epoch seconds: the wait is now - joined_at
    name: str
    number: str  # "" when unknown, or an outside number under SHOW_CALLER_NUMBERS=off


class QueueMemberJSON(TypedDict):
    interface: str  # Asterisk's Interface: `PJSIP/100`, `Local/101@from-queue/n`
    extension: str | None  # "<exten>@<context>" of its extension, None when none maps
    name: str  # MemberName, cleaned (the interface when it has none)
    membership: Literal["static", "dynamic", "realtime"]
    penalty: int
    paused: bool
    reason: str
    paused_since: float | None  # epoch seconds while paused, else None
    in_call: bool  # on a call from this queue (AgentConnect until AgentComplete)
    ringing: bool  # the queue rings it for a caller (AgentCalled)
    status: MemberStatus  # the state of its StateInterface as app_queue sees it
    calls_taken: int
    last_call: float | None  # epoch seconds of its last queue call's end, None: none yet


class QueueJSON(TypedDict):
    """One queue; `callers` by position, `members` by name. Counts are Asterisk's own
    (QueueParams at each resync, then counted from the events)."""

    name: str
    strategy: str  # ringall, leastrecent, ...
    max: int  # 0: no limit
    callers: list[QueueCallerJSON]
    longest_since: float | None  # join time of the longest waiting caller, None when none
    completed: int
    abandoned: int
    holdtime: int  # seconds, Asterisk's running average
    talktime: int
    service_level: int  # seconds
    service_level_perf: float  # percent of completed calls answered within service_level
    service_level_perf2: float  # the same counting abandoned calls too
    members: list[QueueMemberJSON]
    changed_at: NotRequired[float]
    version: NotRequired[int]  # the version in which it last changed
    tenant: str  # the firm (a slug); "" in a one-firm install (older snapshots lack it)


# The AMI link as the collector sees it: "connecting" (never logged in yet), "starting"
# (logged in, the PBX is still booting: not the full picture yet), "up", "down" (lost).
LinkStateName = Literal["connecting", "starting", "up", "down"]


class LinkJSON(TypedDict):
    connected: bool  # state == "up": the states are confirmed (the field older readers know)
    since: float  # epoch seconds: when the state last changed
    # Newer fields (a reader of an older snapshot finds only the two above):
    state: NotRequired[LinkStateName]
    address: NotRequired[str]  # host:port of the PBX
    error: NotRequired[str]  # why the PBX was never reached (short, cleaned); "" once it was


class SnapshotJSON(TypedDict):
    version: int
    updated_at: float
    pbx: LinkJSON
    extensions: dict[str, ExtensionJSON]  # "<exten>@<context>" -> the extension
    queues: NotRequired[dict[str, QueueJSON]]  # queue name (checked) -> the queue


class ChangesJSON(TypedDict):
    """The extensions changed after version `since`; `whole_at`: the last version that
    changed the set of extensions (a reader older than that reads the whole snapshot)."""

    version: int
    updated_at: float  # when the collector published it (epoch seconds)
    since: int
    whole_at: int
    pbx: LinkJSON
    extensions: dict[str, ExtensionJSON]
    queues: NotRequired[dict[str, QueueJSON]]  # the queues changed after `since`


def extension_order(extension: Mapping[str, object]) -> tuple[int, int, str, str]:
    """The one display order of extensions: numbers numerically, then the rest by name."""
    return (*exten_order(str(extension.get("exten", ""))), str(extension.get("context", "")))


def exten_order(exten: str) -> tuple[int, int, str]:
    """`extension_order` of an extension number alone (the order of a view's ext list)."""
    numeric = exten.isdigit()
    return (0 if numeric else 1, int(exten) if numeric else 0, exten)


def is_phone_number(text: str) -> bool:
    """ast_isphonenumber after ast_shrink_phone_number: only digits, *, # and + once the
    spaces, parentheses, dashes and dots (but a last one) are gone. (Asterisk keeps a dash
    between brackets, but a bracket alone already makes it no number.)"""
    return re.fullmatch(r"[0-9*#+]+", re.sub(r"[( )-]|\.(?!\Z)", "", text)) is not None
