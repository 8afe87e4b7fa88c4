"""Calibration: rms 1.0 <-> 100 dB SPL, round trips, numpy and jax."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_widgets.audio import calibration
from dal_widgets.audio.noise import mix_at_snr
from dal_widgets.errors import AudioError, ParameterError

FLOAT32_DB_TOL = 1e-4  # dB; float32 rms of a few thousand samples is good to ~1e-6 relative
SR = 16000


def test_full_scale_rms_is_100_db_spl():
  assert calibration.FULL_SCALE_RMS_DB_SPL == 100.0
  assert calibration.rms_to_db_spl(1.0) == pytest.approx(100.0)
  assert calibration.db_spl_to_rms(100.0) == pytest.approx(1.0)


def test_known_values():
  assert calibration.db_spl_to_rms(65.0) == pytest.approx(0.01778, rel=2e-4)
  # CARFAC convention: amplitude ~1e-4 is near threshold, 20-30 dB SPL.
  assert calibration.rms_to_db_spl(1e-4) == pytest.approx(20.0)
  assert calibration.db_spl_to_rms(0.0) == pytest.approx(1e-5)
  assert calibration.tone_amplitude(100.0) == pytest.approx(np.sqrt(2.0))
  assert calibration.rms_to_db_spl(0.0) == -np.inf


def test_round_trip_numpy_and_jax():
  levels = np.array([-10.0, 0.0, 30.0, 65.0, 94.0, 120.0])
  back = calibration.rms_to_db_spl(calibration.db_spl_to_rms(levels))
  np.testing.assert_allclose(back, levels, atol=1e-9)
  back_jax = calibration.rms_to_db_spl(calibration.db_spl_to_rms(jnp.asarray(levels)))
  assert isinstance(back_jax, jax.Array)
  np.testing.assert_allclose(np.asarray(back_jax), levels, atol=1e-3)
  assert isinstance(calibration.db_spl_to_rms(65.0), float)


def test_tone_amplitude_gives_sine_of_that_rms_level():
  t = np.arange(SR) / SR
  x = calibration.tone_amplitude(70.0) * np.sin(2 * np.pi * 1000 * t)
  assert calibration.rms_to_db_spl(calibration.rms(x)) == pytest.approx(70.0, abs=FLOAT32_DB_TOL)


@pytest.mark.parametrize("to_array", [np.asarray, jnp.asarray])
def test_set_level(to_array):
  x = to_array(np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 3.0)
  y = calibration.set_level(x, 65.0)
  assert type(y) is type(x) and y.dtype == np.float32
  assert float(calibration.rms_to_db_spl(calibration.rms(y))) == pytest.approx(65.0, abs=FLOAT32_DB_TOL)
  np.testing.assert_allclose(np.asarray(y) / np.asarray(x), float(y[0] / x[0]), rtol=1e-5)


def test_set_level_under_jit():
  x = jnp.linspace(-1.0, 1.0, 1000)
  y = jax.jit(calibration.set_level)(x, 50.0)
  assert float(calibration.rms_to_db_spl(calibration.rms(y))) == pytest.approx(50.0, abs=FLOAT32_DB_TOL)


def test_set_level_of_concrete_audio_to_a_traced_level():
  x = np.linspace(-1.0, 1.0, 1000).astype(np.float32)
  levels = jnp.array([40.0, 70.0])
  y = jax.vmap(lambda level: calibration.set_level(x, level))(levels)
  np.testing.assert_allclose(calibration.rms_to_db_spl(calibration.rms(y, axis=1)), levels,
                             atol=FLOAT32_DB_TOL)
  # d rms / d level = rms * ln(10) / 20 per dB
  grad = jax.grad(lambda level: calibration.rms(calibration.set_level(x, level)))(60.0)
  assert float(grad) == pytest.approx(calibration.db_spl_to_rms(60.0) * np.log(10) / 20, rel=1e-4)


def test_rms_of_integers_does_not_overflow():
  x = np.full(100, 30000, dtype=np.int16)
  assert float(calibration.rms(x)) == pytest.approx(30000.0)


def test_set_level_of_silence_raises():
  with pytest.raises(AudioError, match="silence"):
    calibration.set_level(np.zeros(100), 65.0)
  with pytest.raises(AudioError, match="finite"):
    calibration.set_level(np.array([1.0, np.nan]), 65.0)


def test_the_loudest_level_taken_is_one_atmosphere_rms():
  assert calibration.MAX_LEVEL_DB_SPL == pytest.approx(
      20 * np.log10(101325.0 / np.sqrt(2.0) / 20e-6), abs=0.1)  # rms of a 1 atm sine
  with pytest.raises(ParameterError, match="level_db_spl"):
    calibration.db_spl_to_rms(192.0)  # between the rms and the peak figure


@pytest.mark.parametrize("level", [float("nan"), float("inf"), 1000.0, -1000.0, -100.5, "65"])
def test_levels_that_are_not_sounds_raise(level):
  with pytest.raises(ParameterError, match="level_db_spl: expected finite levels from -100 to 191"):
    calibration.db_spl_to_rms(level)
  with pytest.raises(ParameterError, match="level_db_spl"):
    calibration.set_level(np.ones(10), level)
  with pytest.raises(ParameterError, match="level_db_spl"):
    calibration.db_spl_to_rms(np.array([60.0, level], dtype=object))


def test_negative_rms_raises():
  with pytest.raises(ParameterError, match="rms_value"):
    calibration.rms_to_db_spl(-0.1)


def test_the_level_limits_themselves_are_sounds():
  quiet = calibration.set_level(np.ones(10, np.float32), calibration.MIN_LEVEL_DB_SPL)
  assert quiet.dtype == np.float32 and np.all(quiet > 0)  # normal float32, not flushed to zero
  assert calibration.db_spl_to_rms(calibration.MAX_LEVEL_DB_SPL) == pytest.approx(10 ** 4.55)


def test_what_is_not_an_array_of_samples_is_named():
  pair = (np.ones(100, np.float32), 16000)  # what load and load_clip return
  with pytest.raises(ParameterError, match=r"x: expected an array of samples, got a tuple .*pass x"):
    calibration.set_level(pair, 65.0)
  with pytest.raises(ParameterError, match="speech: expected an array of samples"):
    mix_at_snr(pair, np.ones(100), 0.0)
  for bad, why in (([[1.0, 2.0], [3.0]], "expected an array of samples"),
                   (np.ones(4) * 1j, "expected real samples, got dtype complex128"),
                   (np.array(["a", "b"]), "expected real samples")):
    with pytest.raises(ParameterError, match=why):
      calibration.rms(bad)
  assert calibration.rms([3, 4]) == pytest.approx(np.sqrt(12.5))  # a plain list of numbers is fine


def test_empty_signals_array_levels_and_non_numbers_are_refused():
  for x in (np.zeros(0, np.float32), jnp.zeros((3, 0))):  # the rms was NaN
    with pytest.raises(AudioError, match="x: no samples to take the rms of"):
      calibration.rms(x)
  np.testing.assert_array_equal(calibration.rms(np.ones((0, 4)), axis=1), np.zeros(0))  # no cells
  with pytest.raises(AudioError, match="no samples"):
    calibration.set_level(np.zeros(0, np.float32), 60.0)
  with pytest.raises(ParameterError, match=r"level_db_spl: expected one level.*\(2,\)"):
    calibration.set_level(np.ones(100), np.array([60.0, 70.0]))  # a TypeError deep inside
  for bad in ("1", None, 1 + 1j):
    with pytest.raises(ParameterError, match="rms_value: expected finite values >= 0"):
      calibration.rms_to_db_spl(bad)
