"""The model test counts its examples and steps with the fuzz package's counter, which
tests/fuzz/conftest.py reports."""
