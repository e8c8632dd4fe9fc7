"""Caller ID names for the simulated phones: generated, loaded from CSV, checked for the wire.
Do not break: a seed must give the same names (`random_name` drawing in the same order), or
seeded demos, churn and tests change under their users."""

from __future__ import annotations

import csv
import os
import random
import re

from app.states import EXTEN_RE

FIRST_NAMES = (
    "Anna", "Ben", "Carla", "David", "Elena", "Felix", "Greta", "Hannah", "Ivan", "Julia",
    "Karim", "Laura", "Marco", "Nina", "Oliver", "Paula", "Quentin", "Rosa", "Samir", "Tanja",
    "Umut", "Vera", "Walter", "Xenia", "Yusuf", "Zoe", "Aylin", "Jonas", "Mia", "Lukas",
    "Sofia", "Emil", "Leonie", "Noah", "Clara", "Finn", "Ida", "Mateo", "Lea", "Tom",
)  # fmt: skip
SURNAMES = (
    "Smith", "Müller", "Schmidt", "Rossi", "Novak", "García", "Jansen", "Kowalski", "Dubois",
    "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Hoffmann", "Schulz", "Koch", "Richter",
    "Klein", "Wolf", "Yilmaz", "Neumann", "Schwarz", "Braun", "Zimmermann", "Hartmann",
    "Lange", "Krüger", "Lehmann", "Kaiser", "Peters", "Berg", "Lindqvist", "Moreau", "Silva",
    "Horvat", "Nagy", "O'Brien", "Costa", "Keller",
)  # fmt: skip
MAX_NAME = 80


def random_name(rng: random.Random) -> str:
    """A first name and a surname drawn from `rng`."""
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"


def generated_name(exten: str, seed: int | None = None) -> str:
    """A plausible first name and surname for an extension; the same for the same seed."""
    return random_name(random.Random(f"blf-panel/names/{seed}/{exten}"))


def check_name(exten: str, name: str) -> str:
    """A caller ID name as the simulator accepts it: one line of text, not too long."""
    if not EXTEN_RE.fullmatch(exten):
        raise ValueError(f"invalid extension {exten!r}")
    if not name.strip() or len(name) > MAX_NAME or re.search(r"[\x00-\x1f\x7f]", name):
        raise ValueError(f"bad name for {exten}: {name[:40]!r} (1-{MAX_NAME} characters, one line)")
    return name.strip()


def load_names(path: str | os.PathLike[str]) -> dict[str, str]:
    """Names from a CSV file of `exten,name` lines (the panel's directory file works too:
    further columns are ignored). A header line `exten,...`, blank lines and lines starting
    with `#` are skipped; quote a name that holds a comma. A bad line raises ValueError."""
    names: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as file:
        for number, row in enumerate(csv.reader(file), 1):
            if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                continue
            if not names and row[0].strip().lower() == "exten":
                continue
            if len(row) < 2:
                raise ValueError(f"{path}, line {number}: expected exten,name")
            try:
                names[row[0].strip()] = check_name(row[0].strip(), row[1])
            except ValueError as problem:
                raise ValueError(f"{path}, line {number}: {problem}") from None
    return names
