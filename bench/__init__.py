"""The benchmarks: `python -m bench.datapath` (PBX -> collector -> memcached) and
`python -m bench.fanout` (one panel server to N viewers); bench/README.md says what they measure."""
