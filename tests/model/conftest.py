"""The model test reports its counts through the fuzz package's counter."""

from tests.fuzz.conftest import _report_counts

__all__ = ["_report_counts"]
