"""The full panel's sections: a tile under its first group only, a group whose people all
stand elsewhere still has its section, a group's own view headed by its own name."""

from __future__ import annotations

from app.sections import Section, sections

GROUPS = {
    "100": ["Reception", "Front desk"],
    "101": ["Reception"],
    "104": ["Sales"],
    "140": ["Management", "Sales"],
    "199": [],
}


def groups_of(key: str) -> list[str]:
    return GROUPS[key]


def test_a_tile_stands_under_its_first_group_and_is_named_in_the_others() -> None:
    found = sections(["100", "101", "104", "140", "199"], groups_of)
    assert [s.name for s in found] == ["Front desk", "Management", "Reception", "Sales", ""]
    by_name = {s.name: s for s in found}
    assert by_name["Front desk"] == Section("Front desk", [], ["100"]), "a section that points to 100"
    assert by_name["Reception"].keys == ["100", "101"] and by_name["Reception"].elsewhere == []
    assert by_name["Sales"] == Section("Sales", ["104"], ["140"])
    assert by_name[""].keys == ["199"], "the people of no group come last"
    shown = [key for s in found for key in s.keys]
    assert sorted(shown) == sorted(GROUPS) and len(shown) == len(set(shown)), "each tile once"


def test_a_groups_own_view_is_headed_by_its_own_name() -> None:
    assert sections(["100"], groups_of, "front-desk") == [Section("Front desk", ["100"])]
    assert sections(["104", "140"], groups_of, "sales") == [Section("Sales", ["104", "140"])]
