"""Take the README's screenshots: docs/web.png (archlore ui in headless chromium) and
docs/terminal.png (archlore chat in tmux, captured with its colours and drawn by chromium).

    .venv/bin/python docs/make_screenshots.py   # needs tmux, the system chromium, playwright, the NB201 data

Both use --llm none and a throwaway runs folder, so every line shown is what the commands print.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ARCHLORE = str(Path(sys.executable).with_name("archlore"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ENV = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}


def web(runs: Path) -> None:
    from playwright.sync_api import sync_playwright

    proc = subprocess.Popen([ARCHLORE, "ui", "--runs-dir", str(runs), "--memory", "off", "--llm", "none"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
    url = re.search(r"http://\S+", proc.stdout.readline()).group(0)
    port = int(url.split(":")[2].split("/")[0])
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            time.sleep(0.2)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            box = page.get_by_placeholder("ask, or a /command")
            box.fill("/run target=cifar100 budget=20")
            box.press("Enter")
            page.locator("#approve").wait_for(timeout=60000)
            page.locator("#approve").click()
            page.get_by_text("round-1 filter").wait_for(timeout=60000)
            box.fill("/principles 1")
            box.press("Enter")
            page.get_by_text("evidence given").wait_for(timeout=60000)
            box.fill("/compare")
            box.press("Enter")
            page.get_by_text("rea (5 seeds").wait_for(timeout=60000)
            page.locator("#plot-caption").get_by_text("5 evaluations").wait_for(timeout=60000)
            time.sleep(1.5)
            page.screenshot(path=str(DOCS / "web.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)


def terminal(runs: Path) -> None:
    from playwright.sync_api import sync_playwright
    from rich.console import Console
    from rich.text import Text

    name = f"archlore-shot-{os.getpid()}"
    env = ENV  # a real terminal (tmux answers cursor-position requests, so the bottom bar shows)
    subprocess.run(["tmux", "new-session", "-d", "-s", name, "-x", "150", "-y", "44",
                    f"{ARCHLORE} chat --runs-dir {runs} --memory off --llm none"], check=True, env=env)

    def keys(text: str, wait: float) -> None:
        subprocess.run(["tmux", "send-keys", "-t", name, "-l", text], check=True)
        subprocess.run(["tmux", "send-keys", "-t", name, "Enter"], check=True)
        time.sleep(wait)

    try:
        time.sleep(6)
        keys("/run target=cifar100 budget=20", 8)
        keys("/edit filter edge3<-2=skip_connect,nor_conv_3x3", 6)
        keys("what did you learn so far?", 1)
        keys("/principles 2", 2)
        keys("/approve off", 8)
        keys("/compare", 4)
        screen = subprocess.run(["tmux", "capture-pane", "-e", "-p", "-t", name], capture_output=True, text=True, check=True).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", name], check=False)
    with open(os.devnull, "w") as sink:
        console = Console(record=True, width=150, force_terminal=True, color_system="truecolor", file=sink)
        console.print(Text.from_ansi(screen.rstrip("\n")))
    svg = console.export_svg(title="archlore chat")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        page.set_content(f"<html><body style='margin:0;background:#fff'>{svg}</body></html>")
        page.locator("svg").screenshot(path=str(DOCS / "terminal.png"))
        browser.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        web(Path(tmp) / "web")
        terminal(Path(tmp) / "term")
    print("wrote", DOCS / "web.png", "and", DOCS / "terminal.png")
