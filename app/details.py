"""Who is behind each lamp: names, groups, presence and calls, onto the picture.

Pure bookkeeping, no I/O: the collector hands over AMI events, list items and the
directory; this turns them into each extension's `Details`. Everything shown comes from
strangers on the phone network: it is cleaned and capped here, escaped by the templates.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

from app.calls import Call, CallTracker
from app.directory import Directory
from app.schema import MAX_NAME, CallJSON, clean_text, is_phone_number
from app.scope import without_numbers
from app.snapshot import PbxPicture
from app.states import CONTEXT_RE, EXTEN_RE, UNKNOWN_START, hint_devices, parse_presence

PRESENCE_EVENTS = frozenset({"PresenceStateChange", "PresenceStatus"})


def callerid_name(callerid: str) -> str:
    """The name of a caller ID, read as Asterisk reads it (main/callerid.c,
    ast_callerid_parse): `"Anna \\"The Boss\\" Smith" <101>` (how ast_callerid_merge writes
    a name: quoted, `"` and `\\` escaped) gives Anna "The Boss" Smith, `Anna Smith <101>`
    gives Anna Smith; a number alone (`101`, `+49 (30) 123-45`) has no name."""
    text = _strip_blanks(callerid)
    unquoted = _strip_quotes(text)
    bracket = unquoted.rfind("<")  # the last: a quoted name may hold a `<` of its own
    if bracket >= 0:
        name = _strip_quotes(unquoted[:bracket])
    elif unquoted == text and is_phone_number(unquoted[:255]):  # 255: its char tmp[256]
        return ""
    else:
        name = _strip_quotes(unquoted)
    return re.sub(r"\\(.)|\\\Z", r"\1", name, flags=re.DOTALL)  # ast_unescape_quoted


def _strip_blanks(text: str) -> str:
    """ast_strip: Asterisk's blanks are every byte below 33 (controls and the space)."""
    return text.strip("".join(map(chr, range(33))))


def _strip_quotes(text: str) -> str:
    """ast_strip_quoted(s, "\"", "\""): blanks off, then one pair of surrounding quotes."""
    text = _strip_blanks(text)
    return text[1:-1] if text.startswith('"') and text.endswith('"') else text


class DetailTracker:
    """Keeps names, presence and calls of every extension on the picture."""

    def __init__(self, picture: PbxPicture, *, show_numbers: bool = True) -> None:
        self.picture = picture
        self.calls = CallTracker()
        self.show_numbers = show_numbers
        self.directory = Directory({})
        self.pbx_names: dict[str, str] = {}  # exten -> name the PBX gave (caller ID)

    # --- presence ---

    def take_presence(self, message: Mapping[str, str], now: float = UNKNOWN_START) -> bool:
        """A presence event (it began `now`) or list item (UNKNOWN_START: a list says what
        is, not since when); the same presence again keeps the start it had."""
        presence = dataclasses.replace(parse_presence(message), since=now)
        if message.get("Event") == "PresenceStatus" or (message.get("Exten") and message.get("Context")):
            exten, context = message.get("Exten", ""), message.get("Context", "")
            if not (EXTEN_RE.fullmatch(exten) and CONTEXT_RE.fullmatch(context)):
                return False
            keys = [f"{exten}@{context}"]
        else:
            keys = self.picture.index.keys_holding((message.get("Presentity") or "").strip())
        return any([self.picture.set_details(key, presence=presence) for key in keys])

    # --- calls ---

    def take_channel_event(self, message: Mapping[str, str], now: float) -> bool:
        return self._show_calls(self.calls.apply(message, now))

    def rebuild_calls(self, channels: Iterable[Mapping[str, str]], now: float) -> bool:
        """At login: the calls in progress (CoreShowChannels), replacing what we had; a
        call state whose start the lamps list did not tell begins with its calls."""
        before = self.calls.devices()
        changed = self.calls.rebuild(channels, now)
        shown = self._show_calls(changed | before | self.calls.devices())
        dated = [self.picture.start_from_calls(key) for key in list(self.picture.extensions)]
        return shown or any(dated)

    def _show_calls(self, devices: Iterable[str]) -> bool:
        changed = False
        keys = {key for device in devices for key in self.picture.index.keys_of_phone(device)}
        for key in keys:
            phones = set(hint_devices(self.picture.extensions[key].state.hint))
            phones.update(d for d in self.calls.devices() if key in self.picture.index.keys_of_phone(d))
            calls = sorted(
                (call for device in phones for call in self.calls.calls_for(device)),
                key=lambda call: (call.since, call.channel),
            )
            tenant = self.picture.extensions[key].details.tenant
            changed |= self.picture.set_details(key, calls=tuple(self._shown(call, tenant) for call in calls))
        return changed

    def _shown(self, call: Call, tenant: str) -> CallJSON:
        """A call as the tile of an extension of firm `tenant` shows it: a colleague under
        the name the panel knows them by; another firm's extension as no one (firms never
        see each other's names or numbers); outside numbers, and names that are numbers,
        hidden when SHOW_CALLER_NUMBERS=off."""
        shown = call.as_dict()
        number = str(shown.get("party_number") or "")
        extensions = self.picture.extensions
        colleagues = self.picture.index.keys_of_exten(number) if number else []
        own = [key for key in colleagues if extensions[key].details.tenant == tenant]
        if own:
            shown["party_name"] = extensions[own[0]].details.name or shown["party_name"]
        elif colleagues:  # an extension of another firm only
            shown["party_name"] = shown["party_number"] = ""
        elif not self.show_numbers:
            shown = without_numbers(shown, ())
        return shown

    # --- names and groups ---

    def use_directory(self, directory: Directory) -> bool:
        self.directory = directory
        return self.refresh_names()

    def take_pbx_names(self, callerids: Mapping[str, str]) -> bool:
        """Names from the PBX (PJSIP endpoint caller ID, FreePBX cidname), by exten."""
        for exten, callerid in callerids.items():
            name = clean_text(callerid_name(callerid or ""), MAX_NAME)
            if name and name != exten:
                self.pbx_names[exten] = name
        return self.refresh_names()

    def refresh_names(self) -> bool:
        """The directory wins; the PBX's caller ID fills what it does not say."""
        changed = False
        for key, record in self.picture.extensions.items():
            exten = record.state.exten
            name = self.directory.name(exten) or self.pbx_names.get(exten, "")
            groups = self.directory.groups(exten)
            tenant = self.directory.tenant(exten, record.state.context)
            changed |= self.picture.set_details(key, name=name, groups=tuple(groups), tenant=tenant)
        return changed

    def unnamed(self) -> list[str]:
        """Extensions the directory does not name: ask the PBX for these."""
        extens = (record.state.exten for record in self.picture.extensions.values())
        return [exten for exten in extens if not self.directory.name(exten)]
