"""Background runner: coalesces requests, reports errors as text; Throttle limits UI update rate."""
import threading
import time

from dal_widgets.ui.busy import BackgroundRunner, BusyIndicator, Throttle

WAIT_S = 5.0  # generous: threads on a loaded 2-core CI machine


def test_three_quick_requests_run_the_first_and_the_last():
  release = threading.Event()
  calls, results = [], []

  def slow_square(x):
    calls.append(x)
    release.wait(WAIT_S)
    return x * x

  busy = BusyIndicator()
  runner = BackgroundRunner(slow_square, results.append, busy=busy)
  for x in (1, 2, 3):
    runner.request(x)
  assert busy.busy and "dal-busy" in busy.value
  release.set()
  assert runner.wait(WAIT_S)
  assert calls == [1, 3] and results == [1, 9]
  assert not busy.busy and "dal-busy" not in busy.value


def test_errors_become_text_and_the_runner_keeps_working():
  busy = BusyIndicator()
  runner = BackgroundRunner(lambda x: 1 / x, busy=busy)
  runner.request(0)
  assert runner.wait(WAIT_S)
  assert "ZeroDivisionError" in busy.error and "dal-error" in busy.value
  runner.request(2)
  assert runner.wait(WAIT_S)
  assert busy.error == ""


def test_on_error_callback_receives_the_exception():
  errors = []
  runner = BackgroundRunner(lambda: {}["missing"], on_error=errors.append)
  runner.request()
  assert runner.wait(WAIT_S)
  assert len(errors) == 1 and isinstance(errors[0], KeyError)


def test_throttle_delivers_the_first_and_the_latest_call():
  seen = []
  throttle = Throttle(seen.append, max_rate_hz=10)
  for i in range(20):
    throttle(i)
  assert seen == [0]
  throttle.flush()
  assert seen == [0, 19]


def test_throttle_trailing_call_arrives_by_itself():
  seen = []
  throttle = Throttle(seen.append, max_rate_hz=20)
  throttle("a")
  throttle("b")
  deadline = time.monotonic() + WAIT_S
  while len(seen) < 2 and time.monotonic() < deadline:
    time.sleep(0.01)
  assert seen == ["a", "b"]
