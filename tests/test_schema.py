"""The one sanitiser for untrusted text, and the one order of extensions."""

import pytest

from app.details import DetailTracker
from app.schema import MAX_NAME, MAX_PRESENCE_TEXT, clean_text, extension_order
from app.snapshot import PbxPicture
from app.states import ExtensionState, parse_presence

# What a stranger can put in a caller ID, a presence message or an endpoint's name to
# disguise or reorder the text around it on the tile.
HOSTILE = {
    "\u202e": "right-to-left override",
    "\u200b": "zero-width space",
    "\u0085": "next line (C1 control)",
    "\u2028": "line separator",
    "\u2029": "paragraph separator",
    "\x1b": "escape",
    "\x00": "NUL",
    "\ufeff": "byte order mark",
    "\ue000": "private use",
}


@pytest.mark.parametrize("char", HOSTILE, ids=HOSTILE.values())
def test_clean_text_drops_every_hiding_character(char: str) -> None:
    cleaned = clean_text(f"Anna{char}Smith", MAX_NAME)
    assert char not in cleaned
    assert cleaned in ("AnnaSmith", "Anna Smith")  # white space becomes one space


def test_clean_text_keeps_what_people_write() -> None:
    assert clean_text("  Анна   Смирнова  ", MAX_NAME) == "Анна Смирнова"
    assert clean_text("e\u0301", 10) == "\u00e9"  # NFC
    assert clean_text("👩\u200d💻 Dev", 20) == "👩\u200d💻 Dev"  # the joiner stays
    assert clean_text("x" * 500, 80) == "x" * 80
    assert clean_text(None, 10) == "" and clean_text(42, 10) == ""


@pytest.mark.parametrize("char", HOSTILE, ids=HOSTILE.values())
def test_presence_messages_and_pbx_names_use_it(char: str) -> None:
    """The paths the review found letting U+202E, U+200B, U+0085 and U+2028 through."""
    presence = parse_presence({"Status": "dnd", "Subtype": f"a{char}b", "Message": f"x{char}y" * 100})
    assert char not in presence.subtype + presence.message
    assert len(presence.message) <= MAX_PRESENCE_TEXT
    picture = PbxPicture(started_at=0.0)
    picture.apply(ExtensionState("101", "ext-local", "PJSIP/101", 0, "idle"), 0.0)
    details = DetailTracker(picture)
    details.take_pbx_names({"101": f'"Anna{char}Smith" <101>'})
    name = picture.extensions["101@ext-local"].details.name
    assert char not in name and name.replace(" ", "") == "AnnaSmith"


def test_extension_order_is_numeric_first() -> None:
    extens = [{"exten": e, "context": "c"} for e in ("110", "alice", "9", "100", "*72")]
    assert [e["exten"] for e in sorted(extens, key=extension_order)] == ["9", "100", "110", "*72", "alice"]
