"""Fixtures of the mudsc plugin's tests: small models on the digits data that ship with weightlab
and the cached MNIST MLP pair (MNIST from ../shared/data; skipped when absent)."""

from weightlab.pytest_fixtures import digits_calibration, mnist, pytest_configure  # noqa: F401
