"""What one user action costs in an app, `python bench/bench_interactions.py [--app NAME]`.

Builds the app with `make_app` (no kernel: widgets without a comm; the real compute adapters),
waits for its first render, then repeats each interaction `--n-runs` times and prints, per action:
the median time from the change until all background work is done, the JAX programs compiled (a
move of a slider should compile none), and the Bokeh document patches and their bytes (images are
sent as binary buffers; this is what goes over the websocket to the page). The compilation cache
is off, so the first clip of a new padded length compiles.
"""
import argparse
import collections
import logging
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import header  # noqa: E402

import jax  # noqa: E402
from bokeh.protocol import Protocol  # noqa: E402
from jupyter_bokeh.widgets import BokehModel  # noqa: E402

from dal_widgets.ui.app import AppConfig, make_app  # noqa: E402

COUNTS = collections.Counter()


class _CompileCounter(logging.Handler):
  def emit(self, record):
    if record.getMessage().startswith("Finished XLA compilation"):
      COUNTS["compiles"] += 1


def _count_patches():
  """Counts what every BokehModel would send to the page (the same message it builds)."""
  send = BokehModel._document_patched

  def counted(self, event):
    msg = Protocol().create("PATCH-DOC", [event])
    COUNTS["patches"] += 1
    COUNTS["bytes"] += len(msg.content_json) + sum(len(b.to_bytes()) for b in msg.buffers)
    send(self, event)

  BokehModel._document_patched = counted


def _actions(app):
  """(name, fn(run index)) of the interactions the app offers; each run changes something."""
  out = []
  if hasattr(app, "editor"):  # a Workbench
    sliders, picker = app.editor.sliders, app.sound_picker
    out.append(("audiogram point +5 dB", lambda r: setattr(sliders[r % 8], "value",
                                                           sliders[r % 8].value + 5.0)))
    if picker.noise_kind.value != "quiet":
      out.append(("SNR", lambda r: setattr(picker.snr, "value", [0.0, 5.0, 10.0][r % 3])))
    out.append(("noise kind", lambda r: setattr(picker.noise_kind, "value",
                                                ["speech-shaped", "babble"][r % 2])))
    choices = app.difference.options
    out.append(("difference panel", lambda r: setattr(app.difference, "value", choices[
        (choices.index(app.difference.value) + 1) % len(choices)])))
    if app.sai_view is not None:
      out.append(("SAI of", lambda r: setattr(app.sai_source, "value",
                                              app.sai_source.options[r % 3])))
  else:  # the SAI explorer
    out.append(("f0", lambda r: setattr(app.f0, "value", 130 + 5 * (r % 5))))
    out.append(("listener", lambda r: setattr(app.listener, "value", ["N3", "normal"][r % 2])))
  cochleagram = app.cochleagram
  out.append(("time cursor", lambda r: setattr(cochleagram, "cursor_s", 0.2 + 0.05 * (r % 10))))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--app", default="hearing_aid_lab",
                      choices=("audiogram_explorer", "sai_explorer", "hearing_aid_lab"))
  parser.add_argument("--n-runs", type=int, default=4)
  args = parser.parse_args()
  jax.config.update("jax_log_compiles", True)
  logging.getLogger("jax").addHandler(_CompileCounter())
  logging.getLogger("jax").setLevel(logging.WARNING)
  _count_patches()
  t0 = time.perf_counter()
  app = make_app(args.app, config=AppConfig(cache_dir="")).children[1]
  if not app.wait(600):
    raise TimeoutError("the first render did not finish")
  print(header(f"{args.app}: one interaction, {args.n_runs} runs (first render "
               f"{time.perf_counter() - t0:.1f} s)"))
  print("| action | median ms to idle | min ms | compiles per run | patches (last run) | "
        "bytes to the page (last run) |\n|---|---|---|---|---|---|")
  for name, action in _actions(app):
    times, compiles = [], []
    for run in range(args.n_runs):
      COUNTS.clear()
      t = time.perf_counter()
      action(run)
      if not app.wait(600):
        raise TimeoutError(f"{name}: background work did not finish")
      times.append((time.perf_counter() - t) * 1e3)
      compiles.append(COUNTS["compiles"])
    print(f"| {name} | {statistics.median(times):.0f} | {min(times):.0f} | "
          f"{' / '.join(map(str, compiles))} | {COUNTS['patches']} | {COUNTS['bytes'] / 1e6:.2f} MB |",
          flush=True)


if __name__ == "__main__":
  main()
