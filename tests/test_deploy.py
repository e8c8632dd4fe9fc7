"""deploy/nginx.conf in front of a real `blf-panel serve`: a real nginx, its own prefix
and a free loopback port (never the system nginx), the panel under /blf/.

nginx must be installed (CI installs it): a missing binary fails these tests, it does
not skip them.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.conftest import ROOT, BlfProcess, require_binary

DEPLOY_CONF = Path(ROOT) / "deploy" / "nginx.conf"
UPSTREAM_PLACEHOLDER = "server 127.0.0.1:8000;"
LISTEN_RE = re.compile(r"^(\s*)listen\s+80;", re.MULTILINE)
START_TIMEOUT = 15.0
# With HEARTBEAT=1 a viewer gets a message at least every second; a proxy that buffers
# holds small messages far longer than this (until a buffer fills: many seconds).
MAX_GAP = 2.5

Edit = Callable[[str], str]


# --- nginx -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    return require_binary("nginx", "the deploy tests run deploy/nginx.conf in a real nginx")


class Nginx:
    """One nginx in the foreground (`daemon off`), everything under its own directory."""

    def __init__(self, binary: str, prefix: Path, port: int, site: str) -> None:
        self.binary, self.prefix, self.port = binary, prefix, port
        prefix.mkdir(parents=True)
        (prefix / "site.conf").write_text(site)
        user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the tmp dir
        (prefix / "nginx.conf").write_text(
            f"{user}worker_processes 1;\n"
            f"pid {prefix}/nginx.pid;\n"
            f"lock_file {prefix}/nginx.lock;\n"
            f"error_log {prefix}/error.log notice;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            f"  access_log {prefix}/access.log;\n"
            f"  client_body_temp_path {prefix}/body;\n"
            f"  proxy_temp_path {prefix}/proxy;\n"
            f"  fastcgi_temp_path {prefix}/fastcgi;\n"
            f"  uwsgi_temp_path {prefix}/uwsgi;\n"
            f"  scgi_temp_path {prefix}/scgi;\n"
            f"  include {prefix}/site.conf;\n"
            "}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [self.binary, "-p", f"{self.prefix}/", "-c", f"{self.prefix}/nginx.conf"]
        cmd += ["-e", f"{self.prefix}/error.log", "-g", "daemon off;"]
        check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}"
        # Its own session: master and workers form one process group we can always kill.
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            try:  # any answer will do: the tests judge what it is
                httpx.get(f"{self.url}/blf/healthz", timeout=1.0, trust_env=False)
                return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"nginx on port {self.port} does not answer:\n{self.log()}")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # fast shutdown: the master stops its workers
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def site_config(upstream_port: int, listen_port: int, edit: Edit | None = None) -> str:
    """deploy/nginx.conf as shipped, pointed at our ports (and, for the checks of the
    checks, edited)."""
    text = DEPLOY_CONF.read_text()
    assert text.count(UPSTREAM_PLACEHOLDER) == 1, f"deploy/nginx.conf: no `{UPSTREAM_PLACEHOLDER}`"
    assert len(LISTEN_RE.findall(text)) == 1, "deploy/nginx.conf: expected one `listen 80;`"
    text = text.replace(UPSTREAM_PLACEHOLDER, f"server 127.0.0.1:{upstream_port};")
    text = LISTEN_RE.sub(rf"\1listen 127.0.0.1:{listen_port};", text)
    return edit(text) if edit else text


# --- the panel -------------------------------------------------------------------------


@pytest.fixture
def upstream(blf: Callable[..., BlfProcess], free_port: Callable[[], int]) -> int:
    """A `serve` under ROOT_PATH=/blf with the demo PBX; returns its port once it answers."""
    port = free_port()
    env = {
        "ROOT_PATH": "/blf",
        "MEMCACHED_URL": "",
        "AMI_HOST": "",
        "DEMO_CHURN": "20",
        "HEARTBEAT": "1",
    }
    process = blf("serve", "--host", "127.0.0.1", "--port", str(port), env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.proc.poll() is not None:
            raise AssertionError(f"serve exited with {process.proc.returncode}: {process.proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0, trust_env=False).status_code == 200:
                return port
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"serve on port {port} did not become healthy")
        time.sleep(0.05)


@pytest.fixture
def start_proxy(
    nginx_binary: str, upstream: int, free_port: Callable[[], int], tmp_path: Path
) -> Iterator[Callable[..., Nginx]]:
    """`start_proxy(edit=None)`: nginx with deploy/nginx.conf in front of `upstream`;
    every nginx started is stopped afterwards, also when the test fails."""
    started: list[Nginx] = []

    def start(edit: Edit | None = None) -> Nginx:
        port = free_port()
        server = Nginx(
            nginx_binary, tmp_path / f"nginx-{len(started)}", port, site_config(upstream, port, edit)
        )
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def proxy(start_proxy: Callable[..., Nginx]) -> Nginx:
    return start_proxy()


def client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=10.0, trust_env=False, follow_redirects=False)


# --- the page and its URLs -------------------------------------------------------------


class UrlCollector(HTMLParser):
    ATTRS = {"src", "href", "action", "hx-sse:connect", "hx-get", "hx-post"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in self.ATTRS and value]


def page_urls(html: str) -> list[str]:
    parser = UrlCollector()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("path", ["/blf/", "/blf/embed?ext=100,101"])
def test_every_url_of_the_page_loads_under_the_prefix(proxy: Nginx, path: str) -> None:
    with client(proxy.url) as http:
        page = http.get(path, headers={"Accept": "text/html"})
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        urls = [url for url in page_urls(page.text) if not url.startswith("data:")]
        assert any(u.startswith("static/") for u in urls), urls
        assert any(u.startswith("events?") for u in urls), urls
        for url in urls:
            assert not urlsplit(url).scheme and not url.startswith("/"), f"not relative: {url}"
            target = urljoin(f"{proxy.url}{path}", url)
            assert urlsplit(target).path.startswith("/blf/"), f"{url} resolves outside /blf/: {target}"
            if urlsplit(target).path == "/blf/events":
                with http.stream("GET", target) as response:
                    assert response.status_code == 200, target
                    assert response.headers["content-type"].startswith("text/event-stream")
            else:
                response = http.get(target)
                assert response.status_code == 200, f"{url} -> {target}: {response.status_code}"
                if response.headers["content-type"].startswith("text/css"):
                    for ref in re.findall(r"url\(\s*['\"]?([^'\")]+)", response.text):
                        if not ref.startswith("data:"):
                            css_target = urljoin(target, ref)
                            assert urlsplit(css_target).path.startswith("/blf/"), css_target
                            assert http.get(css_target).status_code == 200, css_target
        for other in ("/blf/healthz", "/blf/api/snapshot"):
            assert http.get(other).status_code == 200, other


def test_the_prefix_without_slash_redirects(proxy: Nginx) -> None:
    with client(proxy.url) as http:
        for path, location in (("/blf", "/blf/"), ("/blf?ext=100", "/blf/?ext=100")):
            response = http.get(path)
            assert response.status_code == 301, path
            assert response.headers["location"] == location
        page = http.get("/blf", follow_redirects=True)
        assert page.status_code == 200
        assert str(page.url) == f"{proxy.url}/blf/"
        assert 'hx-sse:connect="events?' in page.text


def test_redirects_of_the_app_stay_under_the_prefix(proxy: Nginx) -> None:
    """The app's own (absolute) redirects, e.g. a trailing slash, are built from ROOT_PATH
    and the Host and X-Forwarded-Proto headers nginx sets (a client cannot choose the
    scheme)."""
    with client(proxy.url) as http:
        response = http.get("/blf/embed/?ext=100", headers={"X-Forwarded-Proto": "https"})
        assert response.status_code in (301, 307, 308)
        assert response.headers["location"] == f"{proxy.url}/blf/embed?ext=100"
        response = http.get("/blf/embed/", headers={"Host": "panel.example.com"})
        assert response.headers["location"] == "http://panel.example.com/blf/embed"


def test_nothing_outside_the_prefix_reaches_the_panel(proxy: Nginx) -> None:
    with client(proxy.url) as http:
        for path in ("/", "/events", "/static/htmx.min.js", "/blfx/"):
            assert http.get(path).status_code == 404, path


# --- the event stream ------------------------------------------------------------------


async def read_messages(url: str, count: int) -> tuple[httpx.Headers, list[tuple[float, str]]]:
    """The response headers and the first `count` SSE messages with their arrival times.
    Fails as soon as a message takes longer than MAX_GAP after the one before (the first:
    after the request; a proxy that holds the body may hold the headers too)."""
    messages: list[tuple[float, str]] = []
    buffer = ""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(MAX_GAP) as deadline:
            async with httpx.AsyncClient(timeout=30.0, trust_env=False) as http:
                async with http.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
                    assert response.status_code == 200
                    async for chunk in response.aiter_text():
                        now = time.monotonic()
                        buffer += chunk.replace("\r\n", "\n")
                        while "\n\n" in buffer and len(messages) < count:
                            message, buffer = buffer.split("\n\n", 1)
                            messages.append((now, message))
                            deadline.reschedule(loop.time() + MAX_GAP)
                        if len(messages) == count:
                            return response.headers, messages
    except TimeoutError:
        raise AssertionError(
            f"message {len(messages) + 1} did not arrive within {MAX_GAP} s of the previous one: "
            f"the proxy holds the stream ({len(buffer)} characters pending)"
        ) from None
    raise AssertionError(f"the stream ended after {len(messages)} messages")


async def test_the_whole_view_streams_through(proxy: Nginx) -> None:
    headers, messages = await read_messages(f"{proxy.url}/blf/events", 4)
    assert headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in headers
    assert headers["cache-control"] == "no-store"
    assert '<main id="tiles" hx-swap-oob="innerHTML">' in messages[0][1]
    assert messages[0][1].count("<article") == 50
    for _, message in messages:
        assert re.match(r"id: \d+\ndata: <", message), message[:200]


def hostile(conf: str) -> str:
    """Surroundings the events location must withstand: gzip on for event streams in the
    server (an admin's global gzip_types), and no help from the app's own
    `X-Accel-Buffering: no` header."""
    assert conf.count("server_name _;") == 1 and conf.count("proxy_buffering off;") == 1
    conf = conf.replace(
        "server_name _;", "server_name _; gzip on; gzip_types text/event-stream; gzip_min_length 0;"
    )
    return conf.replace(
        "proxy_buffering off;", "proxy_buffering off; proxy_ignore_headers X-Accel-Buffering;"
    )


@pytest.mark.parametrize("edit", [None, hostile], ids=["as-shipped", "hostile-surroundings"])
async def test_each_message_passes_at_once(start_proxy: Callable[..., Nginx], edit: Edit | None) -> None:
    """One extension: small messages (a heartbeat a second, a change now and then) that a
    buffering proxy would hold until its buffers fill, many seconds later."""
    proxy = start_proxy(edit)
    headers, messages = await read_messages(f"{proxy.url}/blf/events?ext=100", 5)
    assert headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in headers
    assert 'id="ext-100"' in messages[0][1]
    for _, message in messages:
        assert re.match(r"id: \d+\ndata: <", message), message[:200]
    arrivals = [at for at, _ in messages[1:]]
    assert arrivals[-1] - arrivals[0] >= 0.05, f"the messages came as one burst: {arrivals}"


async def test_the_stream_check_catches_a_buffering_proxy(start_proxy: Callable[..., Nginx]) -> None:
    """The check of the check: the events location without `proxy_buffering off` and
    `gzip off` holds the messages, and the check above says so."""

    def buffering(conf: str) -> str:
        conf = hostile(conf).replace("proxy_buffering off;", "proxy_buffering on;")
        assert conf.count("gzip off;") == 1
        return conf.replace("gzip off;", "")

    proxy = start_proxy(buffering)
    with pytest.raises(AssertionError, match="the proxy holds the stream"):
        await read_messages(f"{proxy.url}/blf/events?ext=100", 5)
