"""The AMI wire format as Asterisk 22's manager.c writes and reads it: encoding, framing, masks.
Do not break: every byte is checked against tests/fixtures/ami/ (header order, CRLF, where
`ActionID` goes, latin-1 passed through unchanged)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
MAX_FRAME_BYTES = 64 * 1024  # one client message; a client sending more is dropped

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

Header = tuple[str, object]


# --- writing ---


def encode(headers: Iterable[Header]) -> bytes:
    """One AMI message: `Key: Value` lines and a blank line, all CRLF."""
    text = "".join(f"{key}: {value}\r\n" for key, value in headers) + "\r\n"
    return text.encode("latin-1", "replace")


def wire_text(text: str) -> str:
    """Text as Asterisk sends it, UTF-8, held as latin-1 characters like everything the
    simulator reads from clients (`encode` writes latin-1, so the bytes go out unchanged)."""
    return text.encode("utf-8").decode("latin-1")


def action_id_header(action_id: str) -> list[Header]:
    """`ActionID: ...` when the client sent one; nothing when it did not."""
    return [("ActionID", action_id)] if action_id else []


def response(status: str, action_id: str, *headers: Header) -> bytes:
    """A reply; `ActionID` comes right after `Response` and only when the client sent one."""
    return encode([("Response", status), *action_id_header(action_id), *headers])


def error(action_id: str, message: str) -> bytes:
    return response("Error", action_id, ("Message", message))


def list_complete(event: str, action_id: str, count: int) -> bytes:
    tail: list[Header] = [("EventList", "Complete"), ("ListItems", count)]
    return encode([("Event", event), *action_id_header(action_id), *tail])


def event_list(action_id: str, message: str, items: list[bytes], complete: str) -> bytes:
    """The whole reply to a list action (transcripts 03, 04, 06, 15): an ack with
    `EventList: start` and `message`, the items, and the `complete` event counting them."""
    ack = response("Success", action_id, ("EventList", "start"), ("Message", message))
    return b"".join([ack, *items, list_complete(complete, action_id, len(items))])


def command_output(status: str, action_id: str, lines: Iterable[str]) -> bytes:
    """The reply to `Action: Command` since Asterisk 14: one `Output:` header per line."""
    output = [("Output", line) for line in lines]
    return response(status, action_id, ("Message", "Command output follows"), *output)


# --- event classes ---


def authority_to_str(mask: int) -> str:
    """manager.c authority_to_str(): the class names a permission mask holds, comma-joined."""
    names = [name for name, bit in EVENT_CLASSES.items() if mask & bit]
    return ",".join(names) or "<none>"


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


# --- addresses and time stamps ---


def ami_address(sockaddr: Any) -> str:
    """`IPV4/TCP/127.0.0.1/15038`, as security events name an address."""
    if not isinstance(sockaddr, tuple) or len(sockaddr) < 2:
        return "IPV4/TCP/0.0.0.0/0"
    host, port = sockaddr[0], sockaddr[1]
    return f"IPV{6 if ':' in host else 4}/TCP/{host}/{port}"


def event_tv() -> str:
    """`2026-11-26T15:21:30.236+0000`: local time, milliseconds, numeric zone."""
    now = datetime.now().astimezone()
    return f"{now:%Y-%m-%dT%H:%M:%S}.{now.microsecond // 1000:03d}{now:%z}"


def timestamp() -> str:
    """Ping's `Timestamp`: epoch seconds with 6 decimals (%ld.%06lu)."""
    ns = time.time_ns()
    return f"{ns // 1_000_000_000}.{ns // 1000 % 1_000_000:06d}"


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
