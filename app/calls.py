"""Who each phone is talking to: calls per device, followed from AMI channel events.

Pure: no I/O, no asyncio. Rules read off real Asterisk 22 transcripts
(tests/fixtures/ami/14, 15, 16):

* A channel is keyed by its `Uniqueid` (names can change on a masquerade). Every
  channel event carries the channel's whole snapshot (state, caller ID, connected
  line), so each handled event refreshes it; a channel first seen mid-call is adopted.
* Device: `PJSIP/101-00000007` belongs to `PJSIP/101`. Local/ (and other internal)
  channels are no phones; they are still tracked so bridges and hold work through them.
* Direction: the `DestChannel` of a `DialBegin` is "in", its `Channel` "out". An
  Originate (16) sends a DialBegin without `Channel`, so the phone is "in" too.
  Before any DialBegin, `Newchannel`'s own state tells: `Ring` (4) means the phone
  sent us the call ("out"; the caller's channel stays in Ring until answered, it is
  never "Ringing"), `Down` (0) means Asterisk is calling the phone ("in").
* Party: the channel's ConnectedLineNum/Name (`<unknown>` and "" are unknown); else the
  caller ID of the far end of a two-party bridge (through Local pairs); else, for a
  call the phone made, the extension it dialed (`Exten` of its Newchannel).
* State: ChannelStateDesc `Up` -> "up"; before that "ringing" when "in", "dialing"
  when "out". `Hold` arrives on the channel of the party who pressed hold (100 in 14),
  while Asterisk marks the device hearing music (101) ONHOLD. Both tiles say "hold":
  a channel is on hold when it, or the far end of its two-party bridge, is holding.
  (Conference bridges with more members do not spread hold or names.)
* Since: when the channel was created, reset when it is answered. Hangup removes it. A
  channel first seen already answered (its start missed) has an unknown start (0).
* Rebuild (CoreShowChannels, or Status items): `since` = now - Duration (or Seconds),
  i.e. the channel's age (its start, ringing included: the lists do not say when it was
  answered); unknown (0) without a readable Duration, never the time of the list.
  Direction: Application `AppDial` (a dialed leg) -> "in", `Dial` -> "out", state Ring
  -> "out", Ringing/Down -> "in", then Linkedid != Uniqueid -> "in", else "out". An
  answered Originate then looks "out": the lists cannot tell.
  Hold is not in those lists: a held call shows "up" until its next Hold/Unhold.

Names and numbers come from strangers: control and bidi characters are stripped and
lengths capped here; HTML escaping is left to the templates.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.schema import MAX_NAME, MAX_NUMBER, CallJSON, clean_text
from app.states import UNKNOWN_START

MAX_CHANNEL = 256
MAX_DURATION = 10 * 366 * 86400  # a longer one is a lie; ignore it
_MAX_HOPS = 16  # bridges and Local pairs followed to find the far end

_UNKNOWN = "<unknown>"
_CHANNEL = re.compile(r"([A-Za-z][A-Za-z0-9_]{0,31})/([A-Za-z0-9_+*#.:@\-]{1,120})-[0-9A-Fa-f]{1,16}")
_INTERNAL_TECHS = frozenset({"local", "announcer", "recorder", "cbann", "cbrec", "snoop", "message"})
_DIALED = re.compile(r"[0-9*#+]{1,40}")
_DURATION = re.compile(r"(\d{1,9}):(\d{1,2}):(\d{1,2})")

CHANNEL_EVENTS = frozenset(
    {
        "Newchannel",
        "Newstate",
        "NewConnectedLine",
        "NewCallerid",
        "DialBegin",
        "DialEnd",
        "DialState",
        "BridgeEnter",
        "BridgeLeave",
        "Hold",
        "Unhold",
        "Hangup",
        "Rename",
    }
)


@dataclass(frozen=True)
class Call:
    """One call of a device, as its tile shows it."""

    channel: str
    direction: str  # "in" | "out"
    party_name: str
    party_number: str
    since: float
    state: str  # "ringing" | "dialing" | "up" | "hold"

    def as_dict(self) -> CallJSON:
        return {
            "direction": "in" if self.direction == "in" else "out",
            "party_name": self.party_name,
            "party_number": self.party_number,
            "since": round(self.since, 3),
            "state": self.state,  # type: ignore[typeddict-item]  # set only from CallState values
        }


def clean(value: object, limit: int) -> str:
    """A caller-supplied string made safe to show (`clean_text`); Asterisk's `<unknown>`
    is no name."""
    text = clean_text(value, limit)
    return "" if text == _UNKNOWN else text


def channel_device(channel: str) -> str | None:
    """The device a channel belongs to ("PJSIP/101-00000007" -> "PJSIP/101"); None for
    Local/ and other internal channels, and for anything that is not a channel name."""
    if not isinstance(channel, str):
        return None
    match = _CHANNEL.fullmatch(channel)
    if match is None or match.group(1).lower() in _INTERNAL_TECHS:
        return None
    return f"{match.group(1)}/{match.group(2)}"


@dataclass
class _Channel:
    """What we know of one live channel (any kind, Local included)."""

    uid: str
    name: str
    device: str | None
    direction: str
    created: float
    state: str = ""
    own_num: str = ""
    own_name: str = ""
    line_num: str = ""
    line_name: str = ""
    dialed: str = ""
    bridge: str = ""
    holding: bool = False
    answered: bool = False


def _text(event: Mapping[str, object], key: str) -> str:
    value = event.get(key)
    return value.strip() if isinstance(value, str) else ""


def _valid_name(name: str) -> bool:
    """A channel name, Uniqueid or bridge id we are willing to keep."""
    return 0 < len(name) <= MAX_CHANNEL and clean_text(name, MAX_CHANNEL) == name


def _valid_time(now: object) -> bool:
    return isinstance(now, int | float) and not isinstance(now, bool) and math.isfinite(now)


def _local_partner(name: str) -> str | None:
    """`Local/x@ctx-0001;1` <-> `;2`: the two halves of one Local channel."""
    if not name.lower().startswith("local/") or name[-2:] not in (";1", ";2"):
        return None
    return name[:-1] + ("2" if name[-1] == "1" else "1")


def _first_direction(state: str, uid: str, linkedid: str) -> str:
    """Direction of a channel first seen without a DialBegin: `Ring` is a phone calling
    us, `Down`/`Ringing` is us calling it; else a channel of someone else's call is "in"."""
    if state == "Ring":
        return "out"
    if state in ("Down", "Ringing") or (linkedid and linkedid != uid):
        return "in"
    return "out"


def _listed_direction(item: Mapping[str, object]) -> str:
    """Direction of a channel in a login-time list, without DialBegin history."""
    application = _text(item, "Application")
    if application == "AppDial":  # the dialed leg of a Dial, Queue or Originate
        return "in"
    if application == "Dial":
        return "out"
    return _first_direction(_text(item, "ChannelStateDesc"), _text(item, "Uniqueid"), _text(item, "Linkedid"))


def _duration(item: Mapping[str, object]) -> float | None:
    """Age of a listed channel: CoreShowChannel `Duration` HH:MM:SS or Status `Seconds`."""
    match = _DURATION.fullmatch(_text(item, "Duration"))
    if match is not None:
        hours, minutes, seconds = (int(g) for g in match.groups())
        total = hours * 3600 + minutes * 60 + seconds
    elif _text(item, "Seconds").isdigit() and len(_text(item, "Seconds")) <= 12:
        total = int(_text(item, "Seconds"))
    else:
        return None
    return float(total) if total <= MAX_DURATION else None


class CallTracker:
    """Follows channel events and knows each device's current calls."""

    def __init__(self) -> None:
        self._channels: dict[str, _Channel] = {}  # uniqueid -> channel
        self._by_name: dict[str, str] = {}  # channel name -> uniqueid
        self._bridges: dict[str, set[str]] = {}  # bridge id -> uniqueids
        self._by_device: dict[str, set[str]] = {}  # device -> uniqueids
        self._shown: dict[str, tuple[Call, ...]] = {}  # device -> its calls, as last returned

    # --- the public side ---

    def apply(self, event: Mapping[str, str], now: float) -> set[str]:
        """Take one AMI event; the devices whose calls changed. Others are ignored."""
        if not isinstance(event, Mapping) or not _valid_time(now):
            return set()
        kind = _text(event, "Event")
        if kind not in CHANNEL_EVENTS:
            return set()
        if kind == "DialBegin":
            uids = {_text(event, "Uniqueid"), _text(event, "DestUniqueid")} - {""}
        else:
            uids = {_text(event, "Uniqueid")} - {""}
            if not _valid_name(_text(event, "Channel")):
                return set()
        if not uids:
            return set()
        before = self._devices_near(uids)
        if kind == "DialBegin":
            self._take(event, "out", now)  # no Channel at all for an Originate
            self._take(event, "in", now, prefix="Dest")
        elif kind == "Hangup":
            self._drop(next(iter(uids)))
        else:
            channel = self._take(event, "", now)
            if channel is None:
                return set()
            if kind == "Rename" and _valid_name(_text(event, "Newname")):
                self._rename(channel, _text(event, "Newname"))
            elif kind == "BridgeEnter":
                self._enter(channel, _text(event, "BridgeUniqueid"))
            elif kind == "BridgeLeave":
                self._enter(channel, "")
            elif kind in ("Hold", "Unhold"):
                channel.holding = kind == "Hold"
        return self._refresh(before | self._devices_near(uids))

    def rebuild(self, channels: Iterable[Mapping[str, str]], now: float) -> set[str]:
        """Replace everything with the channels the PBX lists at login (CoreShowChannel
        or Status items); calls that ended while we were away disappear."""
        self._channels.clear()
        self._by_name.clear()
        self._bridges.clear()
        self._by_device.clear()
        if not _valid_time(now):
            now = 0.0
        try:
            items = list(channels)
        except TypeError:
            items = []
        for item in items:
            if not isinstance(item, Mapping):
                continue
            uid, name = _text(item, "Uniqueid"), _text(item, "Channel")
            if not uid or not _valid_name(name) or uid in self._channels:
                continue
            age = _duration(item)
            start = now - age if age is not None else UNKNOWN_START
            channel = self._take(item, _listed_direction(item), start, listed=True)
            if channel is None:
                continue
            self._enter(channel, _text(item, "BridgeId") or _text(item, "BridgeID"))
        return self._refresh(set(self._shown) | set(self._by_device))

    def calls_for(self, device: str) -> list[Call]:
        return list(self._shown.get(device, ()))

    def devices(self) -> set[str]:
        """The devices that have at least one call."""
        return set(self._shown)

    # --- channels ---

    def _take(
        self,
        event: Mapping[str, object],
        direction: str,
        now: float,
        prefix: str = "",
        *,
        listed: bool = False,
    ) -> _Channel | None:
        """Create or refresh a channel from the snapshot an event carries (`prefix`
        "Dest" reads the dialed side of a DialBegin) at `now`; a `listed` one (rebuild)
        began at `now`, an event's channel first seen answered at an unknown time."""
        uid = _text(event, prefix + "Uniqueid")
        name = _text(event, prefix + "Channel")
        if not _valid_name(uid) or not _valid_name(name):
            return None
        state = _text(event, prefix + "ChannelStateDesc")[:32]
        channel = self._channels.get(uid)
        if channel is None:
            if not direction:
                direction = _first_direction(state, uid, _text(event, prefix + "Linkedid"))
            start = now if listed or state != "Up" else UNKNOWN_START
            channel = _Channel(
                uid=uid, name=name, device=channel_device(name), direction=direction, created=start
            )
            self._channels[uid] = channel
            self._by_name[name] = uid
            if channel.device is not None:
                self._by_device.setdefault(channel.device, set()).add(uid)
            if direction == "out" and state == "Ring":
                exten = _text(event, prefix + "Exten")
                channel.dialed = exten if _DIALED.fullmatch(exten) else ""
            channel.answered = state == "Up"
        else:
            if name != channel.name:
                self._rename(channel, name)
            if direction:
                channel.direction = direction
        if state:
            if state == "Up" and not channel.answered:
                channel.answered = True
                channel.created = now  # `since` is the answer from now on
            channel.state = state
        for key, attr, limit in (
            ("CallerIDNum", "own_num", MAX_NUMBER),
            ("CallerIDName", "own_name", MAX_NAME),
            ("ConnectedLineNum", "line_num", MAX_NUMBER),
            ("ConnectedLineName", "line_name", MAX_NAME),
        ):
            if prefix + key in event:
                setattr(channel, attr, clean(event.get(prefix + key), limit))
        return channel

    def _drop(self, uid: str) -> None:
        channel = self._channels.pop(uid, None)
        if channel is None:
            return
        self._enter(channel, "")
        if self._by_name.get(channel.name) == uid:
            del self._by_name[channel.name]
        if channel.device is not None:
            owned = self._by_device.get(channel.device, set())
            owned.discard(uid)
            if not owned:
                self._by_device.pop(channel.device, None)

    def _rename(self, channel: _Channel, new: str) -> None:
        if self._by_name.get(channel.name) == channel.uid:
            del self._by_name[channel.name]
        if channel.device is not None:
            self._by_device.get(channel.device, set()).discard(channel.uid)
            if not self._by_device.get(channel.device):
                self._by_device.pop(channel.device, None)
        channel.name, channel.device = new, channel_device(new)
        self._by_name[new] = channel.uid
        if channel.device is not None:
            self._by_device.setdefault(channel.device, set()).add(channel.uid)

    def _enter(self, channel: _Channel, bridge: str) -> None:
        """Move a channel into `bridge` ("" = out of any bridge)."""
        if channel.bridge:
            members = self._bridges.get(channel.bridge, set())
            members.discard(channel.uid)
            if not members:
                self._bridges.pop(channel.bridge, None)
        channel.bridge = bridge if _valid_name(bridge) else ""
        if channel.bridge:
            self._bridges.setdefault(channel.bridge, set()).add(channel.uid)

    # --- the far end ---

    def _linked(self, uid: str) -> set[str]:
        """The channel and the far end of its call: two-party bridges, crossing Local
        halves (`;1` and `;2`), which carry a call between two bridges."""
        seen = {uid}
        todo = [uid]
        while todo and len(seen) < _MAX_HOPS:
            channel = self._channels.get(todo.pop())
            if channel is None:
                continue
            nearby: list[str] = []
            members = self._bridges.get(channel.bridge, set()) if channel.bridge else set()
            if len(members) == 2:
                nearby.extend(members)
            partner = _local_partner(channel.name)
            if partner is not None and partner in self._by_name:
                nearby.append(self._by_name[partner])
            for other in nearby:
                if other not in seen:
                    seen.add(other)
                    todo.append(other)
        return seen

    def _neighbourhood(self, uids: set[str]) -> set[str]:
        """Every channel whose call can change with these: linked ones and bridge mates."""
        result: set[str] = set()
        for uid in uids:
            result |= self._linked(uid)
            channel = self._channels.get(uid)
            if channel is not None and channel.bridge:
                for mate in self._bridges.get(channel.bridge, ()):
                    result |= self._linked(mate)
        return result

    def _call(self, channel: _Channel) -> Call:
        far = [
            self._channels[u] for u in self._linked(channel.uid) if u != channel.uid and u in self._channels
        ]
        phones = sorted((c for c in far if c.device is not None), key=lambda c: (c.created, c.uid))
        number, name = channel.line_num, channel.line_name
        if not number and not name and phones:
            number, name = phones[0].own_num, phones[0].own_name
        if not number and not name:
            number = channel.dialed
        if channel.holding or any(c.holding for c in far):
            state = "hold"
        elif channel.state == "Up":
            state = "up"
        else:
            state = "ringing" if channel.direction == "in" else "dialing"
        return Call(channel.name, channel.direction, name, number, channel.created, state)

    # --- what changed ---

    def _devices_near(self, uids: set[str]) -> set[str]:
        """The devices whose calls may change when these channels do."""
        near = (self._channels.get(uid) for uid in self._neighbourhood(uids))
        return {c.device for c in near if c is not None and c.device is not None}

    def _refresh(self, devices: set[str]) -> set[str]:
        changed: set[str] = set()
        for device in devices:
            calls = tuple(
                sorted(
                    (self._call(self._channels[u]) for u in self._by_device.get(device, ())),
                    key=lambda call: (call.since, call.channel),
                )
            )
            if calls == self._shown.get(device, ()):
                continue
            changed.add(device)
            if calls:
                self._shown[device] = calls
            else:
                self._shown.pop(device, None)
        return changed
