"""Browser-test fixtures: Voila serving apps/ on a free loopback port, driven by headless chromium.

Uses Debian's /usr/bin/chromium through Python Playwright (no `playwright install`: no downloads).
Every test leaves a full-page screenshot in artifacts/<test name>.png; page errors are collected in
`page.errors` (JavaScript exceptions) and `page.console_errors` (console.error lines), and every
request that leaves the machine in `page.external_requests` (the apps must work offline).
"""
import pytest
from voila_server import ROOT, launch_chromium, leave, serve

ARTIFACTS = ROOT / "artifacts"
VIEWPORT = {"width": 1280, "height": 900}
MAX_SCREENSHOT_HEIGHT = 4000  # pixels; longer pages are cut
SCROLL_HEIGHT_JS = ("() => Math.max(...Array.from(document.querySelectorAll('body *'), "
                    "e => e.scrollHeight))")


@pytest.fixture(scope="session")
def voila_log(tmp_path_factory):
  """The Voila server's log file."""
  return tmp_path_factory.mktemp("voila") / "voila.log"


@pytest.fixture(scope="session")
def voila_url(voila_log):
  """Base URL of a Voila server for apps/ (voila_server.serve)."""
  with serve(voila_log) as url:
    yield url


@pytest.fixture(scope="session")
def browser():
  """A headless Debian chromium (its absence is a setup error, not a skip)."""
  from playwright import sync_api
  with sync_api.sync_playwright() as playwright:
    try:
      browser = launch_chromium(playwright)
    except FileNotFoundError as error:
      pytest.fail(str(error))
    yield browser
    browser.close()


def _is_external(url: str) -> bool:
  """True for a request that would need the network (not loopback, not inline data)."""
  return not url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "data:", "blob:", "about:"))


@pytest.fixture
def page(browser, request):
  """A fresh page; its screenshot goes to artifacts/<test name>.png whatever the outcome, then it
  is left (its Voila kernel shuts down, so no app keeps computing behind the next test)."""
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
    leave(page)
  finally:
    context.close()
