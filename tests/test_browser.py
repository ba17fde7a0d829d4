"""End to end in headless Chromium: draw a shape with the mouse, classify it, see the charts and the verdict, move a
slider, click an example: `python -m pytest -q tests/test_browser.py`.

Needs Debian's Chromium at /usr/bin/chromium (`apt-get install -y chromium`) and the Playwright Python package; the
test is skipped, saying why, when either is missing. Set EXPLAINER_SCREENSHOTS=folder to keep the screenshots.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import pytest  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent (install it with: apt-get install -y chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the Playwright Python package is not installed")

from bundles import one_torch_thread, running_app  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),  # pandas 3 deprecations inside Gradio's queue
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]
one_thread = pytest.fixture(autouse=True, scope="module")(one_torch_thread)


@pytest.fixture(scope="module")
def url() -> str:
    return running_app()[1]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def screenshot_folder(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("EXPLAINER_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def draw_triangle(page: Any) -> None:
    """Press, move in small steps along three edges, release: what a person does with a mouse."""
    canvas = page.locator("#shapes-sketch canvas").first
    canvas.wait_for(state="visible", timeout=TIMEOUT_MS)
    page.wait_for_selector('#shapes-sketch button[aria-label="Brush"]', timeout=TIMEOUT_MS)
    page.wait_for_timeout(500)  # the page's load script selects the brush
    box = canvas.bounding_box()
    cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, min(box["width"], box["height"]) * 0.3
    corners = [(cx, cy - r), (cx + 0.87 * r, cy + 0.5 * r), (cx - 0.87 * r, cy + 0.5 * r), (cx, cy - r)]
    page.mouse.move(*corners[0])
    page.mouse.down()
    for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
        for step in range(1, 5):  # few steps: each move redraws the canvas, ~0.5 s in software WebGL
            page.mouse.move(x0 + (x1 - x0) * step / 4, y0 + (y1 - y0) * step / 4)
    page.mouse.up()


def record_outside_requests(page: Any, url: str) -> list[str]:
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None)
    return outside


def test_draw_classify_and_move_a_slider(browser: Any, url: str, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    outside = record_outside_requests(page, url)
    page.goto(url)
    draw_triangle(page)
    page.click("#shapes-classify")
    badge = page.locator("#shapes-status .badge")
    badge.wait_for(timeout=TIMEOUT_MS)
    for chart in ("#shapes-classes", "#shapes-explanations", "#shapes-ranking"):
        page.locator(f"{chart} .js-plotly-plot").wait_for(timeout=TIMEOUT_MS)
        assert page.locator(f"{chart} .bars path").count() >= 1  # bars are drawn
    assert "Consistent" in badge.inner_text() or "Questioned" in badge.inner_text()
    assert "nothing to classify" not in page.inner_text("#shapes-status").lower()
    folder = screenshot_folder(tmp_path)
    page.screenshot(path=str(folder / "drawn.png"), full_page=True)

    # Threshold 1 keeps no explanation (a sigmoid never reaches 1): every class scores 0, so the verdict becomes
    # "questioned, case 1" whatever the untrained network says. Only the cached outputs are re-rendered.
    page.locator("#shapes-threshold input[type=range]").fill("1")
    page.wait_for_function(
        "() => document.querySelector('#shapes-status .badge')?.innerText.includes('case 1')", timeout=TIMEOUT_MS
    )
    assert "threshold 1.00" in page.inner_text("#shapes-explanations")
    page.screenshot(path=str(folder / "threshold.png"), full_page=True)
    assert outside == []  # no font, script or telemetry request leaves the machine
    page.close()


def test_example_runs_with_one_click_on_a_phone(browser: Any, url: str, tmp_path: Path) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                            has_touch=True)
    outside = record_outside_requests(page, url)
    page.goto(url)
    examples = page.locator("#shapes-examples button")
    examples.first.wait_for(timeout=TIMEOUT_MS)
    assert examples.count() == 8
    examples.nth(1).tap()
    page.locator("#shapes-status .badge").wait_for(timeout=TIMEOUT_MS)
    for chart in ("#shapes-classes", "#shapes-explanations", "#shapes-ranking"):
        plot = page.locator(f"{chart} .js-plotly-plot")
        plot.wait_for(timeout=TIMEOUT_MS)
        assert plot.bounding_box()["width"] <= 390  # fits the phone's width: no sideways scrolling
    page.screenshot(path=str(screenshot_folder(tmp_path) / "phone.png"), full_page=True)
    assert outside == []
    page.close()
