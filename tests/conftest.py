"""Test-wide settings: no network, no analytics; servers closed before pytest prints its summary."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Close the apps launched by the tests now, so their goodbye lines do not follow the summary line."""
    from bundles import _RUNNING

    for key in ("app", "app-shipped"):
        running = _RUNNING.pop(key, None)
        if running is not None:
            running[0].demo.close()
