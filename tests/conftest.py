"""Test-wide settings: no network, no analytics; servers closed before pytest prints its summary."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Close the app launched by the client tests now, so its goodbye line does not follow the summary line."""
    from bundles import _RUNNING

    running = _RUNNING.get("app")
    if running is not None:
        running[0].demo.close()
        _RUNNING.pop("app")
