"""What the panel needs from its AMI user, in one table: each action and group of events, the
Asterisk class that grants it, what is lost without it and the manager.conf line that fixes it.
Do not break: every class is Asterisk 22's own (`source`), the events are exactly those the
collector takes, and the README's manager.conf section is rendered from here (a test compares).
Its words stay English here (marked N_: the README and the collector's log show them so);
`blf-panel check` prints them in the CLI's language (`Said.shown`, `_`).

Regenerate that section with `.venv/bin/python -m app.capabilities --write README.md`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from app.ami import PERMISSION_DENIED, UNKNOWN_ACTION
from app.calls import CHANNEL_EVENTS
from app.details import PRESENCE_EVENTS
from app.i18n import N_
from app.queues import QUEUE_EVENTS
from app.said import Said

log = logging.getLogger("app.collector")  # the lines belong to the collector's log

OK, MISSING, NOT_SEEN = "ok", "missing", "not seen"

# The order a fix prefers when several classes grant the same thing. `reporting` only lets a
# client read states; `call` also lets it change calls (Setvar, Redirect, Atxfer); `agent`
# also lets it add, remove and pause queue members (QueueAdd, QueuePause: write = agent);
# `system` also reads every config file with its secrets (GetConfig), writes astdb (DBPut)
# and reloads.
SAFEST_FIRST = ("reporting", "call", "agent", "system")


@dataclass(frozen=True)
class Witness:
    """A list action whose answer changes whenever the PBX sends these events: comparing it
    before and after a wait proves an event was sent, so its absence means it was filtered."""

    action: str
    key: tuple[str, ...]  # the fields naming an item
    value: tuple[str, ...]  # the fields whose change is an event


@dataclass(frozen=True)
class Capability:
    name: str  # as `blf-panel check` shows it (words marked N_, translated there)
    kind: str  # "action" (needs a `write` class) or "event" (needs a `read` class)
    ami: tuple[str, ...]  # the action, or the events
    classes: tuple[str, ...]  # any one of them grants it; () = every logged-in user
    feature: str
    lost: str  # what the panel loses without it (N_)
    source: str  # where Asterisk 22 sets the class
    needed: bool = True  # `blf-panel check` exits 1 when it is missing
    module: str = ""  # the module that registers the action ("" = the core)
    alternative: str = ""  # another way to the same feature (N_)
    witness: Witness | None = None

    @property
    def least_class(self) -> str:
        return next((c for c in SAFEST_FIRST if c in self.classes), self.classes[0] if self.classes else "")


def _events(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(names))


CAPABILITIES: tuple[Capability, ...] = (
    Capability(
        name="Ping",
        kind="action",
        ami=("Ping",),
        classes=(),
        feature="link",
        lost=N_("the watchdog that notices a PBX gone silent"),
        source='main/manager.c: ast_manager_register_xml_core("Ping", 0, ...)',
    ),
    Capability(
        name="ExtensionStateList",
        kind="action",
        ami=("ExtensionStateList",),
        classes=("call", "reporting"),
        feature="lamps",
        lost=N_("the lamps (the hints and their states, asked at each login)"),
        source="main/pbx.c (main/extension_state.c after 22.9): EVENT_FLAG_CALL | EVENT_FLAG_REPORTING",
    ),
    Capability(
        name="DeviceStateList",
        kind="action",
        ami=("DeviceStateList",),
        classes=("call", "reporting"),
        feature="lamps",
        lost=N_(
            "device states at login (a hint of several devices follows them only through ExtensionStatus)"
        ),
        source="res/res_manager_devicestate.c: EVENT_FLAG_CALL | EVENT_FLAG_REPORTING",
        module="res_manager_devicestate.so",
    ),
    Capability(
        name="PresenceStateList",
        kind="action",
        ami=("PresenceStateList",),
        classes=("call", "reporting"),
        feature="presence",
        lost=N_("presence at login (shown only from its next change)"),
        source="res/res_manager_presencestate.c: EVENT_FLAG_CALL | EVENT_FLAG_REPORTING",
        module="res_manager_presencestate.so",
    ),
    Capability(
        name="CoreShowChannels",
        kind="action",
        ami=("CoreShowChannels",),
        classes=("system", "reporting"),
        feature="calls",
        lost=N_("calls already in progress at login (shown only from their next change)"),
        source="main/manager.c: EVENT_FLAG_SYSTEM | EVENT_FLAG_REPORTING",
    ),
    Capability(
        name="QueueStatus",
        kind="action",
        ami=("QueueStatus",),
        classes=(),
        feature="queues",
        lost=N_("the queues at login: members, pauses, callers waiting"),
        source='apps/app_queue.c: ast_manager_register_xml("QueueStatus", 0, ...)',
        needed=False,
        module="app_queue.so",
        alternative=N_("a PBX without queues needs none"),
    ),
    Capability(
        name="PJSIPShowEndpoint",
        kind="action",
        ami=("PJSIPShowEndpoint",),
        classes=("system",),
        feature="names",
        lost=N_("names from the PBX's PJSIP endpoints (their caller ID)"),
        source="res/res_pjsip/pjsip_configuration.c: EVENT_FLAG_SYSTEM",
        needed=False,
        module="res_pjsip.so",
        alternative=N_("DIRECTORY_FILE can give the names instead"),
    ),
    Capability(
        name="DBGet",
        kind="action",
        ami=("DBGet",),
        classes=("system", "reporting"),
        feature="names",
        lost=N_("names from FreePBX's AstDB (`AMPUSER/<exten>/cidname`)"),
        source="main/db.c: EVENT_FLAG_SYSTEM | EVENT_FLAG_REPORTING",
        needed=False,
        alternative=N_("DIRECTORY_FILE can give the names instead"),
    ),
    Capability(
        name="ExtensionStatus",
        kind="event",
        ami=("ExtensionStatus",),
        classes=("call",),
        feature="lamps",
        lost=N_("lamp changes (every lamp stays as it was at login)"),
        source="main/manager.c manager_state_cb(): manager_event(EVENT_FLAG_CALL, ...)",
        witness=Witness("ExtensionStateList", ("Exten", "Context"), ("Status",)),
    ),
    Capability(
        name="DeviceStateChange",
        kind="event",
        ami=("DeviceStateChange",),
        classes=("call",),
        feature="lamps",
        lost=N_("device changes (a lamp changes only when its ExtensionStatus comes)"),
        source="main/devicestate.c: ast_manager_event_blob_create(EVENT_FLAG_CALL, ...)",
        witness=Witness("DeviceStateList", ("Device",), ("State",)),
    ),
    Capability(
        name=N_("presence events"),
        kind="event",
        ami=_events(PRESENCE_EVENTS),
        classes=("call",),
        feature="presence",
        lost=N_("presence changes (do not disturb, away, ...)"),
        source="main/presencestate.c, main/manager.c: EVENT_FLAG_CALL",
        witness=Witness("PresenceStateList", ("Presentity",), ("Status", "Subtype", "Message")),
    ),
    Capability(
        name=N_("channel events"),
        kind="event",
        ami=_events(CHANNEL_EVENTS),
        classes=("call",),
        feature="calls",
        lost=N_("calls on the tiles (who is on the line, since when, on hold)"),
        source="main/manager_channels.c, main/manager_bridges.c, main/channel.c: EVENT_FLAG_CALL",
        witness=Witness("CoreShowChannels", ("Uniqueid",), ("ChannelState",)),
    ),
    Capability(
        name="FullyBooted",
        kind="event",
        ami=("FullyBooted",),
        classes=("system",),
        feature="boot",
        lost=N_("the PBX's word that it has booted"),
        # Written right after the login reply to a session whose events hold system (the
        # collector asks for it, app.ami.login_events), and published again when a boot ends.
        source='main/asterisk.c: ast_manager_publish_event("FullyBooted", EVENT_FLAG_SYSTEM, ...)',
        needed=False,
        alternative=N_("the collector then waits for DeviceStateList to answer"),
    ),
    Capability(
        name=N_("queue events"),
        kind="event",
        ami=_events(QUEUE_EVENTS),
        classes=("agent",),
        feature="queues",
        lost=N_("queue changes (pauses, members added or removed, callers waiting, agents on calls)"),
        source="apps/app_queue.c queue_member_to_ami(), queue_channel_to_ami(), "
        "queue_multi_channel_to_ami(): EVENT_FLAG_AGENT",
        witness=Witness(
            "QueueStatus",
            ("Event", "Queue", "Location", "Uniqueid"),
            ("Status", "Paused", "PausedReason", "Penalty", "InCall", "Calls", "Position"),
        ),
    ),
    Capability(
        name="Reload",
        kind="event",
        ami=("Reload",),
        classes=("system",),
        feature="queues",
        lost=N_("the queues after `module reload app_queue.so` (asked again at the next login)"),
        source='main/loader.c publish_load_message_type("Reload", ...): EVENT_FLAG_SYSTEM',
        needed=False,
        alternative=N_("members that a reload changes show at the next login"),
    ),
)

ACTIONS = tuple(c for c in CAPABILITIES if c.kind == "action")
EVENTS = tuple(c for c in CAPABILITIES if c.kind == "event")


def needed_events() -> list[str]:
    """Every event the collector takes, in the table's order."""
    return [name for capability in EVENTS for name in capability.ami]


def eventfilter_lines() -> list[str]:
    """manager.conf lines that pass exactly the events the collector takes. The legacy form (a
    regular expression over the whole event) works on every Asterisk; a line may let a few
    more through (`Event: Hangup` also matches HangupRequest), which the collector ignores."""
    return [f"eventfilter = Event: {name}" for name in needed_events()]


def least_classes(kind: str) -> list[str]:
    """The fewest classes that grant every needed capability of `kind`, the safest first."""
    rows = [c for c in CAPABILITIES if c.kind == kind and c.needed and c.classes]
    offered = sorted({cls for c in rows for cls in c.classes}, key=_safety)
    for size in range(len(offered) + 1):
        for chosen in combinations(offered, size):
            if all(set(c.classes) & set(chosen) for c in rows):
                return list(chosen)
    raise AssertionError("unreachable: all offered classes grant every row")


def _safety(cls: str) -> int:
    return SAFEST_FIRST.index(cls) if cls in SAFEST_FIRST else len(SAFEST_FIRST)


def asks_for(events: str, cls: str) -> bool:
    """Whether the `Events:` of the login (AMI_EVENTS) asks for events of class `cls`, as
    manager.c strings_to_mask() reads it: on/yes/true or all, off/no/false, or class names."""
    words = events.lower()
    if not words:  # no `Events:` header: Asterisk sends what the user may read
        return True
    if words in ("on", "yes", "true", "y", "t", "all"):  # digits are a mask: AMI_EVENTS has none
        return True
    return cls in words.split(",") or "all" in words.split(",")


# --- findings: one capability's verdict, worded for the log and the check's table ---


@dataclass(frozen=True)
class Finding:
    capability: Capability
    status: str  # OK, MISSING or NOT_SEEN
    why: str = ""  # Said where there is something to say: `blf-panel check` shows it translated
    fix: str = ""

    @property
    def failing(self) -> bool:
        """Missing and needed: `blf-panel check` exits 1."""
        return self.status == MISSING and self.capability.needed

    def line(self) -> str:
        """One log line: what is lost, why, the fix."""
        return f"{self.capability.lost} unavailable: {self.why}; fix: {self.fix}"


# The sentences of the findings: English here and in the log, translated where check shows them.
_REFUSED = N_("%(action)s refused for AMI user %(user)r (%(message)s)")
_UNKNOWN = N_("%(action)s unknown to the PBX (%(message)s)")
_LOAD = N_("load %(module)s on the PBX (module load %(module)s), or wait until it has booted")
_WRITE_FIX = N_("add %(cls)s to the `write =` line of [%(user)s] in manager.conf")
_READ_FIX = N_("add %(cls)s to the `read =` line of [%(user)s] in manager.conf")
_NOT_ARRIVED = N_("none arrived while %(count)d item(s) of %(action)s changed")
_TRY = {"calls": N_("make a call"), "presence": N_("change a presence"), "queues": N_("pause a queue member")}


def _with_alternative(fix: Said, c: Capability) -> Said:
    alternative = Said(c.alternative)
    return Said(N_("%(fix)s (%(alternative)s)"), fix=fix, alternative=alternative) if c.alternative else fix


def action_finding(capability: Capability, reply: Any, username: str) -> Finding:
    """The verdict on an action from the PBX's reply: a list (the items) or a reply with
    `Response` and `Message`. Any other error means the PBX ran it: allowed."""
    if isinstance(reply, list) or reply.get("Response") == "Success":
        return Finding(capability, OK)
    action, message = capability.ami[0], str(reply.get("Message", ""))
    if message == PERMISSION_DENIED:
        fix = Said(_WRITE_FIX, cls=capability.least_class, user=username)
        why = Said(_REFUSED, action=action, user=username, message=message)
        return Finding(capability, MISSING, why, _with_alternative(fix, capability))
    if message.startswith(UNKNOWN_ACTION):
        why = Said(_UNKNOWN, action=action, message=message.split(".")[0])
        if capability.module:
            fix = Said(_LOAD, module=capability.module)
        else:
            fix = Said(N_("wait until the PBX has booted"))
        return Finding(capability, MISSING, why, _with_alternative(fix, capability))
    return Finding(capability, OK, Said(N_("allowed (%(message)s)"), message=message.strip()))


Ask = Callable[[dict[str, str]], Awaitable[Any]]


async def unavailable_actions(ask: Ask, username: str) -> list[Finding]:
    """The actions this AMI user cannot run, without running the lists: `ListCommands` (every
    user may send it) names the actions the user's `write` classes allow and the PBX knows;
    each one it leaves out is sent alone, which Asterisk refuses at once, to tell "Permission
    denied" from a module that is not loaded. Nothing at all when ListCommands itself fails."""
    listed = await ask({"Action": "ListCommands"})
    if isinstance(listed, list) or listed.get("Response") != "Success":
        return []
    findings = []
    for capability in ACTIONS:
        if not capability.classes or capability.ami[0] in listed:
            continue
        finding = action_finding(capability, await ask({"Action": capability.ami[0]}), username)
        if finding.status != OK:
            findings.append(finding)
    return findings


def events_not_asked(events: str) -> list[Finding]:
    """The event groups the login's `Events:` (AMI_EVENTS) does not ask for: Asterisk then
    sends none of them, whatever the user may read."""
    why = N_("the login asks for `Events: %(events)s` (AMI_EVENTS), without %(cls)s")
    fix = Said(N_("set AMI_EVENTS=%(classes)s"), classes=",".join(least_classes("event")))
    return [
        Finding(capability, MISSING, Said(why, events=events, cls=capability.least_class), fix)
        for capability in EVENTS
        if not any(asks_for(events, cls) for cls in capability.classes)
    ]


Items = Sequence[Mapping[str, Any]]


def list_changes(before: Items, after: Items, witness: Witness) -> int:
    """How many items of the witness list came, went or changed between two answers."""

    def fields(item: Mapping[str, Any], names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(str(item.get(name, "")) for name in names)

    def table(items: Items) -> dict[tuple[str, ...], tuple[str, ...]]:
        return {fields(item, witness.key): fields(item, witness.value) for item in items}

    old, new = table(before), table(after)
    return sum(1 for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def event_finding(
    capability: Capability, username: str, seen: Collection[str], changes: int | None, waited: float
) -> Finding:
    """The verdict on a group of events after a wait. Asterisk tells a client neither its read
    classes nor its filters, so only a witness can prove the events missing: the PBX's own list
    changed (`changes` items), so the events were sent, and none arrived. With no change it is
    "not seen": nothing may have happened. `seen` are the event names that did arrive."""
    if any(name in seen for name in capability.ami):
        return Finding(capability, OK)
    read_fix = Said(_READ_FIX, cls=capability.least_class, user=username)
    if capability.witness is None:  # FullyBooted: written right after the login reply, or never
        if capability.ami == ("FullyBooted",):
            why = N_("none after the login (sent only to a user who may read %(cls)s)")
        else:
            why = N_("none in %(waited)gs (sent only to a user who may read %(cls)s)")
        why = Said(why, cls=capability.least_class, waited=waited)
        return Finding(capability, NOT_SEEN, why, _with_alternative(read_fix, capability))
    if changes:
        why = Said(_NOT_ARRIVED, count=changes, action=capability.witness.action)
        same_class = [n for c in EVENTS if set(c.classes) & set(capability.classes) for n in c.ami]
        if any(name in seen for name in same_class):  # the class is read: a filter drops them
            lines = "; ".join(f"eventfilter = Event: {name}" for name in capability.ami)
            fix = Said(N_("add to [%(user)s] in manager.conf: %(lines)s"), user=username, lines=lines)
        else:
            fix = Said(
                N_("%(read_fix)s, and if it has eventfilter lines, those of the README"), read_fix=read_fix
            )
        return Finding(capability, MISSING, why, fix)
    what = Said(_TRY.get(capability.feature, N_("change a lamp")))
    fix = Said(N_("%(what)s while `blf-panel check --wait 60` runs"), what=what)
    why = Said(N_("nothing changed on the PBX in %(waited)gs"), waited=waited)
    return Finding(capability, NOT_SEEN, why, fix)


# --- the README's manager.conf section ---

README_BEGIN = "<!-- manager.conf: rendered by `.venv/bin/python -m app.capabilities --write README.md` -->"
README_END = "<!-- manager.conf: end -->"


def manager_conf(username: str = "blf") -> str:
    lines = [
        f"[{username}]",
        "secret = a-long-random-secret",
        "deny = 0.0.0.0/0.0.0.0",
        "permit = 10.0.0.5/255.255.255.255   ; the collector host",
        f"read = {','.join(least_classes('event'))}",
        f"write = {','.join(least_classes('action'))}",
        "; only the events the panel takes (without these lines: every event of `read`)",
        *eventfilter_lines(),
    ]
    return "\n".join(lines)


def readme_section() -> str:
    """The block between README_BEGIN and README_END."""
    rows = ["| feature | needs | class (`read`/`write`, any one) | without it |", "|---|---|---|---|"]
    for c in CAPABILITIES:
        what = ", ".join(f"`{name}`" for name in c.ami)
        if not c.classes:
            grant = "every user"
        else:
            grant = f"`{c.kind == 'event' and 'read' or 'write'} = " + "` or `".join(c.classes) + "`"
        optional = "" if c.needed else f" (optional: {c.alternative})"
        rows.append(f"| {c.feature} | {what} | {grant} | {c.lost}{optional} |")
    return "\n".join([README_BEGIN, "", "```ini", manager_conf(), "```", "", *rows, "", README_END])


def replace_section(text: str) -> str:
    """`text` (the README) with its section rendered anew; ValueError without the markers."""
    start, end = text.find(README_BEGIN), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {README_BEGIN!r} ... {README_END!r} section")
    return text[:start] + readme_section() + text[end + len(README_END) :]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="print or rewrite the README's manager.conf section")
    parser.add_argument("--write", metavar="README", help="rewrite the section in this file")
    args = parser.parse_args(argv)
    if args.write is None:
        print(readme_section())
        return 0
    path = Path(args.write)
    path.write_text(replace_section(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


async def log_missing(ask: Ask, events: str, username: str) -> None:
    """Log, at every login, each capability this AMI user lacks: what is lost, why, the fix.
    One ListCommands (and a refused probe per action it leaves out) tells the actions. Events
    cannot be told here: Asterisk says nothing of a user's read classes or eventfilters
    (Login answers "Authentication accepted", the Events action echoes the mask asked for),
    so only the login's `Events:` is checked; `blf-panel check` proves the rest by comparing
    the PBX's own lists before and after a wait. Call it after the boot wait: a starting PBX
    has not registered every action yet."""
    findings = events_not_asked(events) + await unavailable_actions(ask, username)
    for finding in findings:
        level = logging.WARNING if finding.capability.needed else logging.INFO
        log.log(level, "AMI %s", finding.line())
