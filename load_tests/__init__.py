"""Load tests (not part of `make test`): run with `python -m load_tests.<name>`."""
