"""The demo in a real browser: Debian's chromium driven by Playwright (never a downloaded browser).

The page is served in-process in front of the stub TorchServe of ``test_demo`` (JSON contract: fixed
metrics, brightening "model"), so what the browser must show is known exactly. ``make test`` installs
chromium first (``make chromium``, apt, root only); without it these tests skip and say why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_demo import StubBackend, blurred_pair, running_stub, save, unused_port

from demo.app import build_demo, launch_demo
from demo.feedback import FeedbackStore

CHROMIUM = Path(os.environ.get("DEBLUR_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # tests may run as root in a container, where the sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 60_000  # upper bound for any single wait; a healthy run needs a few seconds

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright (Python) is not installed")
if not os.access(CHROMIUM, os.X_OK):
    pytest.skip(
        f"no chromium at {CHROMIUM}: `make chromium` installs Debian's package (needs root and the apt mirror)",
        allow_module_level=True,
    )

BOTH_SLIDER_IMAGES_RENDERED = """() => {
    const images = [...document.querySelectorAll('#result img')];
    return images.length >= 2 && images.every(img => img.complete && img.naturalWidth > 0);
}"""


@dataclass
class ServedPage:
    url: str
    backend: StubBackend
    store: FeedbackStore


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedPage]:
    root = tmp_path_factory.mktemp("browser")
    with running_stub(root) as backend:
        store = FeedbackStore(root / "feedback.sqlite3")
        demo = build_demo(backend.client, store)
        url = launch_demo(demo, port=unused_port(), prevent_thread_lock=True, quiet=True)
        try:
            yield ServedPage(url.rstrip("/"), backend, store)
        finally:
            demo.close()


@pytest.fixture
def browser_page(served: ServedPage) -> Iterator[sync_api.Page]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(WAIT_MS)
            page.goto(served.url, wait_until="domcontentloaded")
            yield page
        finally:
            browser.close()


def test_upload_deblur_slider_metrics_and_feedback_in_chromium(
    served: ServedPage, browser_page: sync_api.Page, tmp_path: Path
) -> None:
    """Stub backend, real browser: upload a blurred image and its ground truth, press Deblur; both slider
    images render, the metric table shows the server's numbers, the health line and the version dropdown
    are filled, and Bad stores a feedback case. A screenshot is saved under the test's tmp dir."""
    page = browser_page
    blurred, sharp = blurred_pair(320, 240)
    page.locator("#blurred input[type=file]").set_input_files(save(tmp_path / "blurred.png", blurred))
    page.locator("#ground-truth input[type=file]").set_input_files(save(tmp_path / "sharp.png", sharp))
    page.locator("#blurred img").wait_for()
    page.locator("#ground-truth img").wait_for()

    page.locator("#deblur-run").click()
    page.wait_for_function(BOTH_SLIDER_IMAGES_RENDERED, timeout=WAIT_MS)
    table = page.locator("#metrics table")
    table.wait_for()

    cells = table.locator("td").all_inner_texts()
    assert [c.strip() for c in cells] == ["PSNR (dB)", "22.50", "31.25", "+8.75", "SSIM", "0.7011", "0.9123", "+0.2112"]
    assert "Backend: ok" in page.locator("#health").inner_text()
    assert "1.0 (default)" in page.locator("#version input").input_value()
    page.screenshot(path=str(tmp_path / "demo.png"), full_page=True)

    page.locator("#thumbs-down").click()
    page.get_by_text("saved as case #").wait_for()
    [stored] = served.store.cases()
    assert stored.case.verdict == "down" and stored.case.input == (tmp_path / "blurred.png").read_bytes()
    print(f"screenshot: {tmp_path / 'demo.png'}")


def test_path_choice_kernel_picture_and_slider_labels_in_chromium(
    served: ServedPage, browser_page: sync_api.Page, tmp_path: Path
) -> None:
    """Stub backend, real browser: under Advanced, the kernel-aware path is chosen and reaches the server as
    kernel_aware; the details name the deconvolution, the estimated kernel shows as a picture, the slider's
    sides are labelled and the rating buttons are words. A screenshot is saved under the test's tmp dir."""
    page = browser_page
    assert not page.locator("#kernel img").is_visible()  # no kernel before a deconvolution
    page.locator("#blurred input[type=file]").set_input_files(save(tmp_path / "blurred.png", blurred_pair(320, 240)[0]))
    page.locator("#blurred img").wait_for()
    page.get_by_text("Advanced").click()
    page.get_by_label("undo the camera shake where the estimate is trusted (kernel-aware)").check()

    page.locator("#deblur-run").click()
    page.wait_for_function(BOTH_SLIDER_IMAGES_RENDERED, timeout=WAIT_MS)
    page.locator("#kernel img").wait_for(state="visible")

    assert served.backend.received[-1].payload["kernel_aware"] is True
    assert "deconvolved with the estimated camera shake" in page.locator("#details").inner_text()
    sides = [page.locator(f"#side-{side}") for side in ("before", "after")]
    assert [side.inner_text() for side in sides] == ["left: blurred", "right: restored"]
    (left, right), slider = [side.bounding_box() for side in sides], page.locator("#result").bounding_box()
    assert left and right and slider
    assert left["y"] + left["height"] <= slider["y"] + 16  # just above the slider, not under it
    assert left["x"] < slider["x"] + slider["width"] / 2 < right["x"]  # over its left and right halves
    assert page.evaluate("() => document.querySelector('#kernel img').naturalWidth") == 20
    assert [page.locator(f"#thumbs-{v}").inner_text().strip() for v in ("up", "down")] == ["Good", "Bad"]
    page.screenshot(path=str(tmp_path / "kernel_aware.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'kernel_aware.png'}")
