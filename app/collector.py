"""The single AMI session: log in, take the full picture, follow events, publish batches.

One `Collector` per PBX, however many viewers. It never trusts the link: a ping
watchdog catches a silent peer, every login resyncs everything, and while the link is
down the published snapshot says so. The store may vanish too; nothing is lost then,
the next successful publish carries the whole picture.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from panoramisk import Manager
from panoramisk.message import Message

from app.ami import AmiSession, AmiTarget, LinkLost, LoginRefused
from app.calls import CHANNEL_EVENTS
from app.details import PRESENCE_EVENTS, DetailTracker
from app.directory import DirectoryFile
from app.snapshot import PbxPicture
from app.states import (
    ExtensionRemoved,
    ExtensionState,
    InvalidFrame,
    parse_device_state,
    parse_extension_status,
)
from app.store import SnapshotStore, StoreLost, StoreUnavailable
from app.tasks import background

log = logging.getLogger(__name__)

FIRST_BACKOFF = 0.5
STORE_RETRY = 1.0  # seconds between publish attempts while the store is down
BURST = 0.002  # seconds for the rest of a burst of AMI events to arrive
STORE_CHECK = 1.0  # seconds between checks that the store still holds our version
DIRECTORY_CHECK = 2.0  # seconds between looks at the directory file's mtime


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
    ) -> None:
        self.target = target
        self.store = store
        self.publish_window = publish_window
        self.clock = clock
        self.picture = PbxPicture(started_at=clock())
        self.details = DetailTracker(self.picture, show_numbers=show_numbers)
        self.directory = directory or DirectoryFile(None)
        self.version = 0  # the newest version we published
        self.logins = 0
        self.events = 0  # AMI events taken (for benchmarks)
        self.published = asyncio.Event()  # set after every successful publish (for tests)
        self._changed = asyncio.Event()
        self._changed.set()  # publish the initial "not connected" picture at once
        self._syncing: list[Message] | None = None
        self._store_ok = True
        self._need_full = True  # the first publication carries everything

    async def run(self) -> None:
        """Run until cancelled: the AMI link and the publisher side by side."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._link_forever(), name="collector-ami")
            group.create_task(self._publish_forever(), name="collector-publish")
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
                    "AMI login refused for user %r at %s:%d (%s); check AMI_USERNAME and "
                    "AMI_SECRET; retrying in %gs",
                    self.target.username,
                    self.target.host,
                    self.target.port,
                    error,
                    self.target.auth_retry,
                )
                await asyncio.sleep(self.target.auth_retry)
                continue
            except (OSError, TimeoutError, LinkLost) as error:
                session.close()
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                reason = str(error) or type(error).__name__
                log.log(level, "AMI %s unreachable (%s); retrying in %gs", self.target, reason, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.target.reconnect_max)
                continue
            backoff, failures = FIRST_BACKOFF, 0
            self.logins += 1
            log.info("AMI logged in to %s", self.target)
            try:
                await self._follow(session)
            except (LinkLost, TimeoutError, OSError) as error:
                log.warning("AMI link to %s lost: %s", self.target, error)
            finally:
                session.close()
                if self.picture.set_link(False, self.clock()):
                    self._changed.set()

    async def _follow(self, session: AmiSession) -> None:
        session.register_event("*", self._on_event)  # _take picks the events it knows
        await self._resync(session)
        # The names come in the background: the panel is live before they arrive.
        async with background(self._ask_names(session), "collector-names"):
            await self._watch_link(session)

    async def _watch_link(self, session: AmiSession) -> None:
        """Return never; raise LinkLost when the PBX closes the link or stops answering."""
        while True:
            lost = await asyncio.wait({session.lost}, timeout=self.target.ping_interval)
            if lost[0]:
                raise LinkLost("connection closed by the PBX")
            try:
                await session.request({"Action": "Ping"}, timeout=self.target.ping_timeout)
            except TimeoutError:
                raise LinkLost(
                    f"no answer to Ping within {self.target.ping_timeout:g}s (silent peer)"
                ) from None

    async def _resync(self, session: AmiSession) -> None:
        """The full picture on every login. Events that arrive meanwhile are held and
        merged in arrival order, so a change during the list is never overwritten."""
        self._syncing = []
        try:
            devices = await session.request_list("DeviceStateList")
            items = await session.request_list("ExtensionStateList")
            presences = await session.request_list("PresenceStateList", quiet=True)
            channels = await session.request_list("CoreShowChannels", quiet=True)
            now = self.clock()
            self.picture.devices.clear()
            for message in devices:
                self._take(message, now)
            replace: list[ExtensionState] = []
            for message in items:
                try:
                    state = parse_extension_status(message)
                except InvalidFrame as error:
                    log.warning("skipping ExtensionStateList item: %s", error)
                    continue
                if isinstance(state, ExtensionState):
                    replace.append(state)
            held = self._syncing
            self._syncing = None
            # Keep only the newest list entry or event per extension, in arrival order.
            self.picture.replace_all(replace, now)
            for message in presences:
                self._take(message, now)
            self.details.rebuild_calls(channels, now)
            self.details.refresh_names()
            list_arrival = {parse_key(m): m.arrival for m in items if getattr(m, "arrival", None) is not None}
            for event in held:
                key = parse_key(event)
                if key is None or event.arrival > list_arrival.get(key, 0):
                    self._take(event, now)
            self.picture.set_link(True, now)
            self._changed.set()
            log.info("AMI full picture: %d extensions", len(self.picture.extensions))
        finally:
            self._syncing = None

    async def _ask_names(self, session: AmiSession) -> None:
        """Names the directory does not give, from the PBX: the PJSIP endpoint's caller ID,
        else FreePBX's AstDB `AMPUSER/<exten>/cidname`. One request at a time."""
        names: dict[str, str] = {}
        try:
            for exten in self.details.unnamed():
                name = await self._pbx_name(session, exten)
                if name:
                    names[exten] = name
        except (LinkLost, TimeoutError):
            return  # the next login asks again
        # All at once: one new version (and one regrouping of the views), not one per name.
        if self.details.take_pbx_names(names):
            self._changed.set()

    async def _pbx_name(self, session: AmiSession, exten: str) -> str:
        for item in await session.request_list("PJSIPShowEndpoint", quiet=True, Endpoint=exten):
            if item.event == "EndpointDetail" and item.get("Callerid"):
                return str(item["Callerid"])
        for item in await session.request_list("DBGet", quiet=True, Family="AMPUSER", Key=f"{exten}/cidname"):
            if item.event == "DBGetResponse" and item.get("Val"):
                return str(item["Val"])
        return ""

    async def _follow_directory(self) -> None:
        """Re-read the directory file when it changes on disk."""
        while True:
            # In a thread: a big file takes a while to parse, the AMI session must not wait.
            if await asyncio.to_thread(self.directory.load) and self.details.use_directory(
                self.directory.directory
            ):
                self._changed.set()
            await asyncio.sleep(DIRECTORY_CHECK)

    def _on_event(self, _manager: Manager, message: Message) -> None:
        self.events += 1
        if self._syncing is not None:
            self._syncing.append(message)
            return
        if self._take(message, self.clock()):
            self._changed.set()

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
                return self.details.take_presence(message)
            if message.event in CHANNEL_EVENTS:
                return self.details.take_channel_event(message, now)
        except InvalidFrame as error:
            log.warning("skipping AMI %s: %s", message.event or "frame", error)
        except Exception:  # a bug must not kill the AMI protocol (asyncio would close it)
            log.exception("failed to apply AMI %s", message.event)
        return False

    # --- the store side ---

    async def _publish_forever(self) -> None:
        loop = asyncio.get_running_loop()
        published_at = -math.inf
        while True:
            try:
                async with asyncio.timeout(STORE_CHECK):
                    await self._changed.wait()
            except TimeoutError:
                await self._check_store()
                continue
            if self.publish_window:
                # Each version is a message to every viewer: at most one per window. A change
                # after a quiet spell waits only for the rest of its burst (a call is several
                # events), so it shows at once; a steady stream is batched.
                burst = min(BURST, self.publish_window)
                await asyncio.sleep(max(burst, published_at + self.publish_window - loop.time()))
                published_at = loop.time()
            self._changed.clear()
            if not await self._publish():
                await asyncio.sleep(STORE_RETRY)
                self._changed.set()

    async def _publish(self) -> bool:
        if not self.picture.pending and not self._need_full:
            return True
        try:
            if self._need_full:
                stored = await self.store.read_version()
                self.version = max(self.version, stored or 0)
            publication = self.picture.publication(self.version + 1, self.clock(), full=self._need_full)
            try:
                await self.store.publish(publication)
            except BaseException:
                self.picture.mark_all_dirty()  # whatever was in flight goes again
                raise
        except StoreLost as error:
            log.warning("%s; publishing the full picture again", error)
            self._need_full = True
            return await self._publish()
        except StoreUnavailable as error:
            self._store_down(error)
            return False
        if not self._store_ok:
            log.info("store reachable again; published the full picture")
        self._store_ok, self._need_full = True, False
        self.version = publication.version
        self.published.set()
        self.published.clear()
        return True

    async def _check_store(self) -> None:
        """A store that restarted with nothing to publish since: notice it and publish all."""
        try:
            stored = await self.store.read_version()
        except StoreUnavailable as error:
            self._store_down(error)
            self._changed.set()
            return
        if not self._store_ok or stored is None or stored < self.version:
            if self._store_ok:
                log.warning("store lost the snapshot (restarted?); publishing it again")
            self._need_full = True
            self._changed.set()

    def _store_down(self, error: StoreUnavailable) -> None:
        if self._store_ok:
            log.error("store unreachable (%s); keeping states in memory until it is back", error)
        self._store_ok = False
        self._need_full = True


def parse_key(message: Message) -> str | None:
    exten, context = message.get("Exten"), message.get("Context")
    return f"{exten}@{context}" if exten and context else None
