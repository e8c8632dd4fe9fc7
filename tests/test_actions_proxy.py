"""AUTH=proxy users act too, when the proxy names their own extension
(PROXY_EXTENSION_HEADER); without it, nobody behind the proxy gets a button."""

# ruff: noqa: F811 - the fixtures of tests/test_actions.py, imported to be shared

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.test_actions import SECRET, call_state, settings, sim, users_text  # noqa: F401

PROXIED = {"Remote-User": "anna", "Remote-Groups": "staff, operators"}


def proxy_settings(settings: dict[str, str], tmp_path: Path, **more: str) -> dict[str, str]:
    grants = tmp_path / "grants"
    grants.write_text("operators:viewer:ext=100,101,102\n")
    base = {k: v for k, v in settings.items() if k not in ("USERS_FILE",)}
    return {
        **base,
        "AUTH": "proxy",
        "SECRET_KEY": SECRET,
        "TRUSTED_PROXIES": "127.0.0.1",
        "PROXY_SCOPES_FILE": str(grants),
        **more,
    }


async def test_a_proxy_user_with_an_extension_calls_a_colleague(panel, settings, sim, tmp_path) -> None:
    server = await (
        await panel(**proxy_settings(settings, tmp_path, PROXY_EXTENSION_HEADER="Remote-Extension"))
    ).healthy()
    headers = {**PROXIED, "Remote-Extension": "100"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
        page = (await client.get("/")).text
        assert "act-call" in page, "the tiles offer the actions of the user's role"
        csrf = re.search(r'id="csrf" name="csrf" value="([^"]+)"', page).group(1)
        refused = await client.post("/actions/call", data={"csrf": "forged", "target": "102"})
        assert refused.status_code == 403
        answer = await client.post("/actions/call", data={"csrf": csrf, "target": "102"})
    assert answer.status_code == 200, answer.text
    await server.until(lambda hub: call_state(server, "102")[0] in ("ringing", "inuse"))


async def test_without_the_extension_header_a_proxy_user_gets_no_buttons(
    panel, settings, sim, tmp_path
) -> None:
    server = await (await panel(**proxy_settings(settings, tmp_path))).healthy()
    async with httpx.AsyncClient(
        base_url=server.url, headers={**PROXIED, "Remote-Extension": "100"}
    ) as client:
        page = (await client.get("/")).text
        assert "act-call" not in page and 'id="csrf"' not in page
        answer = await client.post("/actions/call", data={"csrf": "x", "target": "102"})
    assert answer.status_code == 403 and "no extension of your own" in answer.text
