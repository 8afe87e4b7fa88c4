"""Plain helpers (no pytest) to serve apps/ with Voila and open Debian chromium through Playwright.

Shared by the browser tests' fixtures (conftest.py) and the app-load benchmark (bench/bench_apps.py).
"""
import contextlib
import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
APPS = ROOT / "apps"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
VOILA_START_S = 60  # server start on a cold 2-core machine (imports, extensions)


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


@contextlib.contextmanager
def serve(log_path: pathlib.Path):
  """Base URL of a Voila server for apps/, run from the repository root so that its voila.json
  (sources stripped, kernel culling, timeouts) applies; tracebacks are switched back on so a
  failing app shows why. The server's output goes to `log_path`."""
  port = free_port()
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


def kernel_counts(log_path: pathlib.Path) -> tuple[int, int]:
  """(kernels started, kernels shut down) so far, from the server's log."""
  text = log_path.read_text()
  return text.count("Kernel started:"), text.count("Kernel shutdown:")


def leave(page) -> None:
  """Navigates away as a reader does when closing the tab or going elsewhere: `beforeunload` fires
  and the page asks Voila to shut its kernel down (the dal template makes that request valid)."""
  page.goto("about:blank")


def wait_for_kernels_shut_down(log_path: pathlib.Path, timeout_s: float) -> bool:
  """True once every kernel the server started has been shut down; False after `timeout_s`."""
  deadline = time.monotonic() + timeout_s
  while True:
    started, shut_down = kernel_counts(log_path)
    if shut_down >= started:
      return True
    if time.monotonic() > deadline:
      return False
    time.sleep(0.1)


def launch_chromium(playwright):
  """Headless Debian chromium (./dev installs it); a clear error when it is missing."""
  if not pathlib.Path(CHROMIUM).exists():
    raise FileNotFoundError(f"no chromium at {CHROMIUM}: run ./dev test (it apt-get installs chromium)")
  return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
