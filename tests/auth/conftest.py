"""Fixtures of the door's tests: a users file with three users, a panel signed into."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from app.auth.users import format_line, hash_password

SECRET = "s" * 40
PASSWORDS = {"anna": "anna-secret-password", "boss": "boss-secret-password", "carl": "carl-secret-password"}
DEMO = {"AMI_HOST": "", "DEMO_EXTENSIONS": "100-109", "DEMO_CHURN": "0"}


@pytest.fixture(scope="session")
def users_text() -> str:
    # Hashed once per run: argon2 costs ~50 ms a hash.
    return "\n".join(
        [
            format_line("anna", hash_password(PASSWORDS["anna"]), "viewer", "ext=101,102", "101"),
            format_line("boss", hash_password(PASSWORDS["boss"]), "admin", "ext=109", None),
            format_line(
                "carl", hash_password(PASSWORDS["carl"]), "supervisor", "group=sales; numbers=off", None
            ),
        ]
    )


@pytest.fixture
def users_file(tmp_path: Path, users_text: str) -> Path:
    path = tmp_path / "users"
    path.write_text(users_text + "\n")
    return path


@pytest.fixture
def signed_in_settings(users_file: Path) -> dict[str, str]:
    return {**DEMO, "AUTH": "users", "USERS_FILE": str(users_file), "SECRET_KEY": SECRET}


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "no CSRF field in the form"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    form = await client.get("/signin")
    assert form.status_code == 200
    return await client.post("/signin", data={"csrf": csrf_of(form.text), "name": name, "password": password})
