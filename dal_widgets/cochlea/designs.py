"""One-call cochleagrams: design (cached), validate, run (jitted once per design)."""
import functools
from functools import partial

import jax
import numpy as np

from dal_widgets.cochlea import carfac
from dal_widgets.errors import ParameterError

# Peak memory of a cochleagram relative to its NAP + BM outputs (measured with /usr/bin/time:
# 20 s at 16 kHz, 166 MB of outputs, 213 MB peak).
PEAK_PER_OUTPUT_BYTE = 1.3


def available_memory_bytes() -> int | None:
  """Memory the system can give this process now (Linux MemAvailable), or None when unknown."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def check_memory(n_samp: int, hypers: carfac.CarfacHypers, itemsize: int = 4, *,
                 bm: bool = True) -> None:
  """Raises ParameterError when a cochleagram of n_samp samples (with its BM, or without) would
  not fit in memory (instead of the process being killed)."""
  need = PEAK_PER_OUTPUT_BYTE * (2 if bm else 1) * n_samp * hypers.n_ch * itemsize
  available = available_memory_bytes()
  if available is not None and need > available:
    raise ParameterError(f"x: {n_samp / hypers.sr:.0f} s at {hypers.sr:g} Hz needs about "
                         f"{need / 1e6:,.0f} MB for its NAP{' and BM' if bm else ''}, "
                         f"{available / 1e6:,.0f} MB is "
                         "available; use a shorter sound, or carfac.run on segments with its state")


def designed(sr: float, style: str = "v3") -> carfac.Carfac:
  """The default CARFAC design for `sr` (Hz) and `style`, cached.

  Raises:
    ParameterError: `sr` not a number of Hz within 8000..48000, or an unknown `style`.
  """
  # checked before the cache, which would fail on an unhashable list or jax array
  if isinstance(sr, bool) or not isinstance(sr, (int, float, np.integer, np.floating)):
    raise ParameterError(f"sr must be a number of Hz, got {sr!r}")
  if not isinstance(style, str):
    raise ParameterError(f"style must be one of {sorted(carfac.STYLES)}, got {style!r}")
  return _designed(float(sr), style)


@functools.lru_cache(maxsize=16)
def _designed(sr: float, style: str) -> carfac.Carfac:
  return carfac.design_carfac(carfac.CarfacParams(sr=sr, style=style))


@functools.lru_cache(maxsize=16)
def jitted_run(hypers: carfac.CarfacHypers, linear: bool = False, bm: bool = True):
  """`carfac.run` jitted for one design; weights, coefficients and state stay traced."""
  return jax.jit(partial(carfac.run, hypers=hypers, linear=linear, bm=bm),
                 compiler_options=carfac.compiler_options())


def cf_hz(sr: float) -> np.ndarray:
  """Nominal characteristic frequencies (pole frequencies) in Hz, shape [n_ch], highest first."""
  return np.asarray(designed(sr).coeffs.pole_hz)


def cochleagram(x, sr: float, *, style: str = "v3", ohc_health=1.0, ihc_gain=1.0,
                linear: bool = False, bm: bool = True) -> carfac.CarfacOutput:
  """NAP and BM of a waveform through a (possibly impaired) CARFAC, from rest.

  The rest state is the healthy ear's: `ohc_health` takes effect at the first AGC update and its
  ramp (2 x 8 samples, 1 ms at 16 kHz), so measure an impaired ear's responses after that.

  Args:
    x: waveform, shape [n_samp], CARFAC units (see dal_widgets.audio.calibration).
    sr: sample rate in Hz; the model is designed for it (8000..48000).
    style: "v3" (synapse NAP) or "v2" (IHC NAP).
    ohc_health, ihc_gain: scalars or shape [n_ch] arrays in [0, 1] (1 = healthy).
    bm: also compute the BM (False: out.bm is None; half the memory).
  Returns:
    CarfacOutput with nap, bm of shape [n_samp, n_ch], channel 0 the highest CF.
  Raises:
    ParameterError: bad input, sample rate or weights, or too long to fit in memory.
  """
  hypers, coeffs, _, state = designed(sr, style)
  if not isinstance(x, jax.Array):
    x = np.asarray(x)  # a list is one waveform, not a pytree of samples
  carfac.check_input(x, hypers, dtype=coeffs.car.r1.dtype)
  check_memory(int(np.shape(x)[0]), hypers, bm=bm)
  weights = carfac.make_weights(hypers, ohc_health=ohc_health, ihc_gain=ihc_gain)
  if any(isinstance(v, jax.core.Tracer) for v in (x, weights.ohc_health, weights.ihc_gain)):
    # Inside jit, grad or vmap: run in the caller's trace (compiler options are top-level only).
    run = partial(carfac.run, hypers=hypers, linear=linear, bm=bm)
  else:
    run = jitted_run(hypers, linear, bm)
  out, _ = run(x, coeffs=coeffs, weights=weights, state=state)
  return out
