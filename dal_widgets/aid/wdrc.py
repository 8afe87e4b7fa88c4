"""Multiband wide dynamic range compression (WDRC) and the "master hearing aid" baseline.

Signal path (offline, numpy/scipy, not differentiated):
1. Filterbank: zero-phase Butterworth low-passes LP_1 < ... < LP_{K-1} at the crossovers, and
   bands LP_1 x, (LP_2 - LP_1) x, ..., x - LP_{K-1} x. The bands telescope, so they sum to x
   exactly (perfect reconstruction), and because zero-phase Butterworth magnitudes grow with the
   cut-off, every band is a non-negative band-pass.
2. Level per band: power of the analytic signal (a steady tone reads its rms), averaged over 1 ms
   frames, in dB SPL via the project calibration, smoothed by a peak detector with separate attack
   and release time constants (Kates 2008, "Digital Hearing Aids", dynamic-range compression).
3. Gain per band (static curve): linear below the compression threshold T, slope 1/CR above it.
   A make-up gain puts the 0 dB point at the reference level R, so the compressor keeps the linear
   (e.g. NAL-R) gain for conversational speech, adds gain to soft sounds, and removes it from loud
   ones. A kneepoint above the reference (T > R, compression limiting) leaves R in the linear
   part: no make-up gain, 0 dB below T. Gains are interpolated linearly from frames to samples and
   applied to each band.

Compression-ratio rule (documented choice): the band's hearing loss L (dB HL at the band centre)
shrinks the range of usable levels from [0, UCL] to [L, UCL]; mapping the normal range onto it
(loudness-range restoration, Villchur 1973, JASA 53(6); Kates 2008) gives CR = UCL / (UCL - L)
with a typical uncomfortable level UCL = 100 dB HL, clipped to 1..3 (ratios above ~3 hurt
intelligibility with fast compression; NAL-NL2 rarely prescribes more; severe/profound listeners
prefer lower ratios, Keidser et al. 2012, Trends Amplif 16(4)).
E.g. L = 40 -> 1.67, L = 60 -> 2.5.
"""
import dataclasses

import numpy as np
import scipy.signal

from dal_widgets.aid.prescription import (apply_fir, check_audiogram, check_sr, check_time_last,
                                          design_nalr_fir)
from dal_widgets.audio.calibration import FULL_SCALE_RMS_DB_SPL
from dal_widgets.errors import ParameterError
from dal_widgets.finite import check_not_pcm
from dal_widgets.hearing.audiogram import Audiogram

# Octave bands centred on the audiometric octaves; crossovers at their geometric midpoints.
BAND_CENTERS_HZ = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 8000.0)
MAX_CROSSOVER_FRACTION_OF_NYQUIST = 0.8  # drop crossovers the sample rate cannot support
FILTER_ORDER = 8  # per low-pass; run forward-backward: band leakage at a band centre < -45 dB
ATTACK_MS = 5.0  # fast ("syllabic") WDRC attack, Kates 2008 (typically 1-10 ms)
RELEASE_MS = 50.0  # syllabic release, Kates 2008 (typically 20-100 ms)
THRESHOLD_DB_SPL = 45.0  # per-band compression threshold (kneepoint); WDRC kneepoints 40-55 dB SPL
REFERENCE_DB_SPL = 65.0  # per-band input level where the compressor gain is 0 dB
UCL_DB_HL = 100.0  # typical uncomfortable loudness level used by the CR rule (module docstring)
MAX_RATIO = 3.0  # upper limit of the compression ratio (module docstring)
ENVELOPE_HOP_S = 1e-3  # level-detector frame; well below the attack time
POWER_FLOOR = 1e-20  # digital power floor (-200 dB re full scale, -100 dB SPL): silence has a level


@dataclasses.dataclass(frozen=True)
class WdrcParams:
  """A designed multiband compressor (hashable; tuples of per-band floats).

  Attributes:
    sr: Sample rate in Hz.
    crossover_hz: K - 1 crossover frequencies, increasing.
    center_hz: K band centre frequencies (where the loss for the ratio was read).
    threshold_db_spl: K compression thresholds (band input level, dB SPL).
    ratio: K compression ratios (>= 1; 1 means linear).
    makeup_gain_db: K gains below threshold, dB (0 dB gain at the reference level; 0 when the
      threshold is above it).
    attack_ms: Level-detector attack time constant, ms.
    release_ms: Level-detector release time constant, ms.
  """
  sr: float
  crossover_hz: tuple
  center_hz: tuple
  threshold_db_spl: tuple
  ratio: tuple
  makeup_gain_db: tuple
  attack_ms: float = ATTACK_MS
  release_ms: float = RELEASE_MS

  def __post_init__(self):
    """ParameterError for a hand-built compressor apply_wdrc cannot run: per-band tuples of
    another length would broadcast against the bands, and a ratio below 1 or a time that is not
    a positive finite number gives NaN or a detector that never moves."""
    check_sr(self.sr)
    n = len(self.center_hz) if isinstance(self.center_hz, (tuple, list)) else 0
    if n < 1:
      raise ParameterError(f"center_hz: expected a tuple of band centres in Hz, got "
                           f"{self.center_hz!r}")
    for name, want in (("crossover_hz", n - 1), ("threshold_db_spl", n), ("ratio", n),
                       ("makeup_gain_db", n)):
      values = getattr(self, name)
      if not isinstance(values, (tuple, list)) or len(values) != want \
          or not all(_is_finite_number(v) for v in values):
        per = "crossover" if name == "crossover_hz" else "band"
        raise ParameterError(f"{name}: expected {want} finite numbers (one per {per}), "
                             f"got {values!r}")
    if any(r < 1 for r in self.ratio):
      raise ParameterError(f"ratio: expected compression ratios >= 1, got {self.ratio!r}")
    edges = (0.0,) + tuple(self.crossover_hz) + (self.sr / 2,)
    if any(lo >= hi for lo, hi in zip(edges[:-1], edges[1:])):
      raise ParameterError(f"crossover_hz: expected increasing frequencies within 0..sr/2 = "
                           f"{self.sr / 2:g} Hz, got {self.crossover_hz!r}")
    for name in ("attack_ms", "release_ms"):
      value = getattr(self, name)
      if not _is_finite_number(value) or value <= 0:
        raise ParameterError(f"{name}: expected a finite time > 0 in ms, got {value!r}")

  @property
  def n_bands(self) -> int:
    return len(self.center_hz)


def _is_finite_number(value) -> bool:
  """A finite real scalar (Python or numpy; not a bool, a string or an array)."""
  return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
          and bool(np.isfinite(value)))


def compression_ratio(loss_db_hl, *, max_ratio: float = MAX_RATIO) -> np.ndarray:
  """Compression ratio for a hearing loss: UCL / (UCL - loss), clipped to 1..max_ratio.

  Args:
    loss_db_hl: Hearing loss in dB HL, any shape (negative values count as 0).
    max_ratio: Upper limit of the ratio.

  Returns:
    Ratios, float64, same shape.

  Raises:
    ParameterError: a loss that is not a finite number, or max_ratio not a number >= 1.
  """
  _check_max_ratio(max_ratio)
  try:
    loss = np.asarray(loss_db_hl, dtype=np.float64)
  except (TypeError, ValueError) as err:
    raise ParameterError(f"loss_db_hl: expected numbers in dB HL, got {loss_db_hl!r}") from err
  if not np.all(np.isfinite(loss)):
    raise ParameterError(f"loss_db_hl: expected finite losses in dB HL, got {loss_db_hl!r}")
  loss = np.clip(loss, 0.0, None)
  headroom = np.maximum(UCL_DB_HL - loss, UCL_DB_HL / max_ratio)
  return np.clip(UCL_DB_HL / headroom, 1.0, max_ratio)


def _check_max_ratio(max_ratio) -> None:
  # NaN fails the comparison; inf is allowed (a limiter above the kneepoint)
  number = isinstance(max_ratio, (int, float, np.integer, np.floating))
  if isinstance(max_ratio, bool) or not number or not max_ratio >= 1:
    raise ParameterError(f"max_ratio: expected >= 1, got {max_ratio!r}")


def design_wdrc(audiogram: Audiogram, sr: float, *, threshold_db_spl: float = THRESHOLD_DB_SPL,
                reference_db_spl: float = REFERENCE_DB_SPL, attack_ms: float = ATTACK_MS,
                release_ms: float = RELEASE_MS, max_ratio: float = MAX_RATIO) -> WdrcParams:
  """Designs a multiband compressor for a listener.

  Args:
    audiogram: The listener's Audiogram; the loss at each band centre sets its ratio.
    sr: Sample rate in Hz.
    threshold_db_spl: Compression threshold of every band (band input level, dB SPL).
    reference_db_spl: Band input level at which the compressor gain is 0 dB.
    attack_ms: Attack time constant, ms.
    release_ms: Release time constant, ms.
    max_ratio: Largest compression ratio.

  Returns:
    WdrcParams.

  Raises:
    ParameterError: on a non-Audiogram, sr outside 8000..48000 Hz, times that are not finite
      and positive, max_ratio < 1, or levels that are not finite numbers.
  """
  check_audiogram(audiogram)
  check_sr(sr)
  for name, value in (("attack_ms", attack_ms), ("release_ms", release_ms)):
    if not _is_finite_number(value) or value <= 0:
      raise ParameterError(f"{name}: expected a finite time > 0 in ms, got {value!r}")
  _check_max_ratio(max_ratio)
  for name, level in (("threshold_db_spl", threshold_db_spl), ("reference_db_spl", reference_db_spl)):
    if isinstance(level, bool) or not isinstance(level, (int, float, np.integer, np.floating)) \
        or not np.isfinite(level):
      raise ParameterError(f"{name}: expected a finite level in dB SPL, got {level!r}")
  crossovers = [np.sqrt(lo * hi) for lo, hi in zip(BAND_CENTERS_HZ[:-1], BAND_CENTERS_HZ[1:])]
  crossovers = [f for f in crossovers if f < MAX_CROSSOVER_FRACTION_OF_NYQUIST * sr / 2]
  centers = BAND_CENTERS_HZ[:len(crossovers) + 1]
  ratio = compression_ratio(audiogram.at(centers), max_ratio=max_ratio)
  # 0 dB at the reference: above the kneepoint the curve has fallen by (1 - 1/CR) (R - T) there;
  # below it (T > R) the reference is in the linear part, where the gain is the make-up itself.
  makeup = (1.0 - 1.0 / ratio) * max(reference_db_spl - threshold_db_spl, 0.0)
  n = len(centers)
  return WdrcParams(sr=float(sr), crossover_hz=tuple(float(f) for f in crossovers),
                    center_hz=tuple(float(f) for f in centers),
                    threshold_db_spl=(float(threshold_db_spl),) * n,
                    ratio=tuple(float(r) for r in ratio),
                    makeup_gain_db=tuple(float(g) for g in makeup),
                    attack_ms=float(attack_ms), release_ms=float(release_ms))


def split_bands(x: np.ndarray, sr: float, crossover_hz) -> np.ndarray:
  """Perfect-reconstruction zero-phase band split (module docstring, step 1).

  Args:
    x: Signal, shape [..., n_samp], float64.
    sr: Sample rate in Hz.
    crossover_hz: Increasing crossover frequencies, K - 1 of them.

  Returns:
    Bands, shape [..., K, n_samp]; summing over axis -2 gives x.
  """
  padlen = min(x.shape[-1] - 1, 3 * (2 * FILTER_ORDER + 1))
  lows = [scipy.signal.sosfiltfilt(scipy.signal.butter(FILTER_ORDER, f, fs=sr, output="sos"),
                                   x, axis=-1, padlen=padlen) for f in crossover_hz]
  edges = [np.zeros_like(x)] + lows + [x]
  return np.stack([hi - lo for lo, hi in zip(edges[:-1], edges[1:])], axis=-2)


def band_levels_db_spl(bands: np.ndarray, hop: int) -> np.ndarray:
  """Frame levels of each band: mean analytic-signal power over `hop` samples, dB SPL.

  Args:
    bands: shape [..., K, n_samp].
    hop: Frame length in samples.

  Returns:
    Levels, shape [..., K, n_frames] with n_frames = ceil(n_samp / hop).
  """
  n_samp = bands.shape[-1]
  power = 0.5 * np.abs(scipy.signal.hilbert(bands, axis=-1)) ** 2  # a sine reads its rms^2
  n_frames = -(-n_samp // hop)
  pad = [(0, 0)] * (bands.ndim - 1) + [(0, n_frames * hop - n_samp)]
  power = np.pad(power, pad, mode="edge").reshape(bands.shape[:-1] + (n_frames, hop)).mean(-1)
  return FULL_SCALE_RMS_DB_SPL + 10.0 * np.log10(np.maximum(power, POWER_FLOOR))


def smooth_levels(levels_db: np.ndarray, hop_s: float, attack_ms: float,
                  release_ms: float) -> np.ndarray:
  """Peak detector on frame levels: fast rise (attack), slow decay (release).

  Args:
    levels_db: shape [..., n_frames], dB.
    hop_s: Frame period, s.
    attack_ms: Attack time constant (one-pole, applied when the level rises), ms.
    release_ms: Release time constant (applied when the level falls), ms.

  Returns:
    Smoothed levels, same shape, starting from the first frame's level.
  """
  a_att = np.exp(-hop_s / (attack_ms * 1e-3))
  a_rel = np.exp(-hop_s / (release_ms * 1e-3))
  frames = np.moveaxis(levels_db, -1, 0)
  out = np.empty_like(frames)
  state = frames[0]
  for i, level in enumerate(frames):
    coeff = np.where(level > state, a_att, a_rel)
    state = coeff * state + (1.0 - coeff) * level
    out[i] = state
  return np.moveaxis(out, 0, -1)


def _check_signal(x, sr):
  x = np.asarray(x)
  if x.ndim < 1 or x.shape[-1] < 2 or not np.issubdtype(x.dtype, np.number):
    raise ParameterError(f"x: expected a numeric array [..., n_samp] with n_samp >= 2, "
                         f"got shape {x.shape} dtype {x.dtype}")
  check_time_last(x)
  if not np.all(np.isfinite(x)):
    raise ParameterError("x: expected finite samples, got NaN or inf")
  check_not_pcm(x)
  check_sr(sr)
  return x


def apply_wdrc(x, sr: float, params: WdrcParams) -> np.ndarray:
  """Compresses `x` band by band (module docstring).

  Args:
    x: Signal, shape [..., n_samp], digital units (rms 1.0 = 100 dB SPL).
    sr: Sample rate in Hz; must equal params.sr.
    params: From `design_wdrc` (or built by hand; WdrcParams checks itself when made).

  Returns:
    Compressed signal, same shape; float32 input stays float32, else float64.

  Raises:
    ParameterError: on a bad signal (fewer than 2 samples, NaN/inf, integer PCM counts, or laid
      out (time, channels)) or a sample-rate mismatch.
  """
  x = _check_signal(x, sr)
  if not isinstance(params, WdrcParams):
    raise ParameterError(f"params: expected WdrcParams, got {type(params).__name__}")
  if float(sr) != params.sr:
    raise ParameterError(f"sr: expected {params.sr} Hz (the design rate of params), got {sr}")
  bands = split_bands(x.astype(np.float64), sr, params.crossover_hz)
  hop = max(1, int(round(ENVELOPE_HOP_S * sr)))
  levels = smooth_levels(band_levels_db_spl(bands, hop), hop / sr, params.attack_ms,
                         params.release_ms)
  column = lambda values: np.asarray(values, dtype=np.float64)[:, None]
  over = np.maximum(levels - column(params.threshold_db_spl), 0.0)
  gains_db = column(params.makeup_gain_db) - (1.0 - 1.0 / column(params.ratio)) * over
  # frame i covers samples [i*hop, (i+1)*hop); interpolate between frame centres
  pos = np.clip((np.arange(x.shape[-1]) + 0.5) / hop - 0.5, 0.0, gains_db.shape[-1] - 1)
  i0 = np.floor(pos).astype(int)
  i1 = np.minimum(i0 + 1, gains_db.shape[-1] - 1)
  frac = pos - i0
  gains = 10.0 ** (gains_db / 20.0)
  gains = gains[..., i0] * (1.0 - frac) + gains[..., i1] * frac
  y = np.sum(bands * gains, axis=-2)
  return y.astype(np.float32) if x.dtype == np.float32 else y


def master_hearing_aid(x, sr: float, audiogram: Audiogram, *, profound: bool = False,
                       **wdrc_options) -> np.ndarray:
  """The prescriptive baseline ("MHA"): NAL-R linear FIR, then multiband WDRC.

  Args:
    x: Signal, shape [..., n_samp], digital units (rms 1.0 = 100 dB SPL).
    sr: Sample rate in Hz.
    audiogram: The listener's Audiogram.
    profound: Use NAL-RP for the linear stage.
    **wdrc_options: Keyword options of `design_wdrc` (threshold_db_spl, reference_db_spl, ...).

  Returns:
    Aided signal, same shape as x, time-aligned with it.

  Raises:
    ParameterError: on invalid inputs.
  """
  x = _check_signal(x, sr)
  check_audiogram(audiogram)
  linear = apply_fir(x, design_nalr_fir(audiogram, sr, profound=profound))
  return apply_wdrc(linear, sr, design_wdrc(audiogram, sr, **wdrc_options))
