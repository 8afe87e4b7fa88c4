"""SAI speed: `python bench/bench_sai.py [--n-runs 20] [--batch 2]`.

Forward and gradient (of the mean log-compressed image, as in the DAL loss) of the SAI frames of
a NAP-like input, for two designs: the DAL loss's (16 kHz, 65 channels, 25 ms frames, 20 ms
image; loop/config.LossConfig) and the golden one (22050 Hz, 71 channels, 100 ms frames). The
loss's term runs once per clip for the target and once, with its gradient, for the aided sound in
every training step. Paste the printed table into bench/RESULTS.md.
"""
import argparse
import os
import sys

import dal_widgets  # noqa: F401  first: one CPU device per core (dal_widgets/cpu_cores.py)
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import TABLE_HEAD, header, row, time_call  # noqa: E402

from dal_widgets import malloc_tuning  # noqa: E402
from dal_widgets.cochlea import sai  # noqa: E402
from dal_widgets.loop.config import LossConfig  # noqa: E402

COMPRESS_SCALE = LossConfig().compress_scale  # the loss's log compression, NAP units


def main():
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--n-runs", type=int, default=20)
  ap.add_argument("--seconds", type=float, default=1.0)
  ap.add_argument("--batch", type=int, default=1, help="NAPs per call (vmap)")
  args = ap.parse_args()
  malloc_tuning.tune()  # as in training, where the CARFAC kernel has tuned malloc
  loss = LossConfig()
  designs = {"DAL loss": (16000.0, 65, loss.sai_frame_ms, loss.sai_width_ms),
             "golden": (22050.0, 71, sai.DEFAULT_FRAME_MS, sai.DEFAULT_WIDTH_MS)}
  print(header(f"SAI frames, batch {args.batch} x {args.seconds:g} s"))
  print(TABLE_HEAD)
  rng = np.random.default_rng(0)
  for name, (sr, n_ch, frame_ms, width_ms) in designs.items():
    params = sai.sai_params_for(sr, n_ch, frame_ms=frame_ms, width_ms=width_ms)
    n = int(round(args.seconds * sr))
    nap = jnp.asarray(np.maximum(rng.standard_normal((args.batch, n, n_ch)), 0) ** 2 * 0.05,
                      jnp.float32)  # half-wave rectified noise, NAP-sized values
    frames = jax.vmap(lambda x: sai.sai_frames(x, params))
    fwd = jax.jit(frames)
    grad = jax.jit(jax.grad(lambda x: jnp.mean(jnp.log1p(frames(x) / COMPRESS_SCALE))))
    for case, fn in (("forward", fwd), ("gradient", grad)):
      c, r = time_call(fn, nap, n_runs=args.n_runs)
      print(row(f"{name} {case}", n, args.seconds * args.batch, c, r,
                f"{params.sai_width} lags, {params.input_segment_width}-sample frames"), flush=True)


if __name__ == "__main__":
  main()
