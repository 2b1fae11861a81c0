"""Shared test helpers; the fixture modules are loaded as pytest plugins by tests/conftest.py."""
