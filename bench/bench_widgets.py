"""Widget latency: audiogram slider move -> impaired NAP redrawn, `python bench/bench_widgets.py`.

Builds the Workbench with the real compute adapters (no kernel: widgets without a comm), loads the
first `--clip-s` seconds of a bundled clip through the upload path, then moves one audiogram
slider per run (every audiogram is new, so nothing is memoised) and times from the slider change
to the new impaired-NAP image in the Bokeh source, and to the end of all background stages. The
refined fit is switched off: this is the path taken while a slider is dragged. "first render" is
from building the Workbench to its first impaired NAP (includes compiling CARFAC: no persistent
cache here); "first move" is the first slider move after that.
"""
import argparse
import io
import os
import statistics
import sys
import time

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(__file__))
from common import header  # noqa: E402

from dal_widgets.ui import compute  # noqa: E402
from dal_widgets.ui.workbench import UNAIDED, Workbench  # noqa: E402

TARGET_MS = 250.0  # slider -> impaired NAP redraw for a 1 s clip (the workbench's target)
POLL_S = 0.001  # how often the timer looks at the Bokeh source


def _one_second_wav(clip: str, seconds: float) -> bytes:
  x = compute.load_clip(clip)[: int(seconds * compute.SR)]
  buffer = io.BytesIO()
  sf.write(buffer, x, compute.SR, format="WAV", subtype="FLOAT")
  return buffer.getvalue()


def _move_and_time(bench, slider_index, value, timeout_s=120.0):
  """(ms to the impaired NAP redraw, ms to the end of all stages) for one slider move."""
  source = bench.cochleagram.sources[UNAIDED]
  before = source.data["image"][0] if source.data["image"] else None
  t0 = time.perf_counter()
  bench.editor.sliders[slider_index].value = value
  while True:
    images = source.data["image"]
    if images and images[0] is not before:
      redraw_ms = (time.perf_counter() - t0) * 1e3
      break
    if time.perf_counter() - t0 > timeout_s:
      raise TimeoutError("the impaired NAP was not redrawn")
    time.sleep(POLL_S)
  if not bench.wait(timeout_s):
    raise TimeoutError("background stages did not finish")
  return redraw_ms, (time.perf_counter() - t0) * 1e3


def _measure(name, bench, n_runs, first_render_s):
  timings = []
  for run in range(n_runs + 1):  # run 0 is the warm-up
    index = run % len(bench.editor.sliders)
    value = bench.editor.sliders[index].value + 5.0  # a new audiogram every time
    timings.append(_move_and_time(bench, index, value))
  warm_redraw, warm_all = timings[0]
  redraw = np.array([t[0] for t in timings[1:]])
  done = np.array([t[1] for t in timings[1:]])
  print(f"| {name} | {first_render_s:.1f} | {warm_redraw:.0f} | {statistics.median(redraw):.0f} | "
        f"{np.percentile(redraw, 10):.0f} | {np.percentile(redraw, 90):.0f} | "
        f"{statistics.median(done):.0f} | "
        f"{'yes' if statistics.median(redraw) <= TARGET_MS else 'no'} |")


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--n-runs", type=int, default=20)
  parser.add_argument("--clip", default="slt_04")
  parser.add_argument("--clip-s", type=float, default=1.0)
  args = parser.parse_args()
  wav = _one_second_wav(args.clip, args.clip_s)
  print(header(f"Workbench: audiogram slider -> impaired NAP ({args.clip}, first {args.clip_s:g} s, "
               f"{args.n_runs} moves)"))
  print("| app layout | first render s | first move ms | median ms | p10 | p90 | "
        f"all stages median ms | median <= {TARGET_MS:.0f} ms |\n|---|---|---|---|---|---|---|---|")
  configs = {
      "audiogram_explorer (NAPs + listening)": dict(aids=(), sai=False, finetune=False, metrics=False),
      "hearing_aid_lab (+ NAL-R, SAI, metrics)": dict(finetune=False),
  }
  for name, options in configs.items():
    t0 = time.perf_counter()
    bench = Workbench(refine=False, noise="quiet", **options)
    if not bench.sound_picker.load_upload(wav, f"{args.clip}.wav"):
      raise RuntimeError(bench.sound_picker.message.value)
    if not bench.wait(300):
      raise TimeoutError("the first render did not finish")
    _measure(name, bench, args.n_runs, time.perf_counter() - t0)


if __name__ == "__main__":
  main()
