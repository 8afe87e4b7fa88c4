"""Sweeps CARFAC's loop settings (unroll, remat) on the current backend; prints forward and
gradient throughput for a batch. Used to choose carfac.LOOP_SETTINGS.

    python bench/sweep_loop.py --batch 64 --settings 4,1 8,0 2,0
"""
import argparse
import os
import sys
from functools import partial

import dal_widgets  # noqa: F401  first: one CPU device per core (dal_widgets/cpu_cores.py)
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import time_call  # noqa: E402

from dal_widgets.cochlea import carfac as cf  # noqa: E402


def main():
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--sr", type=float, default=22050.0)
  ap.add_argument("--settings", nargs="+", default=["4,1", "8,1", "4,0", "8,0"])
  ap.add_argument("--n-runs", type=int, default=3)
  args = ap.parse_args()
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=args.sr))
  n = int(args.sr)
  xb = jnp.asarray(0.03 * np.random.default_rng(0).standard_normal((args.batch, n)), jnp.float32)
  for setting in args.settings:
    unroll, remat = (int(v) for v in setting.split(","))
    cf.LOOP_SETTINGS[jax.default_backend()] = (unroll, bool(remat))
    run = partial(cf.run, hypers=hypers, coeffs=coeffs, weights=weights, state=state)
    loss = lambda x: jnp.mean(run(x)[0].nap)
    fwd = jax.jit(jax.vmap(lambda x: run(x)[0].nap))
    grad = jax.jit(jax.grad(lambda xs: jnp.mean(jax.vmap(loss)(xs))))
    cf_, r_f = time_call(fwd, xb, n_runs=args.n_runs)
    cg, r_g = time_call(grad, xb, n_runs=args.n_runs)
    print(f"unroll={unroll} remat={bool(remat)}: forward {args.batch / np.median(r_f):.0f} s/s "
          f"(compile {cf_:.1f} s), grad {args.batch / np.median(r_g):.1f} s/s (compile {cg:.1f} s)",
          flush=True)


if __name__ == "__main__":
  main()
