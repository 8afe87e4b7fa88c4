"""Expensive work off the kernel's main thread: a busy indicator, a coalescing runner, a throttle.

Slider callbacks call `runner.request(...)`: the work runs in a background thread while the
indicator spins; requests arriving meanwhile collapse into the latest one, which runs next. Widget
traits may be set from that thread (ipykernel sends comm messages from any thread); printing into an
Output widget from a thread shows nothing under ipykernel 7, so report through traits.
"""
import html
import threading
import time
from collections.abc import Callable

import ipywidgets as widgets
from traitlets import Bool, Unicode, observe

MAX_UI_RATE_HZ = 10.0  # faster UI updates only queue up in the browser
_SPINNER = ('<span class="dal-busy" style="display:inline-block;width:0.9em;height:0.9em;'
            "border:2px solid #ccc;border-top-color:#1f77b4;border-radius:50%;"
            'animation:dal-spin 0.8s linear infinite;vertical-align:middle"></span>'
            "<style>@keyframes dal-spin{to{transform:rotate(360deg)}}</style>")


class BusyIndicator(widgets.HTML):
  """A spinner with a message while `busy`; just the message otherwise."""

  busy = Bool(False, help="Show the spinner.")
  message = Unicode("", help="Text beside the spinner (e.g. 'computing NAPs...').")
  error = Unicode("", help="Last error, shown in red until the next successful run.")

  def __init__(self, message: str = "", **kwargs):
    super().__init__(message=message, **kwargs)
    self._refresh()

  @observe("busy", "message", "error")
  def _on_state_changed(self, change):
    self._refresh()

  def _refresh(self):
    parts = [_SPINNER] if self.busy else []
    if self.message:
      parts.append(f"<span>{html.escape(self.message)}</span>")
    if self.error:
      parts.append(f'<span class="dal-error" style="color:#c0392b">{html.escape(self.error)}</span>')
    self.value = " ".join(parts)


class BackgroundRunner:
  """Runs `fn` in a background thread; requests made while it runs coalesce to the latest.

  Three quick requests a, b, c: `a` starts at once, `b` is replaced by `c`, and `c` runs after `a`.
  Every finished run hands its result to `on_result` (in the worker thread). Exceptions never reach
  the notebook: they go to `on_error`, or are shown by the busy indicator.
  """

  def __init__(self, fn: Callable, on_result: Callable | None = None, *,
               on_error: Callable[[BaseException], None] | None = None,
               busy: BusyIndicator | None = None, busy_message: str = "computing\u2026"):
    """Args:
      fn: The expensive function, called as fn(*args, **kwargs) of a request.
      on_result: Called with fn's return value after each run.
      on_error: Called with the exception if fn or on_result raises.
      busy: Indicator switched on while work runs.
      busy_message: Message shown while busy.
    """
    self.fn, self.on_result, self.on_error = fn, on_result, on_error
    self.busy, self.busy_message = busy, busy_message
    self._lock = threading.Lock()
    self._pending = None  # latest (args, kwargs) waiting for the running one to finish
    self._running = False
    self._idle = threading.Event()
    self._idle.set()

  @property
  def running(self) -> bool:
    """True while a run is in progress or pending."""
    return not self._idle.is_set()

  def request(self, *args, **kwargs) -> None:
    """Asks for fn(*args, **kwargs); runs now if idle, else replaces any pending request."""
    with self._lock:
      if self._running:
        self._pending = (args, kwargs)
        return
      self._running = True
      self._idle.clear()
    self._set_busy(True)
    threading.Thread(target=self._work, args=((args, kwargs),), daemon=True).start()

  def wait(self, timeout: float | None = None) -> bool:
    """Blocks until no run is in progress or pending; returns False on timeout."""
    return self._idle.wait(timeout)

  def _work(self, job):
    while job is not None:
      args, kwargs = job
      try:
        result = self.fn(*args, **kwargs)
        if self.on_result is not None:
          self.on_result(result)
        if self.busy is not None:
          self.busy.error = ""
      except Exception as err:  # noqa: BLE001 - a thread must not die silently; report it
        self._report(err)
      with self._lock:
        job, self._pending = self._pending, None
        if job is None:  # done: switch off under the lock so a new request cannot interleave
          self._running = False
          self._set_busy(False)
          self._idle.set()

  def _report(self, err):
    if self.on_error is not None:
      try:
        self.on_error(err)
        return
      except Exception as handler_err:  # noqa: BLE001
        err = handler_err
    if self.busy is not None:
      self.busy.error = f"error: {type(err).__name__}: {err}"

  def _set_busy(self, busy: bool):
    if self.busy is not None:
      with self.busy.hold_trait_notifications():
        self.busy.busy = busy
        self.busy.message = self.busy_message if busy else ""


class Throttle:
  """Calls `fn` at most `max_rate_hz` times per second; the latest skipped call runs at the end.

  Use it for progress updates from a training thread: `update = Throttle(show)`, then
  `update(step, loss)` every step; `flush()` delivers a pending call now (e.g. when done).
  """

  def __init__(self, fn: Callable, max_rate_hz: float = MAX_UI_RATE_HZ):
    self.fn = fn
    self.min_interval_s = 1.0 / max_rate_hz
    self._lock = threading.Lock()
    self._last_call = -float("inf")
    self._pending = None
    self._timer = None

  def __call__(self, *args, **kwargs) -> None:
    with self._lock:
      wait_s = self._last_call + self.min_interval_s - time.monotonic()
      if wait_s > 0:
        self._pending = (args, kwargs)
        if self._timer is None:
          self._timer = threading.Timer(wait_s, self.flush)
          self._timer.daemon = True
          self._timer.start()
        return
      self._last_call = time.monotonic()
    self.fn(*args, **kwargs)

  def flush(self) -> None:
    """Runs the pending call, if any, now."""
    with self._lock:
      job, self._pending = self._pending, None
      if self._timer is not None:
        self._timer.cancel()
        self._timer = None
      if job is None:
        return
      self._last_call = time.monotonic()
    self.fn(*job[0], **job[1])
