"""Prometheus metrics for the people who run the panel: what each process counts, and the
one place that serves them (`METRICS_LISTEN`, never on the panel's own port).

Several processes (uvicorn workers, the collector child) count into prometheus-client's
multi-process files; `serve` sets the directory before any of them imports the library,
which picks its value store once, at import. So nothing here imports prometheus_client at
module level: a `Metrics` is made in the lifespan (or the collector's runtime) and passed down.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from app.i18n import _

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Change-to-send latency buckets (s): a change normally reaches the viewers in 10-100 ms
# (docs/benchmarks.md); the tail up to seconds shows a store outage or an overloaded worker.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Every metric of the panel, in a registry of its own (so several apps in one process,
    as in the tests, do not collide). Hot paths do not call these per viewer: streams add
    to plain integers and `Viewers` hands the sums over about once a second."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        r = self.registry
        # --- web processes ---
        self.viewers = Gauge(
            "blf_viewers", "Viewers with an open stream, per process", registry=r, multiprocess_mode="liveall"
        )
        self.messages_sent = Counter("blf_messages_sent", "Stream messages sent to viewers", registry=r)
        self.bytes_sent = Counter("blf_bytes_sent", "Bytes of stream messages sent to viewers", registry=r)
        self.viewers_dropped = Counter(
            "blf_viewers_dropped", "Viewers dropped because they stopped reading", registry=r
        )
        self.change_latency = Histogram(
            "blf_change_to_send_seconds",
            "From the collector's publication of a version to the hub handing it to the viewers",
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        # --- the collector ---
        self.ami_logins = Counter("blf_ami_logins", "Successful AMI logins (one per (re)connect)", registry=r)
        self.ami_link_losses = Counter("blf_ami_link_losses", "AMI links lost after a login", registry=r)
        self.ami_events = Counter("blf_ami_events", "AMI events received, by type", ["event"], registry=r)
        self.versions_published = Counter("blf_versions_published", "Snapshot versions published", registry=r)
        self.lookups_failed = Counter(
            "blf_lookups_failed", "Name or presence lookups at the PBX that failed", ["what"], registry=r
        )
        self.lease_held = Gauge(
            "blf_collector_lease_held",
            "1 while this process holds the collector lease",
            registry=r,
            multiprocess_mode="livemax",
        )
        # --- both ---
        self.store_errors = Counter(
            "blf_store_errors", "Store calls that failed, by who", ["who"], registry=r
        )
        self.actions = Counter(
            "blf_actions", "Actions from the panel, by action and result", ["action", "result"], registry=r
        )

    def count_event(self, event: str, count: int = 1) -> None:
        # Event names come from the PBX: only well-formed ones become a label value, so a
        # hostile peer cannot grow the series without bound.
        self.ami_events.labels(event if event.isalnum() and len(event) <= 40 else "other").inc(count)


def registry_for_exposition(metrics: Metrics | None) -> CollectorRegistry:
    """What the metrics server shows: every process's files in multi-process mode, else the
    one process's own registry."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return metrics.registry if metrics is not None else CollectorRegistry()


def parse_listen(value: str) -> tuple[str, int] | None:
    """`METRICS_LISTEN`: empty (off), `PORT` (loopback) or `HOST:PORT`; raises ValueError, in
    the CLI's language (a setting's error)."""
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    host = host.strip("[]") if sep else "127.0.0.1"
    port = port if sep else value
    if not port.isdigit() or not 1 <= int(port) <= 65535 or (sep and not host):
        raise ValueError(_("%(value)r is not PORT or HOST:PORT") % {"value": value[:60]})
    return host, int(port)


def serve_metrics(listen: tuple[str, int], metrics: Metrics | None) -> Any:
    """Start the metrics server in a thread (prometheus-client's own); returns the server,
    to `shutdown()` when the process stops."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(listen[1], listen[0], registry=registry_for_exposition(metrics))
    log.info("metrics on http://%s:%d/metrics", *listen)
    return server


def forget_process(pid: int) -> None:
    """In multi-process mode, drop the "live" gauges of a process that ended (viewers,
    lease held), which prometheus-client cannot tell from a running one by itself."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


@contextmanager
def multiprocess_dir() -> Iterator[str]:
    """A fresh directory for the multi-process files of one `serve`, set in the environment
    the workers and the collector child inherit; removed when serve ends."""
    path = tempfile.mkdtemp(prefix="blf-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
