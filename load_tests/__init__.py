"""Load tests, not part of `make test`: scenarios against real livesell processes on loopback.

Run one with `python -m load_tests.<name> --help`, or all with `make bench`.
"""
