"""Fitting an impaired CARFAC to audiograms: accuracy re-measured by audiometry, bundled data."""
import json

import numpy as np
import pytest

from dal_widgets.errors import ParameterError
from dal_widgets.hearing import audiometry, fit, presets
from dal_widgets.hearing.audiogram import Audiogram

SR = 16000.0
FIT_TOL_DB = 5.0  # issue requirement at the checked frequencies
CHECK_FREQS = (250.0, 500.0, 1000.0, 2000.0, 4000.0, 6000.0)
BUNDLE_TOL_DB = 0.5  # shipped shift curves vs a fresh measurement (deterministic up to float noise)


@pytest.mark.parametrize("name", ["N1", "N2", "N3", "N4", "S1", "S2", "S3"])
def test_fitted_ear_reproduces_audiogram(name):
  audiogram = presets.preset(name)
  ear = fit.fit_cochlea(audiogram, SR)
  measured = audiometry.model_audiogram_db_hl(CHECK_FREQS, SR, ear.weights())
  np.testing.assert_allclose(measured, audiogram.at(CHECK_FREQS), atol=FIT_TOL_DB)
  assert np.all((ear.ohc_health >= 0) & (ear.ohc_health <= 1))
  assert np.all((ear.ihc_gain > 0) & (ear.ihc_gain <= 1))


def test_fresh_fit_of_a_custom_audiogram_converges():
  audiogram = Audiogram((500.0, 1000.0, 2000.0, 4000.0), (25.0, 35.0, 50.0, 60.0), name="custom")
  ear = fit.fit_cochlea(audiogram, SR)
  assert np.abs(ear.residual_db).max() <= FIT_TOL_DB
  measured = audiometry.model_audiogram_db_hl(ear.freqs_hz, SR, ear.weights())
  np.testing.assert_allclose(measured, ear.fitted_db_hl, atol=0.01)  # the report tells the truth


def test_more_loss_means_less_health_and_less_ihc_gain():
  mild = fit.fit_cochlea(presets.preset("N2"), SR, refine=False)
  severe = fit.fit_cochlea(presets.preset("N4"), SR, refine=False)
  assert np.all(severe.ohc_health <= mild.ohc_health + 1e-9)
  assert np.all(severe.ihc_gain <= mild.ihc_gain + 1e-9)
  assert severe.ohc_health.mean() < mild.ohc_health.mean()


def test_normal_hearing_is_healthy():
  ear = fit.fit_cochlea(presets.NORMAL, SR)
  np.testing.assert_allclose(ear.ihc_gain, 1.0)
  assert ear.ohc_health.min() > 0.99


def test_residuals_reported_for_profound_presets():
  for name in ("N5", "N6", "N7"):
    ear = fit.fit_cochlea(presets.preset(name), SR)
    assert len(ear.residual_db) == len(ear.freqs_hz) and np.all(np.isfinite(ear.residual_db))
    assert name in ear.audiogram.name and "| residual_db |" in ear.table()


def test_bundled_curves_match_fresh_measurement():
  entry = fit.bundled()[f"{SR:.0f}/v3"]
  freqs = (1000.0, 4000.0)
  fresh = fit.measure_shift_curves(freqs, SR)
  cols = [entry["freqs_hz"].index(f) for f in freqs]
  np.testing.assert_allclose(np.asarray(entry["shift_curves_db"])[:, cols], fresh, atol=BUNDLE_TOL_DB)


def test_impaired_ear_round_trips_through_json():
  ear = fit.fit_cochlea(presets.preset("S2"), SR)
  again = fit.ImpairedEar.from_dict(json.loads(json.dumps(ear.to_dict())))
  np.testing.assert_allclose(again.ohc_health, ear.ohc_health, atol=1e-6)
  np.testing.assert_allclose(again.ihc_gain, ear.ihc_gain, rtol=1e-5)
  assert again.audiogram == ear.audiogram


def test_bad_inputs_raise():
  with pytest.raises(ParameterError, match="must be an Audiogram"):
    fit.fit_cochlea([10, 20], SR)
  with pytest.raises(ParameterError, match="no frequency within the range"):
    fit.fit_cochlea(Audiogram((8000.0,), (30.0,)), SR)
  with pytest.raises(ParameterError, match="sr must be within 8000..48000 Hz, got nan"):
    fit.fit_cochlea(Audiogram((1000.0,), (30.0,)), float("nan"))


def test_points_a_fit_cannot_take_are_named():
  gram = Audiogram((250.0, 1000.0, 6000.0, 8000.0), (-10.0, 20.0, 50.0, 70.0))
  ear = fit.fit_cochlea(gram, 16000.0, refine=False)  # 8 kHz is above a 16 kHz model's tones
  assert ear.freqs_hz == (250.0, 1000.0, 6000.0)
  assert fit.unfitted_freqs_hz(gram, ear.freqs_hz) == (8000.0,)
  assert fit.better_than_normal_freqs_hz(gram, ear.freqs_hz) == (250.0,)
  flat_top = Audiogram(gram.freqs_hz, (0.0, 20.0, 50.0, 50.0))  # the model has 50 dB HL at 8 kHz
  assert fit.unfitted_freqs_hz(flat_top, ear.freqs_hz) == ()
  assert fit.better_than_normal_freqs_hz(flat_top, ear.freqs_hz) == ()


def test_impaired_ear_from_a_bad_dict_names_the_problem():
  good = fit.fit_cochlea(presets.preset("S2"), SR).to_dict()
  # a TypeError ('NoneType' object is not subscriptable), a KeyError, a ValueError from float()
  for data, match in [(None, "ear: expected a dict"),
                      ({k: v for k, v in good.items() if k != "ihc_gain"},
                       "ear: has no field 'ihc_gain'"),
                      ({**good, "sr": "16 kHz"}, "ear: a field has the wrong kind of value"),
                      ({**good, "audiogram": {"points": []}}, "points: expected at least one")]:
    with pytest.raises(ParameterError, match=match):
      fit.ImpairedEar.from_dict(data)
