"""Tests of dal_widgets.hearing.simulator: normal = identity, threshold, recruitment, levels."""
import warnings

import numpy as np
import pytest

from dal_widgets.audio.calibration import rms, rms_to_db_spl, tone_amplitude
from dal_widgets.errors import AudioError, ParameterError
from dal_widgets.hearing.audiogram import Audiogram, reference_threshold_db_spl
from dal_widgets.hearing.presets import NORMAL, preset
from dal_widgets.hearing.simulator import (DEFAULT_OHC_FRACTION, RECRUITMENT_COMPLETE_DB_SPL,
                                           simulate_hearing_loss)

SR = 16000  # Hz
DURATION_S = 0.5
LOSS_TOLERANCE_DB = 5.0  # brief: a soft tone loses "about" the dB HL loss; the window, smearing and
#                          off-centre bins shift it by 1-2 dB (measured 39.8 dB for 40 dB HL)
MIN_RECRUITMENT_DB = 10.0  # a 90 dB SPL tone must lose at least this much less than a 45 dB one
NEAR_IDENTITY_ATOL = 1e-6  # STFT -> ISTFT with unit gains: float64 round-off, then float32
FLAT_40 = Audiogram([250, 8000], [40, 40], name="flat 40")
FLAT_20 = Audiogram([250, 8000], [20, 20], name="flat 20")
MODEL_TOLERANCE_DB = 1.0  # a steady tone's level vs the module docstring's step-5 formula; the
#                           smeared skirts' extra expansion puts it ~0.3 dB low at 20 dB HL
BIN_INVARIANCE_DB = 0.5  # spread of one tone's level over bin positions and sample rates (the
#                          original-phase resynthesis gave 5-6 dB)


def _tone(freq_hz, level_db_spl, duration_s=DURATION_S, sr=SR):
  t = np.arange(int(duration_s * sr)) / sr
  return (tone_amplitude(level_db_spl) * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _mid_level_db_spl(y):
  """Level in dB SPL over the middle half (away from the edges)."""
  mid = slice(len(y) // 4, 3 * len(y) // 4)
  return float(rms_to_db_spl(float(rms(y[mid]))))


def _model_level_db_spl(freq_hz, level_db_spl, loss_db):
  """Step 5 of the module docstring for a tone at the band level of its own frequency, dB SPL."""
  ohc_db = DEFAULT_OHC_FRACTION * loss_db  # below the 60 dB cap here
  top = RECRUITMENT_COMPLETE_DB_SPL
  headroom = top - float(reference_threshold_db_spl(freq_hz))
  expansion = headroom / (headroom - ohc_db)
  return top - (top - (level_db_spl - (loss_db - ohc_db))) * expansion


def _attenuation_db(x, y):
  """Level drop from x to y in dB, over the middle half (away from the edges)."""
  mid = slice(len(x) // 4, 3 * len(x) // 4)
  return rms_to_db_spl(float(rms(x[mid]))) - rms_to_db_spl(float(rms(y[mid])))


def test_normal_hearing_returns_input_unchanged():
  x = np.random.default_rng(0).normal(0, 0.02, SR).astype(np.float32)
  y = simulate_hearing_loss(x, SR, NORMAL)
  assert y.dtype == np.float32 and y is not x
  np.testing.assert_array_equal(y, x)
  better_than_normal = Audiogram([500, 4000], [-10, 0])  # no amplification for negative dB HL
  np.testing.assert_array_equal(simulate_hearing_loss(x, SR, better_than_normal), x)


def test_tiny_loss_is_nearly_identity():
  # Exercises the full STFT path: a 1e-6 dB loss must change nothing audible.
  x = np.random.default_rng(1).normal(0, 0.02, SR // 2).astype(np.float32)
  y = simulate_hearing_loss(x, SR, Audiogram([1000], [1e-6]))
  np.testing.assert_allclose(y, x, atol=NEAR_IDENTITY_ATOL)


def test_flat_loss_attenuates_soft_tone_by_about_the_loss():
  loss = _attenuation_db(_tone(1000, 45), simulate_hearing_loss(_tone(1000, 45), SR, FLAT_40))
  assert loss == pytest.approx(40.0, abs=LOSS_TOLERANCE_DB)


def test_loud_tone_is_attenuated_much_less_recruitment():
  soft = _attenuation_db(_tone(1000, 45), simulate_hearing_loss(_tone(1000, 45), SR, FLAT_40))
  loud = _attenuation_db(_tone(1000, 90), simulate_hearing_loss(_tone(1000, 90), SR, FLAT_40))
  assert loud < soft - MIN_RECRUITMENT_DB
  assert loud > 0.0  # the IHC part still attenuates loud sounds


def test_attenuation_falls_with_level():
  losses = [_attenuation_db(_tone(1000, level), simulate_hearing_loss(_tone(1000, level), SR,
                                                                      FLAT_40))
            for level in (50, 60, 70, 80, 90)]
  assert np.all(np.diff(losses) < 0)


def test_all_loss_as_ihc_is_plain_attenuation():
  # ohc_fraction=0: no recruitment, no smearing; every level loses the dB HL value.
  for level in (50, 90):
    x = _tone(1000, level)
    loss = _attenuation_db(x, simulate_hearing_loss(x, SR, FLAT_40, ohc_fraction=0.0))
    assert loss == pytest.approx(40.0, abs=0.1)


def test_sloping_loss_attenuates_high_tone_more():
  gram = preset("S2")  # 20 dB HL at 500 Hz, 95 dB HL at 4 kHz
  low = _attenuation_db(_tone(500, 70), simulate_hearing_loss(_tone(500, 70), SR, gram))
  high = _attenuation_db(_tone(4000, 70), simulate_hearing_loss(_tone(4000, 70), SR, gram))
  assert high > low + 40.0


# 2000 Hz sits on an STFT bin centre at 16 kHz; 2010 Hz and 22.05 kHz put it between centres.
@pytest.mark.parametrize("freq_hz, sr", [(2000, SR), (2010, SR), (2000, 22050)])
def test_smearing_spreads_a_tone_across_frequency(freq_hz, sr):
  x = _tone(freq_hz, 80, sr=sr)
  y = simulate_hearing_loss(x, sr, Audiogram([2000], [60]))
  freqs = np.fft.rfftfreq(len(x), 1 / sr)
  def spread_hz(z):
    power = np.abs(np.fft.rfft(z * np.hanning(len(z)))) ** 2
    return np.sqrt(np.sum(power * (freqs - freq_hz) ** 2) / np.sum(power))
  assert spread_hz(y) > 5 * spread_hz(x)


# 31.25 Hz bins at 16 kHz: 1000 and 3000 Hz on a bin centre, 2984.375 Hz half-way, others between.
@pytest.mark.parametrize("freq_hz", [500.0, 1000.0, 1013.0, 2984.375, 3000.0, 3010.0, 6007.0])
def test_tone_level_matches_model_on_and_off_bin_centres(freq_hz):
  y = simulate_hearing_loss(_tone(freq_hz, 70), SR, FLAT_20)
  assert _mid_level_db_spl(y) == pytest.approx(_model_level_db_spl(freq_hz, 70, 20),
                                               abs=MODEL_TOLERANCE_DB)


@pytest.mark.parametrize("sr", [8000, 11025, 16000, 22050, 32000, 44100, 48000])
def test_tone_level_matches_model_at_any_sample_rate(sr):
  y = simulate_hearing_loss(_tone(3000, 70, sr=sr), sr, FLAT_20)
  assert _mid_level_db_spl(y) == pytest.approx(_model_level_db_spl(3000, 70, 20),
                                               abs=MODEL_TOLERANCE_DB)


def test_tone_level_does_not_depend_on_bin_position():
  # Larger loss, so more smearing: the level must still not depend on where the bins fall.
  levels = [_mid_level_db_spl(simulate_hearing_loss(_tone(freq_hz, 70, sr=sr), sr, FLAT_40))
            for freq_hz, sr in [(3000, SR), (3010, SR), (2984.375, SR), (3000, 11025),
                                (3000, 44100)]]
  assert max(levels) - min(levels) < BIN_INVARIANCE_DB


@pytest.mark.parametrize("n_samples, sr", [(1, SR), (100, SR), (SR + 7, SR), (4410, 44100)])
def test_output_finite_and_same_length(n_samples, sr):
  x = np.random.default_rng(2).normal(0, 0.05, n_samples).astype(np.float32)
  y = simulate_hearing_loss(x, sr, preset("N7"))
  assert y.shape == x.shape and y.dtype == np.float32
  assert np.all(np.isfinite(y))


def test_a_loud_calibrated_sound_gives_no_clipping_warning():
  # 100 dB SPL peaks at 1.41 (rms 1.0 = 100 dB SPL); the simulator keeps floats, so nothing clips
  # and there is nothing to warn about (notebook 5 showed "a 16-bit file would clip them").
  x = _tone(1000, 100)
  assert np.max(np.abs(x)) > 1.0
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    y = simulate_hearing_loss(x, SR, FLAT_40)
  assert np.all(np.isfinite(y))


def test_silence_stays_silent():
  with pytest.warns(UserWarning, match="digital silence"):
    y = simulate_hearing_loss(np.zeros(SR // 4, np.float32), SR, preset("N3"))
  np.testing.assert_array_equal(y, 0.0)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(x=np.zeros((10, 2))), ParameterError, r"x: expected 1-D"),
    (dict(sr=1000), ParameterError, r"sr: expected 8000..48000 Hz"),
    (dict(audiogram="N3"), ParameterError, r"audiogram: expected an Audiogram, got str"),
    (dict(ohc_fraction=1.5), ParameterError, r"ohc_fraction: expected a number in 0..1, got 1.5"),
    (dict(ohc_fraction="all"), ParameterError, r"ohc_fraction: expected a number in 0..1"),
    (dict(x=np.array([0.0, np.nan])), AudioError, r"x: contains 1 NaN"),
])
def test_bad_arguments(kwargs, error, match):
  args = dict(x=_tone(1000, 60), sr=SR, audiogram=FLAT_40) | kwargs
  ohc_fraction = args.pop("ohc_fraction", 2 / 3)
  with pytest.raises(error, match=match):
    simulate_hearing_loss(args["x"], args["sr"], args["audiogram"], ohc_fraction=ohc_fraction)
