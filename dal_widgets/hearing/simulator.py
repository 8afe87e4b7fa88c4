"""Listening simulator: let a normal-hearing listener hear (roughly) what an impaired ear hears.

Method (a short-time Fourier transform version of Moore & Glasberg 1993, Baer & Moore 1993 and
Nejime & Moore 1997):

1. STFT with 32 ms periodic Hann windows and 75 % overlap (scipy.signal.stft / istft).
2. The audiogram loss at each bin frequency, HL(f) >= 0 (better-than-0 dB HL counts as 0), is split
   into an outer-hair-cell part OHC(f) = min(ohc_fraction * HL, 60 dB) and an inner-hair-cell part
   IHC(f) = HL - OHC (Moore & Glasberg 2004 attribute at most ~55-65 dB of a loss to OHC damage).
3. Spectral smearing for the OHC part (Baer & Moore 1993): the short-time power spectrum is
   convolved across frequency with a Gaussian whose equivalent rectangular bandwidth is
   ERB(f) * sqrt(b^2 - 1), so that normal auditory filters (ERB, Glasberg & Moore 1990) listening
   to it act like filters b times broader. b = 1 + OHC / 30 dB (about 2x at 30 dB and 3x at 60 dB
   of OHC loss; Glasberg & Moore 1986, Moore 2007 ch. 3). Each frame's power is conserved.
4. Band level L(f): the input power summed through the impaired ear's auditory filter at each bin
   (a Gaussian of peak gain 1 and width b * ERB(f), so a tone reads its own level and a noise
   reads the power of the broadened band), smoothed over time with a fast attack and a slower
   release, in dB SPL (calibration: digital rms 1.0 = 100 dB SPL). The gains of step 5 are
   applied to the smeared spectrum.
5. The IHC part is a plain attenuation applied to the band level first (L' = L - IHC; IHC loss acts
   before the cochlear compression, as in Moore & Glasberg 2004). Loudness recruitment for the OHC
   part is a level-dependent expansion (Moore & Glasberg 1993; Nejime & Moore 1997): output level
   L_out = L_top - (L_top - L') * E with E = (L_top - T0) / (L_top - T0 - OHC), where T0(f) is the
   normal threshold (0 dB HL, ISO 389-7 free field) and L_top = 100 dB SPL, where recruitment is
   complete. A sound at the impaired threshold T0 + HL maps to T0; sounds at L_top lose only the
   IHC attenuation times E. The expansion never amplifies (gain <= 0 dB).
6. Resynthesis. Baer & Moore (1993) gave the smeared power spectrum the original phases. With
   75 % overlap that undoes the smearing: for a steady tone every bin's phase turns at the tone's
   frequency from frame to frame, so the inverse STFT (overlap-add, a least-squares fit to a
   consistent STFT) folds the smeared skirts back into the tone and cancels most of their power
   (a 70 dB SPL tone at 20 dB HL lost ~6 dB between bin centres; on a bin centre the skirt bins
   held only rounding noise, whose phases mostly survive). So each bin is split: a part with the
   original phase carries min(smeared, original) power (the peaks, as in Baer & Moore), and the
   power that smearing added is carried by the STFT of a fixed-seed Gaussian noise (expected power
   1 per bin), which the overlap-add keeps: the broadened skirts of a tone become a narrow noise
   band. Both parts get the gains of step 5, so the intended power per bin is smeared power x gain.
7. Level check: the output is re-analysed and every bin is scaled by sqrt(intended / measured)
   power in the normal auditory filter (ERB wide, peak gain 1) centred on it, both averaged over
   CORRECTION_AVERAGING_MS and boosts capped at MAX_CORRECTION_BOOST_DB. This repairs the ~0.5-1 dB
   the resynthesis still loses, so a steady tone's output level equals the model's (the sum over
   bins of smeared power x gain) within ~0.5 dB at any frequency and sample rate.

Limits: a monaural spectral-domain sketch, not a validated perceptual model. It omits loss of
temporal fine-structure and of temporal resolution, binaural effects, the middle ear, and
frequency-dependent limits of OHC loss. Gains change frame by frame (8 ms hops), so strong
expansion can sound slightly "musical". Below about 300 Hz the 32 ms window is as wide as an
auditory filter, so band levels of low tones read up to ~1.5 dB low (a little extra attenuation).
A tone comes out slightly below the step-5 formula at its own level (~0.3 dB at 20 dB HL, 1-1.5 dB
at 60 dB HL), as its smeared skirts have lower band levels and so are expanded more. Noise-carried
skirts make a smeared tone a little rough, and the power they carry is spread evenly over a 32 ms
frame, so it can start up to half a frame before an onset (step 7 reduces this).
The audiogram is extended flat beyond its lowest and highest frequency, and the normal threshold
flat below 125 Hz and above 8 kHz.

References: B. C. J. Moore & B. R. Glasberg (1993), JASA 94, 2050-2062; T. Baer & B. C. J. Moore
(1993), JASA 94, 1229-1241; Y. Nejime & B. C. J. Moore (1997), JASA 102, 603-615;
B. R. Glasberg & B. C. J. Moore (1990), Hear. Res. 47, 103-138; B. C. J. Moore & B. R. Glasberg
(2004), Hear. Res. 188, 70-88; F. M. Johannesen, P. Perez-Gonzalez & E. A. Lopez-Poveda (2014),
Front. Neurosci. 8, 214 (the OHC share of a loss).
"""
import numbers

import numpy as np
import scipy.ndimage
import scipy.signal

from dal_widgets.audio.calibration import FULL_SCALE_RMS_DB_SPL
from dal_widgets.audio.io import validate
from dal_widgets.errors import ParameterError
from dal_widgets.hearing.audiogram import (MAX_FREQ_HZ, MIN_FREQ_HZ, Audiogram,
                                           reference_threshold_db_spl)

FRAME_MS = 32.0  # STFT window; 31 Hz bins resolve auditory filters (ERB(250 Hz) = 52 Hz)
OVERLAP_FRACTION = 0.75  # periodic Hann at 75 % overlap adds up to a constant (COLA)
DEFAULT_OHC_FRACTION = 2.0 / 3.0  # share of a loss due to OHC damage (60-70%: Johannesen et al.
#                                   2014; the value of hearing.fit.OHC_FRACTION)
MAX_OHC_LOSS_DB = 60.0  # OHC damage accounts for at most ~55-65 dB (Moore & Glasberg 2004)
OHC_LOSS_PER_BROADENING_DB = 30.0  # b = 1 + OHC/30: 2x at 30 dB, 3x at 60 dB (Moore 2007 ch. 3)
RECRUITMENT_COMPLETE_DB_SPL = 100.0  # loud sounds are about equally loud (Moore & Glasberg 1993)
ATTACK_MS = 5.0  # band-level smoothing, rising levels (fast, like Nejime & Moore's envelopes)
RELEASE_MS = 20.0  # band-level smoothing, falling levels
LEVEL_FLOOR_DB_SPL = -30.0  # band levels below this are treated as this (far below threshold)
ERB_MIN_HZ = 24.7  # Glasberg & Moore (1990): ERB(f) = 24.7 * (4.37 f / 1000 + 1) Hz
ERB_PER_KHZ = 24.7 * 4.37
CARRIER_NOISE_SEED = 0  # fixed seed of the noise carrying smeared power (output is deterministic)
CORRECTION_AVERAGING_MS = 40.0  # step 7: band powers averaged over ~5 hops before their ratio
MAX_CORRECTION_BOOST_DB = 10.0  # step 7 repairs losses of ~0.5-3 dB; no big boosts of empty bands


def erb_hz(freqs_hz):
  """Equivalent rectangular bandwidth of the normal auditory filter (Glasberg & Moore 1990), Hz."""
  return ERB_MIN_HZ + ERB_PER_KHZ * np.asarray(freqs_hz, dtype=np.float64) / 1000.0


def _gaussian_rows(centres_hz, widths_hz, freqs_hz):
  """Matrix [len(centres), len(freqs)] of exp(-pi ((f - centre) / width)^2): row ERB = width.

  A zero width gives a row that is 1 at the centre bin and 0 elsewhere.
  """
  widths = np.maximum(widths_hz, 1e-12)[:, None]
  rows = np.exp(-np.pi * ((freqs_hz[None, :] - centres_hz[:, None]) / widths) ** 2)
  return rows


def _averaged_band_power(filters, bin_power, n_frames):
  """Power [bins, frames] through `filters` [bands, bins], averaged over n_frames STFT frames,
  plus the power of LEVEL_FLOOR_DB_SPL (so that ratios of silent bands stay finite)."""
  floor = 10.0 ** ((LEVEL_FLOOR_DB_SPL - FULL_SCALE_RMS_DB_SPL) / 10.0)
  band = filters @ bin_power
  return scipy.ndimage.uniform_filter1d(band, n_frames, axis=1, mode="nearest") + floor


def _split_loss(audiogram, freqs_hz, ohc_fraction):
  """Per-frequency (ohc_db, ihc_db) parts of the loss, both >= 0."""
  loss_db = np.maximum(audiogram.at(np.maximum(freqs_hz, MIN_FREQ_HZ)), 0.0)
  ohc_db = np.minimum(ohc_fraction * loss_db, MAX_OHC_LOSS_DB)
  return ohc_db, loss_db - ohc_db


def _smooth_over_time(band_power, hop_s):
  """One-pole attack/release smoothing of band power along axis 1 (frames)."""
  a_attack = np.exp(-hop_s / (ATTACK_MS / 1000.0))
  a_release = np.exp(-hop_s / (RELEASE_MS / 1000.0))
  out = np.empty_like(band_power)
  env = band_power[:, 0]
  for t in range(band_power.shape[1]):
    now = band_power[:, t]
    a = np.where(now > env, a_attack, a_release)
    env = a * env + (1.0 - a) * now
    out[:, t] = env
  return out


def _recruitment_gain_db(level_db_spl, ohc_db, ihc_db, normal_threshold_db_spl):
  """Gain in dB for band levels [n_bins, n_frames]; see module docstring, step 5."""
  top = RECRUITMENT_COMPLETE_DB_SPL
  headroom = top - normal_threshold_db_spl  # > MAX_OHC_LOSS_DB for every frequency
  expansion = headroom / (headroom - ohc_db)
  attenuated = level_db_spl - ihc_db[:, None]
  ohc_gain_db = np.minimum((attenuated - top) * (expansion[:, None] - 1.0), 0.0)
  return ohc_gain_db - ihc_db[:, None]


def simulate_hearing_loss(x, sr, audiogram, *, ohc_fraction=DEFAULT_OHC_FRACTION):
  """Processes a sound so that a normal-hearing listener hears roughly what `audiogram` hears.

  See the module docstring for the method (threshold elevation, loudness recruitment, spectral
  smearing) and its limits.

  Args:
    x: Mono sound, shape (time,), digital units calibrated by dal_widgets.audio.calibration
      (rms 1.0 = 100 dB SPL); any real float dtype.
    sr: Sample rate in Hz (8000..48000).
    audiogram: Audiogram of the simulated ear.
    ohc_fraction: Share (0..1) of the dB HL loss due to outer-hair-cell damage, capped at
      MAX_OHC_LOSS_DB; it sets recruitment and smearing. The rest is a plain attenuation.

  Returns:
    float32 array, shape (time,) like `x`, same calibration. With no loss at any frequency the
    input is returned unchanged (a copy).

  Raises:
    ParameterError: bad shape or sample rate, `audiogram` not an Audiogram, `ohc_fraction`
      outside 0..1.
    AudioError: empty or non-finite `x`.
  """
  x = validate(x, sr, full_scale_warning=False, _stacklevel=3)  # float in and out: no clipping
  if not isinstance(audiogram, Audiogram):
    raise ParameterError(f"audiogram: expected an Audiogram, got {type(audiogram).__name__}")
  if (isinstance(ohc_fraction, bool) or not isinstance(ohc_fraction, numbers.Real)
      or not 0.0 <= ohc_fraction <= 1.0):
    raise ParameterError(f"ohc_fraction: expected a number in 0..1, got {ohc_fraction!r}")
  n_window = 2 * int(round(FRAME_MS / 1000.0 * sr / 2))  # even length
  hop = int(round(n_window * (1.0 - OVERLAP_FRACTION)))
  freqs_hz = np.fft.rfftfreq(n_window, d=1.0 / sr)
  ohc_db, ihc_db = _split_loss(audiogram, freqs_hz, float(ohc_fraction))
  if not np.any(ohc_db + ihc_db > 0.0):
    return x.copy()

  window = scipy.signal.get_window("hann", n_window)
  stft_kw = dict(fs=sr, window=window, nperseg=n_window, noverlap=n_window - hop)
  padded = np.zeros(max(x.shape[0], n_window))  # stft needs at least one full window
  padded[:x.shape[0]] = x
  _, _, spec = scipy.signal.stft(padded, **stft_kw)  # [n_bins, n_frames]
  # Per-bin factor turning |X|^2 (scipy scales X by 1/sum(window)) into mean-square signal power,
  # so that a sum over one-sided bins is the frame's power (Parseval).
  to_power = np.sum(window) ** 2 / (n_window * np.sum(window ** 2)) * np.full(len(freqs_hz), 2.0)
  to_power[0] = to_power[-1] = to_power[0] / 2.0  # DC and Nyquist bins appear once
  magnitude = np.abs(spec)
  phase = np.where(magnitude > 0, spec / np.where(magnitude > 0, magnitude, 1.0), 1.0)
  power = magnitude ** 2 * to_power[:, None]

  broadening = 1.0 + ohc_db / OHC_LOSS_PER_BROADENING_DB
  smear_widths_hz = erb_hz(freqs_hz) * np.sqrt(broadening ** 2 - 1.0)
  smear = _gaussian_rows(freqs_hz, smear_widths_hz, freqs_hz).T  # [target, source]
  smear /= np.sum(smear, axis=0, keepdims=True)  # each source bin keeps its power
  # The impaired ear's band power: its broadened auditory filters (peak gain 1) on the input.
  impaired_filters = _gaussian_rows(freqs_hz, broadening * erb_hz(freqs_hz), freqs_hz)
  band_power = _smooth_over_time(impaired_filters @ power, hop / sr)
  smeared_power = smear @ power
  with np.errstate(divide="ignore"):
    level_db_spl = FULL_SCALE_RMS_DB_SPL + 10.0 * np.log10(band_power)
  level_db_spl = np.maximum(level_db_spl, LEVEL_FLOOR_DB_SPL)
  normal_threshold_db_spl = reference_threshold_db_spl(np.clip(freqs_hz, MIN_FREQ_HZ, MAX_FREQ_HZ))
  gain_db = _recruitment_gain_db(level_db_spl, ohc_db, ihc_db, normal_threshold_db_spl)
  intended_power = smeared_power * 10.0 ** (gain_db / 10.0)

  # Step 6: original phases carry min(smeared, original) power; the power that smearing added
  # rides on a fixed-seed noise's STFT, scaled to an expected |N|^2 of 1 in scipy's units.
  kept_fraction = np.minimum(smeared_power, power) / np.maximum(smeared_power, np.finfo(float).tiny)
  noise = np.random.default_rng(CARRIER_NOISE_SEED).standard_normal(padded.shape[0])
  _, _, carrier = scipy.signal.stft(noise, **stft_kw)
  carrier *= np.sum(window) / np.sqrt(np.sum(window ** 2))
  out_magnitude = np.sqrt(intended_power / to_power[:, None])
  out_spec = out_magnitude * (np.sqrt(kept_fraction) * phase
                              + np.sqrt(1.0 - kept_fraction) * carrier)
  _, y = scipy.signal.istft(out_spec, **stft_kw)

  # Step 7: one re-analysis pass so that each normal auditory filter gets the intended power.
  normal_filters = _gaussian_rows(freqs_hz, erb_hz(freqs_hz), freqs_hz)
  n_average = max(1, int(round(CORRECTION_AVERAGING_MS / 1000.0 * sr / hop)))
  _, _, spec = scipy.signal.stft(y[:padded.shape[0]], **stft_kw)
  ratio = (_averaged_band_power(normal_filters, intended_power, n_average)
           / _averaged_band_power(normal_filters, np.abs(spec) ** 2 * to_power[:, None], n_average))
  correction = np.sqrt(np.minimum(ratio, 10.0 ** (MAX_CORRECTION_BOOST_DB / 10.0)))
  _, y = scipy.signal.istft(spec * correction, **stft_kw)
  return y[:x.shape[0]].astype(np.float32)
