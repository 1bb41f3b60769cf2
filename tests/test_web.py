"""`archlore ui` in a real headless browser: Debian's chromium driven by Playwright (launched with
the system browser's path: Playwright's own browser download is not used). Send a message,
approve a filter, see the plot update, reload the page and find the session."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import DATA, needs_data

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    needs_data,
    pytest.mark.skipif(CHROMIUM is None, reason="no system chromium (apt-get install chromium)"),
]

ARCHLORE = str(Path(sys.executable).with_name("archlore"))


@pytest.fixture
def server(tmp_path: Path):
    proc = subprocess.Popen(
        [ARCHLORE, "ui", "--runs-dir", str(tmp_path / "runs"), "--memory", "off", "--llm", "none", "--data", str(DATA)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # NiceGUI does not serve when it sees it runs under pytest (its own test mode): hide that
        env={**{k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}, "ARCHLORE_DATA": str(DATA)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the first line names the address
    found = re.search(r"(http://127\.0\.0\.1:\d+/\?session=(\S+))", line)
    if not found:
        proc.kill()
        pytest.fail(f"archlore ui printed no address: {line!r}")
    port = int(found.group(1).split(":")[2].split("/")[0])
    deadline = time.monotonic() + 60
    while True:  # the address is printed just before the server listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("archlore ui did not start listening")
            time.sleep(0.2)
    try:
        yield found.group(1), found.group(2)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.slow  # a server and a browser: ~25 s on a busy 2-core machine
def test_web_chat_approve_plot_reload(server: tuple[str, str]) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    url, sid = server
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(url)
            box = page.get_by_placeholder("ask, or a /command")
            box.fill("/help")
            box.press("Enter")
            page.get_by_text("/compare [RUN]").wait_for(timeout=20000)
            box.fill("/run target=cifar100 budget=12")
            page.locator("#send").click()
            page.get_by_text("started run").wait_for(timeout=30000)
            approve = page.locator("#approve")
            approve.wait_for(timeout=30000)
            page.locator("#plot-caption").get_by_text("0 evaluations").wait_for(timeout=30000)
            before = page.locator("#plot-curve img").get_attribute("src")
            approve.click()
            page.get_by_text("approved the round-0 filter").wait_for(timeout=30000)
            # the figures follow the run: 5 evaluations until the next round's filter waits
            page.locator("#plot-caption").get_by_text("5 evaluations").wait_for(timeout=30000)
            assert page.locator("#plot-curve img").get_attribute("src") != before
            page.get_by_text("round-1 filter").wait_for(timeout=30000)
            page.reload()
            page.get_by_text(f"session {sid}").wait_for(timeout=30000)
            page.get_by_text("/run target=cifar100 budget=12").wait_for(timeout=30000)  # the conversation is back
            page.locator("#approve").wait_for(timeout=30000)  # and so is the waiting filter
            page.get_by_text("memory", exact=True).click()  # the memory browser answers (this server runs without one)
            page.get_by_placeholder("search principles across tasks").fill("image classification")
            page.locator("#memory-search").click()
            page.get_by_text("runs with --memory off").wait_for(timeout=30000)
        finally:
            browser.close()
