"""Fan-out benchmark: how fast one panel server brings a state change to N viewers, and at what cost.

Every part is a real process on loopback: memcached, the simulator (`blf-panel simulate`), the
panel (`blf-panel serve`, W workers) and client processes that hold the N viewers. The driver
sends R `Setvar DEVICE_STATE(Custom:N)` a second to the simulator over AMI on an open-loop
schedule (it never waits for deliveries) and stamps each one. For every change and every
viewer it takes the time from that Setvar to the tile's bytes arriving on `/events`
(`--mode sse`), or to the first `/api/snapshot` poll that shows it (`--mode poll`, the old
design: each viewer fetches the snapshot every second). docs/benchmarks.md has the results.
Modules: run.py (one run), drive.py, viewers.py, report.py; __main__.py is the command line.

    .venv/bin/python -m bench.fanout --viewers 1000 --rate 50 --workers 1 --mode sse --json OUT
    .venv/bin/python -m bench.fanout --smoke --json OUT          # both modes, small, seconds
    .venv/bin/python -m bench.fanout --sweep --json docs/benchmarks.json --plot docs/benchmarks.png
    .venv/bin/python -m bench.fanout --table docs/benchmarks.json   # the markdown table again

Options taking a list (`--viewers 100,1000`) run every combination. Linux only (/proc).
Only the standard library is needed (uvloop is used when installed); `--plot` needs
matplotlib (`pip install -e .[bench]`).
"""
