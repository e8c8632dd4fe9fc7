"""The collector against the simulator over real TCP, and against real memcached."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.ami import AmiProtocol, AmiTarget
from app.collector import Collector
from app.sim import Simulator
from app.sim.wire import SYSTEM
from app.states import DEVICE_TO_STATUS, STATUS_TEXT, state_name
from app.store import MemoryStore, Publication, SnapshotStore
from app.store.memcached import MemcachedStore
from app.tasks import background
from tests.helpers import AmiClient, LogWatch, Snapshot, setvar, states_of, summary, wait_for_snapshot

TRANSCRIPTS = Path(__file__).parent / "fixtures" / "ami"
EXTENSIONS = [str(n) for n in range(100, 110)]


def target(port: int, **overrides: object) -> AmiTarget:
    fields: dict[str, object] = dict(
        host="127.0.0.1",
        port=port,
        username="blf",
        secret="blfsecret",
        ping_interval=0.3,
        ping_timeout=0.3,
        reconnect_max=0.5,
        auth_retry=0.3,
    )
    fields.update(overrides)
    return AmiTarget(**fields)  # type: ignore[arg-type]


def running(collector: Collector) -> contextlib.AbstractAsyncContextManager[asyncio.Task[None]]:
    return background(collector.run(), "collector-under-test")


@pytest.fixture
async def simulator() -> AsyncIterator[Simulator]:
    async with Simulator(EXTENSIONS, port=0) as sim:
        yield sim


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    memory = MemoryStore()
    yield memory
    await memory.close()


def connected_with(count: int):
    return lambda s: s["pbx"]["connected"] and len(s["extensions"]) == count


async def test_full_sync(simulator: Simulator, store: MemoryStore) -> None:
    simulator.set_device_state("Custom:103", "INUSE")
    async with running(Collector(target(simulator.port), store)):
        snapshot = await wait_for_snapshot(store, connected_with(10))
    assert simulator.sessions <= 1
    assert snapshot["extensions"]["103@ext-local"]["state"] == "inuse"
    assert snapshot["extensions"]["100@ext-local"] == {
        **snapshot["extensions"]["100@ext-local"],
        "exten": "100",
        "context": "ext-local",
        "hint": "Custom:100,CustomPresence:100",
        "status": 0,
        "state": "idle",
    }
    assert await store.read_version() == snapshot["version"]
    single = await store.read_extension("103@ext-local")
    assert single is not None and single["state"] == "inuse"


@pytest.mark.parametrize("device_state", sorted(DEVICE_TO_STATUS))
async def test_every_device_state_through_setvar(
    simulator: Simulator, store: MemoryStore, device_state: str
) -> None:
    status = DEVICE_TO_STATUS[device_state]
    async with running(Collector(target(simulator.port), store)):
        await wait_for_snapshot(store, connected_with(10))
        client = await AmiClient.login(simulator.port)
        try:
            await client.setvar("Custom:105", "BUSY" if device_state != "BUSY" else "INUSE")
            if device_state == "UNKNOWN":  # func_devstate refuses it; `devstate change` takes it
                simulator.set_device_state("Custom:105", device_state)
            else:
                await client.setvar("Custom:105", device_state)
        finally:
            await client.close()
        snapshot = await wait_for_snapshot(
            store, lambda s: s["extensions"]["105@ext-local"]["status"] == status
        )
    assert snapshot["extensions"]["105@ext-local"]["state"] == state_name(status)
    assert STATUS_TEXT[status]


async def test_a_burst_is_one_batch(simulator: Simulator, store: MemoryStore) -> None:
    async with running(Collector(target(simulator.port), store, publish_window=0.05)):
        before = await wait_for_snapshot(store, connected_with(10))
        for exten in EXTENSIONS:  # ten changes written in one go
            simulator.set_device_state(f"Custom:{exten}", "RINGING")
        after = await wait_for_snapshot(store, lambda s: set(states_of(s).values()) == {"ringing"})
    assert after["version"] - before["version"] <= 2, "ten changes should not be ten versions"
    versions = {e["version"] for e in after["extensions"].values()}
    assert max(versions) == after["version"]


async def test_a_repeat_is_not_a_change(simulator: Simulator, store: MemoryStore) -> None:
    async with running(Collector(target(simulator.port), store)):
        before = await wait_for_snapshot(store, connected_with(10))
        client = await AmiClient.login(simulator.port)
        try:
            reply = await client.action("Command", Command="dialplan reload")
            assert reply["Response"] == "Success"
            await client.setvar("Custom:109", "INUSE")  # a marker after the re-sent hints
        finally:
            await client.close()
        after = await wait_for_snapshot(store, lambda s: s["extensions"]["109@ext-local"]["state"] == "inuse")
    assert after["version"] == before["version"] + 1
    for key, extension in after["extensions"].items():
        if key != "109@ext-local":
            assert extension == before["extensions"][key]


async def test_reconnect_after_the_pbx_drops_the_connection(simulator: Simulator, store: MemoryStore) -> None:
    collector = Collector(target(simulator.port), store)
    async with running(collector):
        await wait_for_snapshot(store, connected_with(10))
        await simulator.drop_all()
        simulator.set_device_state("Custom:101", "ONHOLD")  # while the collector is away
        await wait_for_snapshot(
            store, lambda s: s["pbx"]["connected"] and s["extensions"]["101@ext-local"]["state"] == "hold"
        )
    assert collector.logins == 2


async def test_pbx_down_is_published_and_reconnect_backs_off(store: MemoryStore) -> None:
    first = Simulator(EXTENSIONS, port=0)
    await first.start()
    port = first.port
    collector = Collector(target(port, reconnect_max=0.4), store)
    async with running(collector):
        up = await wait_for_snapshot(store, connected_with(10))
        await first.stop()
        down = await wait_for_snapshot(store, lambda s: not s["pbx"]["connected"])
        assert down["pbx"]["since"] >= up["pbx"]["since"]
        assert states_of(down) == states_of(up), "last known states stay, marked by the link state"
        async with Simulator(EXTENSIONS, port=port) as second:
            second.set_device_state("Custom:107", "BUSY")
            again = await wait_for_snapshot(
                store, lambda s: s["pbx"]["connected"] and s["extensions"]["107@ext-local"]["state"] == "busy"
            )
    assert again["pbx"]["since"] > down["pbx"]["since"]
    assert collector.logins == 2


async def test_restart_with_another_extension_set(simulator: Simulator) -> None:
    memory = MemoryStore()
    collector = Collector(target(simulator.port), memory)
    async with running(collector):
        await wait_for_snapshot(memory, connected_with(10))
        await simulator.restart(extensions=["100", "101", "200"])
        snapshot = await wait_for_snapshot(
            memory, lambda s: s["pbx"]["connected"] and set(states_of(s)) == {"100", "101", "200"}
        )
        assert await memory.read_extension("105@ext-local") is None
        assert await memory.read_extension("200@ext-local") is not None
    assert snapshot["extensions"]["200@ext-local"]["state"] == "idle"
    assert collector.logins == 2


async def test_silent_peer_is_detected(simulator: Simulator, store: MemoryStore, logs: LogWatch) -> None:
    collector = Collector(target(simulator.port), store)
    async with running(collector):
        await wait_for_snapshot(store, connected_with(10))
        simulator.freeze()
        await wait_for_snapshot(store, lambda s: not s["pbx"]["connected"], timeout=5)
        simulator.thaw()
        await wait_for_snapshot(store, lambda s: s["pbx"]["connected"], timeout=5)
    assert any("silent peer" in r.getMessage() for r in logs.records)
    assert collector.logins >= 2


async def test_wrong_secret_is_reported_once_per_attempt_without_traceback(
    simulator: Simulator, store: MemoryStore, logs: LogWatch
) -> None:
    collector = Collector(target(simulator.port, secret="wrong", auth_retry=0.2), store)
    async with running(collector):
        snapshot = await wait_for_snapshot(store, lambda s: s["version"] >= 1)
        await logs.wait_for("login refused", count=2)
    refused = [r for r in logs.records if "login refused" in r.getMessage()]
    assert "'blf'" in refused[0].getMessage() and "127.0.0.1" in refused[0].getMessage()
    assert all(r.exc_info is None for r in logs.records)
    assert not snapshot["pbx"]["connected"] and collector.logins == 0


async def test_memcached_restart_mid_stream(simulator: Simulator, memcached) -> None:
    store = MemcachedStore(memcached.host, memcached.port, prefix="t:", timeout=0.5)
    try:
        async with running(Collector(target(simulator.port), store)):
            await wait_for_snapshot(store, connected_with(10))
            memcached.stop()
            simulator.set_device_state("Custom:104", "BUSY")  # happens while memcached is gone
            memcached.start()
            snapshot = await wait_for_snapshot(
                store, lambda s: connected_with(10)(s) and s["extensions"]["104@ext-local"]["state"] == "busy"
            )
            single = await store.read_extension("100@ext-local")
    finally:
        await store.close()
    assert single is not None and single["state"] == "idle"
    assert snapshot["version"] >= 2


async def test_memcached_down_at_start(simulator: Simulator, memcached, logs: LogWatch) -> None:
    memcached.stop()
    store = MemcachedStore(memcached.host, memcached.port, prefix="t:", timeout=0.5)
    collector = Collector(target(simulator.port), store)
    try:
        async with running(collector):
            await logs.wait_for("store unreachable")
            simulator.set_device_state("Custom:102", "RINGING")
            await logs.wait_for("AMI full picture")
            memcached.start()
            snapshot = await wait_for_snapshot(
                store,
                lambda s: s["pbx"]["connected"] and s["extensions"]["102@ext-local"]["state"] == "ringing",
            )
    finally:
        await store.close()
    assert len(snapshot["extensions"]) == 10
    assert sum("store unreachable" in r.getMessage() for r in logs.records) == 1


async def test_malformed_input_is_skipped(simulator: Simulator, store: MemoryStore, logs: LogWatch) -> None:
    collector = Collector(target(simulator.port), store)
    async with running(collector):
        await wait_for_snapshot(store, connected_with(10))
        bad_frames = [
            b"garbage line without colon\r\nmore garbage\r\n\r\n",
            b"Privilege: call,all\r\nExten: 101\r\nStatus: 1\r\n\r\n",  # no Event
            b"Event: ExtensionStatus\r\nPrivilege: call,all\r\nExten: 101\r\n\r\n",  # no Context
            b"Event: ExtensionStatus\r\nExten: 101\r\nContext: ext-local\r\nStatus: x1\r\n\r\n",
            b"Event: ExtensionStatus\r\nExten: 101\r\nContext: ext-local\r\nHint: "
            + b"A" * 1_048_576
            + b"\r\n"
            b"Status: 8\r\n\r\n",
            b"Event: ExtensionStatus\r\nExten: 10\xff1\r\nContext: ext-local\r\nStatus: 8\r\n\r\n",
            b"Event: ExtensionStatus\r\nExten: 1 01\r\nContext: ext-local\r\nStatus: 8\r\n\r\n",
            b"Event: DeviceStateChange\r\nDevice: Custom:101\r\n\r\n",
        ]
        for frame in bad_frames:
            simulator.inject(frame)
        simulator.set_device_state("Custom:106", "INUSE")  # a good event after the bad ones
        snapshot = await wait_for_snapshot(
            store, lambda s: s["extensions"]["106@ext-local"]["state"] == "inuse"
        )
    assert collector.logins == 1, "the collector kept its session"
    assert states_of(snapshot) == {**{e: "idle" for e in EXTENSIONS}, "106": "inuse"}
    messages = " ".join(r.getMessage() for r in logs.records)
    for expected in ("without Event", "missing field Context", "non-numeric Status", "over", "not UTF-8"):
        assert expected in messages


def test_every_transcript_frames_through_the_protocol() -> None:
    """The real Asterisk bytes, fed in awkward chunks, give the same messages as whole."""
    for path in sorted(TRANSCRIPTS.glob("*.txt")):
        if path.name.endswith(".client.txt"):
            continue
        data = path.read_bytes()
        whole, chunked = _frame(data, len(data)), _frame(data, 7)
        assert whole and whole == chunked, path.name
        expected = data.count(b"\r\n\r\n")
        assert len(whole) == expected, path.name


def _frame(data: bytes, chunk: int) -> list[dict[str, str]]:
    protocol = AmiProtocol()
    protocol.connection_made(_NullTransport())
    seen: list[dict[str, str]] = []
    protocol.handle_message = lambda message: seen.append(dict(message))  # type: ignore[method-assign]
    for i in range(0, len(data), chunk):
        protocol.data_received(data[i : i + chunk])
    return seen


class _NullTransport(asyncio.Transport):
    def write(self, data: bytes) -> None:  # pragma: no cover
        pass


async def test_store_keys_come_from_checked_strings(store: SnapshotStore) -> None:
    """Hostile strings never become keys: the parser refuses them first."""
    sim = Simulator(["100"], port=0)
    async with sim:
        async with running(Collector(target(sim.port), store)):
            await wait_for_snapshot(store, connected_with(1))
            sim.inject(b"Event: ExtensionStatus\r\nExten: 1\r\nContext: x y\r\nStatus: 0\r\n\r\n")
            sim.inject(
                b"Event: ExtensionStatus\r\nExten: 1\r\nContext: " + b"c" * 300 + b"\r\nStatus: 0\r\n\r\n"
            )
            sim.set_device_state("Custom:100", "BUSY")
            snapshot = await wait_for_snapshot(
                store, lambda s: s["extensions"]["100@ext-local"]["state"] == "busy"
            )
    assert list(snapshot["extensions"]) == ["100@ext-local"], summary(snapshot)
    assert json.loads(json.dumps(snapshot)) == snapshot


# --- a PBX that is starting, actions that fail, a PBX never reached ---


class StrictPbx(Simulator):
    """The simulator as a stricter manager.conf makes it: with `hide_system` the user has no
    `read = system` (no FullyBooted, no Shutdown); `missing` actions are answered as not
    loaded ("Invalid/unknown command")."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.hide_system = False
        self.missing: set[str] = set()

    def emit(self, category: int, data: bytes) -> None:
        if not (self.hide_system and category & SYSTEM):
            super().emit(category, data)

    def fully_booted(self) -> bytes:
        return b"" if self.hide_system else super().fully_booted()

    def knows_action(self, name: str) -> bool:
        return name not in self.missing and super().knows_action(name)


class RecordingStore(MemoryStore):
    """Keeps every snapshot published, in order: a reader of the store could miss some."""

    def __init__(self) -> None:
        super().__init__()
        self.snapshots: list[Snapshot] = []

    async def publish(self, pub: Publication) -> None:
        await super().publish(pub)
        self.snapshots.append(json.loads(pub.snapshot))


NAMES = {exten: f"Colleague {exten}" for exten in EXTENSIONS}


def named_and_up(count: int):
    return lambda s: connected_with(count)(s) and all(e["name"] for e in s["extensions"].values())


async def restart_and_follow(sim: Simulator, store: RecordingStore, boot: float = 1.0) -> list[Snapshot]:
    """Restart the PBX under a running collector; the snapshots published from then until
    it is up again with its names (the first snapshot is the last one before)."""
    start = len(store.snapshots)
    await sim.restart(boot=boot)
    await wait_for_snapshot(store, lambda s: s["pbx"]["state"] == "starting")
    await wait_for_snapshot(store, named_and_up(len(EXTENSIONS)))
    return store.snapshots[start - 1 :]


def assert_no_tile_lost_and_up_only_when_whole(history: list[Snapshot]) -> None:
    for snapshot in history:
        assert len(snapshot["extensions"]) == len(EXTENSIONS), summary(snapshot)
        assert all(e["name"] for e in snapshot["extensions"].values()), "no name is lost meanwhile"
        assert snapshot["pbx"]["connected"] == (snapshot["pbx"]["state"] == "up")
    states = [s["pbx"]["state"] for s in history]
    assert "starting" in states and states[-1] == "up"
    # up again only with the whole picture taken after the boot: 103's call was dropped
    first_up = states.index("up", states.index("starting"))
    assert history[first_up]["extensions"]["103@ext-local"]["state"] == "idle"
    assert "down" not in states[states.index("starting") :], "starting goes straight to up"


async def test_a_restart_keeps_every_tile_and_is_up_only_after_fullybooted(logs: LogWatch) -> None:
    store = RecordingStore()
    async with StrictPbx(EXTENSIONS, names=NAMES) as sim:
        sim.set_presence("104", "dnd", "", "in a meeting")
        async with running(Collector(target(sim.port), store)):
            await wait_for_snapshot(store, named_and_up(len(EXTENSIONS)))
            sim.place_call("102", "103").answer()
            await wait_for_snapshot(store, lambda s: s["extensions"]["103@ext-local"]["state"] == "inuse")
            history = await restart_and_follow(sim, store)
            sim.place_call("100", "101").answer()  # after the boot: calls are followed again
            last = await wait_for_snapshot(
                store, lambda s: len(s["extensions"]["101@ext-local"]["calls"]) == 1
            )
    assert_no_tile_lost_and_up_only_when_whole(history)
    messages = [r.getMessage() for r in logs.records]
    pictures = [i for i, m in enumerate(messages) if m.startswith("AMI full picture")]
    assert len(pictures) == 2 and messages.index("booted: FullyBooted") < pictures[1]
    assert any("the PBX is starting" in m for m in messages)
    assert not any("failed" in m for m in messages), "nothing was asked before it could answer"
    assert last["extensions"]["104@ext-local"]["presence"]["state"] == "dnd", "presence kept"
    assert last["extensions"]["101@ext-local"]["calls"][0]["party_name"] == "Colleague 100"
    assert all(e["name"] == NAMES[e["exten"]] for e in last["extensions"].values())


async def test_without_system_read_the_end_of_boot_is_the_module_sign(logs: LogWatch) -> None:
    """No FullyBooted for this user: DeviceStateList answering ends the wait, well before
    AMI_BOOT_WAIT, and never while the dialplan's hints are still coming."""
    store = RecordingStore()
    async with StrictPbx(EXTENSIONS, names=NAMES) as sim:
        sim.hide_system = True
        async with running(Collector(target(sim.port, boot_wait=30.0), store)):
            await wait_for_snapshot(store, named_and_up(len(EXTENSIONS)))
            assert not any("starting" in r.getMessage() for r in logs.records), "a booted PBX: no wait"
            async with asyncio.timeout(10):  # AMI_BOOT_WAIT is 30 s
                history = await restart_and_follow(sim, store)
    assert_no_tile_lost_and_up_only_when_whole(history)
    assert not any("AMI_BOOT_WAIT" in r.getMessage() for r in logs.records)


async def test_the_wait_for_fullybooted_is_bounded_and_says_why(logs: LogWatch) -> None:
    """A user that got FullyBooted once waits for it after a restart; when an eventfilter
    (say) keeps it away, AMI_BOOT_WAIT ends the wait with a clear line, and the next
    login is not held up again."""
    store = RecordingStore()
    async with StrictPbx(EXTENSIONS, names=NAMES) as sim:
        collector = Collector(target(sim.port, boot_wait=1.0), store)
        async with running(collector):
            await wait_for_snapshot(store, named_and_up(len(EXTENSIONS)))
            sim.hide_system = True
            history = await restart_and_follow(sim, store, boot=0.3)
            await logs.wait_for("AMI_BOOT_WAIT")
            await sim.drop_all()  # the next login: booted, no FullyBooted, no wait
            whole = named_and_up(len(EXTENSIONS))
            await wait_for_snapshot(store, lambda s: collector.logins == 3 and whole(s))
    assert_no_tile_lost_and_up_only_when_whole(history)
    (line,) = [r for r in logs.records if "AMI_BOOT_WAIT" in r.getMessage()]
    assert line.levelno == logging.WARNING and "read = system" in line.getMessage()
    assert sum("the PBX is starting" in r.getMessage() for r in logs.records) == 1


async def test_what_fails_after_login_is_asked_again_without_a_reconnect(logs: LogWatch) -> None:
    store = MemoryStore()
    async with StrictPbx(EXTENSIONS, names=NAMES) as sim:
        sim.set_presence("105", "away", "lunch", "")
        sim.missing = {"presencestatelist", "pjsipshowendpoint", "dbget"}
        collector = Collector(target(sim.port), store)
        async with running(collector):
            up = await wait_for_snapshot(store, connected_with(len(EXTENSIONS)))
            await logs.wait_for("PresenceStateList failed")
            await logs.wait_for("name lookups failed")
            sim.missing = set()
            last = await wait_for_snapshot(
                store,
                lambda s: named_and_up(len(EXTENSIONS))(s) and s["extensions"]["105@ext-local"]["presence"],
            )
    assert up["extensions"]["105@ext-local"]["presence"] is None
    assert last["extensions"]["105@ext-local"]["presence"]["state"] == "away"
    assert last["extensions"]["100@ext-local"]["name"] == "Colleague 100"
    assert collector.logins == 1
    assert any("AMI PresenceStateList answered now" in r.getMessage() for r in logs.records)


async def test_a_pbx_never_reached_says_why_without_secrets(store: MemoryStore, free_port) -> None:
    port = free_port()
    collector = Collector(target(port, secret="s3cret-value"), store)
    async with running(collector):
        never = await wait_for_snapshot(store, lambda s: s["pbx"]["error"])
        async with Simulator(EXTENSIONS, port=port, secret="other"):
            refused = await wait_for_snapshot(store, lambda s: s["pbx"]["error"] == "login refused")
        async with Simulator(EXTENSIONS, port=port, secret="s3cret-value"):
            await wait_for_snapshot(store, connected_with(len(EXTENSIONS)))
        lost = await wait_for_snapshot(store, lambda s: s["pbx"]["state"] == "down")
    assert never["pbx"] == {**never["pbx"], "state": "connecting", "connected": False}
    assert never["pbx"]["error"] == "connection refused"
    assert never["pbx"]["address"] == f"127.0.0.1:{port}"
    assert refused["pbx"]["since"] == never["pbx"]["since"], "never reached since the start"
    assert lost["pbx"]["error"] == "", "reached once: the link is lost, not unreachable"
    for snapshot in (never, refused, lost):
        assert "s3cret" not in json.dumps(snapshot) and "blf" not in json.dumps(snapshot["pbx"])


# --- when states began, after a (re)start (issue 13) ---


async def test_a_collector_started_mid_call_tells_the_calls_true_start_and_invents_none(
    simulator: Simulator, store: MemoryStore
) -> None:
    """The lamps list says "on a call", not since when: the call's age in CoreShowChannels
    does. Free colleagues, free since before the login, get no start at all (0: unknown),
    not the collector's start; the next change is dated by its event."""
    call = simulator.place_call("100", "101")
    call.answer()
    simulator.set_presence("105", "away", "", "Lunch")
    for channel in (call.a, call.b):
        channel.created -= 3600  # the simulator's clock: the call has been up for an hour
    began = time.time() - 3600
    async with running(Collector(target(simulator.port), store)):
        snapshot = await wait_for_snapshot(
            store, lambda s: connected_with(10)(s) and s["extensions"]["101@ext-local"]["calls"]
        )
        extensions = snapshot["extensions"]
        for key in ("100@ext-local", "101@ext-local"):
            assert extensions[key]["state"] == "inuse"
            # Duration is whole seconds, taken a moment before the collector's clock reads it.
            assert began - 2 <= extensions[key]["changed_at"] <= began + 5, summary(snapshot)
            assert began - 2 <= extensions[key]["calls"][0]["since"] <= began + 5
        idle = [e for e in extensions.values() if e["exten"] not in ("100", "101")]
        assert idle and all(e["changed_at"] == 0 for e in idle), "no invented start"
        assert extensions["105@ext-local"]["presence"]["since"] == 0, "away since when: unknown"
        before = time.time()
        await setvar(simulator.port, "Custom:103", "INUSE")
        changed = await wait_for_snapshot(store, lambda s: states_of(s)["103"] == "inuse")
    assert before <= changed["extensions"]["103@ext-local"]["changed_at"] <= time.time()
    assert changed["extensions"]["104@ext-local"]["changed_at"] == 0
