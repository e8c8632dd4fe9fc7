"""The hub without a server: diffing, rendering once, views, history and lagging viewers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.hub import Hub
from app.sse import encode
from app.store import MemoryStore, Publication
from app.tasks import background
from app.tiles import Renderer, pbx_link
from app.view import ALL, View
from tests.helpers import extension_json, publish_to_hub, tile_ids_in


class CountingRenderer(Renderer):
    """Counts tile renders: each change must be rendered once, whatever the viewers."""

    def __init__(self) -> None:
        super().__init__()
        self.rendered: list[str] = []

    def tile(self, extension: Any, id_: str, exten: str, **kwargs: Any) -> str:
        self.rendered.append(id_)
        return super().tile(extension, id_, exten, **kwargs)


def snapshot(version: int, states: dict[str, str], connected: bool = True) -> dict[str, Any]:
    return {
        "version": version,
        "updated_at": 1000.0 + version,
        "pbx": {"connected": connected, "since": 1000.0},
        "extensions": {f"{exten}@ext-local": extension_json(exten, state) for exten, state in states.items()},
    }


class Harness:
    def __init__(self, store: MemoryStore, hub: Hub) -> None:
        self.store, self.hub = store, hub

    async def publish(self, version: int, states: dict[str, str], connected: bool = True) -> None:
        await publish_to_hub(self.store, self.hub, snapshot(version, states, connected))


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    store = MemoryStore()
    hub = Hub(store, CountingRenderer(), encode, heartbeat=3600)
    async with background(hub.run(), "hub-under-test"):
        h = Harness(store, hub)
        await h.publish(1, {"100": "idle", "101": "idle", "102": "idle"})
        yield h
    await store.close()


async def test_a_change_is_rendered_once_for_every_viewer(harness: Harness) -> None:
    hub, renderer = harness.hub, harness.hub.renderer
    start = hub.head
    renderer.rendered.clear()
    await harness.publish(2, {"100": "idle", "101": "ringing", "102": "idle"})
    chain = [start.next]
    messages = {hub.message(ALL, chain) for _ in range(1000)}
    assert renderer.rendered == ["ext-101"]
    assert len(messages) == 1
    (message,) = messages
    assert message.startswith(b"id: 2\ndata: ") and message.endswith(b"\n\n")
    assert tile_ids_in(message.decode()) == ["ext-101"]


async def test_views_get_only_their_tiles(harness: Harness) -> None:
    hub = harness.hub
    start = hub.head
    await harness.publish(2, {"100": "busy", "101": "ringing", "102": "idle"})
    chain = [start.next]
    assert tile_ids_in(hub.message(View(("101",)), chain).decode()) == ["ext-101"]
    assert hub.message(View(("102",)), chain) is None, "nothing of this view changed"
    assert tile_ids_in(hub.whole_view(View(("102", "999")))) == ["ext-102", "ext-999"]


async def test_a_lagging_viewer_gets_the_latest_state_once(harness: Harness) -> None:
    hub = harness.hub
    start = hub.head
    await harness.publish(2, {"100": "ringing", "101": "idle", "102": "idle"})
    await harness.publish(3, {"100": "inuse", "101": "busy", "102": "idle"})
    await harness.publish(4, {"100": "idle", "101": "busy", "102": "idle"})
    chain = [start.next, start.next.next, start.next.next.next]
    html = hub.message(ALL, chain).decode()
    assert sorted(tile_ids_in(html)) == ["ext-100", "ext-101"]
    assert "state-idle" in html.split('id="ext-100"')[1].split("</article>")[0]
    assert html.startswith("id: 4\n")


async def test_first_message_resumes_or_sends_the_whole_view(harness: Harness) -> None:
    hub = harness.hub
    await harness.publish(2, {"100": "ringing", "101": "idle", "102": "idle"})
    await harness.publish(3, {"100": "ringing", "101": "hold", "102": "idle"})
    resumed, _ = hub.first_message(ALL, since=2)
    assert tile_ids_in(resumed.decode()) == ["ext-101"] and b'id="tiles"' not in resumed
    whole, _ = hub.first_message(ALL, since=None)
    assert tile_ids_in(whole.decode()) == ["ext-100", "ext-101", "ext-102"]
    future, _ = hub.first_message(ALL, since=99)
    assert b'id="tiles"' in future


async def test_new_extensions_send_the_whole_view(harness: Harness) -> None:
    hub = harness.hub
    start = hub.head
    await harness.publish(2, {"100": "idle", "101": "idle", "102": "idle", "103": "idle"})
    assert start.next.full
    html = hub.message(ALL, [start.next]).decode()
    assert tile_ids_in(html) == ["ext-100", "ext-101", "ext-102", "ext-103"]
    since, _ = hub.first_message(ALL, since=1)
    assert b'id="tiles"' in since, "a resume across a structural change is a whole view"


async def test_pbx_link_down_is_in_the_banner(harness: Harness) -> None:
    hub = harness.hub
    start = hub.head
    await harness.publish(2, {"100": "idle", "101": "idle", "102": "idle"}, connected=False)
    assert hub.link.state == "pbx-down"
    html = hub.message(ALL, [start.next]).decode()
    assert "link-pbx-down" in html and tile_ids_in(html) == []


async def test_tiles_are_in_numeric_order(harness: Harness) -> None:
    await harness.publish(2, {"99": "idle", "1000": "idle", "100": "idle", "200": "idle"})
    assert tile_ids_in(harness.hub.whole_view(ALL)) == ["ext-99", "ext-100", "ext-200", "ext-1000"]


async def test_groups_and_search_narrow_the_view(harness: Harness) -> None:
    hub = harness.hub
    data = snapshot(2, {"100": "idle", "101": "idle", "102": "ringing"})
    data["extensions"]["100@ext-local"].update(name="Anna Smith", groups=["Sales", "Front desk"])
    data["extensions"]["101@ext-local"].update(name="Boris Ivanov", groups=["Support"])
    changed = {k: json.dumps(v).encode() for k, v in data["extensions"].items()}
    start = hub.head
    await harness.store.publish(Publication(2, json.dumps(data).encode(), changed, ()))
    async with asyncio.timeout(5):
        while hub.version < 2:
            await hub.head.ready.wait()
    assert start.next.full, "names and groups changed: views are rebuilt"
    assert hub.groups() == ["Front desk", "Sales", "Support"]
    assert tile_ids_in(hub.whole_view(View(group="front-desk"))) == ["ext-100"]
    assert tile_ids_in(hub.whole_view(View(query="bor"))) == ["ext-101"]
    assert tile_ids_in(hub.whole_view(View(query="10"))) == ["ext-100", "ext-101", "ext-102"]
    whole = hub.whole_view(ALL)
    assert whole.index(">Sales<") < whole.index('id="ext-100"') < whole.index(">Support<")
    assert "<h2>Other</h2>" in whole and whole.index(">Other<") < whole.index('id="ext-102"')


class SnapshotCountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.snapshot_reads = 0

    async def read_snapshot_bytes(self) -> bytes | None:
        self.snapshot_reads += 1
        return await super().read_snapshot_bytes()


async def test_the_hub_catches_up_from_the_changes_key_not_the_snapshot() -> None:
    """What the collector publishes (app.snapshot): after the first snapshot, the hub reads
    only the small `changes` key, unless it does not cover what the hub has."""
    from app.snapshot import PbxPicture
    from app.states import ExtensionState

    def state(exten: str, status: int) -> ExtensionState:
        return ExtensionState(exten, "ext-local", f"Custom:{exten}", status, "inuse" if status else "idle")

    store = SnapshotCountingStore()
    hub = Hub(store, Renderer(), encode, heartbeat=3600)
    picture = PbxPicture(started_at=0.0)
    picture.replace_all([state("100", 0), state("101", 0)], now=1.0)
    picture.set_link(True, 1.0)

    async def publish(version: int) -> None:
        await store.publish(picture.publication(version, now=float(version), full=version == 1))
        async with asyncio.timeout(5):
            while hub.version < version:
                await hub.head.ready.wait()

    async with background(hub.run(), "hub-under-test"):
        await publish(1)
        assert store.snapshot_reads == 1
        picture.apply(state("101", 1), now=2.0)
        await publish(2)
        assert store.snapshot_reads == 1, "a change must not cost a read of the whole snapshot"
        tiles = hub.head.tiles[hub.look]
        assert list(tiles) == ["101@ext-local"] and "state-inuse" in tiles["101@ext-local"]
        assert 'id="ext-100" class="tile state-idle"' in hub.whole_view(ALL)
        assert tile_ids_in(tiles["101@ext-local"]) == ["ext-101"] and len(tiles) == 1
        picture.replace_all([state("100", 0), state("101", 1), state("102", 1)], now=3.0)
        await publish(3)  # a new extension: the whole snapshot
        assert store.snapshot_reads == 2 and hub.head.full and "102@ext-local" in hub.head.tiles[hub.look]


async def test_viewers_connecting_at_once_share_one_whole_view(harness: Harness) -> None:
    hub = harness.hub
    first, _ = hub.first_message(ALL, None)
    again, _ = hub.first_message(ALL, None)
    assert again is first, "built once per view while the head stays"
    await harness.publish(2, {"100": "busy", "101": "idle", "102": "idle"})
    after, _ = hub.first_message(ALL, None)
    assert after is not first and 'id="ext-100" class="tile state-busy"' in after.decode()


async def test_the_link_states_reach_the_banner(harness: Harness) -> None:
    hub, store = harness.hub, harness.store
    states = {"100": "idle", "101": "idle", "102": "idle"}
    for version, pbx, expected in (
        (
            2,
            {"connected": False, "since": 5.0, "state": "starting", "address": "", "error": ""},
            "pbx-starting",
        ),
        (3, {"connected": True, "since": 6.0, "state": "up", "address": "", "error": ""}, "ok"),
        (4, {"connected": False, "since": 7.0}, "pbx-down"),  # a collector from before the states
        (5, {"connected": True, "since": 8.0}, "ok"),
    ):
        start = hub.head
        data = {**snapshot(version, states), "pbx": pbx}
        await store.publish(Publication(version, json.dumps(data).encode(), {}, ()))
        async with asyncio.timeout(5):
            while hub.version < version:
                await hub.head.ready.wait()
        assert (hub.link.state, hub.link.since) == (expected, pbx["since"])
        html = hub.message(ALL, [start.next]).decode()
        assert f"link-{expected}" in html and len(hub.extensions) == 3


def test_a_pbx_never_reached_is_told_with_its_address_cleaned() -> None:
    hostile = {"connected": False, "since": 1.0, "state": "connecting"}
    link = pbx_link({**hostile, "address": "10.0.0.5:5038", "error": "no route\u202e to host\n"})
    assert (link.state, link.address, link.error) == ("pbx-unreachable", "10.0.0.5:5038", "no route to host")
    assert pbx_link({**hostile, "address": "10.0.0.5:5038", "error": ""}).state == "pbx-connecting"
