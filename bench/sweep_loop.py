"""Sweeps the loop shape (unroll, remat) of CARFAC's JAX loop on the current backend; prints
forward and gradient throughput for a batch of 1 s clips. Used to choose carfac.LOOP_SETTINGS.

    python bench/sweep_loop.py --batch 64 --settings 4,1 8,0 2,0

Each setting is UNROLL,REMAT (REMAT 0 or 1). The sweep always runs the JAX loop (what GPUs run;
`carfac.run(..., native=False)`): on a CPU, `carfac.run` would otherwise call the compiled kernel,
which the loop settings do not touch. Throughput is seconds of audio per second: batch / median
call time over --n-runs calls after a first, compiling call.
"""
import argparse
import os
import statistics
import sys
from functools import partial

import dal_widgets  # noqa: F401  first: one CPU device per core (dal_widgets/cpu_cores.py)
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import header, time_call  # noqa: E402

from dal_widgets.cochlea import carfac as cf  # noqa: E402

TABLE_HEAD = ("| unroll | remat | forward (s of audio per s) | forward compile_s | "
              "gradient (s of audio per s) | gradient compile_s |\n|---|---|---|---|---|---|")


def setting(text: str) -> tuple:
  """(unroll, remat) from "UNROLL,REMAT", e.g. "8,0" -> (8, False)."""
  try:
    unroll, remat = (int(v) for v in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected UNROLL,REMAT such as 8,0, got {text!r}") from None
  if unroll < 1 or remat not in (0, 1):
    raise argparse.ArgumentTypeError(f"expected UNROLL >= 1 and REMAT 0 or 1, got {text!r}")
  return unroll, bool(remat)


def loop_functions(design, unroll: int, remat: bool):
  """(forward, gradient) of a batch [batch, n_samp] through the JAX loop with this loop shape,
  jitted as designs.jitted_run jits CARFAC. The shape applies while they trace; carfac's
  LOOP_SETTINGS is left as it was."""
  hypers, coeffs, weights, state = design
  backend = jax.default_backend()

  def with_setting(fn):
    def traced(*args):
      saved = cf.LOOP_SETTINGS.get(backend)
      cf.LOOP_SETTINGS[backend] = (unroll, remat)
      try:
        return fn(*args)
      finally:
        if saved is None:
          del cf.LOOP_SETTINGS[backend]
        else:
          cf.LOOP_SETTINGS[backend] = saved
    return traced

  run = partial(cf.run, hypers=hypers, coeffs=coeffs, weights=weights, state=state, native=False)
  loss = lambda x: jnp.mean(run(x)[0].nap)
  jit = partial(jax.jit, compiler_options=cf.compiler_options())
  fwd = jit(with_setting(jax.vmap(lambda x: run(x)[0].nap)))
  grad = jit(with_setting(jax.grad(lambda xs: jnp.mean(jax.vmap(loss)(xs)))))
  return fwd, grad


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--batch", type=int, default=64, help="1 s clips per call (default 64)")
  ap.add_argument("--sr", type=float, default=22050.0, help="sample rate in Hz (default 22050)")
  ap.add_argument("--settings", type=setting, nargs="+",
                  default=[(4, True), (8, True), (4, False), (8, False)], metavar="UNROLL,REMAT",
                  help="loop shapes to time (default 4,1 8,1 4,0 8,0)")
  ap.add_argument("--n-runs", type=int, default=3, help="timed calls per case (default 3)")
  args = ap.parse_args(argv)
  design = cf.design_carfac(cf.CarfacParams(sr=args.sr))
  n = int(args.sr)
  xb = jnp.asarray(0.03 * np.random.default_rng(0).standard_normal((args.batch, n)), jnp.float32)
  print(header(f"CARFAC JAX loop shapes, batch {args.batch} x 1 s, {args.sr:.0f} Hz, "
               f"median of {args.n_runs}"))
  print(TABLE_HEAD)
  for unroll, remat in args.settings:
    fwd, grad = loop_functions(design, unroll, remat)
    c_f, r_f = time_call(fwd, xb, n_runs=args.n_runs)
    c_g, r_g = time_call(grad, xb, n_runs=args.n_runs)
    print(f"| {unroll} | {'yes' if remat else 'no'} | {args.batch / statistics.median(r_f):.1f} | "
          f"{c_f:.1f} | {args.batch / statistics.median(r_g):.1f} | {c_g:.1f} |", flush=True)


if __name__ == "__main__":
  main()
