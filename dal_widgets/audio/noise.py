"""Maskers and mixing: white noise, speech-shaped noise, multi-talker babble, mixing at an SNR.

Randomness always comes from a numpy Generator passed in (`np.random.default_rng(seed)`), so every
noise is reproducible. Outputs are float32 numpy, shape (n,), calibrated by
`dal_widgets.audio.calibration` (rms 1.0 = 100 dB SPL).
"""
import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

from dal_widgets.audio import calibration
from dal_widgets.errors import AudioError, ParameterError

DEFAULT_LEVEL_DB_SPL = 65.0  # conversational speech level, also used for maskers

# Long-term average speech spectrum (LTASS): the standard speech spectrum level, normal vocal
# effort, at one-third-octave centres, dB SPL per Hz (ANSI S3.5-1997, Table 3; overall 62.35 dB SPL).
# Its shape -- flat from ~160 to ~500 Hz, then falling ~8 dB/oct -- agrees with the international
# LTASS of Byrne et al. (1994, JASA 96:2108) and the speech-like spectrum of ITU-T P.50.
LTASS_FREQS_HZ = (160, 200, 250, 315, 400, 500, 630, 800, 1000, 1250, 1600, 2000, 2500, 3150,
                  4000, 5000, 6300, 8000)
LTASS_SPECTRUM_DB_SPL = (32.41, 34.48, 34.75, 33.98, 34.59, 34.27, 32.06, 28.30, 25.01, 23.00,
                         20.15, 17.32, 13.18, 11.55, 9.33, 5.31, 2.59, 1.13)
# Outside the table: above 8 kHz continue at the table's mean 1-8 kHz slope ((1.13-25.01)/3 oct);
# below 160 Hz roll off at 12 dB/oct (our choice: speech has little energy below voice pitch).
LTASS_HIGH_SLOPE_DB_PER_OCT = -8.0
LTASS_LOW_SLOPE_DB_PER_OCT = 12.0
WELCH_SEGMENT_S = 0.032  # 32 ms analysis segments for a reference spectrum (~31 Hz resolution)


def _check_rng(rng):
  if not isinstance(rng, np.random.Generator):
    raise ParameterError(f"rng: expected a numpy Generator (np.random.default_rng(seed)), got {rng!r}")


def _check_n(n):
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ParameterError(f"n: expected a positive number of samples, got {n!r}")


def _check_signal(x, name):
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 1 or x.size == 0:
    raise ParameterError(f"{name}: expected non-empty 1-D audio (time,), got shape {x.shape}")
  if not np.all(np.isfinite(x)):
    raise AudioError(f"{name}: contains NaN or inf samples")
  if not np.any(x):
    raise AudioError(f"{name}: is digital silence (all samples 0)")
  return x


def white_noise(n, rng, *, level_db_spl=DEFAULT_LEVEL_DB_SPL):
  """Gaussian white noise with rms exactly at `level_db_spl`.

  Args:
    n: Number of samples.
    rng: numpy Generator.
    level_db_spl: rms level, dB SPL.

  Returns:
    float32 array, shape (n,).
  """
  _check_n(n)
  _check_rng(rng)
  return calibration.set_level(rng.standard_normal(n), level_db_spl).astype(np.float32)


def ltass_db_spl(freqs_hz):
  """Standard long-term average speech spectrum level at `freqs_hz` (dB SPL per Hz).

  Interpolated linearly in log frequency between the table values (see LTASS_* constants);
  frequencies below 1 Hz (0 Hz, the DC bin of an FFT) read the level at 1 Hz.

  Args:
    freqs_hz: Frequencies in Hz (>= 0), any shape.

  Returns:
    float64 array of the same shape, dB SPL per Hz.

  Raises:
    ParameterError: a frequency that is negative, NaN or inf, or not a number.
  """
  try:
    freqs = np.asarray(freqs_hz, dtype=float)
  except (TypeError, ValueError) as err:
    raise ParameterError(f"freqs_hz: expected frequencies in Hz, got {freqs_hz!r}") from err
  if not np.all(np.isfinite(freqs)) or np.any(freqs < 0):  # NaN gave a NaN level
    raise ParameterError(f"freqs_hz: expected finite frequencies >= 0 Hz, got {freqs_hz!r}")
  octaves = np.log2(np.maximum(freqs, 1.0))
  table_oct = np.log2(LTASS_FREQS_HZ)
  level = np.interp(octaves, table_oct, LTASS_SPECTRUM_DB_SPL)
  level = np.where(octaves > table_oct[-1],
                   LTASS_SPECTRUM_DB_SPL[-1] + LTASS_HIGH_SLOPE_DB_PER_OCT * (octaves - table_oct[-1]),
                   level)
  return np.where(octaves < table_oct[0],
                  LTASS_SPECTRUM_DB_SPL[0] - LTASS_LOW_SLOPE_DB_PER_OCT * (table_oct[0] - octaves),
                  level)


def speech_shaped_noise(n, sr, rng, *, reference=None, level_db_spl=DEFAULT_LEVEL_DB_SPL):
  """Stationary Gaussian noise with the long-term spectrum of speech.

  White Gaussian noise is shaped in the frequency domain by the square root of the target power
  spectrum (a circular zero-phase filter), then set to `level_db_spl`.

  Args:
    n: Number of samples.
    sr: Sample rate in Hz.
    rng: numpy Generator.
    reference: Optional speech, shape (time,), at rate `sr`; its Welch power spectrum is the target.
      Without it the standard LTASS (ANSI S3.5-1997 / Byrne et al. 1994) is used.
    level_db_spl: rms level, dB SPL.

  Returns:
    float32 array, shape (n,).
  """
  _check_n(n)
  _check_rng(rng)
  if isinstance(sr, bool) or not isinstance(sr, (int, float, np.integer, np.floating)) \
      or not np.isfinite(sr) or sr <= 0:  # a string was a TypeError from isfinite
    raise ParameterError(f"sr: expected a positive sample rate in Hz, got {sr!r}")
  freqs_hz = np.fft.rfftfreq(n, d=1.0 / sr)
  if reference is None:
    power = 10.0 ** (ltass_db_spl(freqs_hz) / 10.0)
  else:
    reference = _check_signal(reference, "reference")
    nperseg = min(reference.size, int(round(WELCH_SEGMENT_S * sr)))
    ref_freqs_hz, ref_power = scipy.signal.welch(reference, fs=sr, nperseg=nperseg)
    power = np.interp(freqs_hz, ref_freqs_hz, ref_power)
  power[0] = 0.0  # no DC
  if reference is not None and not np.any(power > 0):
    raise AudioError(f"reference: no power above 0 Hz in {reference.size} samples (too short or "
                     "constant), so there is no spectrum to shape the noise like")
  shaped = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) * np.sqrt(power), n)
  return calibration.set_level(shaped, level_db_spl).astype(np.float32)


def babble(talkers, n, rng, *, n_talkers=4, level_db_spl=DEFAULT_LEVEL_DB_SPL):
  """Multi-talker babble: the sum of random segments of `n_talkers` different recordings.

  Each segment starts at a random sample of its recording and wraps around to its start when the
  recording is shorter than `n`; each is set to the same rms before summing, so no talker
  dominates; the sum is then set to `level_db_spl`.

  Args:
    talkers: List of recordings, each shape (time,), one talker (or utterance) each.
    n: Number of output samples.
    rng: numpy Generator (chooses talkers and start points).
    n_talkers: How many different recordings to sum (<= len(talkers)).
    level_db_spl: rms level of the babble, dB SPL.

  Returns:
    float32 array, shape (n,).
  """
  _check_n(n)
  _check_rng(rng)
  if not isinstance(talkers, (list, tuple)) or not talkers:
    raise ParameterError(f"talkers: expected a non-empty list of 1-D arrays, got {type(talkers).__name__}")
  if isinstance(n_talkers, bool) or not isinstance(n_talkers, (int, np.integer)) or \
      not 1 <= n_talkers <= len(talkers):
    raise ParameterError(f"n_talkers: expected 1..{len(talkers)} (the number of talkers given), "
                         f"got {n_talkers!r}")
  chosen = rng.choice(len(talkers), size=n_talkers, replace=False)
  total = np.zeros(n)
  for i in chosen:
    recording = _check_signal(talkers[i], f"talkers[{i}]")
    start = rng.integers(recording.size)
    segment = np.take(recording, start + np.arange(n), mode="wrap")
    if not np.any(segment):
      raise AudioError(f"talkers[{i}]: the chosen {n}-sample segment is silent")
    total += calibration.set_level(segment, 0.0)  # equal rms for every talker
  return calibration.set_level(total, level_db_spl).astype(np.float32)


def mix_at_snr(speech, noise, snr_db, *, speech_level_db_spl=DEFAULT_LEVEL_DB_SPL):
  """Mixes speech and noise at an exact rms signal-to-noise ratio.

  Works on numpy and jax arrays (jit/vmap friendly; checks run only on concrete values).

  Args:
    speech: Speech, shape (time,).
    noise: Noise, shape (time_noise,) with time_noise >= time; its first `time` samples are used.
    snr_db: Wanted speech-to-noise rms ratio in dB (speech level minus noise level).
    speech_level_db_spl: rms level of the scaled speech, dB SPL.

  Returns:
    (mixture, speech_scaled, noise_scaled), each shape (time,): speech_scaled is at
    `speech_level_db_spl`, noise_scaled at `speech_level_db_spl - snr_db`, mixture their sum.

  Raises:
    ParameterError: shapes do not fit.
    AudioError: speech or noise is silent or not finite.
  """
  xp = jnp if any(isinstance(v, jax.Array) for v in (speech, noise, snr_db)) else np
  speech, noise = calibration.as_signal(speech, "speech"), calibration.as_signal(noise, "noise")
  speech_shape, noise_shape = np.shape(speech), np.shape(noise)  # shapes are known under jit
  if len(speech_shape) != 1 or len(noise_shape) != 1:
    raise ParameterError(f"speech, noise: expected 1-D arrays, got shapes {speech_shape} and "
                         f"{noise_shape}")
  if noise_shape[0] < speech_shape[0]:
    raise ParameterError(f"noise: expected at least len(speech) = {speech_shape[0]} samples, "
                         f"got {noise_shape[0]}")
  if not calibration._is_traced(snr_db):
    if not (np.ndim(snr_db) == 0 and np.isfinite(snr_db)):
      raise ParameterError(f"snr_db: expected a finite number of dB, got {snr_db!r}")
    noise_db_spl = speech_level_db_spl - float(snr_db)  # traced when the speech level is
    if not calibration._is_traced(noise_db_spl) and not (
        calibration.MIN_LEVEL_DB_SPL <= noise_db_spl <= calibration.MAX_LEVEL_DB_SPL):
      raise ParameterError(f"snr_db: {snr_db:g} dB puts the noise at {noise_db_spl:g} dB SPL, "
                           f"outside {calibration.MIN_LEVEL_DB_SPL:g}..."
                           f"{calibration.MAX_LEVEL_DB_SPL:g} dB SPL")
  noise = xp.asarray(noise)[: speech_shape[0]]
  if not calibration._is_traced(noise):
    _check_signal(noise, "noise (first len(speech) samples)")
  speech_scaled = calibration.set_level(speech, speech_level_db_spl)
  noise_scaled = calibration.set_level(noise, speech_level_db_spl - snr_db)
  return speech_scaled + noise_scaled, speech_scaled, noise_scaled
