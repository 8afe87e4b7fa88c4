"""Calibrated test sounds: tones, two-tone pairs, click trains, harmonic complexes, vowels, silence.

All outputs are float32 numpy arrays of shape (time,), with time = round(dur_s * sr), in digital
units calibrated by `dal_widgets.audio.calibration` (rms 1.0 = 100 dB SPL). Onsets and offsets use
raised-cosine (Hann) ramps of `ramp_ms` to avoid spectral splatter; levels refer to the steady part.
"""
import numpy as np
import scipy.signal

from dal_widgets.audio import calibration
from dal_widgets.audio.io import MAX_SR, MIN_SR
from dal_widgets.errors import ParameterError

DEFAULT_LEVEL_DB_SPL = 60.0  # a comfortable, clearly audible test level
DEFAULT_RAMP_MS = 10.0  # long enough to keep a tone's spectrum narrow, short for onsets
CLICK_WIDTH_S = 100e-6  # 100 us rectangular clicks, the usual audiometric click
GLOTTAL_CORNER_HZ = 100.0  # one-pole source low-pass: -12 dB/oct glottal flow + 6 dB/oct lip
#                           radiation = -6 dB/oct net above the corner (Fant 1960 source-filter)
# Default formant bandwidth = base + slope * formant frequency: our rule of thumb giving ~60-250 Hz
# for F1..F4, the range of measured vowel formant bandwidths (Klatt 1980; Hawks & Miller 1995).
FORMANT_BW_BASE_HZ = 50.0
FORMANT_BW_SLOPE = 0.05


def _is_number(value) -> bool:
  """A real scalar (Python or numpy; not a bool, None, a string or an array)."""
  return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check(sr, dur_s, ramp_ms=0.0, level_db_spl=DEFAULT_LEVEL_DB_SPL, **freqs_hz):
  """Validates shared arguments; returns the number of samples."""
  if not _is_number(level_db_spl):  # an array would broadcast against the samples
    raise ParameterError(f"level_db_spl: expected one level in dB SPL, got {level_db_spl!r}")
  if not _is_number(sr) or not MIN_SR <= sr <= MAX_SR:
    raise ParameterError(f"sr: expected {MIN_SR}..{MAX_SR} Hz, got {sr!r}")
  if not _is_number(dur_s) or not np.isfinite(dur_s) or dur_s <= 0:
    raise ParameterError(f"dur_s: expected a positive duration in seconds, got {dur_s!r}")
  n = int(round(dur_s * sr))
  if n < 1:
    raise ParameterError(f"dur_s: {dur_s} s is shorter than one sample at {sr} Hz")
  if not _is_number(ramp_ms) or not np.isfinite(ramp_ms) or ramp_ms < 0 \
      or 2 * ramp_ms * 1e-3 > dur_s:
    raise ParameterError(f"ramp_ms: expected 0 <= ramp_ms <= dur_s/2 ({dur_s * 500:g} ms), got {ramp_ms!r}")
  for arg, value in freqs_hz.items():
    if not _is_number(value) or not np.isfinite(value) or not 0 < value < sr / 2:
      raise ParameterError(f"{arg}: expected 0 < {arg} < sr/2 = {sr / 2:g} Hz, got {value!r}")
  return n


def _ramp(x, sr, ramp_ms):
  """Applies raised-cosine onset and offset ramps of `ramp_ms` each (in place)."""
  n_ramp = int(round(ramp_ms * 1e-3 * sr))
  if n_ramp > 0:
    window = 0.5 * (1.0 - np.cos(np.pi * (np.arange(n_ramp) + 0.5) / n_ramp))
    x[:n_ramp] *= window
    x[-n_ramp:] *= window[::-1]
  return x


def _finish(x, sr, ramp_ms):
  return _ramp(np.asarray(x, dtype=np.float64), sr, ramp_ms).astype(np.float32)


def silence(dur_s, sr):
  """Digital silence, shape (round(dur_s * sr),), float32 zeros."""
  return np.zeros(_check(sr, dur_s), dtype=np.float32)


def tone(freq_hz, dur_s, sr, *, level_db_spl=DEFAULT_LEVEL_DB_SPL, ramp_ms=DEFAULT_RAMP_MS,
         phase_rad=0.0):
  """A pure tone (sine) at `level_db_spl` rms, with raised-cosine ramps.

  Args:
    freq_hz: Frequency in Hz, 0 < freq_hz < sr/2.
    dur_s: Duration in seconds.
    sr: Sample rate in Hz.
    level_db_spl: rms level of the steady part, dB SPL.
    ramp_ms: Onset and offset ramp durations in ms.
    phase_rad: Starting phase in radians.

  Returns:
    float32 array, shape (round(dur_s * sr),).
  """
  n = _check(sr, dur_s, ramp_ms, level_db_spl, freq_hz=freq_hz)
  if not _is_number(phase_rad) or not np.isfinite(phase_rad):  # NaN would make every sample NaN
    raise ParameterError(f"phase_rad: expected a finite phase in radians, got {phase_rad!r}")
  t = np.arange(n) / sr
  x = calibration.tone_amplitude(level_db_spl) * np.sin(2 * np.pi * freq_hz * t + phase_rad)
  return _finish(x, sr, ramp_ms)


def two_tone(f1_hz, f2_hz, dur_s, sr, *, level_db_spl=DEFAULT_LEVEL_DB_SPL,
             ramp_ms=DEFAULT_RAMP_MS):
  """Two simultaneous pure tones, each at `level_db_spl` (e.g. for suppression or DPOAE demos).

  Returns:
    float32 array, shape (round(dur_s * sr),); the total level is 3 dB above `level_db_spl`.
  """
  _check(sr, dur_s, ramp_ms, level_db_spl, f1_hz=f1_hz, f2_hz=f2_hz)
  opts = dict(level_db_spl=level_db_spl, ramp_ms=ramp_ms)
  return tone(f1_hz, dur_s, sr, **opts) + tone(f2_hz, dur_s, sr, **opts)


def click_train(rate_hz, dur_s, sr, *, level_db_spl=DEFAULT_LEVEL_DB_SPL,
                click_width_s=CLICK_WIDTH_S):
  """Periodic rectangular clicks (positive polarity) starting at time 0; no ramps.

  The level is peak-equivalent SPL (peSPL): each click's peak equals the peak of a sine at
  `level_db_spl`, the usual calibration of transient stimuli (IEC 60645-3).

  Args:
    rate_hz: Clicks per second, below sr/2 (its period is the SAI pitch lag).
    dur_s: Duration in seconds.
    sr: Sample rate in Hz.
    level_db_spl: Peak-equivalent level, dB peSPL.
    click_width_s: Width of each click, at least one sample and shorter than the period.

  Returns:
    float32 array, shape (round(dur_s * sr),).
  """
  n = _check(sr, dur_s, level_db_spl=level_db_spl, rate_hz=rate_hz)
  period_s = 1.0 / rate_hz
  if not _is_number(click_width_s) or not 0 < click_width_s < period_s:  # wider clicks merge into a constant (DC) signal
    raise ParameterError(f"click_width_s: expected seconds in (0, {period_s:.3g}) (the click "
                         f"period at {rate_hz:g} Hz), got {click_width_s!r}")
  width = max(1, int(round(click_width_s * sr)))
  onsets = np.round(np.arange(0, n / sr, 1 / rate_hz) * sr).astype(int)
  x = np.zeros(n)
  for k in range(width):
    x[np.minimum(onsets + k, n - 1)] = 1.0
  return (calibration.tone_amplitude(level_db_spl) * x).astype(np.float32)


def harmonic_complex(f0_hz, dur_s, sr, *, n_harmonics=None, max_freq_hz=None,
                     level_db_spl=DEFAULT_LEVEL_DB_SPL, phase="cosine", rng=None,
                     ramp_ms=DEFAULT_RAMP_MS):
  """Equal-amplitude harmonics of `f0_hz` (a periodic sound with pitch f0, for SAI demos).

  Args:
    f0_hz: Fundamental frequency in Hz.
    dur_s: Duration in seconds.
    sr: Sample rate in Hz.
    n_harmonics: Number of harmonics (1 = the fundamental only); default: all below max_freq_hz.
    max_freq_hz: Highest harmonic frequency allowed, Hz; default sr/2 (exclusive).
    level_db_spl: Total rms level of the steady part, dB SPL.
    phase: "cosine" (peaky, pulse-like), "sine", "alternating" (odd harmonics sine, even cosine:
      envelope peaks twice per period) or "random" (uses `rng`).
    rng: numpy Generator for phase="random".
    ramp_ms: Onset and offset ramp durations in ms.

  Returns:
    float32 array, shape (round(dur_s * sr),).
  """
  n = _check(sr, dur_s, ramp_ms, level_db_spl, f0_hz=f0_hz)
  if max_freq_hz is not None and not (_is_number(max_freq_hz) and max_freq_hz > f0_hz):  # NaN too
    raise ParameterError(f"max_freq_hz: expected None or a frequency above f0_hz = {f0_hz} Hz, "
                         f"got {max_freq_hz!r}")
  top_hz = sr / 2 if max_freq_hz is None else min(max_freq_hz, sr / 2)
  available = max(int(np.ceil(top_hz / f0_hz)) - 1, 1)  # harmonics strictly below top_hz
  if n_harmonics is None:
    n_harmonics = available
  if isinstance(n_harmonics, bool) or not isinstance(n_harmonics, (int, np.integer)) \
      or not 1 <= n_harmonics <= available:
    raise ParameterError(f"n_harmonics: expected a whole number 1..{available} (harmonics of "
                         f"{f0_hz} Hz below {top_hz:g} Hz), got {n_harmonics!r}")
  k = np.arange(1, n_harmonics + 1)
  if phase == "cosine":
    phases = np.full(n_harmonics, np.pi / 2)
  elif phase == "sine":
    phases = np.zeros(n_harmonics)
  elif phase == "alternating":
    phases = np.where(k % 2 == 1, 0.0, np.pi / 2)
  elif phase == "random":
    if not isinstance(rng, np.random.Generator):
      raise ParameterError(f"rng: phase='random' needs a numpy Generator, got {rng!r}")
    phases = rng.uniform(0, 2 * np.pi, n_harmonics)
  else:
    raise ParameterError(f"phase: expected 'cosine', 'sine', 'alternating' or 'random', got {phase!r}")
  t = np.arange(n) / sr
  x = np.zeros(n)
  for harmonic, ph in zip(k, phases):
    x += np.sin(2 * np.pi * harmonic * f0_hz * t + ph)
  # Each harmonic has rms 1/sqrt(2); orthogonal, so the sum has rms sqrt(n_harmonics / 2).
  x *= calibration.db_spl_to_rms(level_db_spl) / np.sqrt(n_harmonics / 2)
  return _finish(x, sr, ramp_ms)


def vowel(f0_hz, formants_hz, dur_s, sr, *, bandwidths_hz=None, level_db_spl=65.0,
          ramp_ms=DEFAULT_RAMP_MS):
  """A synthetic steady vowel: an impulse-train source through a cascade of formant resonators.

  Source-filter model (Fant 1960): a pulse train at `f0_hz` passed through a one-pole low-pass
  (net -6 dB/oct glottal + radiation slope), then through one two-pole resonator per formant with
  unity gain at 0 Hz (the cascade formant synthesiser of Klatt 1980).

  Args:
    f0_hz: Fundamental frequency (pitch) in Hz.
    formants_hz: Formant frequencies in Hz, e.g. (730, 1090, 2440) for /a/ (Peterson & Barney 1952).
    dur_s: Duration in seconds.
    sr: Sample rate in Hz.
    bandwidths_hz: Formant bandwidths in Hz (same length); default by the rule of thumb above.
    level_db_spl: rms level of the steady part, dB SPL (65 = conversational speech).
    ramp_ms: Onset and offset ramp durations in ms.

  Returns:
    float32 array, shape (round(dur_s * sr),).
  """
  try:
    formants_hz = np.atleast_1d(np.asarray(formants_hz, dtype=float))
  except (TypeError, ValueError) as err:
    raise ParameterError(f"formants_hz: expected a list of Hz, got {formants_hz!r}") from err
  n = _check(sr, dur_s, ramp_ms, level_db_spl, f0_hz=f0_hz)
  if formants_hz.ndim != 1 or formants_hz.size == 0:
    raise ParameterError(f"formants_hz: expected a non-empty list of Hz, got {formants_hz!r}")
  for i, f in enumerate(formants_hz):
    _check(sr, dur_s, **{f"formants_hz[{i}]": f})
  if bandwidths_hz is None:
    bandwidths_hz = FORMANT_BW_BASE_HZ + FORMANT_BW_SLOPE * formants_hz
  try:
    bandwidths_hz = np.atleast_1d(np.asarray(bandwidths_hz, dtype=float))
  except (TypeError, ValueError) as err:
    raise ParameterError(f"bandwidths_hz: expected a list of Hz, got {bandwidths_hz!r}") from err
  if bandwidths_hz.shape != formants_hz.shape or not np.all(np.isfinite(bandwidths_hz)) \
      or np.any(bandwidths_hz <= 0):
    raise ParameterError(f"bandwidths_hz: expected {formants_hz.size} finite positive values in "
                         f"Hz, got {bandwidths_hz!r}")
  source = np.zeros(n)
  source[np.round(np.arange(0, n / sr, 1 / f0_hz) * sr).astype(int).clip(0, n - 1)] = 1.0
  pole = np.exp(-2 * np.pi * GLOTTAL_CORNER_HZ / sr)
  x = scipy.signal.lfilter([1.0 - pole], [1.0, -pole], source)
  for f, bw in zip(formants_hz, bandwidths_hz):
    r = np.exp(-np.pi * bw / sr)  # pole radius from the bandwidth
    a = [1.0, -2 * r * np.cos(2 * np.pi * f / sr), r * r]
    x = scipy.signal.lfilter([sum(a)], a, x)  # numerator sum(a): gain 1 at 0 Hz
  n_ramp = int(round(ramp_ms * 1e-3 * sr))
  steady = x[n_ramp:n - n_ramp] if n > 2 * n_ramp else x
  x = x * (calibration.db_spl_to_rms(level_db_spl) / calibration.rms(steady))
  return _finish(x, sr, ramp_ms)
