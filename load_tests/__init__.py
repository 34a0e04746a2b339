"""The load-test suite: livesell's hub and buy path against the servers people use today.

`python -m load_tests` (= `make bench`) runs every benchmark in one bounded, loopback-only run and
writes `load_tests/results/<timestamp>.json` plus PNG charts. Each benchmark module also runs
alone (`python -m load_tests.hubs --help`).
"""
