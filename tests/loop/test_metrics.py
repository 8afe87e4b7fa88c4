"""Metrics: known answers (identical, scaled, noise), symmetry, errors, optional HASPI."""
import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_widgets.audio import db_spl_to_rms, load_clip, white_noise
from dal_widgets.errors import ParameterError
from dal_widgets.hearing import preset
from dal_widgets.loop import metrics

SR = 16000
CORRELATION_ATOL = 1e-5  # float32 sums over ~1e4 cells; an error in the formula is O(0.1)
SI_SDR_SCALED_MIN_DB = 60.0  # a gain change leaves only float rounding (~-150 dB)
SI_SDR_NOISE_MAX_DB = -20.0  # independent noise: |alpha| ~ 1/sqrt(n), SI-SDR ~ -10 log10(n) dB
STOI_IDENTICAL_MIN = 0.99  # identical signals correlate perfectly in every segment
STOI_NOISE_MAX = 0.45  # unrelated signals: STOI's clipped envelope correlations sit near 0.35
ESTOI_NOISE_MAX = 0.1  # ESTOI normalises each segment to zero mean: chance level is ~0


@pytest.fixture(scope="module")
def speech():
  x, sr = load_clip("slt_04")
  return x[:SR]  # 1 s of speech at 65 dB SPL


def _nap(seed, shape=(400, 8)):
  return np.abs(np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def test_nap_l1_zero_for_identical_and_symmetric():
  a, b = _nap(0), _nap(1)
  assert float(metrics.nap_l1(a, a)) == 0.0
  assert float(metrics.nap_l1(a, b)) == pytest.approx(float(metrics.nap_l1(b, a)))
  assert float(metrics.nap_l1(a, b)) > 0.1


def test_nap_l1_known_answer_is_mean_absolute_difference():
  a = np.zeros((4, 2), np.float32)
  b = np.full((4, 2), 0.5, np.float32)
  b[0, 0] = -1.5  # |.| = 1.5; mean of seven 0.5s and one 1.5 = 0.625
  assert float(metrics.nap_l1(a, b)) == pytest.approx(0.625)


def test_sai_l1_zero_for_identical_and_symmetric():
  a, b = _nap(2, (3, 8, 20)), _nap(3, (3, 8, 20))
  assert float(metrics.sai_l1(a, a)) == 0.0
  assert float(metrics.sai_l1(a, b)) == pytest.approx(float(metrics.sai_l1(b, a)))


def test_nap_correlation_identical_is_one_and_affine_invariant():
  a = _nap(4)
  assert float(metrics.nap_correlation(a, a)) == pytest.approx(1.0, abs=CORRELATION_ATOL)
  affine = 3.0 * a + 1.0
  assert float(metrics.nap_correlation(a, affine)) == pytest.approx(1.0, abs=CORRELATION_ATOL)
  assert float(metrics.nap_correlation(a, -a)) == pytest.approx(-1.0, abs=CORRELATION_ATOL)


def test_nap_correlation_of_independent_naps_is_near_zero():
  value = float(metrics.nap_correlation(_nap(5), _nap(6)))
  assert abs(value) < 0.05  # 3200 cells: standard error ~ 1/sqrt(3200) = 0.018


def test_nap_correlation_constant_nap_gives_zero_and_finite_gradient():
  a = _nap(7)
  flat = np.ones_like(a)
  assert float(metrics.nap_correlation(a, flat)) == 0.0
  grad = jax.grad(lambda x: metrics.nap_correlation(x, jnp.asarray(a)))(jnp.asarray(flat))
  assert np.all(np.isfinite(np.asarray(grad)))


def test_nap_metrics_jit_and_vmap():
  a = np.stack([_nap(8), _nap(9)])
  b = np.stack([_nap(10), _nap(8)])
  batched = jax.jit(jax.vmap(metrics.nap_correlation))(a, b)
  assert batched.shape == (2,)
  assert float(batched[1]) == pytest.approx(float(metrics.nap_correlation(a[1], b[1])), abs=1e-6)


@pytest.mark.parametrize("fn", [metrics.nap_l1, metrics.nap_correlation, metrics.sai_l1])
def test_nap_metrics_reject_shape_mismatch(fn):
  with pytest.raises(ParameterError, match="equal shapes"):
    fn(_nap(0, (10, 4)), _nap(0, (10, 5)))


def test_si_sdr_of_scaled_copy_is_very_high(speech):
  assert metrics.si_sdr(0.3 * speech, speech) > SI_SDR_SCALED_MIN_DB
  assert metrics.si_sdr(speech, speech) == pytest.approx(150.0)  # the documented ceiling


def test_si_sdr_of_noise_is_very_low(speech):
  noise = white_noise(speech.shape[0], np.random.default_rng(0))
  assert metrics.si_sdr(noise, speech) < SI_SDR_NOISE_MAX_DB


def test_si_sdr_known_answer_at_10_db(speech):
  rng = np.random.default_rng(1)
  noise = rng.standard_normal(speech.shape[0])
  noise -= noise @ speech / (speech @ speech) * speech  # orthogonal to the speech
  noise -= noise.mean()
  noise *= np.sqrt(np.sum((speech - speech.mean()) ** 2) / np.sum(noise ** 2)) / np.sqrt(10.0)
  assert metrics.si_sdr(2.0 * speech + 2.0 * noise, speech) == pytest.approx(10.0, abs=0.05)


def test_si_sdr_batches_over_leading_axes(speech):
  noise = white_noise(speech.shape[0], np.random.default_rng(2))
  values = metrics.si_sdr(np.stack([speech, noise]), np.stack([speech, speech]))
  assert values.shape == (2,)
  assert values[0] > SI_SDR_SCALED_MIN_DB > SI_SDR_NOISE_MAX_DB > values[1]


def test_si_sdr_errors(speech):
  with pytest.raises(ParameterError, match="equal shapes"):
    metrics.si_sdr(speech[:-1], speech)
  with pytest.raises(ParameterError, match="reference: expected a non-silent"):
    metrics.si_sdr(speech, np.ones_like(speech))
  with pytest.raises(ParameterError, match="estimate: expected finite"):
    metrics.si_sdr(np.full_like(speech, np.nan), speech)
  with pytest.raises(ParameterError, match="nap_b: expected finite values"):
    metrics.nap_l1(np.zeros((4, 3)), np.full((4, 3), np.nan))


def test_stoi_identical_is_one_and_noise_is_low(speech):
  noise = white_noise(speech.shape[0], np.random.default_rng(3))
  assert metrics.stoi(speech, speech, SR) > STOI_IDENTICAL_MIN
  assert metrics.stoi(speech, speech, SR, extended=True) > STOI_IDENTICAL_MIN
  assert metrics.stoi(speech, noise, SR) < STOI_NOISE_MAX
  assert metrics.stoi(speech, noise, SR, extended=True) < ESTOI_NOISE_MAX


@pytest.mark.parametrize("extended", [False, True])
def test_stoi_falls_as_the_noise_grows(speech, extended):
  noise = white_noise(speech.shape[0], np.random.default_rng(4), level_db_spl=0.0)
  values = [metrics.stoi(speech, speech + 10 ** (gain_db / 20) * noise, SR, extended=extended)
            for gain_db in (45.0, 65.0, 85.0)]  # SNR +20, 0, -20 dB
  assert values[0] > values[1] > values[2]


@pytest.mark.parametrize("n", [100, 1600])  # below one STFT frame, and below one segment
def test_stoi_too_short_warns_and_returns_nan(speech, n):
  with pytest.warns(UserWarning, match="less than one 384 ms segment of speech is left"):
    value = metrics.stoi(speech[:n], speech[:n], SR)
  assert np.isnan(value)


def test_stoi_of_mostly_silence_says_what_was_too_short(speech):
  x = np.zeros(6 * SR, np.float32)  # 6 s, of which 0.1 s is speech
  x[:SR // 10] = speech[:SR // 10]
  with pytest.warns(UserWarning, match=r"of 6\.00 s in all"):
    assert np.isnan(metrics.stoi(x, x, SR))


def test_stoi_errors(speech):
  with pytest.raises(ParameterError, match="equal shapes"):
    metrics.stoi(speech, speech[:-1], SR)
  with pytest.raises(ParameterError, match="sr: expected a positive"):
    metrics.stoi(speech, speech, -1)


def test_haspi_is_none_without_pyclarity_or_a_score_with_it(speech):
  value = metrics.haspi_v2(speech, speech, SR, preset("N3"))
  if metrics.haspi_available():
    assert 0.0 <= value <= 1.0
  else:
    assert value is None


def test_stoi_of_silent_clean_speech_raises_instead_of_scoring_zero(speech):
  silent = np.zeros_like(speech)
  for extended in (False, True):
    with pytest.raises(ParameterError, match="clean: expected speech, got a constant"):
      metrics.stoi(silent, speech, SR, extended=extended)
  assert metrics.stoi(speech, silent, SR) == pytest.approx(0.0, abs=0.05)  # nothing heard: 0


class FakeHaspi:
  """Stands in for pyclarity's HASPI module: raises as pyclarity does (ValueError "Signal below
  threshold") for clean speech under QUIET_DB_SPL, else scores 0.5."""
  QUIET_DB_SPL = 30.0

  @staticmethod
  def haspi_v2(reference, reference_sr, processed, processed_sr, hearing_loss, level1=65.0):
    if np.sqrt(np.mean(np.square(reference))) < db_spl_to_rms(FakeHaspi.QUIET_DB_SPL):
      raise ValueError("Signal below threshold")
    return 0.5, np.zeros(6)


@pytest.fixture
def fake_haspi(monkeypatch):
  monkeypatch.setattr(metrics, "_haspi_module", lambda: types.SimpleNamespace(
      haspi_v2=FakeHaspi.haspi_v2))


def test_haspi_of_speech_below_its_threshold_is_nan_with_a_warning(speech, fake_haspi):
  quiet = speech * db_spl_to_rms(20.0) / db_spl_to_rms(65.0)  # 20 dB SPL
  with pytest.warns(metrics.HaspiBelowThresholdWarning, match="too quiet or too short"):
    assert np.isnan(metrics.haspi_v2(quiet, quiet, SR, preset("N3")))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert metrics.haspi_v2(speech, speech, SR, preset("N3")) == 0.5


def test_haspi_checks_its_inputs_before_pyclarity_sees_them(speech, fake_haspi):
  with pytest.raises(ParameterError, match="clean: expected speech, got a constant"):
    metrics.haspi_v2(np.zeros_like(speech), speech, SR, preset("N3"))
  with pytest.raises(ParameterError, match="clean: expected 1-D"):
    metrics.haspi_v2(np.stack([speech, speech]), np.stack([speech, speech]), SR, preset("N3"))
  with pytest.raises(ParameterError, match="audiogram: expected a dal_widgets Audiogram"):
    metrics.haspi_v2(speech, speech, SR, "N3")


def test_real_haspi_of_speech_below_its_threshold_is_nan(speech):
  if not metrics.haspi_available():
    pytest.skip("pyclarity is not installed")
  quiet = speech * db_spl_to_rms(0.0) / db_spl_to_rms(65.0)  # 0 dB SPL: pyclarity raises
  with pytest.warns(metrics.HaspiBelowThresholdWarning):
    assert np.isnan(metrics.haspi_v2(quiet, quiet, SR, preset("N1")))


def test_empty_maps_and_time_channels_signals_are_refused_not_averaged_into_nan_or_rows():
  with pytest.raises(ParameterError, match=r"nap_a, nap_b: expected non-empty arrays"):
    metrics.nap_l1(np.zeros((0, 5)), np.zeros((0, 5)))  # was NaN
  with pytest.raises(ParameterError, match=r"sai_a, sai_b: expected non-empty arrays"):
    metrics.sai_l1(np.zeros((0, 5, 3)), np.zeros((0, 5, 3)))
  rng = np.random.default_rng(7)
  stereo = rng.standard_normal((4000, 2))
  # was one SI-SDR per two-sample row: 4000 values of about -150 dB
  with pytest.raises(ParameterError, match=r"estimate: shape \(4000, 2\).*x\.T"):
    metrics.si_sdr(stereo, stereo + 0.1 * rng.standard_normal((4000, 2)))
