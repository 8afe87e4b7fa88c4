"""Fitting time of an impaired CARFAC: `python bench/bench_fit.py [--sr 16000]`.

Prints: a cold fit of a custom audiogram (includes jit compile and, without bundled data, the OHC
shift-curve measurement), the same fit warm, the quick open-loop fit used while sliders move,
and preset N3: the bundled fit where dal_widgets/data/hearing_fits.json has one for this rate
(16000 Hz only, as shipped), else a full fit, which the row says. Then the target vs fitted table
for all presets.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import header  # noqa: E402

from dal_widgets.hearing import fit, presets  # noqa: E402
from dal_widgets.hearing.audiogram import Audiogram  # noqa: E402


def timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t0


def preset_case(name: str, sr: float, style: str = "v3") -> str:
  """Row name for fitting preset `name`: whether fit_cochlea reads the bundled fit or fits."""
  entry = fit.bundled().get(f"{sr:.0f}/{style}", {})
  if name in entry.get("presets", {}):
    return f"bundled preset {name}"
  return f"preset {name}, no bundled fit at {sr:.0f} Hz: full fit"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--sr", type=float, default=16000.0, help="sample rate in Hz (default 16000)")
  args = ap.parse_args(argv)
  custom = Audiogram((250.0, 500.0, 1000.0, 2000.0, 4000.0, 6000.0), (15.0, 20.0, 30.0, 45.0, 55.0, 60.0))
  print(header(f"fit_cochlea at {args.sr:.0f} Hz"))
  print("| case | seconds |\n|---|---|")
  _, cold = timed(lambda: fit.fit_cochlea(custom, args.sr))
  print(f"| custom audiogram, cold (compile included) | {cold:.2f} |")
  ear, warm = timed(lambda: fit.fit_cochlea(custom, args.sr))
  print(f"| custom audiogram, warm | {warm:.2f} |")
  _, quick = timed(lambda: fit.fit_cochlea(custom, args.sr, refine=False))
  print(f"| quick open-loop fit (sliders) | {quick:.4f} |")
  _, bundled = timed(lambda: fit.fit_cochlea(presets.preset("N3"), args.sr))
  print(f"| {preset_case('N3', args.sr)} | {bundled:.4f} |")
  print(f"\nmax |residual| of the custom fit: {np.abs(ear.residual_db).max():.2f} dB\n")
  names = [n for n in presets.PRESET_NAMES if n != "normal"]
  ears = {n: fit.fit_cochlea(presets.preset(n), args.sr) for n in names}
  freqs = ears[names[0]].freqs_hz
  print("target / fitted dB HL (residual):\n")
  print("| preset | " + " | ".join(f"{f:.0f} Hz" for f in freqs) + " |")
  print("|---|" + "---|" * len(freqs))
  for n, e in ears.items():
    cells = [f"{t:.1f} / {m:.1f} ({m - t:+.1f})" for t, m in zip(e.target_db_hl, e.fitted_db_hl)]
    print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  main()
