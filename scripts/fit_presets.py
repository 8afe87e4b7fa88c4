"""Regenerates dal_widgets/data/hearing_fits.json: model OHC shift curves and fitted preset ears.

    python scripts/fit_presets.py [--sr 16000 22050] [--style v3]

Deterministic (simulated audiometry on CARFAC); takes a few minutes on a 2-core CPU.
tests/hearing/test_fit.py checks that the shipped file agrees with a fresh measurement.
"""
import argparse
import json
import pathlib
import time

import numpy as np

from dal_widgets import atomic
from dal_widgets.hearing import audiometry, fit, presets

OUT = pathlib.Path(__file__).resolve().parents[1] / "dal_widgets" / "data" / fit.BUNDLED_FITS


def main():
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--sr", type=float, nargs="+", default=[16000.0])
  ap.add_argument("--style", default="v3")
  args = ap.parse_args()
  data = json.loads(OUT.read_text()) if OUT.exists() else {}
  for sr in args.sr:
    freqs = tuple(f for f in fit.GRID_FREQS_HZ if audiometry.measurable_freqs([f], sr)[0])
    t0 = time.perf_counter()
    curves = fit.measure_shift_curves(freqs, sr, args.style)
    entry = {"freqs_hz": list(freqs), "health_grid": list(fit.HEALTH_GRID),
             "shift_curves_db": np.round(curves, 3).tolist(),
             "normal_db_spl": np.round(audiometry.normal_thresholds_db_spl(freqs, sr, args.style), 3).tolist(),
             "presets": {}}
    data[f"{sr:.0f}/{args.style}"] = entry
    fit.bundled.cache_clear()
    fit.ohc_shift_curves.cache_clear()
    for name in presets.PRESET_NAMES:
      ear = fit.fit_cochlea(presets.preset(name), sr, style=args.style, use_bundled=False)
      entry["presets"][name] = ear.to_dict()
      print(f"{sr:.0f} Hz {name}: max |residual| {np.abs(ear.residual_db).max():.1f} dB", flush=True)
    print(f"{sr:.0f} Hz done in {time.perf_counter() - t0:.0f} s")
  atomic.write_text_atomic(OUT, json.dumps(data, indent=1))  # no temporary file left on failure
  print("wrote", OUT)


if __name__ == "__main__":
  main()
