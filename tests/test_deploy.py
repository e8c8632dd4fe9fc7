"""deploy/ as the README installs it: Debian's nginx with its default site and the files of
deploy/nginx/ in front of a real `blf-panel serve`, and the systemd unit with its env file.

nginx runs as the tests' own copy of Debian's layout (/etc/nginx/nginx.conf and the default
site, paths and ports rewritten into a temporary directory, free loopback ports), never the
system's nginx. The install steps are the README's own commands, run against that copy.
nginx (and systemd-analyze, openssl) must be installed: a missing binary fails these tests,
it does not skip them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from app.settings import SETTINGS, SETTINGS_FILE, SettingsError, load_settings, read_env_file
from tests.conftest import ROOT, BlfProcess, require_binary

DEPLOY = Path(ROOT) / "deploy"
NGINX_DIR = DEPLOY / "nginx"
HTTP_CONF = NGINX_DIR / "blf-panel-http.conf"
LOCATION_CONF = NGINX_DIR / "blf-panel-location.conf"
UNIT = DEPLOY / "blf-panel.service"
ENV_FILE = DEPLOY / "blf-panel.env"
README = Path(ROOT) / "README.md"
DEBIAN_NGINX = Path("/etc/nginx")
UPSTREAM_PLACEHOLDER = "server 127.0.0.1:8000;"
RELOAD = "nginx -t && systemctl reload nginx"
SITE_NAME = "panel.example.com"
START_TIMEOUT = 15.0
# With HEARTBEAT=1 a viewer gets a message at least every second; a proxy that buffers
# holds small messages far longer than this (until a buffer fills: many seconds).
MAX_GAP = 2.5

Edit = Callable[[str], str]


# --- the README's install steps --------------------------------------------------------


def readme_blocks() -> list[list[str]]:
    """The command blocks (indented four spaces) of the README's nginx section."""
    text = README.read_text()
    section = text.split("### Behind nginx, with several workers\n", 1)[1].split("\n## ", 1)[0]
    blocks: list[list[str]] = []
    previous = ""
    for line in section.splitlines():
        if line.startswith("    ") and line.strip():
            if not previous.startswith("    "):
                blocks.append([])
            blocks[-1].append(line[4:])
        previous = line if line.strip() else ""
    return blocks


def readme_steps(containing: str) -> list[str]:
    """The one README command block that mentions `containing`."""
    found = [block for block in readme_blocks() if any(containing in line for line in block)]
    assert len(found) == 1, f"README: expected one command block with {containing!r}, found {found}"
    return found[0]


STEPS_ALWAYS = "conf.d/"  # the http-level file, the snippet, the nginx.conf limits
STEPS_DEFAULT_SITE = "sites-available/default"  # the snippet into Debian's default site
STEPS_OWN_SITE = "sites-available/blf-panel"  # the TLS site of its own


# --- nginx, as Debian lays it out ------------------------------------------------------


@pytest.fixture(scope="session")
def nginx_binary() -> str:
    return require_binary("nginx", "the deploy tests run deploy/nginx/ in a real nginx")


def rewrite(text: str, replacements: dict[str, str], what: str) -> str:
    for old, new in replacements.items():
        assert old in text, f"{what}: no {old!r} (has Debian's file changed?)"
        text = text.replace(old, new)
    return text


class DebianNginx:
    """A copy of Debian's /etc/nginx under `root` (nginx.conf, mime.types, modules and the
    default site, enabled), its paths moved under `root` and its port 80 made `port` on
    127.0.0.1. `run_steps` runs README commands against it; nginx runs in the foreground."""

    def __init__(self, binary: str, root: Path, port: int) -> None:
        self.binary, self.root, self.port = binary, root, port
        self.etc = root / "etc" / "nginx"
        for sub in ("conf.d", "snippets", "sites-available", "sites-enabled", "modules-enabled"):
            (self.etc / sub).mkdir(parents=True)
        for sub in ("log", "www", "run"):
            (root / sub).mkdir()
        shutil.copy(DEBIAN_NGINX / "mime.types", self.etc / "mime.types")
        for module in (DEBIAN_NGINX / "modules-enabled").glob("*.conf"):
            shutil.copy(module, self.etc / "modules-enabled" / module.name)
        temp = "".join(
            f"\t{kind}_temp_path {root}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf = rewrite(
            (DEBIAN_NGINX / "nginx.conf").read_text(),
            {
                # Workers must reach the temporary directory, which is the tests' own.
                "user www-data;": "user root;" if os.geteuid() == 0 else "",
                "pid /run/nginx.pid;": f"pid {root}/run/nginx.pid;",
                "/var/log/nginx/": f"{root}/log/",
                "/etc/nginx/": f"{self.etc}/",
                "http {\n": "http {\n" + temp,
            },
            "/etc/nginx/nginx.conf",
        )
        (self.etc / "nginx.conf").write_text(conf)
        default = rewrite(
            (DEBIAN_NGINX / "sites-available" / "default").read_text(),
            {
                "listen 80 default_server;": f"listen 127.0.0.1:{port} default_server;",
                "listen [::]:80 default_server;": "",
                "root /var/www/html;": f"root {root}/www;",
            },
            "/etc/nginx/sites-available/default",
        )
        (self.etc / "sites-available" / "default").write_text(default)
        (self.etc / "sites-enabled" / "default").symlink_to(self.etc / "sites-available" / "default")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def run_steps(self, steps: list[str]) -> None:
        """README commands, with /etc/nginx meaning this copy; the closing `nginx -t &&
        systemctl reload nginx` is `start()`, called by the test once it has done its edits."""
        assert steps[-1:] == [RELOAD] or all(RELOAD not in step for step in steps), steps
        for step in steps:
            if step == RELOAD:
                continue
            command = step.replace("/etc/nginx", str(self.etc))
            assert "/etc/" not in command.replace(str(self.etc), ""), f"would touch the system: {step}"
            assert "systemctl" not in command, f"not a step for this copy: {step}"
            done = subprocess.run(["sh", "-c", command], cwd=ROOT, capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, f"README step failed: {step}\n{done.stderr}"

    def edit(self, relative: str, change: Edit) -> None:
        path = self.etc / relative
        path.write_text(change(path.read_text()))

    def command(self) -> list[str]:
        return [
            self.binary,
            "-p",
            f"{self.root}/",
            "-c",
            f"{self.etc}/nginx.conf",
            "-e",
            f"{self.root}/log/error.log",
        ]

    def start(self) -> None:
        check = subprocess.run([*self.command(), "-t"], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, f"nginx -t failed:\n{check.stderr}"
        assert "conflicting server name" not in check.stderr, check.stderr
        # Its own session: master and workers form one process group we can always kill.
        self.proc = subprocess.Popen(
            [*self.command(), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.log()}")
            try:  # any answer will do: the tests judge what it is
                httpx.get(f"{self.url}/", timeout=1.0, trust_env=False)
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

    def workers(self) -> list[int]:
        assert self.proc is not None
        pids = []
        for entry in Path("/proc").iterdir():
            try:
                if (
                    entry.name.isdigit()
                    and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == self.proc.pid
                ):
                    pids.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                pass
        return pids

    def log(self) -> str:
        path = self.root / "log" / "error.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


# --- the panel -------------------------------------------------------------------------


def systemd_env(path: Path) -> dict[str, str]:
    return parse_systemd_environment_file(path.read_text())


@pytest.fixture
def upstream(blf: Callable[..., BlfProcess], free_port: Callable[[], int]) -> int:
    """A `serve` with the settings of deploy/blf-panel.env as systemd reads them (so
    ROOT_PATH=/blf), on the demo PBX and a free port; returns its port once it answers."""
    port = free_port()
    env = {
        **systemd_env(ENV_FILE),
        "AMI_HOST": "",
        "PORT": str(port),
        "MEMCACHED_URL": "",
        "DEMO_CHURN": "20",
        "HEARTBEAT": "1",
    }
    process = blf("serve", env=env)
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
def install(
    nginx_binary: str, upstream: int, free_port: Callable[[], int], tmp_path: Path
) -> Iterator[Callable[..., DebianNginx]]:
    """`install(steps, edit=None, before_start=None)`: a Debian nginx copy, the README's
    common steps and then `steps` (another README block), the upstream pointed at our
    `serve`, `edit` applied to the installed location snippet (for the checks of the
    checks), started. Every nginx started is stopped afterwards."""
    started: list[DebianNginx] = []

    def start(
        steps: str | None = STEPS_DEFAULT_SITE,
        edit: Edit | None = None,
        before_start: Callable[[DebianNginx], None] | None = None,
    ) -> DebianNginx:
        server = DebianNginx(nginx_binary, tmp_path / f"nginx-{len(started)}", free_port())
        started.append(server)
        server.run_steps(readme_steps(STEPS_ALWAYS))
        if steps is not None:
            server.run_steps(readme_steps(steps))
        server.edit("conf.d/blf-panel-http.conf", lambda text: point_at(text, upstream))
        if edit is not None:
            server.edit("snippets/blf-panel-location.conf", edit)
        if before_start is not None:
            before_start(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def point_at(text: str, port: int) -> str:
    assert text.count(UPSTREAM_PLACEHOLDER) == 1, f"blf-panel-http.conf: no `{UPSTREAM_PLACEHOLDER}`"
    return text.replace(UPSTREAM_PLACEHOLDER, f"server 127.0.0.1:{port};")


@pytest.fixture
def proxy(install: Callable[..., DebianNginx]) -> DebianNginx:
    """The panel under /blf/ of Debian's default site, installed as the README says."""
    return install()


def client(base: str, **options: object) -> httpx.Client:
    return httpx.Client(base_url=base, timeout=10.0, trust_env=False, follow_redirects=False, **options)


# --- Debian's default site and the install steps -----------------------------------------


def test_without_the_include_the_default_site_answers_404(install: Callable[..., DebianNginx]) -> None:
    """The check of the steps: the default site owns port 80, so /blf/ needs the include
    (a server of our own with `server_name _` in conf.d/ was ignored: the same 404)."""
    nginx = install(steps=None)
    with client(nginx.url) as http:
        assert http.get("/blf/").status_code == 404


def test_the_readme_steps_raise_nginx_limits(proxy: DebianNginx) -> None:
    conf = (proxy.etc / "nginx.conf").read_text()
    assert re.findall(r"worker_connections \d+;", conf) == ["worker_connections 10240;"]
    assert re.findall(r"(?m)^worker_rlimit_nofile \d+;", conf) == ["worker_rlimit_nofile 20480;"]
    workers = proxy.workers()
    assert workers, "no nginx worker"
    # nginx (root, as systemd starts it) raises its workers' limit; where even root may not
    # go above a lower hard limit (some containers), it logs that it tried.
    probe = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (20480, 20480))"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=30).returncode == 0:
        for pid in workers:
            limits = Path(f"/proc/{pid}/limits").read_text()
            soft = re.search(r"Max open files\s+(\d+)", limits)
            assert soft and soft.group(1) == "20480", limits
    else:
        assert "setrlimit(RLIMIT_NOFILE, 20480) failed" in proxy.log()


def header_timeout() -> float:
    found = re.findall(r"(?m)^client_header_timeout (\d+)s;", HTTP_CONF.read_text())
    assert len(found) == 1, "blf-panel-http.conf: one `client_header_timeout Ns;`"
    return float(found[0])


def test_a_half_sent_request_is_closed_within_the_header_timeout(proxy: DebianNginx) -> None:
    """Half a request line, then silence: nginx closes the connection after
    client_header_timeout (Debian's default held it for 60 s)."""
    timeout = header_timeout()
    assert timeout <= 10, "a few seconds"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=timeout + 5) as sock:
        began = time.monotonic()
        sock.sendall(b"GET /blf/ HTT")
        try:
            while sock.recv(4096):  # nginx may say 408 before closing; EOF is the point
                pass
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(f"the connection was still open after {timeout + 5:g}s") from None
        elapsed = time.monotonic() - began
    assert timeout - 0.5 <= elapsed <= timeout + 5, elapsed


def test_connections_per_address_are_limited(install: Callable[..., DebianNginx]) -> None:
    """limit_conn, lowered to 2 for the test: a third open request from the address is
    refused with 429 while two streams are open."""

    def two(text: str) -> str:
        assert text.count("limit_conn blf_panel_per_ip 100;") == 2
        return text.replace("limit_conn blf_panel_per_ip 100;", "limit_conn blf_panel_per_ip 2;")

    nginx = install(edit=two)
    with client(nginx.url) as http:
        with http.stream("GET", "/blf/events"), http.stream("GET", "/blf/events"):
            assert http.get("/blf/healthz").status_code == 429
        assert http.get("/blf/healthz").status_code == 200


# --- a site of its own, over TLS -------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    openssl = require_binary("openssl", "the TLS site test makes a self-signed certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        + ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={SITE_NAME}"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


async def test_the_tls_site_next_to_the_default_site(
    install: Callable[..., DebianNginx], free_port: Callable[[], int], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    tls_port = free_port()

    def configure(nginx: DebianNginx) -> None:  # what the README leaves to the admin
        nginx.edit(
            "sites-available/blf-panel",
            lambda text: rewrite(
                text,
                {
                    "listen 80;": f"listen 127.0.0.1:{nginx.port};",
                    "listen [::]:80;": "",
                    "listen 443 ssl http2;": f"listen 127.0.0.1:{tls_port} ssl http2;",
                    "listen [::]:443 ssl http2;": "",
                    f"/etc/letsencrypt/live/{SITE_NAME}/fullchain.pem": str(cert),
                    f"/etc/letsencrypt/live/{SITE_NAME}/privkey.pem": str(key),
                },
                "blf-panel-site.conf",
            ),
        )

    nginx = install(steps=STEPS_OWN_SITE, before_start=configure)
    with client(nginx.url) as http:
        redirect = http.get("/blf/?ext=100", headers={"Host": SITE_NAME})
        assert redirect.status_code == 301
        assert redirect.headers["location"] == f"https://{SITE_NAME}/blf/?ext=100"
        assert "strict-transport-security" not in redirect.headers
        other = http.get("/blf/", headers={"Host": "intranet.example.com"})
        assert other.status_code == 404, "the default site still answers every other name"
    https = f"https://127.0.0.1:{tls_port}"
    with client(https, verify=False) as http:
        page = http.get("/blf/", headers={"Host": SITE_NAME})
        assert page.status_code == 200 and 'hx-sse:connect="events?' in page.text
        assert page.headers["strict-transport-security"] == "max-age=31536000"
        assert http.get("/").headers["location"] == "/blf/"
        assert http.get("/blf/nowhere").headers["strict-transport-security"] == "max-age=31536000"
    headers, messages = await read_messages(f"{https}/blf/events?ext=100", 3, verify=False)
    assert headers["strict-transport-security"] == "max-age=31536000"
    assert 'id="ext-100"' in messages[0][1]


# --- the page and its URLs -------------------------------------------------------------


class UrlCollector(HTMLParser):
    ATTRS = {"src", "href", "action", "hx-sse:connect", "hx-get", "hx-post"}

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.posted: set[str] = set()  # URLs only POSTed to (a form's action, hx-post)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in self.ATTRS and value]
        found = dict(attrs)
        if tag == "form" and (found.get("method") or "").lower() == "post" and found.get("action"):
            self.posted.add(str(found["action"]))
        if found.get("hx-post"):
            self.posted.add(str(found["hx-post"]))


def page_urls(html: str) -> list[str]:
    parser = UrlCollector()
    parser.feed(html)
    return parser.urls


def posted_urls(html: str) -> set[str]:
    parser = UrlCollector()
    parser.feed(html)
    return parser.posted


@pytest.mark.parametrize("path", ["/blf/", "/blf/embed?ext=100,101"])
def test_every_url_of_the_page_loads_under_the_prefix(proxy: DebianNginx, path: str) -> None:
    with client(proxy.url) as http:
        page = http.get(path, headers={"Accept": "text/html"})
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        urls = [url for url in page_urls(page.text) if not url.startswith("data:")]
        assert any(u.startswith("static/") for u in urls), urls
        assert any(u.startswith("events?") for u in urls), urls
        posted = posted_urls(page.text)
        for url in urls:
            assert not urlsplit(url).scheme and not url.startswith("/"), f"not relative: {url}"
            target = urljoin(f"{proxy.url}{path}", url)
            assert urlsplit(target).path.startswith("/blf/"), f"{url} resolves outside /blf/: {target}"
            if url in posted:
                continue  # a form's target (POST /pins): under the prefix is what matters here
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


def test_the_prefix_without_slash_redirects(proxy: DebianNginx) -> None:
    with client(proxy.url) as http:
        for path, location in (("/blf", "/blf/"), ("/blf?ext=100", "/blf/?ext=100")):
            response = http.get(path)
            assert response.status_code == 301, path
            assert response.headers["location"] == location
        page = http.get("/blf", follow_redirects=True)
        assert page.status_code == 200
        assert str(page.url) == f"{proxy.url}/blf/"
        assert 'hx-sse:connect="events?' in page.text


def test_redirects_of_the_app_stay_under_the_prefix(proxy: DebianNginx) -> None:
    """The app's own (absolute) redirects, e.g. a trailing slash, are built from ROOT_PATH
    and the Host and X-Forwarded-Proto headers nginx sets (a client cannot choose the
    scheme)."""
    with client(proxy.url) as http:
        response = http.get("/blf/embed/?ext=100", headers={"X-Forwarded-Proto": "https"})
        assert response.status_code in (301, 307, 308)
        assert response.headers["location"] == f"{proxy.url}/blf/embed?ext=100"
        response = http.get("/blf/embed/", headers={"Host": "panel.example.com"})
        assert response.headers["location"] == "http://panel.example.com/blf/embed"


def test_nothing_outside_the_prefix_reaches_the_panel(proxy: DebianNginx) -> None:
    with client(proxy.url) as http:
        for path in ("/events", "/static/htmx.min.js", "/blfx/"):
            assert http.get(path).status_code == 404, path
        root = http.get("/")  # the default site's own (empty) document root
        assert root.status_code in (403, 404) and "hx-sse" not in root.text


# --- the event stream ------------------------------------------------------------------


async def read_messages(
    url: str, count: int, verify: bool = True
) -> tuple[httpx.Headers, list[tuple[float, str]]]:
    """The response headers and the first `count` SSE messages with their arrival times.
    Fails as soon as a message takes longer than MAX_GAP after the one before (the first:
    after the request; a proxy that holds the body may hold the headers too)."""
    messages: list[tuple[float, str]] = []
    buffer = ""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(MAX_GAP) as deadline:
            async with httpx.AsyncClient(timeout=30.0, trust_env=False, verify=verify) as http:
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


async def test_the_whole_view_streams_through(proxy: DebianNginx) -> None:
    headers, messages = await read_messages(f"{proxy.url}/blf/events", 4)
    assert headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in headers
    assert headers["cache-control"] == "no-store"
    assert '<main id="tiles" hx-swap-oob="innerHTML">' in messages[0][1]
    assert messages[0][1].count('<article id="ext-') == 50  # the demo's 50 extensions (and its queues)
    for _, message in messages:
        assert re.match(r"id: \d+\ndata: <", message), message[:200]


def hostile(conf: str) -> str:
    """Surroundings the events location must withstand: gzip on for event streams in the
    server (an admin's gzip_types; the snippet is included at server level), and no help
    from the app's own `X-Accel-Buffering: no` header."""
    assert conf.count("proxy_buffering off;") == 1
    conf = "gzip on; gzip_types text/event-stream; gzip_min_length 0;\n" + conf
    return conf.replace(
        "proxy_buffering off;", "proxy_buffering off; proxy_ignore_headers X-Accel-Buffering;"
    )


@pytest.mark.parametrize("edit", [None, hostile], ids=["as-shipped", "hostile-surroundings"])
async def test_each_message_passes_at_once(install: Callable[..., DebianNginx], edit: Edit | None) -> None:
    """One extension: small messages (a heartbeat a second, a change now and then) that a
    buffering proxy would hold until its buffers fill, many seconds later."""
    proxy = install(edit=edit)
    headers, messages = await read_messages(f"{proxy.url}/blf/events?ext=100", 5)
    assert headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in headers
    assert 'id="ext-100"' in messages[0][1]
    for _, message in messages:
        assert re.match(r"id: \d+\ndata: <", message), message[:200]
    arrivals = [at for at, _ in messages[1:]]
    assert arrivals[-1] - arrivals[0] >= 0.05, f"the messages came as one burst: {arrivals}"


async def test_the_stream_check_catches_a_buffering_proxy(install: Callable[..., DebianNginx]) -> None:
    """The check of the check: the events location without `proxy_buffering off` and
    `gzip off` holds the messages, and the check above says so."""

    def buffering(conf: str) -> str:
        conf = hostile(conf).replace("proxy_buffering off;", "proxy_buffering on;")
        assert conf.count("gzip off;") == 1
        return conf.replace("gzip off;", "")

    proxy = install(edit=buffering)
    with pytest.raises(AssertionError, match="the proxy holds the stream"):
        await read_messages(f"{proxy.url}/blf/events?ext=100", 5)


# --- systemd -----------------------------------------------------------------------------

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_systemd_environment_file(text: str) -> dict[str, str]:
    """An EnvironmentFile= as systemd reads it (systemd.exec(5), "EnvironmentFile="; its
    parser is src/basic/env-file.c): `KEY=value` lines; lines starting with # or ; are
    comments, lines without = are ignored (there are no comments after a value); blanks
    around the key and the value go, blanks inside stay. An unquoted value: a backslash
    keeps the next character (`\\\\` is one backslash) and a backslash before the newline
    continues the line. '...': everything verbatim up to the next single quote. "...": a
    backslash keeps a following " \\ ` $ (and joins lines before a newline); before any
    other character both stay. Quoted and unquoted pieces follow each other as in a shell
    word. A key that is not a valid variable name is dropped (with a warning)."""
    values: dict[str, str] = {}
    whitespace, newline = " \t\n\r", "\n\r"
    state = "pre_key"
    key = value = ""
    value_end: int | None = None  # where trailing blanks of an unquoted value start

    def push() -> None:
        name = key.rstrip(whitespace)
        if ENV_NAME.fullmatch(name):
            values[name] = value
        # else: systemd drops the invalid assignment

    for c in text:
        if state == "pre_key":
            if c in "#;":
                state = "comment"
            elif c not in whitespace:
                state, key = "key", c
        elif state == "key":
            if c in newline:
                state, key = "pre_key", ""  # no `=`: ignored
            elif c == "=":
                state, value, value_end = "pre_value", "", None
            else:
                key += c
        elif state == "pre_value":
            if c in newline:
                push()
                state, key = "pre_key", ""
            elif c == "'":
                state = "single"
            elif c == '"':
                state = "double"
            elif c == "\\":
                state = "value_escape"
            elif c not in whitespace:
                state, value = "value", value + c
        elif state == "value":
            if c in newline:
                value = value if value_end is None else value[:value_end]
                push()
                state, key = "pre_key", ""
            elif c == "\\":
                state, value_end = "value_escape", None
            else:
                if c not in whitespace:
                    value_end = None
                elif value_end is None:
                    value_end = len(value)
                value += c
        elif state == "value_escape":
            state = "value"
            if c not in newline:
                value += c
        elif state == "single":
            if c == "'":
                state = "pre_value"
            else:
                value += c
        elif state == "double":
            if c == '"':
                state = "pre_value"
            elif c == "\\":
                state = "double_escape"
            else:
                value += c
        elif state == "double_escape":
            state = "double"
            if c in '"\\`$':
                value += c
            elif c != "\n":
                value += "\\" + c
        elif state == "comment":
            if c in newline:
                state = "pre_key"
    if state in ("pre_value", "value", "value_escape", "single", "double", "double_escape"):
        if state == "value" and value_end is not None:
            value = value[:value_end]
        push()
    return values


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("A=plain", {"A": "plain"}),
        ("  A = spaced out  ", {"A": "spaced out"}),
        ("A='self'", {"A": "self"}),
        ("A=\"'self'\"", {"A": "'self'"}),
        ("A=\"'self' https://crm.example.com\"", {"A": "'self' https://crm.example.com"}),
        ("A='self' https://x", {"A": "selfhttps://x"}),
        ("A=it's", {"A": "it's"}),
        ('A="say \\"hi\\" \\$HOME \\n"', {"A": 'say "hi" $HOME \\n'}),
        ("A=back\\\\slash\\ x", {"A": "back\\slash x"}),
        ("A=one\\\ntwo", {"A": "onetwo"}),
        ("A='two\nlines'", {"A": "two\nlines"}),
        ("# A=commented\n; B=too\nnot an assignment\nC=", {"C": ""}),
        ("A=value # not a comment", {"A": "value # not a comment"}),
        ("BAD-NAME=x\nA=1\nA=2", {"A": "2"}),
    ],
)
def test_the_parser_reads_like_systemd(line: str, expected: dict[str, str]) -> None:
    """The rules of systemd.exec(5) the parser follows, one case each."""
    assert parse_systemd_environment_file(line + "\n") == expected
    assert parse_systemd_environment_file(line) == expected  # no newline at the end


def test_the_env_file_means_the_same_to_systemd_and_to_the_app() -> None:
    """What the service gets from systemd is what the app would read from the same file,
    every setting included (FRAME_ANCESTORS keeps its quotes)."""
    from_systemd = systemd_env(ENV_FILE)
    assert from_systemd == read_env_file(ENV_FILE)
    assert set(from_systemd) <= {setting.name for setting in SETTINGS}, "unknown settings"
    settings = load_settings(environ=from_systemd, env_file=None)
    assert settings == load_settings(environ={}, env_file=ENV_FILE)
    assert settings.frame_ancestors == "'self'"
    assert (settings.host, settings.port, settings.root_path) == ("127.0.0.1", 8000, "/blf")
    # systemd v252 (Debian 12) continues a comment that ends with a backslash onto the
    # next line, newer versions do not: the file must not depend on it.
    assert not [
        line for line in ENV_FILE.read_text().splitlines() if line.startswith("#") and line.endswith("\\")
    ]


def test_the_project_settings_file_would_lose_its_quotes_under_systemd() -> None:
    """The check of the check, and why the unit does not load settings.env: systemd reads
    FRAME_ANCESTORS='self' as `self`, to CSP a host named self: the panel's own pages
    could no longer frame it. Settings now refuse that unquoted keyword outright."""
    assert read_env_file(SETTINGS_FILE)["FRAME_ANCESTORS"] == "'self'"
    from_systemd = systemd_env(SETTINGS_FILE)
    assert from_systemd["FRAME_ANCESTORS"] == "self"
    with pytest.raises(SettingsError, match="must be quoted"):
        load_settings(environ=from_systemd, env_file=None)


def unit_values(name: str) -> list[str]:
    return re.findall(rf"(?m)^{name}=(.*)$", UNIT.read_text())


def test_the_unit_loads_the_env_file_the_install_puts_in_place() -> None:
    (path,) = unit_values("EnvironmentFile")
    for where, text in (
        ("README", "\n".join(readme_steps("deploy/blf-panel.env"))),
        ("unit", UNIT.read_text()),
    ):
        installs = re.findall(r"install .*deploy/blf-panel\.env (\S+)", text)
        assert installs == [path], f"{where}: the env file goes to {installs}, the unit reads {path}"
        assert "-m 0600" in text, f"{where}: the env file holds AMI_SECRET: root-only"
    assert unit_values("LimitNOFILE") == ["65536"]
    assert all("settings.env" not in value for value in unit_values("EnvironmentFile"))


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """systemd-analyze verify on the unit (ExecStart pointed at this venv's blf-panel: it
    checks the program exists): no unknown keys, no values it cannot parse."""
    analyze = require_binary("systemd-analyze", "the unit is checked by systemd's own parser")
    (command,) = unit_values("ExecStart")
    program = Path(ROOT) / ".venv" / "bin" / "blf-panel"
    assert command.startswith("/opt/blf-panel/.venv/bin/blf-panel "), command
    unit = tmp_path / "blf-panel.service"
    unit.write_text(UNIT.read_text().replace("/opt/blf-panel/.venv/bin/blf-panel", str(program)))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
