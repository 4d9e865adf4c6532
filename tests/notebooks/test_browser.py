"""A real browser on `make lab`: Debian's Chromium, driven by Playwright, opens notebook 01 in JupyterLab, runs the
tuning panel's cell, drags the window and sink sliders, and sees the mask picture and the loss readout change.

JupyterLab starts from the Makefile's own line (tests/notebooks/test_jupyterlab.py) on a free loopback port with a
token; the browser is /usr/bin/chromium (`scripts/setup.sh` installs Debian's package where it is missing; nothing is
downloaded at run time) in a fresh profile. Every wait has a timeout; the screenshot goes to out/.
"""
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.notebooks.test_jupyterlab import lab_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 60_000                        # the longest single wait: the kernel loading torch and the model
SHOT = ROOT / "out" / "jupyterlab_tuning_panel.png"
# the share of each picture's pixels that are not transparent, as the page has them
OPAQUE = """imgs => imgs.map(img => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const g = c.getContext('2d'); g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let n = 0; for (let i = 3; i < d.length; i += 4) n += d[i] > 0;
    return n / (d.length / 4);
})"""


def _panel_state(page):
    """(the mask picture's bytes as the page has them, the loss readout's text)."""
    panel = page.locator(".jp-OutputArea-output .widget-vbox").last
    status = panel.locator(".widget-html").first.inner_text()
    mask = panel.locator(".widget-output img").first.get_attribute("src")
    return mask, re.search(r"loss (\d+\.\d+)", status).group(1), status


def _wait_change(page, before, what: str, timeout: float = 60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            now = _panel_state(page)
        except Exception:                       # the panel redraws its outputs: read again
            now = None
        if now is not None and now[0] != before[0] and now[1] != before[1] and "running" not in now[2]:
            return now
        page.wait_for_timeout(300)
    raise AssertionError(f"moving the {what} did not change the mask and the loss within {timeout:.0f} s "
                         f"(still {before[1]})")


def _settle(page, timeout: float = 20):
    """Wait until the panel's pictures are decoded and the same for a second (the last redraw has landed)."""
    read = ("() => [...document.querySelectorAll('.widget-output img')]"
            ".map(i => i.complete && i.naturalWidth > 0 ? i.src.length + ':' + i.src.slice(-64) : 'loading')")
    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        now = page.evaluate(read)
        if now == last and "loading" not in now:
            return
        last = now
        page.wait_for_timeout(1000)


def _drag(page, label: str, fraction: float):
    """Drag the handle of the slider labelled ``label`` by ``fraction`` of its track, as a person would."""
    slider = page.locator(".widget-slider", has=page.locator(".widget-label", has_text=label)).first
    handle = slider.locator(".noUi-handle").first
    slider.scroll_into_view_if_needed()
    dx = fraction * slider.locator(".noUi-target").bounding_box()["width"]
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, 6):
        page.mouse.move(x + dx * k / 5, y)
    page.mouse.up()


def _panel_cell() -> int:
    import nbformat
    nb = nbformat.read(ROOT / "notebooks" / "01_attention_patterns.ipynb", as_version=4)
    return next(i for i, c in enumerate(nb.cells) if "SWAAPanel(model" in c.source)


def _run_cell(page, index: int):
    """Select the cell at ``index`` and run it (shift-enter), as from the keyboard."""
    cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
    cell.locator(".jp-InputArea-prompt").click()
    page.keyboard.press("Shift+Enter")
    return cell


@pytest.mark.slow
@pytest.mark.timeout(170)
def test_chromium_moves_the_tuning_panels_sliders(tmp_path):
    from playwright.sync_api import sync_playwright
    assert Path(CHROMIUM).exists() and shutil.which("chromium"), \
        "Debian's chromium is missing: run `make setup` (scripts/setup.sh installs it with apt)"
    t0 = time.time()
    with lab_server(tmp_path) as (base, token, _), sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                        headless=True, args=FLAGS[1:], viewport={"width": 1400,
                                                                                                  "height": 1000})
        try:
            page = browser.new_page()
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{base}/lab/tree/01_attention_patterns.ipynb?token={token}")
            page.locator(".jp-Notebook .jp-Cell").nth(1).wait_for()
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for()
            editor = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".cm-content")
            source = editor.inner_text()
            assert "SMOKE = False" in source
            editor.click()                                           # SMOKE sizes: a 128-token sample text
            page.keyboard.press("Control+a")
            page.keyboard.insert_text(source.replace("SMOKE = False", "SMOKE = True"))
            _run_cell(page, 1)
            setup = _run_cell(page, 2)
            setup.locator(".jp-OutputArea-output", has_text="layers; text:").wait_for()
            page.keyboard.press("Escape")                          # command mode on cell 3: walk down to the panel
            for _ in range(_panel_cell() - 3):
                page.keyboard.press("ArrowDown")
            page.keyboard.press("Shift+Enter")
            page.locator(".widget-output img").first.wait_for()
            start = _panel_state(page)
            assert "swa=16_sink=4" in start[2]

            _drag(page, "window W", 1 / 8)                   # one step of the 9 windows: 16 -> 32
            after_window = _wait_change(page, start, "window slider")
            assert "swa=32_sink=4" in after_window[2]
            _drag(page, "keep_first S", -1)                      # all the way left: no sinks
            after_sinks = _wait_change(page, after_window, "sink slider")
            assert "swa=32_sink=0" in after_sinks[2] and float(after_sinks[1]) > float(after_window[1])
            _settle(page)
            assert page.locator(".widget-output img").evaluate_all(OPAQUE)[0] > 0.9      # the mask is drawn
            page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first.wait_for()
            page.set_viewport_size({"width": 1400, "height": 1001})   # a full repaint before the picture
            page.set_viewport_size({"width": 1400, "height": 1000})
            page.wait_for_timeout(300)
            SHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SHOT), full_page=False)
        finally:
            browser.close()
    assert SHOT.stat().st_size > 10_000
    assert time.time() - t0 < 150
