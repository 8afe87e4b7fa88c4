"""Simulated pure-tone audiometry on CARFAC.

A tone is "heard" when the NAP it evokes crosses a fixed criterion. For each frequency we present
calibrated tones on a grid of levels (all at once: one vmapped, jitted CARFAC run), read the
steady-state NAP of the channels within a third of an octave of the tone (off-place channels within
that range may detect it, as in real listening), and interpolate the level where the strongest
response crosses the criterion (linearly in log response, which grows almost as a power law
near threshold). Thresholds are in dB SPL (dal_widgets.audio.calibration); the normal model's
thresholds define 0 dB HL for the model (`model_audiogram_db_hl`).
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from dal_widgets.audio import stimuli
from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import batch, designs
from dal_widgets.errors import ParameterError

TONE_S = 0.2  # tone duration: long enough for AGC stage 1-3 (2-32 ms) to settle
TONE_RAMP_MS = 10.0  # raised-cosine ramps (audiometric tones use 20-50 ms; short keeps runs cheap)
MEASURE_S = 0.1  # the NAP is averaged over the last 100 ms of the tone
# Presentation grid, 5 dB steps like an audiometer. It runs past any real audiometer (120 dB HL) because
# the model's own 0 dB HL is near 60 dB SPL at the top of its range (6 kHz at 16 kHz: few channels
# are basal to that place), and profound losses must still be located there.
LEVELS_DB_SPL = tuple(np.arange(-10.0, 185.0, 5.0))
CRITERION_NAP = 0.01  # detection criterion on the mean v3/v2 NAP (arbitrary units; ~13 dB SPL at 1 kHz)
PLACE_OCTAVES = 1 / 3  # channels within +-1/3 octave (about one critical band each side) may detect it
NO_RESPONSE_DB_SPL = LEVELS_DB_SPL[-1]  # a tone never detected gets the top level (audiometer limit)
MAX_TONE_FRACTION_OF_NYQUIST = 0.8  # tones above 0.8 * sr/2 fall beyond the model's highest channel


def measurable_freqs(freqs_hz, sr: float) -> np.ndarray:
  """Boolean mask: which frequencies the model at `sr` can test."""
  return np.asarray(freqs_hz) <= MAX_TONE_FRACTION_OF_NYQUIST * sr / 2


@functools.lru_cache(maxsize=8)
def _tone_bank(freqs_hz: tuple, sr: float) -> np.ndarray:
  """Calibrated tones, shape [n_freqs * n_levels, n_samp] (frequency-major)."""
  return np.stack([stimuli.tone(f, TONE_S, sr, level_db_spl=level, ramp_ms=TONE_RAMP_MS)
                   for f in freqs_hz for level in LEVELS_DB_SPL])


@functools.lru_cache(maxsize=8)
def _responses_fn(hypers: cf.CarfacHypers):
  """jitted (tones, coeffs, weights, state, place_mask) -> steady NAP per tone and channel."""
  n_measure = int(round(MEASURE_S * hypers.sr))
  def response(x, coeffs, weights, state):
    nap = cf.run(x, hypers, coeffs, weights, state, bm=False)[0].nap
    return jnp.mean(nap[-n_measure:], axis=0)
  return jax.jit(jax.vmap(response, in_axes=(0, None, None, None)),
                 compiler_options=cf.compiler_options())


def _crossing_db_spl(levels, response) -> float:
  """Level where `response` (increasing with level) first reaches the criterion, log-interpolated."""
  above = np.nonzero(response >= CRITERION_NAP)[0]
  if above.size == 0:
    return NO_RESPONSE_DB_SPL
  i = above[0]
  if i == 0:
    return float(levels[0])
  lo, hi = np.log(max(response[i - 1], 1e-12)), np.log(response[i])
  frac = (np.log(CRITERION_NAP) - lo) / (hi - lo)
  return float(levels[i - 1] + frac * (levels[i] - levels[i - 1]))


def thresholds_db_spl(freqs_hz, sr: float, weights: cf.CarfacWeights | None = None, *,
                      style: str = "v3") -> np.ndarray:
  """Simulated detection thresholds of pure tones, dB SPL.

  Args:
    freqs_hz: tone frequencies in Hz, each at most 0.8 * sr / 2.
    sr: model sample rate in Hz.
    weights: CARFAC weights of the ear (default: healthy).
  Returns:
    Thresholds in dB SPL, shape [n_freqs]; NO_RESPONSE_DB_SPL where the tone is never detected.
  Raises:
    ParameterError: no frequencies, a frequency the model cannot test (above 0.8 * sr / 2, or
      with no channel within PLACE_OCTAVES), or weights that are not this design's.
  """
  hypers, coeffs, healthy, state = designs.designed(sr, style)  # checks sr and style first
  values = np.atleast_1d(np.asarray(freqs_hz, dtype=object))
  if values.ndim != 1 or not all(isinstance(f, (int, float, np.integer, np.floating))
                                 and not isinstance(f, bool) for f in values):
    raise ParameterError(f"freqs_hz: expected a number or a flat list of numbers (Hz), got "
                         f"{freqs_hz!r}")
  freqs = tuple(float(f) for f in values)
  if not freqs or not all(np.isfinite(f) and f > 0 for f in freqs):
    raise ParameterError(f"freqs_hz: expected one or more frequencies > 0 Hz, got {freqs_hz!r}")
  if not np.all(measurable_freqs(freqs, sr)):
    raise ParameterError(f"freqs_hz: a model at sr={sr} Hz tests tones up to "
                         f"{MAX_TONE_FRACTION_OF_NYQUIST * sr / 2:.0f} Hz, got {max(freqs):.0f} Hz")
  if weights is not None and not isinstance(weights, cf.CarfacWeights):
    raise ParameterError(f"weights: expected CarfacWeights or None, got {type(weights).__name__}")
  weights = healthy if weights is None else weights
  cf.check_parts(hypers, coeffs, weights, state)
  cf.check_weights(weights)
  cf_hz = np.asarray(coeffs.pole_hz)
  unplaced = [f for f in freqs if np.min(np.abs(np.log2(cf_hz / f))) > PLACE_OCTAVES]
  if unplaced:
    raise ParameterError(f"freqs_hz: no channel of the model lies within {PLACE_OCTAVES:.2g} octave "
                         f"of {unplaced[0]:g} Hz (its CFs span {cf_hz.min():.0f}.."
                         f"{cf_hz.max():.0f} Hz)")
  naps = batch.map_chunks(_responses_fn(hypers), _tone_bank(freqs, float(sr)), coeffs, weights,
                          state)
  naps = naps.reshape(len(freqs), len(LEVELS_DB_SPL), hypers.n_ch)
  out = []
  for f, nap in zip(freqs, naps):
    place = np.abs(np.log2(cf_hz / f)) <= PLACE_OCTAVES
    out.append(_crossing_db_spl(np.asarray(LEVELS_DB_SPL), nap[:, place].max(axis=1)))
  return np.asarray(out)


@functools.lru_cache(maxsize=16)
def normal_thresholds_db_spl(freqs_hz: tuple, sr: float, style: str = "v3") -> np.ndarray:
  """Thresholds of the healthy model (its 0 dB HL), cached."""
  return thresholds_db_spl(freqs_hz, sr, style=style)


def model_audiogram_db_hl(freqs_hz, sr: float, weights: cf.CarfacWeights | None = None, *,
                          style: str = "v3") -> np.ndarray:
  """Simulated audiogram of a model ear in dB HL (re the healthy model), shape [n_freqs]."""
  impaired = thresholds_db_spl(freqs_hz, sr, weights, style=style)  # validates the arguments
  freqs = tuple(float(f) for f in np.atleast_1d(freqs_hz))
  return impaired - normal_thresholds_db_spl(freqs, float(sr), style)
