"""Click -> PBX: how long from a POST /actions/presence leaving the browser's side to the
simulator receiving the AMI action it causes (`python -m bench.actions`). Do not break: the
panel is a real `blf-panel serve` child process, signed into over HTTP, the simulator is in
this process so that both ends are read on one clock (time.perf_counter).

    .venv/bin/python -m bench.actions             # 300 actions (10 users x 30, under ACTION_RATE)
    .venv/bin/python -m bench.actions --users 2 --per-user 10
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from app.auth.sessions import COOKIE
from app.auth.users import format_line, hash_password
from app.sim import Simulator
from app.sim.users import ManagerUser
from bench.common import Children, app_cli, free_port, wait_for_port

PASSWORD = "bench-password-long-enough"
ACTION_SECRET = "bench-action-secret"
CSRF_RE = re.compile(rb'name="csrf" value="([^"]+)"')
COOKIE_RE = re.compile(rb"^set-cookie: (%s=[^;]*)" % COOKIE.encode(), re.I | re.M)


class Browser:
    """One keep-alive HTTP/1.1 connection with one session cookie: just enough to sign in and post."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookie = b""
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        body = urlencode(form or {}).encode()
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
        if form is not None:
            head.append("Content-Type: application/x-www-form-urlencoded")
        if self.cookie:
            head.append(f"Cookie: {self.cookie.decode()}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        header = await self.reader.readuntil(b"\r\n\r\n")
        if match := COOKIE_RE.search(header):
            self.cookie = match.group(1)
        length = int(re.search(rb"content-length: (\d+)", header, re.I).group(1))  # type: ignore[union-attr]
        return int(header.split(b" ", 2)[1]), await self.reader.readexactly(length)

    async def sign_in(self, name: str) -> str:
        """Sign in; the session's CSRF token, from the panel page."""
        _, page = await self.request("GET", "/signin")
        token = CSRF_RE.search(page).group(1).decode()  # type: ignore[union-attr]
        status, _ = await self.request("POST", "/signin", {"csrf": token, "name": name, "password": PASSWORD})
        assert status == 303, f"sign-in as {name} refused ({status})"
        _, page = await self.request("GET", "/")
        return CSRF_RE.search(page).group(1).decode()  # type: ignore[union-attr]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run(users: int, per_user: int) -> list[float]:
    extensions = [str(100 + n) for n in range(users)]
    received: dict[str, float] = {}
    arrived = asyncio.Event()
    action_user = ManagerUser(
        "blf-actions", ACTION_SECRET, read="none", write="call,originate,reporting,agent"
    )
    async with Simulator([*extensions, "199"], users=[action_user]) as sim:
        write = sim.write_presence

        def recorded(presentity: str, value: str) -> None:
            received[presentity] = time.perf_counter()  # the action reached the PBX
            arrived.set()
            write(presentity, value)

        sim.write_presence = recorded  # type: ignore[method-assign]
        with tempfile.TemporaryDirectory() as tmp:
            hashed = hash_password(PASSWORD)
            users_file = Path(tmp) / "users"
            users_file.write_text(
                "".join(format_line(f"u{e}", hashed, "viewer", "all", e) + "\n" for e in extensions)
            )
            port = free_port()
            children = Children(Path(tmp), pin=False)
            env = {
                "AMI_HOST": "127.0.0.1",
                "AMI_PORT": str(sim.port),
                "PORT": str(port),
                "AUTH": "users",
                "USERS_FILE": str(users_file),
                "SECRET_KEY": "b" * 40,
                "ACTIONS": "on",
                "AMI_ACTION_SECRET": ACTION_SECRET,
                "ACTION_RATE": "60",
                "LOG_LEVEL": "WARNING",
            }
            try:
                panel = children.start("panel", app_cli("serve"), env=env)
                await wait_for_port(panel, port)
                browsers = [Browser(port) for _ in extensions]
                tokens = [await b.sign_in(f"u{e}") for b, e in zip(browsers, extensions, strict=True)]
                latencies: list[float] = []
                for round_ in range(per_user):
                    for browser, token, exten in zip(browsers, tokens, extensions, strict=True):
                        state = "dnd" if round_ % 2 == 0 else "available"
                        arrived.clear()
                        received.pop(f"CustomPresence:{exten}", None)
                        sent = time.perf_counter()
                        status, body = await browser.request(
                            "POST", "/actions/presence", {"csrf": token, "state": state}
                        )
                        assert status == 200, body
                        await asyncio.wait_for(arrived.wait(), 5)
                        latencies.append(received[f"CustomPresence:{exten}"] - sent)
                for browser in browsers:
                    browser.close()
                return latencies
            finally:
                children.stop_all()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=10, help="signed-in users (each under ACTION_RATE=60)")
    parser.add_argument("--per-user", type=int, default=30, help="actions each user sends")
    args = parser.parse_args()
    latencies = asyncio.run(run(args.users, args.per_user))
    first, ms = 1000 * latencies[0], sorted(1000 * x for x in latencies)
    p99 = ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    print(
        f"{len(ms)} actions, click -> PBX action: p50 {statistics.median(ms):.1f} ms,"
        f" p99 {p99:.1f} ms, max {ms[-1]:.1f} ms (the first, which opens the session: {first:.1f} ms)"
    )
    sys.exit(0 if p99 <= 100 else 1)  # the target: p99 within 100 ms


if __name__ == "__main__":
    main()
