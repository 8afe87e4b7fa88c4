"""Level calibration: the one mapping between digital amplitude and dB SPL in dal_widgets.

Every level in the project (stimuli, speech at 65 dB SPL, the tones of simulated audiometry, the
noise in a mixture) goes through this module, so the CARFAC models always see the same scale.
(Audiograms in dB HL become dB SPL only in `hearing.audiogram.hl_to_spl`, for the listening
simulator; model ears are fitted in dB HL re the healthy model's own thresholds.)

The convention: a digital signal with rms 1.0 is 100 dB SPL.

Why 100 dB SPL: CARFAC has no explicit pressure unit; its level behaviour is set by the input
amplitude. Its author notes that an input amplitude near 1e-4 is close to the threshold of hearing,
about 20-30 dB SPL (R. F. Lyon, "Human and Machine Hearing", 2017; google/carfac CARFAC design
notes), and that amplitudes near 1 are very loud. With rms 1.0 <-> 100 dB SPL a 25 dB SPL sound has
rms 10**(-75/20) ~= 1.8e-4, inside that threshold range, and conversational speech at 65 dB SPL has
rms 10**(-35/20) ~= 0.0178, well clear of clipping (speech peaks are ~12-20 dB above its rms).

The functions accept Python floats, numpy arrays and jax arrays (returning the same kind), and are
safe inside `jax.jit` (validation is skipped for traced values).
"""
import jax
import jax.numpy as jnp
import numpy as np

from dal_widgets.errors import AudioError, ParameterError

FULL_SCALE_RMS_DB_SPL = 100.0  # digital rms 1.0 <-> 100 dB SPL (see module docstring)
SINE_PEAK_TO_RMS = float(np.sqrt(2.0))  # peak / rms of a pure sine
# The loudest undistorted sound in air: a pressure amplitude of one atmosphere, 101325 Pa, is
# 20 log10(101325 / sqrt(2) / 20e-6 Pa) = 191.1 dB SPL rms (194.1 dB for the peak). Levels here
# are rms, so the cap is 191 dB; levels above it are typing errors, not sounds.
MAX_LEVEL_DB_SPL = 191.0
# The quietest level taken: a digital rms of 1e-10, 100 dB below the threshold of hearing (about
# 0 dB SPL at 1-4 kHz, ISO 389-7) and a millionth of the amplitude CARFAC treats as threshold
# (1e-4, module docstring). Lower levels are typing errors (-1000 would give a silent float32
# signal); float32 stays normal far below this (smallest normal 1.2e-38).
MIN_LEVEL_DB_SPL = -100.0


def _xp(x):
  """The array module that matches `x` (jnp for jax arrays and tracers, else np)."""
  return jnp if isinstance(x, jax.Array) else np


def as_signal(x, name="x"):
  """`x` as an array of its own array module (jax stays jax), or ParameterError when it is not
  an array of real numbers (a ragged list, a (waveform, sr) pair, strings, complex values)."""
  xp = _xp(x)
  try:
    out = xp.asarray(x)
  except (TypeError, ValueError) as err:
    hint = (" (load and load_clip return (x, sr): pass x)" if isinstance(x, tuple) and len(x) == 2
            and np.ndim(x[1]) == 0 else "")
    raise ParameterError(f"{name}: expected an array of samples, got a {type(x).__name__} that "
                         f"is not one{hint}") from err
  if not (xp.issubdtype(out.dtype, xp.floating) or xp.issubdtype(out.dtype, xp.integer)):
    raise ParameterError(f"{name}: expected real samples, got dtype {out.dtype}")
  return out


def _is_traced(x):
  return isinstance(x, jax.core.Tracer)


def _scalar_back(x, out):
  """Returns a Python float when the input was a Python number."""
  if isinstance(x, (int, float)) and not isinstance(x, bool):
    return float(out)
  return out


def db_spl_to_rms(level_db_spl):
  """Digital rms amplitude of a sound at `level_db_spl`.

  Args:
    level_db_spl: Level in dB SPL (float or array).

  Returns:
    Digital rms amplitude, same shape as the input (1.0 at 100 dB SPL).

  Raises:
    ParameterError: a (concrete) level that is not a finite number in [MIN_LEVEL_DB_SPL,
      MAX_LEVEL_DB_SPL].
  """
  if not _is_traced(level_db_spl):
    values = np.asarray(level_db_spl)
    if values.dtype.kind not in "iuf" or not np.all(np.isfinite(values)) \
        or np.any(values > MAX_LEVEL_DB_SPL) or np.any(values < MIN_LEVEL_DB_SPL):
      raise ParameterError(f"level_db_spl: expected finite levels from {MIN_LEVEL_DB_SPL:g} to "
                           f"{MAX_LEVEL_DB_SPL:g} dB SPL, got {level_db_spl!r}")
  xp = _xp(level_db_spl)
  out = 10.0 ** ((xp.asarray(level_db_spl) - FULL_SCALE_RMS_DB_SPL) / 20.0)
  return _scalar_back(level_db_spl, out)


def rms_to_db_spl(rms_value):
  """Level in dB SPL of a signal with digital rms `rms_value`.

  Args:
    rms_value: Digital rms amplitude (float or array), >= 0. Zero maps to -inf.

  Returns:
    Level in dB SPL, same shape as the input.

  Raises:
    ParameterError: if a (concrete) value is negative or not finite.
  """
  xp = _xp(rms_value)
  if not _is_traced(rms_value):
    values = np.asarray(rms_value)  # strings, None and complex values are refused too
    if values.dtype.kind not in "iuf" or not np.all(np.isfinite(values)) or np.any(values < 0):
      raise ParameterError(f"rms_value: expected finite values >= 0, got {rms_value!r}")
  with np.errstate(divide="ignore"):
    out = FULL_SCALE_RMS_DB_SPL + 20.0 * xp.log10(xp.asarray(rms_value))
  return _scalar_back(rms_value, out)


def rms(x, *, axis=None):
  """Root-mean-square amplitude of `x`.

  Args:
    x: Signal, any shape, digital units.
    axis: Axis (or axes) to average over; None means all samples.

  Returns:
    rms amplitude (numpy float / array, or jax array for jax input).

  Raises:
    ParameterError: `x` is not an array of real numbers.
    AudioError: no samples to average (an empty `x`, or an empty axis), which gave NaN.
  """
  xp = _xp(x)
  x = as_signal(x)
  axes = range(x.ndim) if axis is None else np.atleast_1d(axis)
  if any(x.shape[a] == 0 for a in axes if -x.ndim <= a < x.ndim):  # shapes are known under jit
    raise AudioError(f"x: no samples to take the rms of (shape {x.shape}, axis {axis})")
  if not xp.issubdtype(x.dtype, xp.floating):
    x = x.astype(xp.float32)  # integers would overflow when squared
  return xp.sqrt(xp.mean(xp.square(x), axis=axis))


def set_level(x, level_db_spl):
  """Scales `x` so that its rms is `level_db_spl` (over all samples).

  Args:
    x: Signal, any shape, digital units (numpy or jax array).
    level_db_spl: Target level in dB SPL.

  Returns:
    The scaled signal, same shape and dtype kind as `x`.

  Raises:
    ParameterError: a level that is not one finite number in [MIN_LEVEL_DB_SPL,
      MAX_LEVEL_DB_SPL].
    AudioError: if `x` is empty, digitally silent (rms 0) or not finite, so no scale can reach
      the level.
  """
  x = as_signal(x)
  if np.ndim(level_db_spl) != 0:  # an array of levels would broadcast against the samples
    raise ParameterError(f"level_db_spl: expected one level in dB SPL, got shape "
                         f"{np.shape(level_db_spl)}")
  target = db_spl_to_rms(level_db_spl)  # validates the level first
  current = rms(x)
  if not _is_traced(current):
    current_value = float(current)
    if not np.isfinite(current_value):
      raise AudioError(f"x: expected finite samples to set a level, got rms {current_value}")
    if current_value == 0.0:
      raise AudioError(f"x: cannot set the level of digital silence (rms 0) to {level_db_spl} dB SPL")
    if not _is_traced(target):
      return x * (float(target) / current_value)  # a Python scale keeps float32 as float32
    return x * (target / current_value)  # a traced level (jit, grad or vmap over it)
  return x * (target / current)


def tone_amplitude(level_db_spl):
  """Peak amplitude of a pure sine whose rms level is `level_db_spl`.

  Args:
    level_db_spl: Level in dB SPL (float or array).

  Returns:
    Peak amplitude, digital units (sqrt(2) times the rms).
  """
  return _scalar_back(level_db_spl, SINE_PEAK_TO_RMS * db_spl_to_rms(level_db_spl))
