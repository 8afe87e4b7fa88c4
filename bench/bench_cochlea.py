"""CARFAC forward and gradient speed: `python bench/bench_cochlea.py [--n-runs 20] [--batch 8]
[--path native|jax] [--bm]`.

Cases (defaults as in the issue: 22050 Hz, 71 channels, v3, 1 s of noise at ~70 dB SPL):
forward of one clip, gradient of mean(NAP) w.r.t. the input, forward of a batch (vmap), and the
gradient of the batch; where `cochlea.run_batch` splits a batch over the cores (no CPU kernel
available), also the batch forward split that way ("map_chunks"). `--path` picks the implementation of `carfac.run`: the compiled CPU kernel
(cochlea/native.py, the CPU default) or the JAX loop (what runs on GPUs). The runs compute the NAP
alone (`carfac.run(..., bm=False)`, as the DAL loss, the evaluation and the apps do); `--bm` also
computes the BM, as before session 8. Memory is XLA's own account of the compiled program (temp + arguments +
outputs). Paste the printed table into bench/RESULTS.md.
"""
import argparse
import os
import sys
import tempfile
import time
from functools import partial

import dal_widgets  # noqa: F401  first: one CPU device per core (dal_widgets/cpu_cores.py)
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from common import TABLE_HEAD, header, row, time_call  # noqa: E402

from dal_widgets.cochlea import batch  # noqa: E402
from dal_widgets.cochlea import carfac as cf  # noqa: E402


def compiled_mb(fn, *args) -> float:
  ma = jax.jit(fn).lower(*args).compile().memory_analysis()
  if ma is None:
    return float("nan")
  return (ma.temp_size_in_bytes + ma.argument_size_in_bytes + ma.output_size_in_bytes) / 1e6


def main():
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--n-runs", type=int, default=20)
  ap.add_argument("--lengths", type=float, nargs="+", default=[1.0], help="seconds of audio")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--sr", type=float, default=22050.0)
  ap.add_argument("--style", default="v3")
  ap.add_argument("--skip-single", action="store_true", help="only the batch cases (GPU)")
  ap.add_argument("--bm", action="store_true", help="also compute the BM output")
  ap.add_argument("--path", choices=["auto", "native", "jax"], default="auto",
                  help="implementation of carfac.run (auto: native on the CPU when it builds)")
  args = ap.parse_args()
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=args.sr, style=args.style))
  native = {"auto": None, "native": True, "jax": False}[args.path]
  if native is None:
    native = cf.native_lib.default()
  run = partial(cf.run, hypers=hypers, native=native, bm=args.bm)
  jit = partial(jax.jit, compiler_options=cf.compiler_options())  # as designs.jitted_run does
  fwd = jit(lambda x: run(x, coeffs=coeffs, weights=weights, state=state)[0].nap)
  loss = lambda x: jnp.mean(run(x, coeffs=coeffs, weights=weights, state=state)[0].nap)
  grad = jit(jax.grad(loss))
  fwd_b = jit(jax.vmap(lambda x: run(x, coeffs=coeffs, weights=weights, state=state)[0].nap))
  grad_b = jit(jax.grad(lambda xs: jnp.mean(jax.vmap(loss)(xs))))
  path = "compiled CPU kernel" if native else "JAX loop"
  outputs = "NAP and BM" if args.bm else "NAP"
  print(header(f"CARFAC {args.style}, {args.sr:.0f} Hz, {hypers.n_ch} channels, {path}, {outputs}"))
  print(TABLE_HEAD)
  rng = np.random.default_rng(0)
  for seconds in args.lengths:
    n = int(round(seconds * args.sr))
    x = jnp.asarray(0.03 * rng.standard_normal(n), jnp.float32)  # ~70 dB SPL
    xb = jnp.asarray(0.03 * rng.standard_normal((args.batch, n)), jnp.float32)
    single_ms = None
    if not args.skip_single:
      c, r = time_call(fwd, x, n_runs=args.n_runs)
      single_ms = 1e3 * np.median(r)
      print(row("forward", n, seconds, c, r), flush=True)
      c, r = time_call(grad, x, n_runs=max(5, args.n_runs // 4))
      print(row("grad mean(nap) wrt x", n, seconds, c, r, f"{compiled_mb(jax.grad(loss), x):.0f} MB"),
            flush=True)
    c, r = time_call(fwd_b, xb, n_runs=max(5, args.n_runs // 4))
    ratio = f"{1e3 * np.median(r) / single_ms:.1f}x single" if single_ms else ""
    print(row(f"forward batch {args.batch}", n, seconds * args.batch, c, r, ratio), flush=True)
    workers = batch.default_workers()
    if workers > 1:
      # The same program on equal chunks, one per core (what cochlea.run_batch does).
      c, r = time_call(lambda xs: batch.map_chunks(fwd_b, xs), xb, n_runs=max(5, args.n_runs // 4))
      print(row(f"forward batch {args.batch}, map_chunks", n, seconds * args.batch, c, r,
                f"{workers} threads"), flush=True)
    gb = jax.grad(lambda xs: jnp.mean(jax.vmap(loss)(xs)))
    c, r = time_call(grad_b, xb, n_runs=max(5, args.n_runs // 4))
    print(row(f"grad batch {args.batch}", n, seconds * args.batch, c, r, f"{compiled_mb(gb, xb):.0f} MB"),
          flush=True)
  if native:
    print(f"\nOne-time build of the CPU kernel (both precisions, cached per machine): "
          f"{kernel_build_s():.1f} s")


def kernel_build_s() -> float:
  """Seconds to build the native kernel from scratch (into a temporary cache)."""
  old = os.environ.get("DAL_NATIVE_CACHE")
  with tempfile.TemporaryDirectory() as tmp:
    os.environ["DAL_NATIVE_CACHE"] = tmp
    cf.native_lib.library.cache_clear()
    try:
      t0 = time.perf_counter()
      cf.native_lib.library()
      return time.perf_counter() - t0
    finally:
      if old is None:
        del os.environ["DAL_NATIVE_CACHE"]
      else:
        os.environ["DAL_NATIVE_CACHE"] = old
      cf.native_lib.library.cache_clear()


if __name__ == "__main__":
  main()
