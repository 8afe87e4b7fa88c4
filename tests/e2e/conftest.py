"""Browser-test fixtures: Voila serving apps/ on a free loopback port, driven by headless chromium.

Uses Debian's /usr/bin/chromium through Python Playwright (no `playwright install`: no downloads).
Every test leaves a full-page screenshot in artifacts/<test name>.png; page errors are collected in
`page.errors` (JavaScript exceptions) and `page.console_errors` (console.error lines), and every
request that leaves the machine in `page.external_requests` (the apps must work offline).
"""
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
APPS = ROOT / "apps"
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
VOILA_START_S = 60  # server start on a cold 2-core machine (imports, extensions)
VIEWPORT = {"width": 1280, "height": 900}
MAX_SCREENSHOT_HEIGHT = 4000  # pixels; longer pages are cut
SCROLL_HEIGHT_JS = ("() => Math.max(...Array.from(document.querySelectorAll('body *'), "
                    "e => e.scrollHeight))")


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


@pytest.fixture(scope="session")
def voila_url(tmp_path_factory):
  """Base URL of a Voila server for apps/, run from the repository root so that its voila.json
  (sources stripped, kernel culling, timeouts) applies; tracebacks are switched back on here so a
  failing app shows why in the screenshot."""
  port = _free_port()
  log_path = tmp_path_factory.mktemp("voila") / "voila.log"
  command = [sys.executable, "-m", "voila", str(APPS), "--no-browser", f"--port={port}",
             "--Voila.ip=127.0.0.1", "--show_tracebacks=True"]
  with open(log_path, "w") as log:
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
  url = f"http://127.0.0.1:{port}"
  deadline = time.monotonic() + VOILA_START_S
  try:
    while True:
      try:
        urllib.request.urlopen(url + "/", timeout=1)
        break
      except OSError:
        if proc.poll() is not None:
          raise RuntimeError(f"voila exited with code {proc.returncode}; log: {log_path}") from None
        if time.monotonic() > deadline:
          raise RuntimeError(f"voila did not answer within {VOILA_START_S} s; "
                             f"log: {log_path}") from None
        time.sleep(0.25)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(10)
    except subprocess.TimeoutExpired:
      proc.kill()


@pytest.fixture(scope="session")
def browser():
  """A headless Debian chromium (./dev installs it; its absence is a setup error, not a skip)."""
  if not pathlib.Path(CHROMIUM).exists():
    pytest.fail(f"no chromium at {CHROMIUM}: run ./dev test (it apt-get installs chromium)")
  from playwright import sync_api
  with sync_api.sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


def _is_external(url: str) -> bool:
  """True for a request that would need the network (not loopback, not inline data)."""
  return not url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:"))


@pytest.fixture
def page(browser, request):
  """A fresh page; its screenshot goes to artifacts/<test name>.png whatever the outcome."""
  context = browser.new_context(viewport=VIEWPORT)
  page = context.new_page()
  page.errors, page.console_errors, page.external_requests = [], [], []
  page.on("request", lambda req: _is_external(req.url) and page.external_requests.append(req.url))
  page.on("pageerror", lambda err: page.errors.append(str(err)))
  page.on("console", lambda msg: msg.type == "error" and page.console_errors.append(msg.text))
  yield page
  ARTIFACTS.mkdir(exist_ok=True)
  try:
    # Voila scrolls inside a container, so full_page alone stops at the viewport: grow it first.
    height = page.evaluate(SCROLL_HEIGHT_JS)
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, VIEWPORT["height"]),
                                                                       MAX_SCREENSHOT_HEIGHT)})
    page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
  finally:
    context.close()
