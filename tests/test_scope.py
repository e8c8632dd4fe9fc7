"""Scopes applied by the hub: only what a scope holds reaches its messages, views are
canonical and their caches live only while someone streams them, reconnects share."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.directory import group_slug
from app.hub import Hub
from app.scope import Scope, parse_scope, scoped_snapshot
from app.sse import encode
from app.store import MemoryStore
from app.tasks import background
from app.tiles import Renderer
from app.view import View
from tests.helpers import extension_json, publish_to_hub, tile_ids_in

FIRMS = {"100": "acme", "101": "acme", "102": "acme", "105": "beta", "106": "beta"}
NAMES = {"100": "Anna Acme", "101": "Bob Acme", "102": "Cid Acme", "105": "Zelda Beta", "106": "Yuri Beta"}
ACME = parse_scope("firm=acme")
ACME_NO_NUMBERS = parse_scope("firm=acme; numbers=off")


def extension(exten: str, state: str = "idle", calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    # The same group name in both firms.
    return extension_json(
        exten, state, name=NAMES[exten], groups=["Sales"], calls=calls or [], tenant=FIRMS[exten]
    )


class Harness:
    def __init__(self, store: MemoryStore, hub: Hub) -> None:
        self.store, self.hub = store, hub
        self.extensions = {f"{e}@ext-local": extension(e) for e in FIRMS}

    async def publish(self, version: int, **changed: dict[str, Any]) -> None:
        for exten, ext in changed.items():
            self.extensions[f"{exten}@ext-local"] = ext
        data = {"version": version, "updated_at": 1000.0, "pbx": {"connected": True, "since": 1.0}}
        data["extensions"] = self.extensions
        await publish_to_hub(self.store, self.hub, data)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    store = MemoryStore()
    hub = Hub(store, Renderer(), encode, heartbeat=3600)
    async with background(hub.run(), "hub-under-test"):
        h = Harness(store, hub)
        await h.publish(1)
        yield h
    await store.close()


async def test_a_firm_sees_nothing_of_another_firm_whatever_the_url(harness: Harness) -> None:
    hub = harness.hub
    for view in (
        View(scope=ACME),
        View(("105", "106", "100", "999"), scope=ACME),
        View(group="sales", scope=ACME),
        View(query="zelda", scope=ACME),
    ):
        html = hub.whole_view(view) + hub.first_message(view, None)[0].decode()
        assert "Zelda" not in html and "Yuri" not in html and "ext-105" not in html, view
        assert "Not on this PBX" not in html, "unknown and out of scope look the same: absent"
    assert tile_ids_in(hub.whole_view(View(("105", "100"), scope=ACME))) == ["ext-100~acme"]
    assert hub.groups(ACME) == ["Sales"] and len(hub.keys_for(View(scope=ACME))) == 3
    assert len(hub.keys_for(View())) == 5, "everything for those who see all"
    # A change in firm B: nothing for firm A, neither as a change nor on resuming.
    await harness.publish(2, **{"105": extension("105", "inuse")})
    chain = [hub.head]
    assert hub.message(View(scope=ACME), chain) is None
    assert tile_ids_in(hub.message(View(), chain).decode()) == ["ext-105~beta"]
    resumed, _ = hub.first_message(View(("105", "100"), scope=ACME), 1)
    assert "ext-105" not in resumed.decode() and "Zelda" not in resumed.decode()


async def test_tile_ids_never_depend_on_another_firm() -> None:
    from app.tiles import tile_ids

    keys = ["101@from-internal-acme", "101@from-internal-beta", "101@ext-local"]
    alone = tile_ids(keys[1:2], {keys[1]: "beta"})
    together = tile_ids(keys, {keys[0]: "acme", keys[1]: "beta"})
    assert together[keys[1]] == alone[keys[1]] == "ext-101~beta"
    assert len(set(together.values())) == 3


async def test_outside_numbers_hidden_per_scope_in_two_forms_only(harness: Harness) -> None:
    hub = harness.hub
    calls = [
        {
            "direction": "in",
            "party_name": "+49 30 1234-567",
            "party_number": "+49301234567",
            "since": 1.0,
            "state": "up",
        },
        {"direction": "out", "party_name": "Cid Acme", "party_number": "102", "since": 2.0, "state": "up"},
    ]
    rendered: list[str] = []
    real = hub.renderer.tile

    def counting(*args: Any, **kwargs: Any) -> str:
        rendered.append(args[1])
        return real(*args, **kwargs)

    hub.renderer.tile = counting  # type: ignore[method-assign]
    hub.join(View(scope=ACME)), hub.join(View(scope=ACME_NO_NUMBERS))  # two viewers streaming
    await harness.publish(2, **{"101": extension("101", "inuse", calls)})
    assert rendered == ["ext-101~acme", "ext-101~acme"], "one form with numbers, one without"
    chain = [hub.head]
    shown = hub.message(View(scope=ACME), chain).decode()
    hidden = hub.message(View(scope=ACME_NO_NUMBERS), chain).decode()
    assert "+49301234567" in shown
    assert "1234" not in hidden, "neither the number nor a name that is a number"
    assert "Cid Acme" in hidden and "102" in hidden, "a colleague's number is no outside number"
    for scope in (parse_scope(f"firm=acme; numbers=off; ext={n}") for n in range(100, 140)):
        hub.message(View(scope=scope), chain)
    assert len(rendered) == 2, "scopes share the two forms: none rendered per scope"
    page = hub.whole_view(View(scope=ACME_NO_NUMBERS))
    assert "1234" not in page and "Cid Acme" in page


async def test_every_order_of_an_ext_list_is_one_view(harness: Harness) -> None:
    hub = harness.hub
    orders = [View(("102", "100", "101", "100")), View(("100", "101", "102")), View(("101", "102", "100"))]
    joined = [hub.join(view) for view in orders * 700]  # 2,100 viewers
    assert hub.views == 1 and all(view is joined[0] for view in joined)
    assert joined[0].extens == ("100", "101", "102")
    assert View(query="ANNA") == View(query="anna")


async def test_caches_of_a_view_go_with_its_last_viewer(harness: Harness) -> None:
    hub = harness.hub
    views = [hub.join(View((str(n), "100"))) for n in range(2000)]  # 2,000 distinct views
    for view in views:
        hub.first_message(view, None)
    await harness.publish(2, **{"100": extension("100", "busy")})
    chain = [hub.head]
    for view in views:
        assert hub.message(view, chain) is not None
    assert hub.views == 2000 and len(hub.head.messages) == 2000 and len(hub._wholes) == 0
    head = hub.head
    await harness.publish(3, **{"100": extension("100", "idle")})
    assert head.messages == {}, "an update that is no longer the head keeps no messages"
    for view in views:
        hub.message(view, [hub.head])
        hub.first_message(view, None)
    for view in views:
        hub.leave(view)
    assert hub.views == 0 and hub.head.messages == {} and hub._wholes == {}


async def test_reconnects_from_one_version_share_one_catch_up(harness: Harness) -> None:
    hub = harness.hub
    await harness.publish(2, **{"100": extension("100", "busy")})
    await harness.publish(3, **{"101": extension("101", "busy")})
    firsts = {id(hub.first_message(hub.join(View(scope=ACME)), 1)[0]) for _ in range(3000)}
    assert len(firsts) == 1
    message = hub.first_message(View(scope=ACME), 1)[0].decode()
    assert sorted(tile_ids_in(message)) == ["ext-100~acme", "ext-101~acme"] and 'id="link"' in message
    assert hub.first_message(View(scope=ACME), 2)[0] != message.encode(), "another version, another message"


def test_group_slug_keeps_no_long_names() -> None:
    from app.directory import _cached_slug

    _cached_slug.cache_clear()
    for n in range(1100):
        assert group_slug(f"{n}" + "x" * 65_000).startswith(f"{n}x")
    assert _cached_slug.cache_info().currsize == 0
    assert group_slug("Front desk") == "front-desk" and _cached_slug.cache_info().currsize == 1


def test_the_api_snapshot_of_a_scope() -> None:
    snapshot: Any = {
        "version": 3,
        "updated_at": 1.0,
        "pbx": {"connected": True, "since": 1.0},
        "extensions": {f"{e}@ext-local": extension(e) for e in FIRMS},
    }
    snapshot["extensions"]["100@ext-local"]["calls"] = [
        {"direction": "in", "party_name": "0301234", "party_number": "0301234", "since": 1.0, "state": "up"}
    ]
    mine = scoped_snapshot(snapshot, Scope(firms=frozenset({"acme"}), show_numbers=False))
    assert sorted(mine["extensions"]) == ["100@ext-local", "101@ext-local", "102@ext-local"]
    assert "0301234" not in json.dumps(mine)
    assert "0301234" in json.dumps(snapshot), "the store's copy is not changed"
