import threading
import time
import warnings

import pytest

from dal_widgets import caught_warnings


def test_recorded_keeps_every_warning_of_the_block():
  with caught_warnings.recorded() as caught:
    warnings.warn("first", UserWarning)
    warnings.warn("first", UserWarning)  # "always": repeats are kept too
    warnings.warn("second", RuntimeWarning)
  assert [(w.category, str(w.message)) for w in caught] == [
      (UserWarning, "first"), (UserWarning, "first"), (RuntimeWarning, "second")]


def test_ignored_drops_only_what_it_names():
  with pytest.warns(UserWarning, match="kept") as shown:
    with caught_warnings.ignored(UserWarning, r"drop.*"):
      warnings.warn("dropped", UserWarning)
      warnings.warn("kept", UserWarning)
  assert [str(w.message) for w in shown] == ["kept"]


def test_blocks_on_two_threads_leave_the_process_filters_as_they_were():
  # Without the lock: B enters while A is inside and exits after it, so B's exit puts back
  # A's "always" filter and recorder for the whole process.
  before = list(warnings.filters)
  a_inside = threading.Event()

  def a():
    with caught_warnings.recorded():
      a_inside.set()
      time.sleep(0.2)

  def b():
    a_inside.wait()
    with caught_warnings.recorded():
      time.sleep(0.3)

  threads = [threading.Thread(target=a), threading.Thread(target=b)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert warnings.filters == before
  with pytest.warns(UserWarning, match="after"):  # shown, not recorded into a stale list
    warnings.warn("after", UserWarning)
