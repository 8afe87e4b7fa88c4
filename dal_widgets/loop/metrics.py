"""Evaluation metrics of the DAL loop: neural-activity distances and speech-quality measures.

Two families:
- Auditory-model distances (JAX, jit/vmap friendly, differentiable): `nap_l1`, `nap_correlation`,
  `sai_l1` compare a NAP (or SAI) of the aided signal through the impaired cochlea with the NAP
  of the clean signal through the normal cochlea (DESIGN.md, "The DAL loop").
- Signal measures (numpy, float64, not differentiated): `si_sdr` (Le Roux, Wisdom, Erdogan &
  Hershey 2019, "SDR - half-baked or well done?", ICASSP), `stoi` / ESTOI through pystoi
  (Taal et al. 2011; Jensen & Taal 2016), and `haspi_v2` (Kates & Arehart 2021) through the
  optional pyclarity package.

HASPI v2 is optional. `./dev` installs it; by hand, without pyclarity's heavy requirements (a
plain install pulls CUDA torch):

    pip install "dal-widgets[metrics]"   # numba
    pip install --no-deps pyclarity

`haspi_v2` returns None when `clarity` cannot be imported; nothing else depends on it.
"""
import functools
import importlib
import inspect
import warnings

import jax.numpy as jnp
import numpy as np

from dal_widgets import caught_warnings
from dal_widgets.aid.prescription import check_time_last
from dal_widgets.audio.calibration import FULL_SCALE_RMS_DB_SPL, rms, rms_to_db_spl
from dal_widgets.errors import ParameterError
from dal_widgets.finite import has_nonfinite
from dal_widgets.hearing.audiogram import Audiogram

# SI-SDR: the residual energy is floored at this fraction of the target energy, so a perfect
# estimate gives a finite 150 dB instead of inf (float64 rounding of a scaled copy is ~-300 dB).
SI_SDR_RESIDUAL_FLOOR = 1e-15
# HASPI v2 reads the hearing loss at these audiometric frequencies (Kates & Arehart 2021;
# pyclarity clarity/evaluator/haspi/haspi.py).
HASPI_FREQS_HZ = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 6000.0)
HASPI_MODULE = "clarity.evaluator.haspi"


class StoiTooShortWarning(UserWarning):
  """STOI returned NaN: too little speech for one 384 ms analysis segment."""


class HaspiBelowThresholdWarning(UserWarning):
  """HASPI returned NaN: at most one envelope segment of the clean speech is above HASPI's
  threshold (speech too quiet or too short)."""


def _check_speech(clean, metric):
  """ParameterError for a constant (e.g. digitally silent) clean signal: no speech to score."""
  if np.ptp(clean) == 0:
    raise ParameterError(f"clean: expected speech, got a constant (silent) signal ({metric} is "
                         "undefined)")


def _check_pair(a, b, names, min_ndim=1):
  """Two arrays to compare: equal shapes, at least `min_ndim`-D, finite values (when concrete;
  jit-safe)."""
  shape_a, shape_b = jnp.shape(a), jnp.shape(b)
  if len(shape_a) < min_ndim:
    raise ParameterError(f"{names[0]}: expected at least {min_ndim}-D, got shape {shape_a}")
  if shape_a != shape_b:
    raise ParameterError(f"{names[0]}, {names[1]}: expected equal shapes, got {shape_a} and "
                         f"{shape_b}")
  if 0 in shape_a:  # the mean of nothing is NaN
    raise ParameterError(f"{names[0]}, {names[1]}: expected non-empty arrays, got shape {shape_a}")
  for name, v in zip(names, (a, b)):
    if has_nonfinite(v):
      raise ParameterError(f"{name}: expected finite values, got NaN or inf")


def _mean_abs_difference(a, b):
  a = jnp.asarray(a)
  b = jnp.asarray(b)
  return jnp.mean(jnp.abs(a - b))


def nap_l1(nap_a, nap_b):
  """Mean absolute difference of two NAPs over all time-channel cells.

  Args:
    nap_a: NAP, shape [n_samp, n_ch] (any shape works), NAP units.
    nap_b: NAP of the same shape.

  Returns:
    Scalar jax array, NAP units; 0 for identical NAPs, symmetric in its arguments.

  Raises:
    ParameterError: if the shapes differ, the NAPs are 0-D or empty.
  """
  _check_pair(nap_a, nap_b, ("nap_a", "nap_b"))
  return _mean_abs_difference(nap_a, nap_b)


def sai_l1(sai_a, sai_b):
  """Mean absolute difference of two SAIs over all frame-channel-lag cells.

  Args:
    sai_a: SAI frames, shape [n_frames, n_ch, sai_width], NAP units.
    sai_b: SAI frames of the same shape.

  Returns:
    Scalar jax array, NAP units; 0 for identical images, symmetric in its arguments.

  Raises:
    ParameterError: if the shapes differ, the images are 0-D or empty.
  """
  _check_pair(sai_a, sai_b, ("sai_a", "sai_b"))
  return _mean_abs_difference(sai_a, sai_b)


def nap_correlation(nap_a, nap_b):
  """Pearson correlation of two NAPs, all time-channel cells pooled into one sample.

  Args:
    nap_a: NAP, shape [n_samp, n_ch] (any shape works), NAP units.
    nap_b: NAP of the same shape.

  Returns:
    Scalar jax array in [-1, 1]; 1 for identical (non-constant) NAPs. When either NAP is
    constant the correlation is undefined and 0 is returned (gradients stay finite).

  Raises:
    ParameterError: if the shapes differ, the NAPs are 0-D or empty.
  """
  _check_pair(nap_a, nap_b, ("nap_a", "nap_b"))
  a = jnp.ravel(jnp.asarray(nap_a))
  b = jnp.ravel(jnp.asarray(nap_b))
  a = a - jnp.mean(a)
  b = b - jnp.mean(b)
  covariance = jnp.sum(a * b)
  variance_product = jnp.sum(a * a) * jnp.sum(b * b)
  defined = variance_product > 0
  safe = jnp.where(defined, variance_product, 1.0)  # double where: no NaN in the gradient
  return jnp.where(defined, covariance / jnp.sqrt(safe), 0.0)


def _signal_pair(estimate, reference, names):
  """Two float64 numpy signals [..., n_samp] of equal shape and finite samples."""
  estimate = np.asarray(estimate, dtype=np.float64)
  reference = np.asarray(reference, dtype=np.float64)
  _check_pair(estimate, reference, names)
  check_time_last(estimate, names[0])
  if estimate.shape[-1] < 2:
    raise ParameterError(f"{names[0]}: expected at least 2 samples, got shape {estimate.shape}")
  return estimate, reference


def si_sdr(estimate, reference):
  """Scale-invariant signal-to-distortion ratio (Le Roux et al. 2019), dB.

  Both signals are made zero-mean; the reference is scaled to best fit the estimate,
  alpha = <estimate, reference> / ||reference||^2, and
  SI-SDR = 10 log10(||alpha reference||^2 / ||estimate - alpha reference||^2).
  A gain change of the estimate does not change the value.

  Args:
    estimate: Processed signal, shape [..., n_samp], digital units.
    reference: Clean signal, same shape.

  Returns:
    float for 1-D input, else float64 array of shape [...]. At most
    -10 log10(SI_SDR_RESIDUAL_FLOOR) = 150 dB (a perfect estimate).

  Raises:
    ParameterError: on shape mismatch, non-finite samples, a silent (constant) reference, or
      (time, channels) audio (see aid.prescription.check_time_last).
  """
  estimate, reference = _signal_pair(estimate, reference, ("estimate", "reference"))
  estimate = estimate - estimate.mean(axis=-1, keepdims=True)
  reference = reference - reference.mean(axis=-1, keepdims=True)
  reference_energy = np.sum(reference ** 2, axis=-1, keepdims=True)
  if np.any(reference_energy == 0):
    raise ParameterError("reference: expected a non-silent signal, got a constant one "
                         "(SI-SDR is undefined)")
  alpha = np.sum(estimate * reference, axis=-1, keepdims=True) / reference_energy
  target = alpha * reference
  target_energy = np.sum(target ** 2, axis=-1)
  residual_energy = np.sum((estimate - target) ** 2, axis=-1)
  floor = SI_SDR_RESIDUAL_FLOOR * np.maximum(target_energy, reference_energy[..., 0])
  with np.errstate(divide="ignore"):
    value = 10.0 * np.log10(target_energy / np.maximum(residual_energy, floor))
  value = np.maximum(value, 10.0 * np.log10(SI_SDR_RESIDUAL_FLOOR))  # estimate orthogonal
  return float(value) if value.ndim == 0 else value


def stoi(clean, processed, sr, extended=False):
  """Short-time objective intelligibility (Taal et al. 2011) or ESTOI (Jensen & Taal 2016).

  Computed by pystoi, which resamples to 10 kHz, drops frames more than 40 dB below the
  loudest one and correlates 384 ms one-third-octave envelopes.

  Args:
    clean: Clean speech, shape [n_samp], digital units.
    processed: Processed speech, same shape.
    sr: Sample rate of both, Hz.
    extended: True for ESTOI.

  Returns:
    float, roughly 0..1 (higher is more intelligible); NaN (with a warning) when the speech
    is too short for one 384 ms analysis segment after silent frames are removed.

  Raises:
    ParameterError: on shape mismatch, non-1-D input, non-finite samples, a bad sr, or a constant
      (silent) clean signal.
  """
  processed, clean = _signal_pair(processed, clean, ("processed", "clean"))
  _check_mono_and_sr(clean, sr)
  _check_speech(clean, "STOI")
  from pystoi import stoi as pystoi_stoi  # imported here: it pulls in scipy submodules slowly
  with caught_warnings.recorded() as caught:
    try:
      value = float(pystoi_stoi(clean, processed, int(sr), extended=bool(extended)))
      too_short = any("Not enough STFT frames" in str(w.message) for w in caught)
    except np.exceptions.AxisError:  # pystoi fails outright below one STFT frame (25.6 ms)
      too_short = True
  if too_short:
    warnings.warn(f"stoi: less than one 384 ms segment of speech is left once frames more than "
                  f"40 dB below the loudest are removed (of {clean.shape[0] / sr:.2f} s in all); "
                  "returning NaN", StoiTooShortWarning, stacklevel=2)
    return float("nan")
  return value


def _check_mono_and_sr(clean, sr):
  if clean.ndim != 1:
    raise ParameterError(f"clean: expected 1-D audio (n_samp,), got shape {clean.shape}")
  if isinstance(sr, bool) or not isinstance(sr, (int, float, np.number)) or not sr > 0:
    raise ParameterError(f"sr: expected a positive sample rate in Hz, got {sr!r}")


@functools.cache
def _haspi_module():
  """pyclarity's HASPI module, or None when pyclarity is not installed."""
  try:
    return importlib.import_module(HASPI_MODULE)
  except ImportError:
    return None


def haspi_available() -> bool:
  """True when pyclarity (HASPI v2) can be imported."""
  return _haspi_module() is not None


def haspi_v2(clean, processed, sr, audiogram):
  """HASPI v2 intelligibility (Kates & Arehart 2021) of aided speech for a listener, if available.

  The clean reference is heard unaided by a normal ear; the processed (aided) signal by the
  impaired ear. Levels use the project calibration: digital rms 1.0 = 100 dB SPL, passed to
  HASPI as its `level1`. Installed as the module docstring says.

  Args:
    clean: Clean speech, shape [n_samp], digital units (not amplified).
    processed: Aided speech, same shape.
    sr: Sample rate of both, Hz.
    audiogram: The listener's dal_widgets Audiogram (read at HASPI_FREQS_HZ).

  Returns:
    float in 0..1, or None when pyclarity is not installed; NaN (with a
    HaspiBelowThresholdWarning) when the clean speech is too quiet or too short for HASPI (at
    most one of its envelope segments above threshold; pyclarity raises ValueError then).

  Raises:
    ParameterError: on bad signals (shape mismatch, non-1-D, non-finite, constant clean), a bad
      sr, or an audiogram that is not an Audiogram.
  """
  module = _haspi_module()
  if module is None:
    return None
  processed, clean = _signal_pair(processed, clean, ("processed", "clean"))
  _check_mono_and_sr(clean, sr)
  _check_speech(clean, "HASPI")
  if not isinstance(audiogram, Audiogram):
    raise ParameterError(f"audiogram: expected a dal_widgets Audiogram, got "
                         f"{type(audiogram).__name__}")
  loss_db_hl = np.asarray(audiogram.at(np.asarray(HASPI_FREQS_HZ)), dtype=np.float64)
  # pyclarity changed the argument from a loss vector ("hearing_loss") to its own Audiogram.
  if "audiogram" in inspect.signature(module.haspi_v2).parameters:
    from clarity.utils.audiogram import Audiogram as ClarityAudiogram
    hearing = ClarityAudiogram(levels=loss_db_hl, frequencies=np.asarray(HASPI_FREQS_HZ))
  else:
    hearing = loss_db_hl
  try:
    score, _ = module.haspi_v2(clean, float(sr), processed, float(sr), hearing,
                               FULL_SCALE_RMS_DB_SPL)
  except ValueError as err:
    if "below threshold" not in str(err):
      raise
    level = float(rms_to_db_spl(rms(clean)))
    warnings.warn(f"haspi_v2: the clean speech ({clean.shape[0] / sr:.2f} s, rms {level:.0f} dB "
                  "SPL) is too quiet or too short for HASPI (at most one envelope segment above "
                  "its threshold); returning NaN",
                  HaspiBelowThresholdWarning, stacklevel=2)
    return float("nan")
  return float(score)


__all__ = ["HASPI_FREQS_HZ", "HaspiBelowThresholdWarning", "StoiTooShortWarning",
           "haspi_available", "haspi_v2", "nap_correlation", "nap_l1", "sai_l1", "si_sdr", "stoi"]
