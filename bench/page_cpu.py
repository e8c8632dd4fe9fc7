"""What an open panel costs the viewer's machine: Chromium's CPU while the page sits still,
with N tiles showing a running duration (the page's one CSS clock counts them all).

    python -m bench.page_cpu [--tiles 300] [--seconds 10] [--per-tile]

`--per-tile` measures the design the page's clock replaced, for comparison: one animation
per running element, counting on from the seconds gone at render (`--from`).

The page is the panel's own: tiles rendered by app.tiles.Renderer (each on a call, so each
shows a running duration) and panel.css, served from a temporary directory by a tiny HTTP
server; no stream and no change, so what is measured is the cost of the durations alone.
Needs Debian's chromium and Playwright (the test extra). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import http.server
import json
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

from markupsafe import Markup

from app.tiles import LinkState, Renderer, tile_ids
from bench.common import ROOT, cpu_seconds, machine_info, process_tree

CHROMIUM = "/usr/lib/chromium/chromium"
SINCE = re.compile(r"--since:(\d+)")
# The rules of the design before the page's clock (commit a6e7177's panel.css).
PER_TILE_CSS = """
.ticking { animation: elapse 86400s linear both; --elapsed: 0; }
@keyframes elapse { from { --elapsed: var(--from); } to { --elapsed: calc(var(--from) + 86400); } }
body { animation: none; }
"""


def page_html(tiles: int, now: float) -> str:
    """The panel page with `tiles` extensions on a call that started 1 to 300 s ago."""
    renderer = Renderer(clock=lambda: now)
    extensions = {
        f"{100 + n}@ext-local": {
            "exten": str(100 + n),
            "context": "ext-local",
            "name": f"Colleague {n}",
            "state": "inuse",
            "status": 1,
            "hint": f"PJSIP/{100 + n}",
            "changed_at": now - 1 - n % 300,
            "groups": [],
            "calls": [
                {"direction": "in", "party_name": "Caller", "party_number": "", "since": now - 1 - n % 300}
            ],
        }
        for n in range(tiles)
    }
    ids = tile_ids(extensions)
    html = " ".join(renderer.tile(e, ids[k], e["exten"], oob=False) for k, e in extensions.items())
    return renderer.page(
        "page.html",
        title="Extensions",
        tiles_html=Markup(html),  # noqa: S704 - rendered by our autoescaping templates
        link_html=Markup(renderer.link(LinkState("ok", now), oob=False)),  # noqa: S704
        events_url="events-not-served",
        count=tiles,
        total=tiles,
    )


async def measure(url: str, seconds: float) -> float:
    """Chromium's CPU (all its processes) over `seconds`, as a share of one core."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = await browser.new_page(viewport={"width": 1920, "height": 1080})
        await page.goto(url)
        await asyncio.sleep(2)  # past the first layout
        root = browser.process.pid if getattr(browser, "process", None) else None
        pids = process_tree(root) if root else _chromium_pids()
        before, start = sum(cpu_seconds(p) for p in pids), time.monotonic()
        await asyncio.sleep(seconds)
        used = sum(cpu_seconds(p) for p in pids) - before
        share = used / (time.monotonic() - start)
        await browser.close()
    return share


def _chromium_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"chromium" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--per-tile", action="store_true", help="one animation per element (the old design)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        shutil.copytree(ROOT / "app" / "static", Path(directory) / "static")
        now = time.time()
        html = page_html(args.tiles, now)
        if args.per_tile:
            html = SINCE.sub(lambda m: f"--from:{int(now) - int(m.group(1))}", html)
            with (Path(directory) / "static" / "panel.css").open("a") as css:
                css.write(PER_TILE_CSS)
        (Path(directory) / "index.html").write_text(html)
        handler = functools.partial(Quiet, directory=directory)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            share = asyncio.run(measure(f"http://127.0.0.1:{server.server_port}/", args.seconds))
        finally:
            server.shutdown()
    result = {
        "tiles": args.tiles,
        "design": "per-tile" if args.per_tile else "page-clock",
        "seconds": args.seconds,
        "chromium_cpu_percent": round(share * 100, 1),
    }
    print(json.dumps({**result, "machine": machine_info()}))


if __name__ == "__main__":
    main()
