"""Batches of waveforms through CARFAC on every CPU core.

XLA:CPU runs one program on one core: the time loop of CARFAC is made of small kernels that it will
not spread over threads. A batch is therefore split into one equal chunk per core, and each chunk
runs the same jitted, vmapped program on its own Python thread (JAX releases the GIL while a program
runs). On a GPU the whole batch is one vmapped call.

Measured on the 2-core CI machine (bench/bench_cochlea.py, 22050 Hz, 1 s clips, JAX loop): a batch
of 8 takes 2.4-3.4x the single-clip time on two threads, against about 6x as one vmapped call. The
compiled CPU kernel (cochlea/native.py) does this split itself, so there one vmapped call is used.
"""
import concurrent.futures
import functools
import math

import jax
import numpy as np

from dal_widgets import cpu_cores
from dal_widgets.cochlea import carfac
from dal_widgets.errors import ParameterError


def default_workers() -> int:
  """Threads for a batch: the usable CPU cores when CARFAC runs as the JAX loop on the CPU; 1 on
  an accelerator, and 1 when the compiled CPU kernel runs it (cochlea/native.py spreads a batch
  over the cores itself; chunking on top only adds copies)."""
  if jax.default_backend() != "cpu" or carfac.native_lib.default():
    return 1
  return cpu_cores.usable_cores()


def map_chunks(fn, xs, *args, workers: int | None = None):
  """`fn(chunk, *args)` on equal chunks of `xs`'s leading axis, concurrently; results joined.

  Args:
    fn: A jitted function of a batch (leading axis) and shared arguments, returning a pytree of
      arrays with the same leading axis.
    xs: Batch, shape [batch, ...].
    workers: Chunks run at once (default `default_workers()`); the last chunk is padded with zeros
      so that every chunk has one shape and `fn` compiles once.
  Returns:
    fn's pytree for the whole batch (numpy arrays), leading axis `batch`.
  """
  xs = np.asarray(xs)
  n = xs.shape[0]
  workers = max(1, min(workers or default_workers(), n))
  if workers == 1:
    return jax.tree_util.tree_map(np.asarray, fn(xs, *args))
  size = math.ceil(n / workers)
  padded = np.zeros((size * workers,) + xs.shape[1:], xs.dtype)
  padded[:n] = xs
  chunks = [padded[i * size:(i + 1) * size] for i in range(workers)]
  # Block inside each thread: the wait, not the dispatch, is what runs in parallel.
  run_one = lambda chunk: jax.block_until_ready(fn(chunk, *args))
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    parts = list(pool.map(run_one, chunks))
  return jax.tree_util.tree_map(lambda *p: np.concatenate([np.asarray(a) for a in p])[:n], *parts)


@functools.lru_cache(maxsize=16)
def _vmapped_run(hypers: carfac.CarfacHypers, linear: bool):
  """jitted xs [batch, n_samp], coeffs, weights, state -> (CarfacOutput, CarfacState), batched."""
  def one(x, coeffs, weights, state):
    return carfac.run(x, hypers, coeffs, weights, state, linear=linear)
  return jax.jit(jax.vmap(one, in_axes=(0, None, None, None)),
                 compiler_options=carfac.compiler_options())


def run_batch(xs, hypers: carfac.CarfacHypers, coeffs: carfac.CarfacCoeffs,
              weights: carfac.CarfacWeights, state: carfac.CarfacState, *, linear: bool = False,
              workers: int | None = None):
  """`jax.vmap(carfac.run)` over the rows of `xs`, every CPU core busy (module docstring).

  Args:
    xs: Waveforms of one length, shape [batch, n_samp], CARFAC units, at `hypers.sr`.
    hypers, coeffs, weights, state: One design, shared by every row (state: each row starts there).
    linear: Bypass the OHC nonlinearity.
    workers: Threads (default: CPU cores; 1 on a GPU).
  Returns:
    (CarfacOutput, CarfacState) as numpy arrays with a leading batch axis: nap, bm
    [batch, n_samp, n_ch].
  Raises:
    ParameterError: xs not [batch, n_samp], empty, or not finite; weights outside [0, 1].
  """
  if np.ndim(xs) != 2 or np.shape(xs)[0] == 0:
    raise ParameterError(f"xs must be a batch of waveforms, shape (batch, n_samp), got shape "
                         f"{np.shape(xs)}")
  xs = np.asarray(xs, np.dtype(coeffs.car.r1.dtype))
  carfac.check_input(xs[0], hypers)  # length and dtype checks, once
  if not np.all(np.isfinite(xs)):
    raise ParameterError("xs contains NaN or inf samples")
  carfac.check_weights(weights)
  return map_chunks(_vmapped_run(hypers, linear), xs, coeffs, weights, state, workers=workers)
