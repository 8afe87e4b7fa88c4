"""Catching warnings from worker threads: one `warnings.catch_warnings` block at a time.

`warnings.catch_warnings` swaps process-wide state (the filter list and `showwarning`) on entry
and puts back what it found on exit. Two threads inside such blocks at once (the apps compute
metrics on worker threads) can exit in the wrong order: the later exit then restores the other
block's filters, which stay in force for the whole process ("always", or a recorder whose list
nobody reads any more, so later warnings vanish). Every catch in the library goes through
`recorded` or `ignored`, which hold one lock, so these blocks never overlap. Code on the UI's main
thread does not catch warnings at all: it must not wait for a worker's block.
"""
import contextlib
import threading
import warnings

_LOCK = threading.RLock()  # re-entrant: a recorded block may call code that catches again


@contextlib.contextmanager
def recorded():
  """Every warning raised inside the block, as a list of warnings.WarningMessage (none shown)."""
  with _LOCK, warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    yield caught


@contextlib.contextmanager
def ignored(category=Warning, message: str = ""):
  """Warnings of `category` whose text matches the regular expression `message` are dropped
  inside the block; others are shown as usual."""
  with _LOCK, warnings.catch_warnings():
    warnings.filterwarnings("ignore", message, category)
    yield
