"""Multiband WDRC: static curve, time constants, perfect reconstruction, and the MHA baseline."""
import dataclasses

import numpy as np
import pytest
import scipy.signal

from dal_widgets.aid.prescription import apply_fir, design_nalr_fir
from dal_widgets.aid.wdrc import (WdrcParams, apply_wdrc, compression_ratio, design_wdrc,
                                  master_hearing_aid, smooth_levels, split_bands)
from dal_widgets.audio.calibration import db_spl_to_rms, rms_to_db_spl
from dal_widgets.errors import ParameterError
from dal_widgets.hearing.audiogram import Audiogram

SR = 16000
FLAT60 = Audiogram((250, 8000), (60, 60))  # CR = 100 / (100 - 60) = 2.5 in every band
NORMAL = Audiogram((250, 8000), (0, 0))
S2 = Audiogram((250, 375, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000),
               (20, 20, 20, 22.5, 25, 35, 55, 75, 95, 95))
SLOPE_RTOL = 0.10  # brief: measured I/O slope within 10% of 1/CR (band overlap adds a little)
LINEAR_SLOPE_ATOL = 0.01  # below threshold nothing depends on level but float rounding
NORMAL_BAND_DB_ATOL = 1.5  # normal hearing still gets NAL-R's +1 dB at 1-1.5 kHz


def _tone_level_out(params, freq_hz, level_db_spl, duration_s=0.4):
  t = np.arange(int(duration_s * SR)) / SR
  x = np.sqrt(2) * db_spl_to_rms(level_db_spl) * np.sin(2 * np.pi * freq_hz * t)
  y = apply_wdrc(x, SR, params)
  steady = y[len(y) // 4: 3 * len(y) // 4]  # away from filter edges and the detector start
  return rms_to_db_spl(np.sqrt(np.mean(steady ** 2)))


def test_compression_ratio_rule():
  np.testing.assert_allclose(compression_ratio([-5, 0, 40, 60, 90, 130]),
                             [1, 1, 100 / 60, 2.5, 3, 3])


@pytest.mark.parametrize("freq_hz", [250.0, 1000.0, 4000.0])
def test_steady_tone_slope_is_one_over_ratio_above_threshold(freq_hz):
  params = design_wdrc(FLAT60, SR)
  assert params.ratio == (2.5,) * params.n_bands
  levels = np.arange(55.0, 81.0, 5.0)  # all above the 45 dB SPL threshold
  out = [_tone_level_out(params, freq_hz, level) for level in levels]
  slope = np.polyfit(levels, out, 1)[0]
  assert slope == pytest.approx(1 / 2.5, rel=SLOPE_RTOL)


def test_steady_tone_is_linear_below_threshold_with_the_makeup_gain():
  params = design_wdrc(FLAT60, SR)
  makeup_db = (1 - 1 / 2.5) * (65 - 45)  # 0 dB gain at the 65 dB SPL reference -> 12 dB here
  levels = np.array([20.0, 30.0, 40.0])
  out = np.array([_tone_level_out(params, 1000.0, level) for level in levels])
  assert np.polyfit(levels, out, 1)[0] == pytest.approx(1.0, abs=LINEAR_SLOPE_ATOL)
  np.testing.assert_allclose(out - levels, makeup_db, atol=0.1)
  assert _tone_level_out(params, 1000.0, 65.0) == pytest.approx(65.0, abs=0.5)


def test_a_kneepoint_above_the_reference_keeps_soft_and_reference_levels_unchanged():
  # compression limiting: T = 80 > R = 65 dB SPL; the reference lies in the linear part
  params = design_wdrc(FLAT60, SR, threshold_db_spl=80.0)
  assert params.makeup_gain_db == (0.0,) * params.n_bands
  for level in (40.0, 65.0):
    assert _tone_level_out(params, 1000.0, level) == pytest.approx(level, abs=0.5)
  assert _tone_level_out(params, 1000.0, 100.0) == pytest.approx(80 + 20 / 2.5, abs=1.0)


def test_level_detector_time_constants():
  hop_s = 1e-3
  step_up = np.r_[np.full(50, 40.0), np.full(200, 80.0)]
  up = smooth_levels(step_up, hop_s, attack_ms=5.0, release_ms=50.0)
  # one-pole: after one time constant, 1 - 1/e of the step
  assert up[49 + 5] == pytest.approx(40 + 40 * (1 - np.exp(-1)), abs=0.01)
  step_down = np.r_[np.full(50, 80.0), np.full(200, 40.0)]
  down = smooth_levels(step_down, hop_s, attack_ms=5.0, release_ms=50.0)
  assert down[49 + 50] == pytest.approx(80 - 40 * (1 - np.exp(-1)), abs=0.01)


def test_filterbank_reconstructs_exactly_and_bands_are_band_pass():
  x = np.random.default_rng(0).standard_normal(4000)
  params = design_wdrc(S2, SR)
  bands = split_bands(x, SR, params.crossover_hz)
  assert bands.shape == (6, 4000)
  np.testing.assert_allclose(bands.sum(axis=0), x, atol=1e-10)
  impulse = np.zeros(8192)
  impulse[4096] = 1.0
  responses = np.abs(np.fft.rfft(split_bands(impulse, SR, params.crossover_hz), axis=-1))
  at_centers = responses[:, np.round(np.array(params.center_hz) * 8192 / SR).astype(int)]
  # band k passes its own centre (> -0.1 dB) and rejects every other centre (< -40 dB)
  np.testing.assert_allclose(np.diag(at_centers), 1.0, atol=0.01)
  assert np.max(at_centers - np.diag(np.diag(at_centers))) < 0.01


def test_normal_hearing_wdrc_is_the_identity_and_mha_is_nearly():
  x = 0.02 * np.random.default_rng(1).standard_normal(SR)  # ~63 dB SPL noise
  np.testing.assert_allclose(apply_wdrc(x, SR, design_wdrc(NORMAL, SR)), x, atol=1e-10)
  y = master_hearing_aid(x, SR, NORMAL)
  spec_x, spec_y = (np.abs(np.fft.rfft(v)) ** 2 for v in (x, y))
  edges = np.linspace(0, len(spec_x), 17).astype(int)  # 16 bands of 500 Hz
  band_db = [10 * np.log10(spec_y[a:b].sum() / spec_x[a:b].sum()) for a, b in
             zip(edges[:-1], edges[1:])]
  np.testing.assert_allclose(band_db, 0.0, atol=NORMAL_BAND_DB_ATOL)
  assert np.corrcoef(x, y)[0, 1] > 0.99


def test_mha_amplifies_soft_high_frequencies_and_stays_aligned():
  rng = np.random.default_rng(2)
  x = db_spl_to_rms(50.0) * rng.standard_normal(SR)
  y = master_hearing_aid(x, SR, S2)
  assert y.shape == x.shape
  lag = np.argmax(scipy.signal.correlate(y, x, mode="full")) - (len(x) - 1)
  assert lag == 0
  spec_x, spec_y = (np.abs(np.fft.rfft(v)) ** 2 for v in (x, y))
  freqs = np.fft.rfftfreq(SR, 1 / SR)
  band = lambda s, lo, hi: s[(freqs >= lo) & (freqs < hi)].sum()
  gain_low = 10 * np.log10(band(spec_y, 200, 300) / band(spec_x, 200, 300))
  gain_high = 10 * np.log10(band(spec_y, 3500, 4500) / band(spec_x, 3500, 4500))
  # S2 is a steep high-frequency loss: NAL-R gives 32 dB at 4 kHz and 0 dB at 250 Hz; the
  # compressor takes back ~8 dB of the loud amplified 4 kHz band and adds ~4 dB to the soft
  # 250 Hz band, leaving about 20 dB of tilt
  assert gain_high > gain_low + 15


def test_batched_input_matches_rows_and_float32_is_kept():
  x = np.random.default_rng(3).standard_normal((2, 3000)).astype(np.float32) * 0.01
  params = design_wdrc(S2, SR)
  y = apply_wdrc(x, SR, params)
  assert y.dtype == np.float32 and y.shape == x.shape
  np.testing.assert_allclose(y[1], apply_wdrc(x[1], SR, params), rtol=1e-5, atol=1e-8)


def test_band_count_follows_the_sample_rate():
  assert design_wdrc(S2, 16000).n_bands == 6
  assert design_wdrc(S2, 8000).n_bands == 5  # 5657 Hz crossover is above 0.8 * Nyquist


def test_errors_name_the_argument():
  params = design_wdrc(S2, SR)
  with pytest.raises(ParameterError, match=r"sr: expected 16000.0 Hz"):
    apply_wdrc(np.zeros(100), 22050, params)
  with pytest.raises(ParameterError, match="x: expected finite samples"):
    apply_wdrc(np.full(100, np.nan), SR, params)
  with pytest.raises(ParameterError, match="x: expected a numeric array"):
    apply_wdrc(np.zeros(1), SR, params)
  with pytest.raises(ParameterError, match="params: expected WdrcParams"):
    apply_wdrc(np.zeros(100), SR, {"ratio": 2})
  with pytest.raises(ParameterError, match="audiogram: expected"):
    design_wdrc([0, 0], SR)
  with pytest.raises(ParameterError, match="max_ratio: expected >= 1"):
    design_wdrc(S2, SR, max_ratio=0.5)
  with pytest.raises(ParameterError, match="audiogram: expected"):
    master_hearing_aid(np.zeros(100), SR, None)
  with pytest.raises(ParameterError, match="sr: expected a sample rate within"):
    master_hearing_aid(np.ones(100), 10, S2)  # not the FIR's n_taps
  for option in ("threshold_db_spl", "reference_db_spl"):
    with pytest.raises(ParameterError, match=f"{option}: expected a finite level"):
      master_hearing_aid(np.ones(100), SR, S2, **{option: float("nan")})
  assert isinstance(params, WdrcParams)


def test_time_channels_audio_is_refused_not_filtered_along_its_channels():
  # audio.load(mono=False) gives (time, channels); read as [..., n_samp] it would be 3000
  # two-sample signals, each "filtered" into garbage of the same shape
  stereo = np.random.default_rng(4).standard_normal((3000, 2)).astype(np.float32) * 0.01
  for run in (lambda x: apply_wdrc(x, SR, design_wdrc(S2, SR)),
              lambda x: master_hearing_aid(x, SR, S2),
              lambda x: apply_fir(x, design_nalr_fir(S2, SR))):
    with pytest.raises(ParameterError, match=r"x: shape \(3000, 2\).*x\.T"):
      run(stereo)
    assert run(stereo.T).shape == (2, 3000)  # time last is the layout these take


def test_hand_built_params_and_bad_options_are_refused_not_broadcast_into_nan():
  params = design_wdrc(S2, SR)
  x = np.random.default_rng(5).standard_normal(3000) * 0.01
  for field, value, match in [("ratio", (2.0,), r"ratio: expected 6 finite numbers"),
                              ("ratio", (0.0,) * 6, r"ratio: expected compression ratios >= 1"),
                              ("makeup_gain_db", (np.nan,) * 6, "makeup_gain_db: expected 6"),
                              ("crossover_hz", params.crossover_hz[::-1],
                               "crossover_hz: expected increasing"),
                              ("attack_ms", float("inf"), "attack_ms: expected a finite time")]:
    with pytest.raises(ParameterError, match=match):
      apply_wdrc(x, SR, dataclasses.replace(params, **{field: value}))
  with pytest.raises(ParameterError, match="release_ms: expected a finite time"):
    design_wdrc(S2, SR, release_ms="50")
  for max_ratio in (0.5, 0, float("nan")):
    with pytest.raises(ParameterError, match="max_ratio: expected >= 1"):
      compression_ratio(30.0, max_ratio=max_ratio)
  with pytest.raises(ParameterError, match="loss_db_hl: expected finite"):
    compression_ratio([30.0, np.nan])
  with pytest.raises(ParameterError, match="taps: expected finite values"):
    apply_fir(x, np.full(5, np.nan))
