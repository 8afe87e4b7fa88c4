"""Simulated audiometry on CARFAC: definition of 0 dB HL, known threshold shifts, errors."""
import numpy as np
import pytest

from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import designs
from dal_widgets.errors import ParameterError
from dal_widgets.hearing import audiometry

SR = 16000.0
FREQS = (500.0, 1000.0, 4000.0)
SHIFT_TOL_DB = 2.0  # IHC drive scales the input of a near-power-law detector: shift ~ -20 log10(gain)


def test_normal_model_defines_zero_db_hl():
  np.testing.assert_allclose(audiometry.model_audiogram_db_hl(FREQS, SR), 0.0, atol=1e-9)
  spl = audiometry.normal_thresholds_db_spl(FREQS, SR)
  assert np.all((spl > -10) & (spl < 60)), spl  # audible, plausible absolute thresholds


def test_ihc_gain_shifts_thresholds_by_its_attenuation():
  hypers = designs.designed(SR).hypers
  shift = audiometry.model_audiogram_db_hl(FREQS, SR, cf.make_weights(hypers, ihc_gain=0.1))
  np.testing.assert_allclose(shift, 20.0, atol=SHIFT_TOL_DB)


def test_losing_outer_hair_cells_raises_thresholds_monotonically():
  hypers = designs.designed(SR).hypers
  shifts = [audiometry.model_audiogram_db_hl(FREQS, SR, cf.make_weights(hypers, ohc_health=h))
            for h in (0.75, 0.25, 0.0)]
  assert np.all(np.diff(np.stack(shifts), axis=0) > 0)
  assert shifts[-1][1] > 25  # at 1 kHz the active gain is worth more than 25 dB


def test_frequency_beyond_model_range_raises():
  with pytest.raises(ParameterError, match="tests tones up to"):
    audiometry.thresholds_db_spl([8000.0], SR)


@pytest.mark.parametrize("freqs, weights, match", [
    ([], None, "one or more frequencies"),
    ([1000.0, float("nan")], None, "one or more frequencies"),
    ([20.0], None, "no channel of the model lies within .* of 20 Hz"),
    ([1000.0], "healthy", "weights: expected CarfacWeights"),
    ([1000.0], cf.make_weights(designs.designed(22050.0).hypers), "has shape \\(71,\\)"),
    ([[1000.0]], None, "a flat list of numbers"),
    (["1000"], None, "a flat list of numbers")])
def test_bad_frequencies_and_weights_raise(freqs, weights, match):
  with pytest.raises(ParameterError, match=match):
    audiometry.model_audiogram_db_hl(freqs, SR, weights)


@pytest.mark.parametrize("sr, match", [(100, "sr must be within 8000..48000 Hz, got 100"),
                                       ("16000", "sr must be a number of Hz")])
def test_bad_sample_rates_are_named(sr, match):
  with pytest.raises(ParameterError, match=match):
    audiometry.thresholds_db_spl([1000.0], sr)


def test_crossing_interpolates_in_log_response():
  levels = np.array([0.0, 10.0, 20.0])
  response = np.array([0.001, 0.1, 1.0])  # criterion 0.01 is halfway (in log) from 0 to 10 dB
  assert audiometry.CRITERION_NAP == 0.01
  assert audiometry._crossing_db_spl(levels, response) == pytest.approx(5.0)
  assert audiometry._crossing_db_spl(levels, np.zeros(3)) == audiometry.NO_RESPONSE_DB_SPL
