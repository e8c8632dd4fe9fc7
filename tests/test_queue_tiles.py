"""Queue tiles and paused agents: the hub follows `queues` as it follows extensions,
renders each changed queue once, applies the viewer's Scope, and the routes serve them."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.hub import Hub
from app.scope import Scope
from app.sse import encode
from app.store import MemoryStore, Publication
from app.tasks import background
from app.tiles import Renderer, queue_tile_id
from app.view import ALL, View
from tests.helpers import tile_ids_in

NOW = 10_000.0


def extension(exten: str, *, queues: list[dict[str, Any]] | None = None, name: str = "") -> dict[str, Any]:
    return {
        "exten": exten,
        "context": "ext-local",
        "hint": f"PJSIP/{exten}",
        "status": 0,
        "state": "idle",
        "changed_at": NOW - 100,
        "version": 1,
        "name": name or f"Agent {exten}",
        "groups": [],
        "presence": None,
        "calls": [],
        "queues": queues or [],
    }


def member(
    exten: str | None, name: str, *, paused: bool = False, status: str = "not_inuse", **more: Any
) -> dict:
    return {
        "interface": f"PJSIP/{exten or name}",
        "extension": f"{exten}@ext-local" if exten else None,
        "name": name,
        "membership": "static",
        "penalty": 0,
        "paused": paused,
        "reason": "lunch" if paused else "",
        "paused_since": NOW - 125 if paused else None,
        "in_call": False,
        "ringing": False,
        "status": status,
        "calls_taken": 0,
        "last_call": None,
        **more,
    }


def queue(name: str, members: list[dict], callers: int = 0) -> dict[str, Any]:
    waiting = [
        {"position": i + 1, "joined_at": NOW - 300 + i, "name": f"Caller {i}", "number": f"+4930{i:06d}"}
        for i in range(callers)
    ]
    return {
        "name": name,
        "strategy": "ringall",
        "max": 0,
        "callers": waiting,
        "longest_since": waiting[0]["joined_at"] if waiting else None,
        "completed": 3,
        "abandoned": 1,
        "holdtime": 10,
        "talktime": 60,
        "service_level": 60,
        "service_level_perf": 100.0,
        "service_level_perf2": 75.0,
        "members": members,
        "tenant": "",
    }


def picture(*, paused: bool = False, callers: int = 1) -> dict[str, Any]:
    """100 and 101 serve support (101 paused when `paused`), 102 serves sales, 103 nothing;
    a member of support maps to no extension."""
    membership = [
        {
            "queue": "support",
            "paused": paused,
            "reason": "lunch" if paused else "",
            "paused_since": NOW - 125 if paused else None,
        }
    ]
    return {
        "extensions": {
            "100@ext-local": extension(
                "100", queues=[{"queue": "support", "paused": False, "reason": "", "paused_since": None}]
            ),
            "101@ext-local": extension("101", queues=membership),
            "102@ext-local": extension(
                "102", queues=[{"queue": "sales", "paused": False, "reason": "", "paused_since": None}]
            ),
            "103@ext-local": extension("103"),
        },
        "queues": {
            "support": queue(
                "support",
                [
                    member("100", "Agent 100"),
                    member("101", "Agent 101", paused=paused),
                    member(None, "Remote Rita"),
                ],
                callers,
            ),
            "sales": queue("sales", [member("102", "Agent 102", status="inuse")]),
        },
    }


class Harness:
    def __init__(self, store: MemoryStore, hub: Hub) -> None:
        self.store, self.hub = store, hub

    async def publish(self, version: int, data: dict[str, Any]) -> None:
        data = {"version": version, "updated_at": NOW, "pbx": {"connected": True, "since": 1.0}, **data}
        changed = {k: json.dumps(v).encode() for k, v in data["extensions"].items()}
        await self.store.publish(Publication(version, json.dumps(data).encode(), changed, ()))
        async with asyncio.timeout(5):
            while self.hub.version < version:
                await self.hub.head.ready.wait()


class CountingRenderer(Renderer):
    def __init__(self) -> None:
        super().__init__(clock=lambda: NOW)
        self.queues: list[str] = []

    def queue(self, queue: Any, id_: str, **kwargs: Any) -> str:
        self.queues.append(id_)
        return super().queue(queue, id_, **kwargs)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    store = MemoryStore()
    hub = Hub(store, CountingRenderer(), encode, heartbeat=3600, clock=lambda: NOW)
    async with background(hub.run(), "hub-under-test"):
        h = Harness(store, hub)
        await h.publish(1, picture())
        yield h
    await store.close()


def article(html: str, id_: str) -> str:
    found = re.search(rf'<article id="{re.escape(id_)}".*?</article>', html)
    assert found, f"no tile {id_} in {html[:300]}"
    return found[0]


async def test_a_queue_change_is_rendered_once_and_sent_to_every_view_that_shows_it(harness: Harness) -> None:
    hub, renderer = harness.hub, harness.hub.renderer
    start = hub.head
    renderer.queues.clear()
    await harness.publish(2, picture(callers=2))
    chain = [start.next]
    views = [ALL, View(queue="support"), View(wallboard=True), View(wallboard=True, queue="support")]
    messages = [hub.message(view, chain) for view in views for _ in range(100)]
    assert renderer.queues == ["queue-support"], "one render per change, whatever the viewers"
    for data in messages:
        tile = article(data.decode(), "queue-support")
        assert "2 waiting" in tile and 'hx-swap-oob="true"' in tile
    assert hub.message(View(extens=("100",)), chain) is None, "an ext list shows no queue"
    assert hub.message(View(queue="sales"), chain) is None


async def test_the_queue_tile_counts_members_and_advances_the_longest_wait(harness: Harness) -> None:
    await harness.publish(2, picture(paused=True, callers=3))
    tile = article(harness.hub.whole_view(View(wallboard=True)), "queue-support")
    assert "3 waiting" in tile
    # Two members can take a call but 101 is paused; Remote Rita maps to no extension and
    # counts all the same. The wait started 300 s before the render (the page's clock counts).
    assert "2 free" in tile and "1 paused" in tile and "0 on call" in tile
    assert 'class="ticking"' in tile and f"--since:{int(NOW - 300)}" in tile
    sales = article(harness.hub.whole_view(View(wallboard=True)), "queue-sales")
    assert "No one waiting" in sales and "1 on call" in sales and "ticking" not in sales
    assert 'class="tile queue q-full"' in sales, "all on calls: not the look of a closed queue"


async def test_a_paused_idle_agent_does_not_look_free(harness: Harness) -> None:
    await harness.publish(2, picture(paused=True))
    tile = article(harness.hub.whole_view(ALL), "ext-101")
    free = article(harness.hub.whole_view(ALL), "ext-100")
    assert 'class="tile state-idle paused"' in tile and 'class="tile state-idle"' in free
    assert "Paused: lunch" in tile and f"--since:{int(NOW - 125)}" in tile
    assert "support" in tile and "Paused" not in free


async def test_a_queue_view_holds_its_members_and_follows_membership(harness: Harness) -> None:
    hub = harness.hub
    view = View(queue="support")
    assert tile_ids_in(hub.whole_view(view)) == ["queue-support", "ext-100", "ext-101"]
    assert tile_ids_in(hub.whole_view(View(wallboard=True))) == ["queue-sales", "queue-support"]
    start = hub.head
    moved = picture()
    moved["extensions"]["103@ext-local"]["queues"] = [
        {"queue": "support", "paused": False, "reason": "", "paused_since": None}
    ]
    await harness.publish(2, moved)
    message = hub.message(view, [start.next])
    # A new member has no element on the page to swap into: the view comes whole again.
    assert message is not None and 'id="tiles" hx-swap-oob="innerHTML"' in message.decode()
    assert tile_ids_in(message.decode()) == ["queue-support", "ext-100", "ext-101", "ext-103"]


async def test_a_scope_sees_the_queues_its_people_serve_and_no_other_names(harness: Harness) -> None:
    hub = harness.hub
    sees_100 = Scope(extensions=frozenset({"100"}))
    sees_103 = Scope(extensions=frozenset({"103"}))
    html = hub.whole_view(View(wallboard=True, scope=sees_100))
    assert tile_ids_in(html) == ["queue-support"]
    # Members outside the scope are counted, never named.
    assert "Agent 101" not in html and "Remote Rita" not in html and "Caller 0" not in html
    assert tile_ids_in(hub.whole_view(View(wallboard=True, scope=sees_103))) == []
    start = hub.head
    await harness.publish(2, picture(callers=4))
    assert hub.message(View(wallboard=True, scope=sees_103), [start.next]) is None


async def test_a_queue_tile_stays_under_a_kilobyte_at_scale(harness: Harness) -> None:
    """Issue 12's figure: 200 members and 100 callers waiting, one change under 1 KB."""
    data = picture()
    members = [
        member(None, f"Agent {n}", paused=n % 5 == 0, status="inuse" if n % 3 == 0 else "not_inuse")
        for n in range(200)
    ]
    data["queues"]["support"] = queue("support", members, callers=100)
    start = harness.hub.head
    await harness.publish(2, data)
    tile = start.next.queue_tiles["en"]["support"]
    assert "100 waiting" in tile and len(tile.encode()) < 1024, len(tile.encode())


async def test_hostile_queue_and_member_names_are_escaped_or_dropped(harness: Harness) -> None:
    data = picture()
    hostile = copy.deepcopy(data["queues"]["support"])
    hostile["name"] = "<img src=x onerror=alert(1)>"
    data["queues"]["evil<b>"] = hostile  # not a checked name: no tile, no id
    data["queues"]["support"]["members"][2]["name"] = "<script>alert(1)</script>"
    await harness.publish(2, data)
    html = harness.hub.whole_view(View(wallboard=True))
    assert tile_ids_in(html) == ["queue-sales", "queue-support"]
    assert "<script>" not in html and "<img" not in html
    assert queue_tile_id("evil<b>") is None and queue_tile_id("support") == "queue-support"


async def test_whole_views_carry_the_start_not_an_age(harness: Harness) -> None:
    """A page loaded later counts from the same start: tiles hold the start (epoch seconds)
    and the page holds the clock, so a cached whole view never goes stale."""
    hub = harness.hub
    await harness.publish(2, picture(paused=True))
    queue = article(hub.whole_view(View(wallboard=True)), "queue-support")
    paused = article(hub.whole_view(ALL), "ext-101")
    assert f"--since:{int(NOW - 300)}" in queue and f"--since:{int(NOW - 125)}" in paused
    hub.renderer.clock = hub.clock = lambda: NOW + 7
    assert article(hub.whole_view(View(wallboard=True)), "queue-support") == queue
    assert article(hub.whole_view(ALL), "ext-101") == paused


# --- the routes, with a real uvicorn and the simulator's queues ---


@pytest.mark.parametrize("queue", ["a b", "<x>", "x" * 81, "sales;drop"])
async def test_a_malformed_queue_parameter_is_400(panel, queue: str) -> None:
    server = await (
        await panel(AMI_HOST="", MEMCACHED_URL="", DEMO_EXTENSIONS="100-103", DEMO_CHURN="0")
    ).healthy()
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ("/", "/queues", "/embed"):
            response = await client.get(path, params={"queue": queue})
            assert response.status_code == 400, (path, queue)
        response = await client.get("/queues")
        assert response.status_code == 200 and "Queues" in response.text
        assert 'hx-sse:connect="events?queues=1&amp;since=' in response.text
