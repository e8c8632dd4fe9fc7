"""How a tile is drawn for a viewer (`Look`): in which language, with or without outside
callers' numbers, and with which controls (pinning, the actions the viewer may take).

The hub renders each changed tile once per look in use, never once per viewer: a look is
shared by every viewer whose views draw tiles alike (2 languages x numbers shown or hidden
x a few roles' controls: a handful of looks for thousands of viewers). Whatever differs
per viewer (their CSRF token, their pins) stays out of the tile and lives on their page.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from app.i18n import N_

# The controls a tile may carry, in the order they are drawn: pinning (the full panel
# only), then the actions of app/actions.py that act on the tile's extension.
PIN = "pin"
TILE_ACTIONS = ("call", "transfer", "attended", "pickup", "listen")
CONTROLS = (PIN, *TILE_ACTIONS)
ACTION_LABELS = {
    "call": N_("Call"),
    "transfer": N_("Transfer my call here"),
    "attended": N_("Consult, then transfer"),
    "pickup": N_("Pick up"),
    "listen": N_("Listen in"),
}


@dataclass(frozen=True)
class Look:
    lang: str = "en"
    numbers: bool = True  # outside callers' numbers shown (a scope may hide them)
    controls: frozenset[str] = frozenset()  # of CONTROLS

    def __post_init__(self) -> None:
        unknown = self.controls - set(CONTROLS)
        if unknown:
            raise ValueError(f"unknown tile controls: {sorted(unknown)}")

    @property
    def with_numbers(self) -> Look:
        """The same look with numbers shown: a tile with no call is the same in both."""
        return self if self.numbers else replace(self, numbers=True)

    @property
    def ordered_controls(self) -> list[str]:
        return [control for control in CONTROLS if control in self.controls]
