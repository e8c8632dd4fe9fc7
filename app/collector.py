"""The single AMI session: log in, wait until the PBX has booted, take the full picture,
follow events, publish batches. One `Collector` per PBX, however many viewers.
Do not break: nothing that failed or came from a booting PBX is read as "nothing there"."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Any

from panoramisk import Manager
from panoramisk.message import Message

from app.ami import ActionFailed, AmiSession, AmiTarget, LinkLost, LoginRefused, link_error
from app.calls import CHANNEL_EVENTS
from app.capabilities import log_missing
from app.details import PRESENCE_EVENTS, DetailTracker
from app.directory import DirectoryFile
from app.metrics import Metrics
from app.publisher import Publisher
from app.queues import QUEUE_EVENTS, QUEUE_MODULES, QueueBook, held_queue_key
from app.schema import clean_text
from app.snapshot import UNKNOWN_START, PbxPicture
from app.states import (
    ExtensionRemoved,
    ExtensionState,
    InvalidFrame,
    parse_device_state,
    parse_extension_status,
)
from app.store import SnapshotStore
from app.tasks import background, raise_if_cancelled

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
DIRECTORY_CHECK = 2.0  # seconds between looks at the directory file's mtime
# Seconds between looks at a PBX that is starting: Asterisk 22 takes logins about 0.5 s
# after `core restart now` and loads its modules over the following seconds.
BOOT_PROBE = 0.5
# A part of the picture that failed is asked again after 1 s, doubling to 30 s, 8 times
# (about 2 minutes): enough for the last modules of a boot, not a load on a PBX that
# will never allow it; the next login asks again.
RETRY_FIRST = 1.0
RETRY_MAX = 30.0
RETRIES = 8
# The full picture, in the order asked: the lamps last before the details, so that the
# devices are known when the lamps are placed (part -> list action).
PARTS = {
    "devices": "DeviceStateList",
    "lamps": "ExtensionStateList",
    "presence": "PresenceStateList",
    "calls": "CoreShowChannels",
    "queues": "QueueStatus",
}
NO_HINTS = "No dialplan hints are available"  # extension_state.c: a PBX without any hint
MAX_REASON = 120  # characters of a failure's text in a log line or on the banner


class Collector:
    """Keeps one AMI session alive and the store in step with the PBX."""

    def __init__(
        self,
        target: AmiTarget,
        store: SnapshotStore,
        *,
        publish_window: float = 0.05,
        directory: DirectoryFile | None = None,
        show_numbers: bool = True,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.target = target
        self.metrics = metrics or Metrics()
        self.store = store
        self.clock = clock
        self.picture = PbxPicture(started_at=clock(), address=target.address)
        self.details = DetailTracker(self.picture, show_numbers=show_numbers)
        self.queues = QueueBook()
        self._queues_reloaded = asyncio.Event()  # app_queue reloaded: ask QueueStatus again
        self._resyncing = asyncio.Lock()  # one list at a time: they share `_syncing`
        self.directory = directory or DirectoryFile(None)
        self.publisher = Publisher(
            self.picture, store, window=publish_window, clock=clock, metrics=self.metrics
        )
        self.published = self.publisher.published  # set after every successful publish
        self.logins = 0
        self.events = 0  # AMI events taken (for benchmarks)
        # Per event type, handed to the metrics at each ping: a counter per event on the
        # hot path would cost a few percent of the collector's 14,000 events per CPU-second.
        self._event_counts: collections.Counter[str] = collections.Counter()
        self._syncing: list[Message] | None = None
        self._sees_fully_booted = False  # this PBX sent us FullyBooted before: wait for it
        self._failing: dict[str, str] = {}  # actions failing in this session -> their error

    async def run(self) -> None:
        """Run until cancelled: the AMI link and the publisher side by side."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._link_forever(), name="collector-ami")
            group.create_task(self.publisher.run(), name="collector-publish")
            group.create_task(self._follow_directory(), name="collector-directory")

    # --- the AMI side ---

    async def _link_forever(self) -> None:
        backoff = FIRST_BACKOFF
        failures = 0
        while True:
            session = AmiSession(self.target)
            try:
                await session.open(timeout=max(self.target.ping_timeout, 5.0))
            except LoginRefused as error:
                session.close()
                log.error(
                    "AMI login refused for user %r at %s (%s); check AMI_USERNAME and "
                    "AMI_SECRET; retrying in %gs",
                    self.target.username,
                    self.target.address,
                    clean_text(str(error), MAX_REASON),
                    self.target.auth_retry,
                )
                self._link_failed(error)
                await asyncio.sleep(self.target.auth_retry)
                continue
            except (OSError, TimeoutError, LinkLost) as error:
                session.close()
                raise_if_cancelled()
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                reason = str(error) or type(error).__name__
                log.log(level, "AMI %s unreachable (%s); retrying in %gs", self.target, reason, backoff)
                self._link_failed(error)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.target.reconnect_max)
                continue
            backoff, failures = FIRST_BACKOFF, 0
            self.logins += 1
            self.metrics.ami_logins.inc()
            self._failing.clear()
            log.info("AMI logged in to %s", self.target)
            if self.picture.set_link(self.picture.link, self.clock()):  # reached: no error to show
                self.publisher.poke()
            try:
                await self._follow(session)
            except (LinkLost, TimeoutError, OSError) as error:
                log.warning("AMI link to %s lost: %s", self.target, error)
            finally:
                session.close()
                self.metrics.ami_link_losses.inc()
                self._count_events()
                self._link_failed(LinkLost())

    def _link_failed(self, error: BaseException) -> None:
        """The link is down: "down" since now once the PBX was ever reached, else still
        "connecting", with the reason viewers are shown ("cannot reach the PBX at ...")."""
        if self.logins:
            changed = self.picture.set_link("down", self.clock())
        else:
            changed = self.picture.set_link("connecting", self.clock(), link_error(error))
        if changed:
            self.publisher.poke()

    async def _follow(self, session: AmiSession) -> None:
        session.register_event("*", self._on_event)  # _take picks the events it knows
        await self._wait_for_boot(session)
        await log_missing(session.request, str(session.config.get("events") or ""), self.target.username)
        # The picture (and whatever of it fails, again) alongside the link watch: the panel
        # is live as soon as the lamps are in, the names and the retries come after.
        self._queues_reloaded.clear()
        async with (
            background(self._take_picture(session), "collector-picture") as picture,
            background(self._follow_queue_reloads(session), "collector-queue-reloads") as reloads,
        ):
            await self._watch_link(session, picture, reloads)

    async def _watch_link(self, session: AmiSession, *tasks: asyncio.Task[None]) -> None:
        """Return never; raise LinkLost when the PBX closes the link or stops answering,
        and what one of `tasks` raised if it failed (a bug: the supervisor starts us again)."""
        watched: set[asyncio.Future[Any]] = {session.lost, *tasks}
        while True:
            done, _ = await asyncio.wait(
                watched, timeout=self.target.ping_interval, return_when="FIRST_COMPLETED"
            )
            if session.lost in done:
                raise LinkLost("connection closed by the PBX")
            if done - {session.lost}:
                for task in done:
                    watched.discard(task)
                    task.result()
                continue
            await self._ping(session)

    async def _ping(self, session: AmiSession) -> None:
        self._count_events()
        try:
            await session.request({"Action": "Ping"}, timeout=self.target.ping_timeout)
        except TimeoutError:
            raise LinkLost(f"no answer to Ping within {self.target.ping_timeout:g}s (silent peer)") from None

    async def _wait_for_boot(self, session: AmiSession) -> None:
        """Return once the PBX has finished starting, or after AMI_BOOT_WAIT. Meanwhile the
        link is "starting" (the panel says so, tiles greyed, none removed); events still
        move the lamps and a hint that appears adds its tile.

        How the end of a boot is known. Asterisk says it one way: the `FullyBooted` event
        (asterisk.c publish_fully_booted when the boot ends; manager.c action_login writes
        one right after the login reply once booted), of class `system`, so the user needs
        `read = system` (and an `eventfilter`, if any, must let it through). Nothing else
        tells an AMI client: CoreStatus (write system or reporting) gives only the start
        time, in the PBX's local time without its zone; the CLI's `core waitfullybooted`
        needs `write = command` (every CLI command: too much for a panel) and blocks the
        session. So without the event, the sign is `DeviceStateList` answering: its module,
        res_manager_devicestate, loads at AST_MODPRI_DEVSTATE_CONSUMER (150), after every
        module of the default priority (128, pbx_config: the dialplan's hints) and the
        channel drivers (70); until then Asterisk answers "Invalid/unknown command" (seen on
        22.10.1 with 5 of 18 hints loaded). A collector that got `FullyBooted` from this PBX
        before waits for it instead: it comes a moment later, once the other modules of
        priority 150 (app_queue, res_manager_presencestate) are loaded too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.target.boot_wait
        starting = False
        while True:
            # One round trip first: a FullyBooted written after the login reply is in by then.
            answer = await self._boot_probe(session)
            if session.booted.done():
                self._sees_fully_booted = True
                break
            if answer is None and not self._sees_fully_booted:
                break
            if not starting:
                starting = True
                log.info("AMI %s: the PBX is starting; waiting up to %gs", self.target, self.target.boot_wait)
                if self.picture.set_link("starting", self.clock()):
                    self.publisher.poke()
            remaining = deadline - loop.time()
            if remaining <= 0:
                why = (
                    "no FullyBooted (the user needs read = system; an eventfilter must let it through)"
                    if self._sees_fully_booted
                    else f"DeviceStateList still answers {answer!r} (is res_manager_devicestate loaded?)"
                )
                log.warning(
                    "AMI %s: %s %gs after login (AMI_BOOT_WAIT); taking the picture anyway",
                    self.target,
                    why,
                    self.target.boot_wait,
                )
                self._sees_fully_booted = False  # next time, the module sign may end the wait
                return
            waits = {session.lost, session.booted}
            done, _ = await asyncio.wait(
                waits, timeout=min(BOOT_PROBE, remaining), return_when="FIRST_COMPLETED"
            )
            if session.lost in done:
                raise LinkLost("connection closed by the PBX")
        if starting:
            log.info("AMI %s: the PBX has finished starting", self.target)

    async def _boot_probe(self, session: AmiSession) -> str | None:
        """One round trip: None when DeviceStateList answers (the modules are loaded), else
        its error, cleaned; a collector that waits for FullyBooted only pings ("")."""
        if self._sees_fully_booted:
            await self._ping(session)
            return ""
        try:
            await session.request_list("DeviceStateList", timeout=self.target.ping_timeout)
        except ActionFailed as error:
            return clean_text(error.message, MAX_REASON)
        except TimeoutError:
            raise LinkLost(f"no answer within {self.target.ping_timeout:g}s (silent peer)") from None
        return None

    async def _follow_queue_reloads(self, session: AmiSession) -> None:
        """`Reload` of app_queue (queues.conf read again, members may differ without a
        QueueMember* event): the queues' part of the picture again, on the same link."""
        while True:
            await self._queues_reloaded.wait()
            self._queues_reloaded.clear()
            log.info("AMI %s: app_queue reloaded; asking QueueStatus again", self.target)
            await self._take_picture(session, {"queues"})

    async def _take_picture(self, session: AmiSession, parts: set[str] | None = None) -> None:
        """The full picture (or these `parts` of it), then the names the directory does not
        give. What fails (an action not loaded or not allowed, no answer) is asked again after
        RETRY_FIRST s, doubling to RETRY_MAX, RETRIES times; whatever is still missing, the
        next login asks."""
        missing = set(PARTS) if parts is None else parts
        unnamed: list[str] | None = None if parts is None else []  # None: not asked yet
        delay = RETRY_FIRST
        for attempt in range(RETRIES + 1):
            if attempt:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)
            try:
                if missing:
                    async with self._resyncing:
                        missing = await self._resync(session, missing)
                if "lamps" not in missing and parts is None:
                    unnamed = await self._ask_names(session, unnamed)
            except LinkLost:
                return  # the link watch sees it too, and ends the session
            if not missing and not unnamed:
                return
        log.warning(
            "AMI %s: still missing after %d tries: %s; the next login asks again",
            self.target,
            RETRIES,
            ", ".join(sorted(missing) + ([f"{len(unnamed or ())} names"] if unnamed else [])),
        )

    async def _resync(self, session: AmiSession, parts: set[str]) -> set[str]:
        """Ask for these `parts` of the full picture; return those that failed. Events that
        arrive meanwhile are held and merged in arrival order, so a change during a list is
        never overwritten. The link is up once the lamps (ExtensionStateList) are in."""
        self._syncing = []
        answers: dict[str, list[Message]] = {}
        try:
            for part, action in PARTS.items():
                if part not in parts:
                    continue
                try:
                    answers[part] = await session.request_list(action)
                except ActionFailed as error:
                    if part == "lamps" and error.message == NO_HINTS:
                        answers[part] = []  # the PBX has booted: it really has no hints
                    else:
                        self._failed(action, error.message)
                except TimeoutError as error:
                    self._failed(action, str(error))
                else:
                    self._answered(action)
            now = self.clock()
            if "devices" in answers:
                self.picture.devices.clear()
                for message in answers["devices"]:
                    self._take(message, UNKNOWN_START)  # lists tell no start (nor below)
            items = answers.get("lamps")
            replace: list[ExtensionState] = []
            for message in items or ():
                try:
                    state = parse_extension_status(message)
                except InvalidFrame as error:
                    log.warning("skipping ExtensionStateList item: %s", error)
                    continue
                if isinstance(state, ExtensionState):
                    replace.append(state)
            held = self._syncing
            self._syncing = None
            if items is not None:
                # Keep only the newest list entry or event per extension, in arrival order.
                self.picture.replace_all(replace)
            for message in answers.get("presence", ()):
                self._take(message, UNKNOWN_START)
            if "calls" in answers:
                self.details.rebuild_calls(answers["calls"], now)
            self.details.refresh_names()
            shown = set(self.queues.queues) | set(self.picture.queues)
            if "queues" in answers:
                names, problems = self.queues.replace_all(answers["queues"], now)
                for problem in problems:
                    log.warning("skipping QueueStatus item: %s", problem)
                shown |= names
            self._show_queues(shown, now)
            list_arrival = {
                parse_key(m): m.arrival for m in items or () if getattr(m, "arrival", None) is not None
            }
            for m in answers.get("queues", ()):
                list_arrival.setdefault(held_queue_key(m), getattr(m, "arrival", 0))
            for event in held:
                key = held_queue_key(event) or parse_key(event)
                if key is None or event.arrival > list_arrival.get(key, 0):
                    self._take(event, now)
            if items is not None:
                self.picture.set_link("up", now)
                log.info("AMI full picture: %d extensions", len(self.picture.extensions))
            self.publisher.poke()
        finally:
            self._syncing = None
        return {part for part in parts if part not in answers}

    async def _ask_names(self, session: AmiSession, extens: list[str] | None) -> list[str]:
        """Names the directory does not give (of `extens`, else of all), from the PBX, one
        request at a time; returns the extensions whose lookup failed, to ask again."""
        names: dict[str, str] = {}
        failed: list[str] = []
        problem = ""
        for exten in self.details.unnamed() if extens is None else extens:
            try:
                name = await self._pbx_name(session, exten)
            except (ActionFailed, TimeoutError) as error:
                failed.append(exten)
                problem = error.message if isinstance(error, ActionFailed) else str(error)
                continue
            if name:
                names[exten] = name
        if failed:
            self._failed("name lookups", f"{len(failed)} failed, the last with {problem}")
        else:
            self._answered("name lookups")
        # All at once: one new version (and one regrouping of the views), not one per name.
        if self.details.take_pbx_names(names):
            self.publisher.poke()
        return failed

    async def _pbx_name(self, session: AmiSession, exten: str) -> str:
        """The PJSIP endpoint's caller ID, else FreePBX's AstDB `AMPUSER/<exten>/cidname`;
        "" when neither has one. ActionFailed or TimeoutError when the PBX could not say."""
        try:
            for item in await session.request_list("PJSIPShowEndpoint", Endpoint=exten):
                if item.event == "EndpointDetail" and item.get("Callerid"):
                    return str(item["Callerid"])
        except ActionFailed:
            pass  # no such endpoint, or no res_pjsip (loaded before either boot sign): ask the AstDB
        try:
            items = await session.request_list("DBGet", Family="AMPUSER", Key=f"{exten}/cidname")
        except ActionFailed as error:
            if error.unavailable:
                raise
            return ""  # "Database entry not found": not an extension FreePBX knows
        for item in items:
            if item.event == "DBGetResponse" and item.get("Val"):
                return str(item["Val"])
        return ""

    def _failed(self, what: str, message: str) -> None:
        """Log an action that failed: a warning the first time in a session, then quietly."""
        text = clean_text(message, MAX_REASON)  # the PBX's words: one line, bounded
        level = logging.DEBUG if what in self._failing else logging.WARNING
        self._failing[what] = text
        self.metrics.lookups_failed.labels(what).inc()
        log.log(level, "AMI %s failed (%s); asking again", what, text)

    def _answered(self, what: str) -> None:
        if self._failing.pop(what, None) is not None:
            log.info("AMI %s answered now", what)

    async def _follow_directory(self) -> None:
        """Re-read the directory file when it changes on disk."""
        while True:
            # In a thread: a big file takes a while to parse, the AMI session must not wait.
            if await asyncio.to_thread(self.directory.load) and self.details.use_directory(
                self.directory.directory
            ):
                self.publisher.poke()
            await asyncio.sleep(DIRECTORY_CHECK)

    def _count_events(self) -> None:
        for event, count in self._event_counts.items():
            self.metrics.count_event(event, count)
        self._event_counts.clear()

    def _on_event(self, _manager: Manager, message: Message) -> None:
        self.events += 1
        self._event_counts[message.event or ""] += 1
        if self._syncing is not None:
            self._syncing.append(message)
            return
        if self._take(message, self.clock()):
            self.publisher.poke()

    def _show_queues(self, names: set[str], now: float) -> bool:
        return self.picture.show_queues(self.queues, names, now, show_numbers=self.details.show_numbers)

    def _take(self, message: Message, now: float) -> bool:
        """Apply one event or list item to the picture; a bad frame is logged and skipped."""
        try:
            if message.event == "ExtensionStatus":
                update = parse_extension_status(message)
                if isinstance(update, ExtensionRemoved):
                    return self.picture.remove(update.key)
                return self.picture.apply(update, now)
            if message.event == "DeviceStateChange":
                device = parse_device_state(message)
                return self.picture.apply_device(device.device, device.state, now) > 0
            if message.event in PRESENCE_EVENTS:
                return self.details.take_presence(message, now)
            if message.event in CHANNEL_EVENTS:
                return self.details.take_channel_event(message, now)
            if message.event in QUEUE_EVENTS:
                names = self.queues.apply(message, now)
                return self.picture.show_queues(
                    self.queues, names, now, show_numbers=self.details.show_numbers
                )
            if message.event == "Reload" and str(message.get("Module") or "") in QUEUE_MODULES:
                self._queues_reloaded.set()
        except InvalidFrame as error:
            log.warning("skipping AMI %s: %s", message.event or "frame", error)
        except Exception:  # a bug must not kill the AMI protocol (asyncio would close it)
            log.exception("failed to apply AMI %s", message.event)
        return False


def parse_key(message: Message) -> str | None:
    exten, context = message.get("Exten"), message.get("Context")
    return f"{exten}@{context}" if exten and context else None
