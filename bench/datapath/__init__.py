"""Benchmark of the blf-panel data path: PBX (simulator) -> collector -> memcached.

Two figures, each from real processes talking over loopback TCP:

1. Setvar -> snapshot latency: the time from writing one `Setvar DEVICE_STATE(...)` to the
   simulator until memcached's snapshot shows that extension in its new state (latency.py).
2. Collector capacity: AMI events per second the collector handles, its CPU use on its
   own pinned core, and the events it handles per CPU-second, at several load rates (capacity.py).

Run from the project root:  .venv/bin/python -m bench.datapath [--quick] [--json OUT]
bench/README.md says what each figure means and how it is taken.
"""
