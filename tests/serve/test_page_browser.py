"""The search page in a real headless browser (Debian chromium + chromedriver, driven by Selenium).

A real `lamra serve` app (shipped model, demo collection) on a local port; the browser types a query,
uploads an image, reads the hits the page renders, and saves screenshots under the test's output
folder. Any script error or failed request the page logs fails the test. scripts/setup.sh installs
chromium and chromium-driver (Debian); without them these tests fail, naming what to install.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest

from lamra import LamRA
from lamra.collection import read_collection
from lamra.demo import DEMO_DIR
from lamra.collection import embed_collection
from lamra.serve.app import create_app

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Collects uncaught errors and rejected promises from the moment the page starts loading.
CATCH_ERRORS = """
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(String(e.message)));
window.addEventListener('unhandledrejection', e => window.__errors.push(String(e.reason)));
"""


@pytest.fixture(scope="module")
def server():
    import uvicorn

    model = LamRA.from_pretrained()
    collection = embed_collection(model, read_collection(DEMO_DIR / "collection.jsonl"), DEMO_DIR, show_progress=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(create_app(model, collection), host="127.0.0.1", port=port, log_level="warning")
    app_server = uvicorn.Server(config)
    thread = threading.Thread(target=app_server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not app_server.started and time.time() < deadline:
        time.sleep(0.1)
    assert app_server.started, "the server did not start"
    yield f"http://127.0.0.1:{port}"
    app_server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    assert not missing, f"{missing} not found: install Debian's chromium and chromium-driver (scripts/setup.sh does, as root)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": CATCH_ERRORS})
    yield driver
    driver.quit()


def open_page(browser, server):
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    WebDriverWait(browser, 30).until(lambda d: "items" in d.find_element("id", "status").text)


def search(browser, text: str | None = None, image: str | None = None) -> list[str]:
    """Fill the form, submit, and return the rendered hits' text once they change."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_script("document.getElementById('hits').innerHTML = '';")
    field = browser.find_element("id", "txt")
    field.clear()
    if text:
        field.send_keys(text)
    if image:
        browser.find_element("id", "image").send_keys(str(DEMO_DIR / image))
    browser.find_element("css selector", "button[type=submit]").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_elements("css selector", "#hits li"))
    return [li.text for li in browser.find_elements("css selector", "#hits li")]


def script_problems(browser) -> list[str]:
    errors = browser.execute_script("return window.__errors || [];")
    logged = [entry["message"] for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    return errors + logged


def test_text_then_image_search_show_the_expected_item(browser, server, tmp_path):
    open_page(browser, server)
    assert "16 items, compact backbone" in browser.find_element("id", "status").text

    hits = search(browser, text="a cheesy slice of Italian food")
    browser.save_screenshot(str(tmp_path / "text-search.png"))
    assert len(hits) == 10 and "g-1f355" in hits[0], hits  # pizza (the page shows ids; labels are not fields)
    assert browser.find_elements("css selector", "#hits li img")  # the hits' images are shown

    hits = search(browser, image="twitter-1f431.png")
    browser.save_screenshot(str(tmp_path / "image-search.png"))
    assert "g-1f431" in hits[0], hits  # cat face
    assert (tmp_path / "text-search.png").stat().st_size > 1000
    assert script_problems(browser) == []


def test_an_error_detail_is_shown_as_text_and_a_script_error_is_caught(browser, server):
    open_page(browser, server)
    hits = search(browser)  # neither text nor image: the server answers 422 with a detail
    assert len(hits) == 1 and "give 'txt' and/or 'image'" in hits[0]
    assert browser.find_element("css selector", "#hits li").get_attribute("class") == "error"
    assert browser.execute_script("return document.querySelectorAll('#hits li *').length") == 0  # no markup
    # The check above would see a broken page: a thrown error is collected.
    browser.execute_script("setTimeout(() => { throw new Error('planted'); }, 0);")
    time.sleep(0.5)
    assert any("planted" in problem for problem in script_problems(browser))
