"""Noise and mixing: exact SNR, babble made of several talkers, speech-shaped spectra."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.signal

from dal_widgets.audio import calibration, noise, stimuli
from dal_widgets.audio.clips import list_clips, load_clip
from dal_widgets.errors import AudioError, ParameterError

SR = 16000
SNR_TOL_DB = 1e-3  # rms scaling is exact up to float32 rounding
SPECTRUM_TOL_DB = 1.5  # Welch estimate of 4 s of noise (~250 averaged segments): ~0.3 dB sd per band


def _level(x):
  return float(calibration.rms_to_db_spl(calibration.rms(np.asarray(x, dtype=np.float64))))


def _band_db(x, lo_hz, hi_hz, sr=SR):
  freqs, power = scipy.signal.welch(x, fs=sr, nperseg=512)
  return 10 * np.log10(power[(freqs >= lo_hz) & (freqs < hi_hz)].mean())


def _line_db(x, f_hz, sr=SR):
  """Total power within +-100 Hz of a spectral line (independent of where it falls in a bin)."""
  freqs, power = scipy.signal.welch(x, fs=sr, nperseg=512)
  return 10 * np.log10(power[np.abs(freqs - f_hz) <= 100].sum())


def test_white_noise_level_and_seed():
  a = noise.white_noise(8000, np.random.default_rng(3), level_db_spl=50.0)
  b = noise.white_noise(8000, np.random.default_rng(3), level_db_spl=50.0)
  c = noise.white_noise(8000, np.random.default_rng(4), level_db_spl=50.0)
  assert a.dtype == np.float32 and a.shape == (8000,)
  assert _level(a) == pytest.approx(50.0, abs=SNR_TOL_DB)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)
  with pytest.raises(ParameterError, match="rng"):
    noise.white_noise(100, 3)
  with pytest.raises(ParameterError, match="n: expected"):
    noise.white_noise(0, np.random.default_rng(0))


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 3.0, 10.0])
def test_mix_at_snr_is_exact(snr_db):
  rng = np.random.default_rng(0)
  speech = stimuli.vowel(120.0, (730.0, 1090.0, 2440.0), 0.5, SR, level_db_spl=50.0)
  masker = noise.white_noise(9000, rng, level_db_spl=80.0)  # longer than the speech
  mixture, speech_scaled, noise_scaled = noise.mix_at_snr(speech, masker, snr_db, speech_level_db_spl=65.0)
  assert mixture.shape == speech_scaled.shape == noise_scaled.shape == speech.shape
  assert _level(speech_scaled) == pytest.approx(65.0, abs=SNR_TOL_DB)
  assert _level(speech_scaled) - _level(noise_scaled) == pytest.approx(snr_db, abs=SNR_TOL_DB)
  np.testing.assert_allclose(mixture, speech_scaled + noise_scaled, atol=1e-7)
  np.testing.assert_allclose(noise_scaled / masker[:8000], noise_scaled[0] / masker[0], rtol=1e-4)


def test_mix_at_snr_jax_and_jit():
  speech = jnp.asarray(stimuli.tone(500.0, 0.2, SR))
  masker = jnp.asarray(noise.white_noise(3200, np.random.default_rng(1)))
  mixture, s, n = jax.jit(noise.mix_at_snr)(speech, masker, 5.0)
  assert isinstance(mixture, jax.Array)
  assert _level(s) - _level(n) == pytest.approx(5.0, abs=SNR_TOL_DB)


def test_mix_at_snr_maps_over_snrs_and_noises():
  speech = stimuli.tone(500.0, 0.2, SR)  # numpy: only the SNR or the noise is traced
  masker = noise.white_noise(3200, np.random.default_rng(1))
  snrs = jnp.array([0.0, 5.0, 10.0])
  _, s, n = jax.vmap(lambda d: noise.mix_at_snr(speech, masker, d))(snrs)
  np.testing.assert_allclose([_level(a) - _level(b) for a, b in zip(s, n)], snrs, atol=SNR_TOL_DB)
  mixture = jax.jit(lambda m: noise.mix_at_snr(speech, m, 5.0)[0])(jnp.asarray(masker))
  np.testing.assert_allclose(mixture, noise.mix_at_snr(speech, masker, 5.0)[0], atol=1e-6)


def test_mix_at_snr_errors():
  speech = stimuli.tone(500.0, 0.2, SR)
  with pytest.raises(ParameterError, match="at least len"):
    noise.mix_at_snr(speech, speech[:100], 0.0)
  with pytest.raises(AudioError, match="silence"):
    noise.mix_at_snr(speech, np.zeros(4000), 0.0)
  with pytest.raises(AudioError, match="silence"):
    noise.mix_at_snr(np.zeros(100), speech, 0.0)
  with pytest.raises(ParameterError, match="1-D"):
    noise.mix_at_snr(speech[None], speech, 0.0)
  with pytest.raises(ParameterError, match="snr_db: 300 dB puts the noise at -235 dB SPL"):
    noise.mix_at_snr(speech, speech, 300.0)
  with pytest.raises(ParameterError, match="snr_db: expected a finite number"):
    noise.mix_at_snr(speech, speech, float("nan"))


def _tone_talkers():
  # Four "talkers" that are pure tones at distinct frequencies; 1 s at integer Hz so they loop.
  return [stimuli.tone(f, 1.0, SR, ramp_ms=0.0, level_db_spl=level)
          for f, level in ((300.0, 40.0), (700.0, 60.0), (1100.0, 70.0), (1900.0, 50.0))]


def test_babble_sums_different_talkers_at_equal_levels():
  x = noise.babble(_tone_talkers(), 24000, np.random.default_rng(5), n_talkers=3, level_db_spl=60.0)
  assert x.dtype == np.float32 and x.shape == (24000,)
  assert _level(x) == pytest.approx(60.0, abs=SNR_TOL_DB)
  bands = np.array([_line_db(x, f) for f in (300.0, 700.0, 1100.0, 1900.0)])
  present = bands > bands.max() - 20.0
  assert present.sum() == 3  # three different talkers, not one repeated
  np.testing.assert_allclose(bands[present], bands[present].max(), atol=0.5)  # level-equalised


def test_babble_of_speech_is_flatter_than_one_talker():
  talkers = [load_clip(c.name)[0] for c in list_clips()]
  x = noise.babble(talkers, 3 * SR, np.random.default_rng(0), n_talkers=6)
  assert x.shape == (3 * SR,)
  again = noise.babble(talkers, 3 * SR, np.random.default_rng(0), n_talkers=6)
  np.testing.assert_array_equal(x, again)

  def envelope_cv(y):  # coefficient of variation of the 20 ms rms envelope
    frames = np.asarray(y[: len(y) // 320 * 320]).reshape(-1, 320)
    env = np.sqrt(np.mean(frames ** 2, axis=1))
    return env.std() / env.mean()
  assert envelope_cv(x) < 0.7 * min(envelope_cv(t) for t in talkers)


def test_babble_errors():
  rng = np.random.default_rng(0)
  with pytest.raises(ParameterError, match=r"n_talkers: expected 1\.\.4"):
    noise.babble(_tone_talkers(), 100, rng, n_talkers=5)
  with pytest.raises(ParameterError, match="talkers"):
    noise.babble([], 100, rng)
  with pytest.raises(AudioError, match=r"talkers\[0\]"):
    noise.babble([np.zeros(100)], 100, rng, n_talkers=1)


def test_ltass_table_and_slope():
  np.testing.assert_allclose(noise.ltass_db_spl(noise.LTASS_FREQS_HZ), noise.LTASS_SPECTRUM_DB_SPL)
  high = noise.ltass_db_spl([1000.0, 2000.0, 4000.0, 8000.0, 16000.0])
  assert np.all(np.diff(high) < -5.0)  # falls > 5 dB per octave above 1 kHz
  assert noise.ltass_db_spl(80.0) == pytest.approx(noise.LTASS_SPECTRUM_DB_SPL[0] - 12.0)


def test_speech_shaped_noise_follows_ltass():
  x = noise.speech_shaped_noise(4 * SR, SR, np.random.default_rng(2), level_db_spl=65.0)
  assert x.dtype == np.float32 and x.shape == (4 * SR,)
  assert _level(x) == pytest.approx(65.0, abs=SNR_TOL_DB)
  slope = _band_db(x, 3900, 4100) - _band_db(x, 950, 1050)
  expected = float(noise.ltass_db_spl(4000.0) - noise.ltass_db_spl(1000.0))  # -15.7 dB
  assert slope == pytest.approx(expected, abs=SPECTRUM_TOL_DB)
  assert _band_db(x, 2000, 2200) < _band_db(x, 950, 1050) - 5.0


def test_speech_shaped_noise_copies_a_reference_spectrum():
  rng = np.random.default_rng(7)
  b, a = scipy.signal.butter(4, 1500.0, fs=SR)  # a low-pass "voice"
  reference = scipy.signal.lfilter(b, a, rng.standard_normal(2 * SR))
  x = noise.speech_shaped_noise(4 * SR, SR, rng, reference=reference)
  for lo, hi in ((300, 500), (2500, 3000)):
    relative_ref = _band_db(reference, lo, hi) - _band_db(reference, 900, 1100)
    relative_x = _band_db(x, lo, hi) - _band_db(x, 900, 1100)
    assert relative_x == pytest.approx(relative_ref, abs=SPECTRUM_TOL_DB)
  with pytest.raises(AudioError, match="reference"):
    noise.speech_shaped_noise(100, SR, rng, reference=np.zeros(50))


@pytest.mark.parametrize("reference", [np.array([0.3]), np.full(400, 0.2)], ids=["1 sample", "dc"])
def test_speech_shaped_noise_refuses_a_reference_without_a_spectrum(reference):
  with pytest.raises(AudioError, match="reference: no power above 0 Hz"):
    noise.speech_shaped_noise(1000, SR, np.random.default_rng(0), reference=reference)


def test_ltass_and_speech_shaped_noise_refuse_odd_frequencies_and_rates():
  for freqs in ([1000.0, np.nan], [-100.0], "abc"):  # NaN level, the 1 Hz level, a ValueError
    with pytest.raises(ParameterError, match="freqs_hz: expected"):
      noise.ltass_db_spl(freqs)
  assert noise.ltass_db_spl(0.0) == noise.ltass_db_spl(1.0)  # the DC bin of an FFT
  with pytest.raises(ParameterError, match="sr: expected a positive sample rate"):
    noise.speech_shaped_noise(100, "16000", np.random.default_rng(0))  # a TypeError before
