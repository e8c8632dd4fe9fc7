"""The typed shape of what travels: the snapshot, an extension, a call, presence, the
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


class CallJSON(TypedDict):
    direction: Literal["in", "out"]
    party_name: str
    party_number: str
    since: float  # epoch seconds
    state: CallState


class ExtensionJSON(TypedDict):
    exten: str
    context: str
    hint: str
    status: int  # Asterisk's raw ExtensionStatus code, kept for unknown codes too
    state: State
    changed_at: float  # epoch seconds
    version: int  # the version in which it last changed
    name: str
    groups: list[str]
    presence: PresenceJSON | None
    calls: list[CallJSON]


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


class ChangesJSON(TypedDict):
    """The extensions changed after version `since`; `whole_at`: the last version that
    changed the set of extensions (a reader older than that reads the whole snapshot)."""

    version: int
    updated_at: float  # when the collector published it (epoch seconds)
    since: int
    whole_at: int
    pbx: LinkJSON
    extensions: dict[str, ExtensionJSON]


def extension_order(extension: Mapping[str, object]) -> tuple[int, int, str, str]:
    """The one display order of extensions: numbers numerically, then the rest by name."""
    exten = str(extension.get("exten", ""))
    numeric = exten.isdigit()
    return (0 if numeric else 1, int(exten) if numeric else 0, exten, str(extension.get("context", "")))
