"""Manager users as Asterisk 22's manager.conf makes them: read/write classes, eventfilter lines,
and the class each simulated action needs. Do not break: the authorities, the filter syntax and
the order filters are applied in are Asterisk's own (main/manager.c), not the panel's beliefs
(app/capabilities.py holds those; tests/sim/test_permissions.py compares the two)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from app.sim.wire import ALL_EVENTS, EVENT_CLASSES

# manager.c perms[]: the classes, then "all" (INT_MAX) and "none" (0), in this order.
_PERMS: tuple[tuple[str, int], ...] = (*EVENT_CLASSES.items(), ("all", ALL_EVENTS), ("none", 0))


def _class_mask(*names: str) -> int:
    mask = 0
    for name in names:
        mask |= EVENT_CLASSES[name]
    return mask


# Each action the simulator answers: its name as registered, the <synopsis> of its XML doc
# (what ListCommands prints) and the write classes any one of which allows it; 0 = everyone.
# From Asterisk 22.9: main/manager.c and manager_doc.xml, main/pbx.c (ExtensionStateList),
# res/res_manager_devicestate.c, res/res_manager_presencestate.c, main/db.c (DBGet) and
# res/res_pjsip/pjsip_configuration.c + pjsip_manager.xml (PJSIPShowEndpoint), apps/app_queue.c.
ACTIONS: dict[str, tuple[str, str, int]] = {
    name.lower(): (name, synopsis, authority)
    for name, synopsis, authority in (
        ("Atxfer", "Attended transfer.", _class_mask("call")),
        ("BlindTransfer", "Blind transfer channel(s) to the given destination", _class_mask("call")),
        ("Command", "Execute Asterisk CLI Command.", _class_mask("command")),
        ("CoreShowChannels", "List currently active channels.", _class_mask("system", "reporting")),
        ("DBGet", "Get DB Entry.", _class_mask("system", "reporting")),
        ("DeviceStateList", "List the current known device states.", _class_mask("call", "reporting")),
        ("Events", "Control Event Flow.", 0),
        ("ExtensionStateList", "List the current known extension states.", _class_mask("call", "reporting")),
        ("ListCommands", "List available manager commands.", 0),
        ("Login", "Login Manager.", 0),
        ("Logoff", "Logoff Manager.", 0),
        ("Originate", "Originate a call.", _class_mask("originate")),
        ("Ping", "Keepalive command.", 0),
        ("PJSIPShowEndpoint", "Detail listing of an endpoint and its objects.", _class_mask("system")),
        ("PresenceStateList", "List the current known presence states.", _class_mask("call", "reporting")),
        # apps/app_queue.c load_module(): the lists for everyone, the changes for `agent`.
        ("QueueAdd", "Add interface to queue.", _class_mask("agent")),
        ("QueuePause", "Makes a queue member temporarily unavailable.", _class_mask("agent")),
        ("QueuePenalty", "Set the penalty for a queue member.", _class_mask("agent")),
        ("QueueRemove", "Remove interface from queue.", _class_mask("agent")),
        ("QueueStatus", "Show queue status.", 0),
        ("QueueSummary", "Show queue summary.", 0),
        ("Redirect", "Redirect (transfer) a call.", _class_mask("call")),
        ("Setvar", "Sets a channel variable or function value.", _class_mask("call")),
    )
}


def perm_mask(text: str) -> int:
    """manager.c get_perm() of a `read =`/`write =` value, with ast_instring()'s quirks: a
    token before a comma matches every class it is the start of ("c," gives call, cdr, cc,
    command and config), an empty one matches them all, the last token matches exactly."""
    tokens = text.split(",")
    mask = 0
    for label, bit in _PERMS:
        if label == tokens[-1] or any(label.startswith(token) for token in tokens[:-1]):
            mask |= bit
    return mask


def authority_text(authority: int) -> str:
    """manager.c authority_to_str(): the class names and "all" (every class but "none"), or
    `<none>`. ListCommands prints it as `(Priv: system,reporting,all)`."""
    names = [label for label, bit in _PERMS[:-1] if authority & bit]
    return ",".join(names) or "<none>"


# --- eventfilter ---

_METHODS = ("regex", "exact", "starts_with", "ends_with", "contains", "none")


@dataclass(frozen=True)
class EventFilter:
    """One `eventfilter` line: manager.c manager_add_filter() parsed it, filter_cmp_fn() runs it."""

    exclude: bool
    method: str  # one of _METHODS
    pattern: str
    name: str = ""  # advanced filters: only events of this name
    header: str = ""  # advanced filters: only the values of this header ("Channel:")
    regex: re.Pattern[str] | None = field(default=None, compare=False)

    def matches(self, event_name: str, text: str) -> bool:
        if self.name and self.name != event_name:  # Asterisk compares name hashes: case matters
            return False
        if not self.header:
            return self._match(text)
        for line in text.split("\n"):  # ast_read_line_from_buffer(): LF, then a CR before it
            line = line.removesuffix("\r")
            if line.startswith(self.header):
                value = line[len(self.header) :].lstrip(" \t\r\n\v\f")
                if value and self._match(value):
                    return True
        return False

    def _match(self, text: str) -> bool:
        if self.method == "regex":
            assert self.regex is not None
            return self.regex.search(text) is not None
        if self.method == "exact":
            return text == self.pattern
        if self.method == "starts_with":
            return text.startswith(self.pattern)
        if self.method == "ends_with":
            return text.endswith(self.pattern)
        if self.method == "contains":
            return self.pattern in text
        return True  # none


def parse_eventfilter(line: str) -> EventFilter:
    """A manager.conf line, `eventfilter = Event: Hangup` (legacy: a regular expression over the
    whole event, `!` first excludes) or `eventfilter(name(Hangup),header(Channel),method(starts_with))
    = PJSIP/` (Asterisk 22.1+). Raises ValueError where Asterisk would log a warning and drop it."""
    criteria, sep, pattern = line.partition("=")
    criteria, pattern = criteria.strip(), pattern.strip()
    if not sep or not criteria.startswith("eventfilter"):
        raise ValueError(f"not an eventfilter line: {line!r}")
    exclude = pattern.startswith("!")
    pattern = pattern.removeprefix("!")
    method, name, header = "regex", "", ""
    options = criteria[len("eventfilter") :]
    if not options:
        if not pattern:
            raise ValueError(f"{line!r}: a legacy filter needs a pattern")
    else:
        if not (options.startswith("(") and options.endswith(")")):
            raise ValueError(f"{line!r}: filter options not formatted correctly")
        method = "none"
        found = False
        for option in re.split(r"[ ,)]+", options[1:]):  # strtok_r(" ,)")
            if not option:
                continue
            key, _, value = option.partition("(")
            value = value.strip()
            if key == "action" and value in ("include", "exclude"):
                exclude = value == "exclude"
            elif key == "name" and value:
                name = value
            elif key == "header" and value:
                header = value if value.endswith(":") else value + ":"
            elif key == "method" and value in _METHODS:
                method = value
            else:
                raise ValueError(f"{line!r}: filter option {option!r} is unknown")
            found = True
        if not found:
            raise ValueError(f"{line!r}: no action, name, header or method option")
        if bool(pattern) == (method == "none"):
            raise ValueError(f"{line!r}: method {method} does not fit the pattern {pattern!r}")
        if not (name or header or pattern):
            raise ValueError(f"{line!r}: no name or header option and no pattern")
    try:
        # POSIX extended, no REG_NEWLINE: "." also matches the line breaks of the event.
        regex = re.compile(pattern, re.DOTALL) if method == "regex" else None
    except re.error as error:
        raise ValueError(f"{line!r}: {error}") from None
    return EventFilter(exclude, method, pattern, name, header, regex)


def admits(filters: tuple[EventFilter, ...], data: bytes) -> bool:
    """manager.c should_send_event(): no filters pass everything; include filters alone pass
    what one of them matches; exclude filters alone pass what none matches; both: included
    and not excluded."""
    if not filters:
        return True
    text = data.decode("latin-1")
    event_name = text[len("Event: ") : text.find("\r\n")] if text.startswith("Event: ") else ""
    includes = [f for f in filters if not f.exclude]
    excludes = [f for f in filters if f.exclude]
    if includes and not any(f.matches(event_name, text) for f in includes):
        return False
    return not any(f.matches(event_name, text) for f in excludes)


# --- the users ---


@dataclass(frozen=True)
class ManagerUser:
    """A manager.conf user section: `read`/`write` as there ("call,reporting", "all"; unset is
    none) and its `eventfilter` lines, e.g. ("eventfilter = Event: ExtensionStatus",)."""

    username: str
    secret: str
    read: str = "all"
    write: str = "all"
    eventfilters: tuple[str, ...] = ()
    filters: tuple[EventFilter, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        filters = tuple(parse_eventfilter(line) for line in self.eventfilters)  # bad lines fail here
        object.__setattr__(self, "filters", filters)

    @property
    def read_mask(self) -> int:
        return perm_mask(self.read)

    @property
    def write_mask(self) -> int:
        return perm_mask(self.write)

    def may(self, action: str) -> bool:
        """manager.c process_message(): an action needs one of its classes in `write`."""
        authority = ACTIONS[action.lower()][2] if action.lower() in ACTIONS else 0
        return authority == 0 or bool(self.write_mask & authority)

    def commands(self) -> list[tuple[str, str]]:
        """ListCommands: (`Name`, `synopsis (Priv: classes)`) of every action this user may run,
        in Asterisk's order (registration keeps them sorted, case ignored)."""
        return [
            (name, f"{synopsis} (Priv: {authority_text(authority)})")
            for key, (name, synopsis, authority) in sorted(ACTIONS.items())
            if self.may(key)
        ]
