"""Test-wide settings and shared fixtures: no network, no analytics; one torch thread for the app's tests (as
app.py serves); servers closed before pytest prints its summary.

Tests marked ``slow`` (training runs, a served app, a browser) take seconds to minutes; the full suite, as CI runs
it, includes them: ``-m "not slow"`` leaves them out while iterating.
"""

import os
from typing import Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread, as app.py serves, for a whole module; the count is restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    """Close the apps launched by the tests now, so their goodbye lines do not follow the summary line."""
    from bundles import _RUNNING

    for key in ("app", "app-shipped"):
        running = _RUNNING.pop(key, None)
        if running is not None:
            running[0].demo.close()
