"""Tests of app.store, one file per module: contract, memory, memcached, lease."""
