"""The PBX without a network: hints, devices, presences in astdb, names, channels, calls, a boot.
Do not break: a change emits only when the state really changed, in the stasis cache's order
(DeviceStateChange, then each hint whose status moved); astdb and devices survive a restart;
while booting, only the hints loaded so far exist and module actions are unknown."""

from __future__ import annotations

import asyncio
import base64
import binascii
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from app.settings import MAX_EXTENSIONS
from app.sim.boot import Booting
from app.sim.calls import DOWN, OUTSIDE_NUMBER, Channel, Party, SimulatedCall, call_schedule, hang_up_channel
from app.sim.events import (
    core_show_channel,
    device_state_change,
    endpoint_detail,
    extension_status,
    presence_state_change,
    presence_status,
)
from app.sim.legs import Leg
from app.sim.names import check_name, generated_name
from app.sim.queues import Queues
from app.sim.wire import CALL, error, event_list, wire_text
from app.states import CONTEXT_RE, DEVICE_STATES, EXTEN_RE, aggregate_status, hint_devices

log = logging.getLogger(__name__)

# The states func_devstate accepts (ast_devstate_val); UNKNOWN means "not a state" there.
SETTABLE_STATES = frozenset(DEVICE_STATES) - {"UNKNOWN"}
DEVICE_STATE_FUNC = re.compile(r"DEVICE_STATE\((.*)\)", re.IGNORECASE | re.DOTALL)

# func_presencestate: PRESENCE_STATE(CustomPresence:N) = state[,subtype[,message[,options]]];
# the states of presencestate.c state2string, matched in any case, sent in lower case.
PRESENCE_STATES = ("not_set", "unavailable", "available", "away", "xa", "chat", "dnd")
PRESENCE_STATE_FUNC = re.compile(r"PRESENCE_STATE\((.*)\)", re.IGNORECASE | re.DOTALL)
_CUSTOM_PRESENCE = "custompresence:"

Sleep = Callable[[float], Awaitable[None]]

# Actions a module registers (res_manager_devicestate, res_manager_presencestate, res_pjsip):
# during a boot, until the modules are loaded, Asterisk answers them "Invalid/unknown command".
# The others the simulator answers are the core's (manager.c, extension_state.c, db.c).
# app_queue loads at the same priority (150): its actions answer once the modules are loaded.
# --- the dialplan functions (func_devstate, func_presencestate) ---


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


def presence_write(argument: str, value: str) -> tuple[str, Presence] | None:
    """The (presentity, presence) `Set(PRESENCE_STATE(argument)=value)` sets, or None where
    func_presencestate's presence_write() refuses: not a `CustomPresence:` provider, no name
    after it, or a value parse_data() rejects. Asterisk then answers "Variable not set"."""
    if argument[: len(_CUSTOM_PRESENCE)].lower() != _CUSTOM_PRESENCE or not argument[len(_CUSTOM_PRESENCE) :]:
        return None
    presence = parse_presence_value(value)
    return None if presence is None else (argument, presence)


# --- the PBX ---


class Pbx(Booting):
    """Hints `N => Custom:N,CustomPresence:N` in `context`, a PJSIP endpoint per extension
    whose caller ID name comes from `names` (else a generated one), device states kept per
    device, presences in astdb, calls with their channels. Every event goes to `emit`, which
    the server overrides to reach its clients; `sleep` is how `simulate_call` waits between
    the steps of a call (a test may pass one that does not wait)."""

    def __init__(
        self,
        extensions: list[str],
        *,
        context: str = "ext-local",
        seed: int | None = None,
        names: Mapping[str, str] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not CONTEXT_RE.fullmatch(context):
            raise ValueError(f"invalid dialplan context {context!r}")
        self.context = context
        self._seed = seed
        self._sleep = sleep
        self._names = {exten: check_name(exten, name) for exten, name in (names or {}).items()}
        self._hints: dict[str, str] = {}  # exten -> hint, in dialplan order
        self._device_hints: dict[str, list[str]] = {}  # device -> extens whose hint has it
        self._presence_hints: dict[str, list[str]] = {}  # presentity (lower case) -> extens
        self._devices: dict[str, str] = {}  # device -> state; kept across restarts, like astdb
        self._astdb: dict[tuple[str, str], str] = {}  # (family, key) -> value, kept across restarts
        self._presences: dict[str, Presence] = {}  # the stasis cache, newest last; lost on restart
        self._channels: dict[str, Channel] = {}  # name -> channel, oldest first
        self._calls: dict[str, SimulatedCall] = {}  # exten -> the call it is in
        self.legs: dict[str, Leg] = {}  # exten -> its phone's leg in no call (legs.py)
        self._channel_seq = itertools.count()  # chan_pjsip's channel number (hex in names)
        self._uniqueid_seq = itertools.count()  # the counter after the dot of a Uniqueid
        self._set_extensions(extensions)
        self._loaded: set[str] = set(self._hints)  # the hints the running dialplan holds
        self.modules_loaded = True  # the module actions are registered
        self.booted = True  # FullyBooted is said
        self.queues = Queues(self)  # app_queue: none until add_queue (queues.conf)
        self._boot()

    def emit(self, category: int, data: bytes) -> None:
        """An event of class `category` for whoever listens; the model alone has no one."""

    # --- devices and hints ---

    @property
    def extensions(self) -> list[str]:
        return list(self._hints)

    def device_state(self, device: str) -> str:
        return self._devices.get(device, "UNKNOWN")

    def extension_status(self, exten: str) -> int:
        return self._status(exten)

    def idle_extensions(self) -> list[str]:
        """The extensions in no call whose phone is NOT_INUSE, in dialplan order; none while
        booting (pbx.c refuses to start a call before FullyBooted)."""
        if not self.booted:
            return []
        free = [e for e in self._hints if e not in self._calls]
        return [e for e in free if self._devices.get(f"Custom:{e}") == "NOT_INUSE"]

    def set_device_state(self, device: str, state: str) -> None:
        """Change a device as `devstate change` / Setvar DEVICE_STATE would. Unlike Setvar,
        UNKNOWN is allowed (a real channel driver can report it)."""
        state = state.upper()
        if state not in DEVICE_STATES:
            raise ValueError(f"{state!r} is not one of {', '.join(DEVICE_STATES)}")
        self._change_device(device, state)

    def reload_dialplan(self) -> None:
        """`dialplan reload`: every hint is re-sent, changed or not (transcript 20)."""
        self._reloaded_at = time.monotonic()
        for exten in self._hints:
            if exten in self._loaded:
                self.emit(CALL, self._extension_event(exten))

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
        self.emit(CALL, device_state_change(device, state))
        for exten in extens:
            if self._status(exten) != before[exten] and exten in self._loaded:
                self.emit(CALL, self._extension_event(exten))
        self.queues.device_changed(device, state)  # app_queue follows its members' devices

    # --- names and presence ---

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
        self.emit(CALL, presence_state_change(presentity, presence))
        if presence != previous:
            for exten in self._presence_hints.get(presentity.lower(), []):
                if exten in self._loaded:
                    self.emit(CALL, presence_status(exten, self.context, self._hints[exten], presence))

    def db_get(self, family: str, key: str) -> str | None:
        """An astdb value: what PRESENCE_STATE wrote, and FreePBX's AMPUSER/N/cidname and
        AMPUSER/N/cidnum for every extension. Keys match exactly, as in sqlite."""
        if (family, key) in self._astdb:
            return self._astdb[(family, key)]
        exten, _, item = key.rpartition("/")
        if family == "AMPUSER" and exten in self._hints:
            return {"cidname": wire_text(self.name_of(exten)), "cidnum": exten}.get(item)
        return None

    # --- what list actions answer ---

    def extension_state_list(self, action_id: str) -> bytes:
        """ExtensionStateList, as transcript 03: ack, one item per hint loaded, completion;
        with none (yet), the error of extension_state.c."""
        items = [
            extension_status(exten, self.context, hint, self._status(exten), list_id=action_id)
            for exten, hint in self._hints.items()
            if exten in self._loaded
        ]
        if not items:
            return error(action_id, "No dialplan hints are available")
        return event_list(action_id, "Extension Statuses will follow", items, "ExtensionStateListComplete")

    def device_state_list(self, action_id: str) -> bytes:
        """DeviceStateList, as transcript 04."""
        items = [
            device_state_change(device, state, list_id=action_id) for device, state in self._devices.items()
        ]
        return event_list(action_id, "Device State Changes will follow", items, "DeviceStateListComplete")

    def presence_state_list(self, action_id: str) -> bytes:
        """PresenceStateList (transcripts 06, 12): the presences set since the start, the
        newest first (the order transcript 12 shows)."""
        items = [
            presence_state_change(presentity, presence, list_id=action_id)
            for presentity, presence in reversed(self._presences.items())
        ]
        return event_list(action_id, "Presence State Changes will follow", items, "PresenceStateListComplete")

    def core_show_channels(self, action_id: str) -> bytes:
        """CoreShowChannels (transcript 15): one item per channel, oldest first."""
        now = time.monotonic()
        items = [core_show_channel(channel, action_id, now) for channel in self._channels.values()]
        return event_list(action_id, "Channels will follow", items, "CoreShowChannelsComplete")

    def endpoint_detail(self, endpoint: str, action_id: str) -> bytes | None:
        """The EndpointDetail of a phone's PJSIP endpoint, None if there is none."""
        if endpoint not in self._hints:
            return None
        prefix = f"PJSIP/{endpoint}-"
        active = sum(1 for name in self._channels if name.startswith(prefix))
        state = self._devices.get(f"Custom:{endpoint}", "UNKNOWN")
        name = wire_text(self.name_of(endpoint))
        return endpoint_detail(endpoint, name, self.context, state, active, action_id)

    # --- calls ---

    def place_call(self, caller: str, callee: str, *, caller_name: str | None = None) -> SimulatedCall:
        """Start a call to extension `callee` and let it ring; step it on with the call's
        `answer`, `hold`, `unhold`, `hang_up` or `give_up`. `caller` is an extension, or an
        outside number (`+4930123456`) that comes in on `PJSIP/trunk-...` with `caller_name`
        (default: a generated name)."""
        if not self.booted:
            raise RuntimeError("the PBX is booting: pbx.c starts no call before FullyBooted")
        if callee not in self._hints:
            raise ValueError(f"{callee!r} is not an extension")
        if caller == callee:
            raise ValueError("a phone cannot call itself")
        source = self._party(caller, caller_name)
        for exten in (source.exten, callee):
            if exten is not None and self.busy(exten):
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
            await self._sleep(delay)
            if call.ended:  # a restart dropped it
                break
            step()
        return call

    def dial_on(self, channel: Channel, party: Party, callee: str) -> SimulatedCall | None:
        """A channel already up (a transferee) dials extension `callee`; when that is no
        free extension, Dial fails and the channel is hung up (None)."""
        if callee not in self._hints or self.busy(callee) or callee == party.exten:
            hang_up_channel(self, channel, 17, "User busy")
            self.set_phone(party, "NOT_INUSE")
            return None
        call = SimulatedCall(
            self, party, Party(callee, wire_text(self.name_of(callee)), callee), channel=channel
        )
        for exten in (party.exten, callee):
            if exten is not None:
                self._calls[exten] = call
        return call

    def pick_up(self, picker: str, ringing: str, channel: Channel) -> SimulatedCall | None:
        """Extension `picker`'s answered `channel` (originate.py) picks up the call ringing at
        extension `ringing`; None when there is no such call (PickupChan finds nothing)."""
        call = self._calls.get(ringing)
        if call is None or call.state != "ringing" or call.callee.exten != ringing or self.busy(picker):
            return None
        rang = call.picked_up(self._party(picker, None), channel)
        self.hand_over(call, rang, call.callee)
        return call

    def hand_over(self, call: SimulatedCall, gone: Party, come: Party) -> None:
        """`come`'s phone takes `gone`'s place in `call` (a pickup, an attended transfer)."""
        if gone.exten is not None:
            self._calls.pop(gone.exten, None)
        if come.exten is not None:
            self._calls[come.exten] = call

    def busy(self, exten: str) -> bool:
        """Whether a phone is in a call or a leg of its own (ringing for an Originate...)."""
        return exten in self._calls or exten in self.legs

    def call_of(self, channel: str) -> SimulatedCall | None:
        """The call a channel (by name) is in."""
        return next((call for call in self.calls if call.channel(channel) is not None), None)

    @property
    def calls(self) -> list[SimulatedCall]:
        """The calls in progress, oldest first."""
        return list(dict.fromkeys(self._calls.values()))

    @property
    def channels(self) -> list[str]:
        """The names of the channels up, oldest first."""
        return list(self._channels)

    def has_channel(self, name: str) -> bool:
        return name in self._channels

    def channel(self, name: str) -> Channel | None:
        return self._channels.get(name)

    def open_channel(
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

    def close_channel(self, channel: Channel) -> None:
        self._channels.pop(channel.name, None)
        for leg in list(self.legs.values()):  # ChanSpy follows the channel it listens to
            leg.channel_closed(channel)

    def set_phone(self, party: Party, state: str) -> None:
        """A call moved a phone: its device (the hint's Custom:N) follows."""
        if party.exten is not None and party.exten in self._hints:
            self._change_device(f"Custom:{party.exten}", state)

    def end_call(self, call: SimulatedCall, *, quiet: bool = False, keep: Iterable[str] = ()) -> None:
        """Free the call's phones; they are idle again (silently after a restart) unless in
        `keep` (their channel lives on, to dial again)."""
        for party in (call.caller, call.callee):
            if party.exten is None or self._calls.get(party.exten) is not call:
                continue
            del self._calls[party.exten]
            if party.exten in keep:
                continue
            if quiet:
                self._devices[f"Custom:{party.exten}"] = "NOT_INUSE"
            else:
                self.set_phone(party, "NOT_INUSE")

    def _party(self, number: str, name: str | None) -> Party:
        if number in self._hints:
            return Party(
                number, wire_text(check_name(number, name) if name else self.name_of(number)), number
            )
        if not OUTSIDE_NUMBER.fullmatch(number):
            raise ValueError(f"{number!r} is neither an extension nor an outside number")
        name = check_name(number, name) if name else generated_name(number, self._seed)
        return Party(number, wire_text(name), None)

    def _forget_calls(self) -> None:
        """What a restart loses: calls, channels, the presence list; not astdb nor devices."""
        for call in self.calls:  # the calls die with the PBX; nobody is left to tell
            call.drop()
        for exten, leg in list(self.legs.items()):  # its phone is idle again, as a call's
            leg.drop()
            self._devices[f"Custom:{exten}"] = "NOT_INUSE"
        self.legs.clear()
        self._channels.clear()
        self._presences.clear()  # the stasis cache is gone; astdb keeps the presences
        self._channel_seq, self._uniqueid_seq = itertools.count(), itertools.count()
