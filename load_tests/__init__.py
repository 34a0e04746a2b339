"""Load tests (not part of `make test`): scenarios against real livesell processes on loopback; run one with `python -m load_tests.<name> --help`."""
