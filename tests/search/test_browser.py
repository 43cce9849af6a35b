"""The search page in a real headless Chromium (Debian's chromium + chromium-driver, via Selenium).

Starts `zscrgan serve` as a separate process on a free loopback port over an index of the
shared flower photos, then does what a user does: types a description, waits for the grid,
checks the thumbnails loaded and the top result's class, opens a photo, clicks "more like
this". Set ZSCRGAN_SCREENSHOT=path.png to keep the screenshot (docs/serve.png is made so).
"""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("faiss")
pytest.importorskip("efficientnet_lite_pytorch")
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install 'zscrgan[browser]' for the browser test")
from flowerkit import ORCHID, flower_index  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server():
    index = flower_index()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "zscrgan.cli", "serve", str(index), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"zscrgan serve exited: {proc.stdout.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as reply:
                if reply.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("zscrgan serve did not answer /health within 90 s")
    yield base
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def browser():
    if not CHROMIUM or not DRIVER:
        pytest.skip("no chromium / chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1200,900", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.mark.slow  # builds the shared flower run (tests/flowerkit.py)
def test_search_page_in_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    browser.get(server + "/")
    # the page's inline style and script run under its Content-Security-Policy (allowed by their hashes)
    assert browser.execute_script("return getComputedStyle(document.getElementById('viewer')).position") == "fixed"
    box = browser.find_element(By.ID, "q")
    box.send_keys(ORCHID)
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .card")) == 24)
    assert "?q=" in browser.current_url  # the search can be shared by its URL
    loaded = ("return [...document.querySelectorAll('#grid .card img')]"
              ".every(i => i.complete && i.naturalWidth > 0)")
    wait.until(lambda d: d.execute_script(loaded))
    first = browser.find_elements(By.CSS_SELECTOR, "#grid .card")[0]
    assert first.find_element(By.CSS_SELECTOR, ".cls").text == "hard-leaved_pocket_orchid"
    assert "nearest training classes:" in browser.find_element(By.ID, "why").text
    shot = os.environ.get("ZSCRGAN_SCREENSHOT") or str(tmp_path / "serve.png")
    assert browser.save_screenshot(shot) and os.path.getsize(shot) > 10_000

    first.find_element(By.CSS_SELECTOR, "img").click()  # full photo
    wait.until(lambda d: d.execute_script("const i = document.getElementById('full');"
                                          "return i.complete && i.naturalWidth > 256"))
    browser.find_element(By.ID, "viewer").click()

    first_id = first.get_attribute("data-id")
    first.find_element(By.CSS_SELECTOR, "button.more").click()
    wait.until(lambda d: f"like #{first_id}" in d.find_element(By.ID, "status").text)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid .card")) == 24)
    ids = [c.get_attribute("data-id") for c in browser.find_elements(By.CSS_SELECTOR, "#grid .card")]
    assert first_id not in ids and f"like={first_id}" in browser.current_url
    wait.until(lambda d: d.execute_script(loaded))
