"""`blf-panel check`: before going live, what the PBX and memcached give the panel, as a table
(capability | status | what is lost | fix) from the one table in app/capabilities.py.
Do not break: it only reads (the lists, a scratch key it deletes again), and "missing" means
proven missing; events nothing caused while it waited are "not seen", which does not fail."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from aiomcache.exceptions import ClientException
from panoramisk import Manager
from panoramisk.message import Message

from app.ami import ActionFailed, AmiSession, AmiTarget, LinkLost, LoginRefused, link_error
from app.capabilities import (
    ACTIONS,
    EVENTS,
    MISSING,
    NOT_SEEN,
    OK,
    Capability,
    Finding,
    action_finding,
    event_finding,
    events_not_asked,
    list_changes,
)
from app.i18n import N_, _, ngettext
from app.runtime import ami_target
from app.said import shown
from app.settings import Settings
from app.store.aiomcache_repairs import SafeClient
from app.store.contract import parse_memcached_url

log = logging.getLogger(__name__)

# Events travel through stasis and the session's queue while a list answer is written at once:
# a change the "after" list shows may have its event a moment behind. An assumption, far above
# the milliseconds an idle PBX takes; it is waited for only when such an event is missing.
GRACE = 2.0
SCRATCH_TTL = 60  # seconds: a scratch key a killed check leaves behind expires by itself


# What the status column says, translated where the table is drawn (the statuses themselves
# are compared): capabilities.OK, MISSING, NOT_SEEN and the two of this module.
OPTIONAL_MISSING, NOT_USED = N_("missing (optional)"), N_("not used")
STATUS_WORDS = (N_("ok"), N_("missing"), N_("not seen"), OPTIONAL_MISSING, NOT_USED)


class CheckFailed(Exception):
    """The check cannot even start (PBX unreachable, login refused): one line, exit 1."""


@dataclass(frozen=True)
class Row:
    name: str
    status: str
    lost: str = ""
    fix: str = ""
    why: str = ""
    failing: bool = False


async def run_check(settings: Settings, *, wait: float, out: TextIO, grace: float = GRACE) -> int:
    """Check the PBX (AMI_*) and memcached (MEMCACHED_URL), print the table; 0 when all the
    panel needs works, 1 otherwise. Raises CheckFailed when the PBX cannot be logged in to."""
    findings = await check_pbx(ami_target(settings), wait, grace)
    rows = [_row(finding) for finding in findings]
    rows.append(await check_memcached(settings))
    out.write(render(rows))
    return 1 if any(row.failing for row in rows) else 0


async def check_pbx(target: AmiTarget, wait: float, grace: float = GRACE) -> list[Finding]:
    session = AmiSession(target)
    try:
        try:
            await session.open(timeout=max(target.ping_timeout, 5.0))
        except LoginRefused as error:
            raise CheckFailed(
                _(
                    "AMI login refused for user %(user)r at %(address)s (%(error)s): check AMI_USERNAME "
                    "and AMI_SECRET, and the user's permit/deny lines in manager.conf"
                )
                % {"user": target.username, "address": target.address, "error": error}
            ) from None
        except (OSError, TimeoutError, LinkLost) as error:
            raise CheckFailed(
                _("cannot reach the PBX at %(address)s: %(error)s")
                % {"address": target.address, "error": link_error(error)}
            ) from None
        try:
            return await _probe(session, target.username, wait, grace)
        except (OSError, TimeoutError, LinkLost) as error:
            raise CheckFailed(
                _("the PBX at %(address)s stopped answering: %(error)s")
                % {"address": target.address, "error": link_error(error)}
            ) from None
    finally:
        session.close()


class _EventCount:
    """Counts the events that arrive, by name; `arrived` wakes a waiter at each one."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.arrived = asyncio.Event()

    def __call__(self, _manager: Manager, message: Message) -> None:
        self.seen[str(message.event)] += 1
        self.arrived.set()

    async def until(self, done: Callable[[], bool], timeout: float) -> None:
        """Return when `done()` holds or after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            pass


async def _probe(session: AmiSession, username: str, wait: float, grace: float) -> list[Finding]:
    """Every action for real, then the events: the witness lists before and after a wait."""
    events = _EventCount()
    session.register_event("*", events)
    findings: list[Finding] = []
    lists: dict[str, list[Message]] = {}
    exten = "blf-panel-check"  # an endpoint to ask for; the first hint's once the list is in
    for capability in ACTIONS:
        reply, items = await _try(session, capability.ami[0], exten)
        findings.append(action_finding(capability, reply, username))
        if items is not None:
            lists[capability.ami[0]] = items
        if items and capability.ami[0] == "ExtensionStateList":
            exten = next((str(i["Exten"]) for i in items if i.get("Exten")), exten)
    not_asked = {f.capability: f for f in events_not_asked(str(session.config.get("events") or ""))}
    watched = [c for c in EVENTS if c not in not_asked and c.witness and c.witness.action in lists]

    def seen() -> set[str]:
        # FullyBooted is written right after the login reply, before we could register.
        return set(events.seen) | ({"FullyBooted"} if session.booted.done() else set())

    def all_seen() -> bool:
        return all(any(name in seen() for name in c.ami) for c in watched)

    log.info("waiting up to %gs for events (make a call and change a lamp meanwhile to see them all)", wait)
    await events.until(all_seen, wait)
    changes: dict[Capability, int] = {}
    for capability in watched:
        assert capability.witness is not None
        _reply, after = await _try(session, capability.witness.action, exten)
        if after is not None:  # an answer that failed now proves nothing
            changes[capability] = list_changes(lists[capability.witness.action], after, capability.witness)

    def explained() -> bool:
        return all(not n or any(name in seen() for name in c.ami) for c, n in changes.items())

    await events.until(explained, grace)
    for capability in EVENTS:
        finding = not_asked.get(capability)
        findings.append(finding or event_finding(capability, username, seen(), changes.get(capability), wait))
    return findings


async def _try(session: AmiSession, action: str, exten: str) -> tuple[Any, list[Message] | None]:
    """Run an action as the collector does; the reply, and the items of a list action (None
    when it failed). `exten` names the endpoint and astdb key the name lookups ask for."""
    if action == "Ping":
        return await session.request({"Action": "Ping"}), None
    fields: Mapping[str, str] = {
        "PJSIPShowEndpoint": {"Endpoint": exten},
        "DBGet": {"Family": "AMPUSER", "Key": f"{exten}/cidname"},
    }.get(action, {})
    try:
        items = await session.request_list(action, **fields)
    except ActionFailed as error:
        return {"Response": "Error", "Message": error.message}, None
    return items, items


async def check_memcached(settings: Settings) -> Row:
    """A scratch key under STORE_PREFIX written, read back and deleted; and the version key."""
    if not settings.memcached_url:
        return Row("memcached", NOT_USED, why=_("MEMCACHED_URL is empty: the states stay in one process"))
    host, port = parse_memcached_url(settings.memcached_url)
    key = f"{settings.store_prefix}check:{secrets.token_hex(4)}".encode()
    value = secrets.token_hex(8).encode()
    client = SafeClient(host, port, pool_size=1)
    try:
        async with asyncio.timeout(settings.store_timeout * 4):  # four round trips
            stored = await client.set(key, value, exptime=SCRATCH_TTL)
            read = await client.get(key)
            await client.delete(key)
            version = await client.get(f"{settings.store_prefix}version".encode())
    except (OSError, TimeoutError, ClientException) as error:
        reason = str(error) or type(error).__name__
        return Row(
            "memcached",
            MISSING,
            _("every state: without the store no viewer sees anything"),
            _("start memcached at %(host)s:%(port)s, or correct MEMCACHED_URL")
            % {"host": host, "port": port},
            why=_("memcached at %(host)s:%(port)s: %(reason)s")
            % {"host": host, "port": port, "reason": reason},
            failing=True,
        )
    finally:
        await client.close()
    if not stored or read != value:
        return Row(
            "memcached",
            MISSING,
            _("every state: what the collector writes cannot be read back"),
            _("give memcached more memory (-m) or check what else writes there"),
            why=_("memcached at %(host)s:%(port)s did not keep a scratch key") % {"host": host, "port": port},
            failing=True,
        )
    if version and version.isdigit():
        published = _("version %(version)s") % {"version": int(version)}
    else:
        published = _("nothing published yet")
    return Row("memcached", OK, why=f"{host}:{port}, {settings.store_prefix!r}: {published}")


def _row(finding: Finding) -> Row:
    """A finding as the table shows it: its words (English in app/capabilities.py, as the log
    has them) in the CLI's language."""
    capability = finding.capability
    status = finding.status
    if status == MISSING and not capability.needed:
        status = OPTIONAL_MISSING
    name, why = _(capability.name), shown(finding.why)
    if finding.status == OK:
        return Row(name, status, why=why)
    return Row(name, status, _(capability.lost), shown(finding.fix), why, finding.failing)


def render(rows: list[Row]) -> str:
    """The table, then why for each row that is not plain ok, then one verdict line."""
    table = [(_("capability"), _("status"), _("what is lost"), _("fix"))]
    table += [(row.name, _(row.status), row.lost, row.fix) for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(line)).rstrip()
        for line in table
    ]
    notes = [f"{row.name}: {row.why}" for row in rows if row.why]
    failing = sum(row.failing for row in rows)
    unseen = sum(row.status == NOT_SEEN for row in rows)
    if failing:
        verdict = ngettext(
            "%(count)d thing the panel needs is missing: see the fix column",
            "%(count)d things the panel needs are missing: see the fix column",
            failing,
        ) % {"count": failing}
    else:
        verdict = _("everything the panel needs works")
    if unseen:
        verdict += "; " + ngettext(
            "%(count)d kind of event not seen: nothing changed on the PBX meanwhile "
            "(run again with --wait 60 and make a call, change a lamp and a presence)",
            "%(count)d kinds of event not seen: nothing changed on the PBX meanwhile "
            "(run again with --wait 60 and make a call, change a lamp and a presence)",
            unseen,
        ) % {"count": unseen}
    return "\n".join([*lines, "", *notes, "", verdict]) + "\n"
