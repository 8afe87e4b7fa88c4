"""NAL-R / NAL-RP gains (known answers from the published formula) and their FIR realisation."""
import numpy as np
import pytest
import scipy.signal

from dal_widgets.aid.prescription import (NALR_FREQS_HZ, apply_fir, design_nalr_fir,
                                          nalr_gains_db, nalr_prescription_db)
from dal_widgets.errors import ParameterError
from dal_widgets.hearing.audiogram import Audiogram

BISGAARD_FREQS_HZ = (250, 375, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000)
N3 = Audiogram(BISGAARD_FREQS_HZ, (35, 35, 35, 35, 40, 45, 50, 55, 60, 65), name="N3")
S2 = Audiogram(BISGAARD_FREQS_HZ, (20, 20, 20, 22.5, 25, 35, 55, 75, 95, 95), name="S2")
# Byrne & Dillon 1986: IG = 0.05 (H500 + H1k + H2k) + 0.31 H + k, written out here independently
K_DB = {250: -17, 500: -8, 1000: 1, 1500: 1, 2000: -1, 3000: -2, 4000: -2, 6000: -2}
FIR_TOLERANCE_DB = 1.5  # brief: FIR magnitude within 1.5 dB of the target gains
FORMULA_ATOL_DB = 1e-9  # float arithmetic only


def _formula(audiogram):
  h = dict(zip(audiogram.freqs_hz, audiogram.thresholds_db_hl))
  x = 0.05 * (h[500] + h[1000] + h[2000])
  return np.array([max(0.0, x + 0.31 * h[f] + K_DB[f]) for f in K_DB])


@pytest.mark.parametrize("audiogram", [N3, S2], ids=["N3", "S2"])
def test_gains_equal_the_published_formula(audiogram):
  np.testing.assert_allclose(nalr_gains_db(audiogram, tuple(K_DB)), _formula(audiogram),
                             atol=FORMULA_ATOL_DB)


def test_gains_hand_computed_for_n3_and_s2():
  # N3: X = 0.05 * (35 + 40 + 50) = 6.25; at 1 kHz 6.25 + 0.31 * 40 + 1 = 19.65
  assert nalr_gains_db(N3, 1000.0) == pytest.approx(19.65)
  # S2: X = 0.05 * (20 + 25 + 55) = 5; at 250 Hz 5 + 6.2 - 17 < 0 -> 0; at 4 kHz 5 + 29.45 - 2
  assert nalr_gains_db(S2, 250.0) == 0.0
  assert nalr_gains_db(S2, 4000.0) == pytest.approx(32.45)


def test_gains_interpolate_in_log_frequency_and_hold_flat_outside():
  g1000, g1500, g250, g6000 = nalr_gains_db(N3, [1000, 1500, 250, 6000])
  assert nalr_gains_db(N3, np.sqrt(1000 * 1500)) == pytest.approx((g1000 + g1500) / 2)
  assert nalr_gains_db(N3, 8000.0) == pytest.approx(g6000)
  assert nalr_gains_db(N3, 100.0) == pytest.approx(g250)
  assert nalr_gains_db(N3, [[500, 1000]]).shape == (1, 2)


def test_profound_correction_adds_gain_above_60_db_average():
  flat80 = Audiogram((250, 8000), (80, 80))
  extra = nalr_gains_db(flat80, profound=True) - nalr_gains_db(flat80)
  np.testing.assert_allclose(extra, 0.2 * (80 - 60), atol=FORMULA_ATOL_DB)
  mild = Audiogram((250, 8000), (40, 40))
  np.testing.assert_array_equal(nalr_gains_db(mild, profound=True), nalr_gains_db(mild))


def test_profound_correction_at_h2000_of_100_db_hl():
  flat100 = Audiogram((250, 8000), (100, 100))
  row_100 = np.array([6, 4, 0, -2, -3, -3, -3, -3])  # Byrne, Parkinson & Newall 1991 Fig. 9
  expected = nalr_gains_db(flat100) + 0.2 * (100 - 60) + row_100
  np.testing.assert_allclose(nalr_gains_db(flat100, profound=True), expected,
                             atol=FORMULA_ATOL_DB)


def test_normal_hearing_gets_only_the_speech_constants():
  zero = nalr_prescription_db(np.zeros(len(NALR_FREQS_HZ)))
  np.testing.assert_array_equal(zero, np.maximum(list(K_DB.values()), 0))


@pytest.mark.parametrize("sr", [16000, 22050])
@pytest.mark.parametrize("audiogram", [N3, S2], ids=["N3", "S2"])
def test_fir_magnitude_follows_the_gains_with_linear_phase(audiogram, sr):
  taps = design_nalr_fir(audiogram, sr)
  assert taps.size % 2 == 1
  np.testing.assert_array_equal(taps, taps[::-1])  # symmetric: linear phase
  check_hz = [500.0, 1000.0, 2000.0, 4000.0]
  _, response = scipy.signal.freqz(taps, worN=check_hz, fs=sr)
  np.testing.assert_allclose(20 * np.log10(np.abs(response)), nalr_gains_db(audiogram, check_hz),
                             atol=FIR_TOLERANCE_DB)


def test_apply_fir_is_aligned_with_the_input():
  taps = design_nalr_fir(S2, 16000, n_taps=101)
  x = np.zeros((2, 400), np.float32)
  x[0, 200] = 1.0
  x[1, 37] = 1.0
  y = apply_fir(x, taps)
  assert y.shape == x.shape and y.dtype == np.float32
  assert np.argmax(np.abs(y[0])) == 200 and np.argmax(np.abs(y[1])) == 37
  np.testing.assert_allclose(y[0, 150:251], taps, rtol=1e-6)  # the whole response, centred
  identity = np.zeros(7)
  identity[3] = 1.0
  tone = np.sin(np.arange(300) * 0.1)
  np.testing.assert_allclose(apply_fir(tone, identity), tone, atol=1e-12)


def test_errors_name_the_argument():
  with pytest.raises(ParameterError, match="audiogram: expected"):
    nalr_gains_db({"freqs_hz": (1000,)})
  with pytest.raises(ParameterError, match="freqs_hz: expected finite positive"):
    nalr_gains_db(N3, [0.0, 1000.0])
  with pytest.raises(ParameterError, match="n_taps: expected an odd int"):
    design_nalr_fir(N3, 16000, n_taps=128)
  for sr in (0, 10, float("nan"), "16000"):
    with pytest.raises(ParameterError, match="sr: expected a sample rate within 8000..48000 Hz"):
      design_nalr_fir(N3, sr)
  with pytest.raises(ParameterError, match="thresholds_db_hl: expected 8"):
    nalr_prescription_db([10, 20, 30])
  for bad in (200.0, -20.0, float("nan")):  # beyond an audiometer (a typing error), or no number
    with pytest.raises(ParameterError, match="expected 8 values from -10 to 120 dB HL"):
      nalr_prescription_db([30.0] * 7 + [bad])
  with pytest.raises(ParameterError, match="taps: expected a 1-D array of odd length"):
    apply_fir(np.zeros(10), np.ones(4))
  with pytest.raises(ParameterError, match="x: expected finite samples"):
    apply_fir(np.array([0.0, np.inf, 0.0]), np.ones(3))
