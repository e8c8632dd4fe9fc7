"""Prometheus metrics: what each process counts, gathered by `serve` from every worker and
the collector child, on METRICS_LISTEN only."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.metrics import Metrics, parse_listen, registry_for_exposition
from app.settings import SettingsError, load_settings
from app.sim import Simulator
from tests.helpers import SseClient, setvar
from tests.test_workers import EXTENSIONS, env, healthy


def samples(text: str) -> dict[str, float]:
    """Every sample summed over its labels but `le`/`quantile` (those are kept apart)."""
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name
            if "le" in sample.labels:
                key += f'{{le="{sample.labels["le"]}"}}'
            sums[key] = sums.get(key, 0.0) + sample.value
    return sums


def test_one_process_counts_into_its_own_registry() -> None:
    from prometheus_client import generate_latest

    first, second = Metrics(), Metrics()  # several apps in one process do not collide
    first.ami_logins.inc()
    first.count_event("ExtensionStatus", 3)
    first.count_event("Evil\r\nLabel", 1)  # from the PBX: never a label of its own
    first.change_latency.observe(0.03)
    text = generate_latest(registry_for_exposition(first)).decode()
    got = samples(text)
    assert got["blf_ami_logins_total"] == 1 and got["blf_ami_events_total"] == 4
    assert 'event="other"' in text and "Evil" not in text
    assert got['blf_change_to_send_seconds_bucket{le="0.05"}'] == 1
    assert samples(generate_latest(second.registry).decode())["blf_ami_logins_total"] == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", None), ("9464", ("127.0.0.1", 9464)), ("0.0.0.0:9464", ("0.0.0.0", 9464)), ("[::1]:9", ("::1", 9))],
)
def test_metrics_listen_forms(value: str, expected: tuple[str, int] | None) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["abc", "host:", ":80", "70000", "host:port"])
def test_a_bad_metrics_listen_is_one_line_naming_it(value: str) -> None:
    with pytest.raises(SettingsError, match="^METRICS_LISTEN: .*PORT or HOST:PORT"):
        load_settings(environ={"METRICS_LISTEN": value}, env_file=None)


async def test_serve_gathers_every_process_on_the_metrics_port_only(blf, free_port, memcached) -> None:
    """Two workers and the collector child count into one directory; serve shows the sum on
    METRICS_LISTEN, and the panel's own port has no /metrics."""
    async with Simulator(EXTENSIONS, port=0) as sim:
        port, metrics_port = free_port(), free_port()
        blf(
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            env=env(sim, memcached, METRICS_LISTEN=f"127.0.0.1:{metrics_port}"),
        )
        url = f"http://127.0.0.1:{port}"
        await healthy(url)
        async with SseClient(f"{url}/events") as stream:
            await stream.next_with('id="ext-109"', timeout=10)
            await setvar(sim.port, "Custom:105", "INUSE")
            await stream.next_with('id="ext-105" class="tile state-inuse"')
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{url}/metrics")).status_code == 404
                got: dict[str, float] = {}
                # Another process's counters: a bounded poll (the viewers' counts are
                # handed over once a second).
                async with asyncio.timeout(15):
                    while not (got.get("blf_viewers", 0) >= 1 and got.get("blf_messages_sent_total", 0) >= 2):
                        got = samples((await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text)
                        await asyncio.sleep(0.2)
    assert got["blf_bytes_sent_total"] > 0
    assert got["blf_ami_logins_total"] == 1 and got["blf_collector_lease_held"] == 1
    assert got["blf_versions_published_total"] >= 2
    assert got["blf_ami_events_total"] >= 1
    assert got["blf_change_to_send_seconds_count"] >= 1
