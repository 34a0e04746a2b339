"""Load tests, not part of `make test`: scenarios against real livesell processes on loopback.

`python -m load_tests` (= `make bench`, `make bench QUICK=1` for the short version) runs every
benchmark in one bounded run, prints a table and writes `load_tests/results/<timestamp>.json`
plus PNG charts. Each benchmark also runs alone: `python -m load_tests.<name> --help`.
"""
