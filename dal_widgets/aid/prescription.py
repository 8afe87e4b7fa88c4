"""NAL-R linear prescription and its linear-phase FIR realisation.

NAL-R (Byrne & Dillon 1986, "The National Acoustic Laboratories' (NAL) new procedure for selecting
the gain and frequency response of a hearing aid", Ear Hear 7(4):257-265) prescribes real-ear
insertion gain from the audiogram so that all speech bands are amplified to roughly equal loudness:

  X = 0.05 * (H500 + H1000 + H2000)            (= 0.15 * three-frequency average)
  IG(f) = X + 0.31 * H(f) + k(f)   dB,  negative gains set to 0,

with H in dB HL. NAL-RP (Byrne, Parkinson & Newall 1990, Ear Hear 11(1):40-49; 1991, Vanderbilt
Hearing-Aid Report II pp. 295-300) adds, for severe/profound losses, 0.2 dB per dB of
three-frequency average above 60 dB HL and a frequency-response correction when H2000 >= 95 dB HL.
Constants checked against two public implementations: the Auditory Modeling Toolbox `nalrp.m`
(AMT 1.6, after Dillon 2012 "Hearing Aids" 2nd ed.) and the Clarity challenge `enhancer/nalr.py`
(which writes the RP term as 9 + 0.116 * (sum - 180), i.e. 0.198 dB per dB of average).
"""
import numpy as np
import scipy.signal

from dal_widgets.audio.io import MAX_SR, MIN_SR
from dal_widgets.errors import ParameterError
from dal_widgets.finite import check_not_pcm
from dal_widgets.hearing.audiogram import MAX_THRESHOLD_DB_HL, MIN_THRESHOLD_DB_HL, Audiogram

# Prescription frequencies of NAL-R and the speech-spectrum constants k(f), dB (Byrne & Dillon
# 1986, Table; as tabulated in Dillon 2012 and AMT nalrp.m).
NALR_FREQS_HZ = (250.0, 500.0, 1000.0, 1500.0, 2000.0, 3000.0, 4000.0, 6000.0)
NALR_K_DB = (-17.0, -8.0, 1.0, 1.0, -1.0, -2.0, -2.0, -2.0)
NALR_THREE_FREQS_HZ = (500.0, 1000.0, 2000.0)  # frequencies of the three-frequency sum
NALR_SUM_FACTOR = 0.05  # X = 0.05 * (H500 + H1000 + H2000), Byrne & Dillon 1986
NALR_SLOPE = 0.31  # gain per dB HL at each frequency, Byrne & Dillon 1986
# NAL-RP (Byrne, Parkinson & Newall 1990): extra gain per dB of three-frequency average above 60.
NALRP_AVERAGE_KNEE_DB_HL = 60.0
NALRP_AVERAGE_SLOPE = 0.2
# NAL-RP correction for H2000 >= 95 dB HL (Byrne, Parkinson & Newall 1991, Fig. 9), dB at
# NALR_FREQS_HZ, rows for H2000 = 95, 100, ..., 120 dB HL (linear in between, held beyond 120).
NALRP_H2000_DB_HL = (95.0, 100.0, 105.0, 110.0, 115.0, 120.0)
NALRP_H2000_CORRECTION_DB = (
    (4.0, 3.0, 0.0, -1.0, -2.0, -2.0, -2.0, -2.0),
    (6.0, 4.0, 0.0, -2.0, -3.0, -3.0, -3.0, -3.0),
    (8.0, 5.0, 0.0, -3.0, -5.0, -5.0, -5.0, -5.0),
    (11.0, 7.0, 0.0, -3.0, -6.0, -6.0, -6.0, -6.0),
    (13.0, 8.0, 0.0, -4.0, -8.0, -8.0, -8.0, -8.0),
    (15.0, 9.0, 0.0, -5.0, -9.0, -9.0, -9.0, -9.0),
)
# Most channels of one recording (7.1 surround sound has 8): an array whose last axis is this
# short while it has more rows is (time, channels) audio, not a batch of waveforms.
MAX_AUDIO_CHANNELS = 8
# FIR length: 32 ms resolves the 9 dB/octave low-frequency slope of NAL-R to < 1 dB at 500 Hz.
NALR_FIR_DURATION_S = 0.032


def check_audiogram(audiogram) -> Audiogram:
  """Returns `audiogram` or raises ParameterError if it is not an Audiogram."""
  if not isinstance(audiogram, Audiogram):
    raise ParameterError(f"audiogram: expected a dal_widgets.hearing.audiogram.Audiogram, "
                         f"got {type(audiogram).__name__}")
  return audiogram


def nalr_prescription_db(thresholds_db_hl, *, profound: bool = False) -> np.ndarray:
  """NAL-R (or NAL-RP) insertion gains at NALR_FREQS_HZ from thresholds at those frequencies.

  Args:
    thresholds_db_hl: Hearing thresholds in dB HL at NALR_FREQS_HZ, shape [8].
    profound: Apply the NAL-RP corrections for severe/profound losses.

  Returns:
    Insertion gains in dB at NALR_FREQS_HZ, shape [8], all >= 0.

  Raises:
    ParameterError: if thresholds_db_hl is not 8 numbers within an audiometer's range
      (MIN_THRESHOLD_DB_HL..MAX_THRESHOLD_DB_HL).
  """
  h = np.asarray(thresholds_db_hl, dtype=np.float64)
  low, high = MIN_THRESHOLD_DB_HL, MAX_THRESHOLD_DB_HL
  if h.shape != (len(NALR_FREQS_HZ),) or not np.all((h >= low) & (h <= high)):  # NaN fails too
    raise ParameterError(f"thresholds_db_hl: expected {len(NALR_FREQS_HZ)} values from {low:g} to "
                         f"{high:g} dB HL (at {NALR_FREQS_HZ} Hz), got {thresholds_db_hl!r}")
  three = [NALR_FREQS_HZ.index(f) for f in NALR_THREE_FREQS_HZ]
  three_sum = float(np.sum(h[three]))
  x = NALR_SUM_FACTOR * three_sum
  gains = x + NALR_SLOPE * h + np.asarray(NALR_K_DB)
  if profound:
    average = three_sum / 3.0
    gains = gains + NALRP_AVERAGE_SLOPE * max(average - NALRP_AVERAGE_KNEE_DB_HL, 0.0)
    h2000 = h[NALR_FREQS_HZ.index(2000.0)]
    if h2000 >= NALRP_H2000_DB_HL[0]:
      table = np.asarray(NALRP_H2000_CORRECTION_DB)
      gains = gains + np.array([np.interp(h2000, NALRP_H2000_DB_HL, col) for col in table.T])
  return np.maximum(gains, 0.0)


def _log_interp_flat(freqs_hz, table_freqs_hz, table_values):
  """Linear in log-frequency between table points, flat beyond the ends."""
  log_f = np.log(np.clip(freqs_hz, table_freqs_hz[0], table_freqs_hz[-1]))
  return np.interp(log_f, np.log(table_freqs_hz), table_values)


def nalr_gains_db(audiogram: Audiogram, freqs_hz=NALR_FREQS_HZ, *,
                  profound: bool = False) -> np.ndarray:
  """NAL-R insertion gains of a listener at any frequencies.

  The prescription is made at NALR_FREQS_HZ (thresholds read with `audiogram.at`), then
  interpolated linearly in log-frequency, held flat below 250 Hz and above 6 kHz.

  Args:
    audiogram: The listener's Audiogram.
    freqs_hz: Frequencies in Hz (> 0), any shape.
    profound: Use NAL-RP (severe/profound corrections).

  Returns:
    Gains in dB (>= 0), float64, same shape as freqs_hz.

  Raises:
    ParameterError: if audiogram is not an Audiogram or a frequency is not positive.
  """
  check_audiogram(audiogram)
  freqs = np.asarray(freqs_hz, dtype=np.float64)
  if not np.all(np.isfinite(freqs)) or np.any(freqs <= 0):
    raise ParameterError(f"freqs_hz: expected finite positive frequencies in Hz, got {freqs_hz!r}")
  gains = nalr_prescription_db(audiogram.at(NALR_FREQS_HZ), profound=profound)
  return _log_interp_flat(freqs, np.asarray(NALR_FREQS_HZ), gains)


def default_n_taps(sr: float) -> int:
  """Odd FIR length spanning NALR_FIR_DURATION_S at sample rate `sr` (Hz)."""
  return 2 * int(round(sr * NALR_FIR_DURATION_S / 2)) + 1


def check_sr(sr) -> None:
  """Raises ParameterError unless `sr` is a sample rate in Hz the aids are designed for."""
  if isinstance(sr, bool) or not isinstance(sr, (int, float, np.integer, np.floating)) \
      or not MIN_SR <= sr <= MAX_SR:
    raise ParameterError(f"sr: expected a sample rate within {MIN_SR}..{MAX_SR} Hz, got {sr!r}")


def design_nalr_fir(audiogram: Audiogram, sr: float, *, n_taps: int | None = None,
                    profound: bool = False) -> np.ndarray:
  """Linear-phase FIR whose magnitude response follows the NAL-R gains.

  Frequency-sampling design (scipy.signal.firwin2, Hamming window) on a dense grid from 0 Hz to
  Nyquist; the taps are symmetric (type I), so the delay is exactly (n_taps - 1) / 2 samples.

  Args:
    audiogram: The listener's Audiogram.
    sr: Sample rate in Hz.
    n_taps: Odd number of taps (default: 32 ms worth, e.g. 513 at 16 kHz).
    profound: Use NAL-RP.

  Returns:
    FIR taps, float64, shape [n_taps].

  Raises:
    ParameterError: if sr is outside 8000..48000 Hz or n_taps is not an odd int >= 3.
  """
  check_audiogram(audiogram)
  check_sr(sr)
  n_taps = default_n_taps(sr) if n_taps is None else n_taps
  if not isinstance(n_taps, (int, np.integer)) or n_taps < 3 or n_taps % 2 == 0:
    raise ParameterError(f"n_taps: expected an odd int >= 3 (linear phase, integer delay), "
                         f"got {n_taps!r}")
  nyquist = sr / 2.0
  grid_hz = np.linspace(0.0, nyquist, 4 * n_taps + 1)  # denser than the filter can resolve
  gains_db = nalr_gains_db(audiogram, np.maximum(grid_hz, NALR_FREQS_HZ[0]), profound=profound)
  taps = scipy.signal.firwin2(n_taps, grid_hz, 10.0 ** (gains_db / 20.0), fs=sr)
  return 0.5 * (taps + taps[::-1])  # exactly symmetric (firwin2 is only to rounding)


def check_time_last(x, name="x") -> None:
  """Raises ParameterError when `x` is laid out (time, channels), as `audio.load(mono=False)`
  gives, where [..., n_samp] is expected: its last axis, read as time, would be the channels.
  Transposed means: at most MAX_AUDIO_CHANNELS samples per row and more rows than that (a few
  rows of very short signals pass)."""
  if x.ndim >= 2 and x.shape[-1] <= MAX_AUDIO_CHANNELS < x.shape[-2]:
    raise ParameterError(f"{name}: shape {x.shape} has fewer samples (last axis) than rows: "
                         f"expected [..., n_samp], time last; transpose (time, channels) audio "
                         f"with x.T")


def apply_fir(x, taps) -> np.ndarray:
  """Filters `x` with a linear-phase FIR and removes its delay (output aligned with input).

  Args:
    x: Signal, shape [..., n_samp], digital units.
    taps: Odd-length symmetric FIR taps, shape [n_taps].

  Returns:
    Filtered signal, shape of x; a float x keeps its dtype (float64 for integer input).

  Raises:
    ParameterError: if taps is not 1-D of odd length or not finite, or x is empty, not
      finite, integer PCM counts, or laid out (time, channels) (see check_time_last).
  """
  x = np.asarray(x)
  taps = np.asarray(taps, dtype=np.float64)
  if taps.ndim != 1 or taps.size % 2 == 0:
    raise ParameterError(f"taps: expected a 1-D array of odd length, got shape {taps.shape}")
  if not np.all(np.isfinite(taps)):
    raise ParameterError("taps: expected finite values, got NaN or inf")
  if x.ndim < 1 or x.shape[-1] == 0:
    raise ParameterError(f"x: expected shape [..., n_samp] with n_samp >= 1, got {x.shape}")
  check_time_last(x)
  if not np.all(np.isfinite(x)):
    raise ParameterError("x: expected finite samples, got NaN or inf")
  check_not_pcm(x)
  delay = (taps.size - 1) // 2
  kernel = taps.reshape((1,) * (x.ndim - 1) + (-1,))
  full = scipy.signal.oaconvolve(x.astype(np.float64), kernel, mode="full", axes=-1)
  out = full[..., delay:delay + x.shape[-1]]
  return out.astype(x.dtype) if np.issubdtype(x.dtype, np.floating) else out
