"""Tests of dal_widgets.hearing.audiogram: validation, interpolation, PTA, dict form, HL <-> SPL."""
import dataclasses

import numpy as np
import pytest

from dal_widgets.errors import ParameterError
from dal_widgets.hearing.audiogram import (MAX_NAME_CHARS, MAX_POINTS, Audiogram, hl_to_spl,
                                           reference_threshold_db_spl, spl_to_hl)
from dal_widgets.hearing.presets import preset

EDITOR_FREQS_HZ = (250.0, 500.0, 1000.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0)  # the UI's sliders
EXACT = 1e-12  # interpolation of small floats in float64: only rounding error
ISO_TABLE_ATOL = 1e-9  # tabulated RETSPL values come back exactly up to log/exp rounding

FREQS = (250, 500, 1000, 2000, 4000)
THRESHOLDS = (10, 20, 30, 50, 70)


@pytest.fixture
def gram():
  return Audiogram(FREQS, THRESHOLDS, ear="left", name="test")


def test_lists_and_arrays_become_float_tuples():
  gram = Audiogram(np.array(FREQS), list(THRESHOLDS))
  assert gram.freqs_hz == (250.0, 500.0, 1000.0, 2000.0, 4000.0)
  assert isinstance(gram.thresholds_db_hl, tuple)
  assert all(type(v) is float for v in gram.thresholds_db_hl)
  assert gram.ear == "right" and gram.name is None
  assert hash(gram) == hash(Audiogram(FREQS, THRESHOLDS))


def test_is_immutable(gram):
  with pytest.raises(dataclasses.FrozenInstanceError):
    gram.ear = "right"


@pytest.mark.parametrize("freqs, thresholds, match", [
    ((500, 250), (0, 0), r"freqs_hz\[1\]: frequency 250 Hz comes after 500 Hz; .*increasing"),
    ((250, 250), (0, 0), r"freqs_hz\[1\]: frequency 250 Hz is duplicated"),
    ((250, float("nan")), (0, 0), r"freqs_hz\[1\]: frequency nan is not finite"),
    ((250, 500), (0, float("nan")), r"thresholds_db_hl\[1\]: threshold nan at 500 Hz is not"),
    ((100, 500), (0, 0), r"freqs_hz\[0\]: frequency 100 Hz is outside 125..8000 Hz"),
    ((250, 9000), (0, 0), r"freqs_hz\[1\]: frequency 9000 Hz is outside"),
    ((250, 500), (0, 121), r"thresholds_db_hl\[1\]: threshold 121 dB HL at 500 Hz is outside"),
    ((250, 500), (-11, 0), r"thresholds_db_hl\[0\]: threshold -11 dB HL .* outside -10..120"),
    ((250, 500), (0,), r"thresholds_db_hl: expected 2 values .* got 1"),
    ((), (), r"freqs_hz: expected at least one frequency"),
    (((250, 500),), ((0, 0),), r"freqs_hz: expected a 1-D sequence .* shape \(1, 2\)"),
    (("a", "b"), (0, 0), r"freqs_hz: expected numbers"),
    ((250, 500), (True, False), r"thresholds_db_hl: expected numbers, got booleans"),
])
def test_invalid_points_raise(freqs, thresholds, match):
  with pytest.raises(ParameterError, match=match):
    Audiogram(freqs, thresholds)


@pytest.mark.parametrize("kwargs, match", [
    (dict(ear="both"), r"ear: expected one of \('left', 'right'\), got 'both'"),
    (dict(ear="Left"), r"ear: expected one of .* got 'Left'"),
    (dict(name=3), r"name: expected a string or None, got 3"),
])
def test_invalid_ear_and_name_raise(kwargs, match):
  with pytest.raises(ParameterError, match=match):
    Audiogram(FREQS, THRESHOLDS, **kwargs)


def test_at_measured_points_returns_thresholds(gram):
  np.testing.assert_allclose(gram.at(FREQS), THRESHOLDS, atol=EXACT)


def test_at_interpolates_linearly_in_log_frequency(gram):
  # 707.1 Hz is the geometric mean of 500 and 1000 Hz: halfway in log-f -> halfway in dB.
  # 1414.2 Hz is halfway between 1 and 2 kHz: (30 + 50) / 2. 2828 Hz: (50 + 70) / 2.
  got = gram.at([np.sqrt(500 * 1000), np.sqrt(1000 * 2000), np.sqrt(2000 * 4000)])
  np.testing.assert_allclose(got, [25.0, 40.0, 60.0], atol=EXACT)
  # A quarter of the octave 1-2 kHz in log-f is a quarter of the way from 30 to 50 dB HL.
  np.testing.assert_allclose(gram.at(1000 * 2 ** 0.25), 35.0, atol=EXACT)


def test_at_extrapolates_flat(gram):
  np.testing.assert_allclose(gram.at([20, 125, 249]), [10, 10, 10], atol=EXACT)
  np.testing.assert_allclose(gram.at([4001, 8000, 20000]), [70, 70, 70], atol=EXACT)


def test_at_keeps_shape_and_single_point_is_flat():
  single = Audiogram([1000], [40])
  assert single.at(np.full((2, 3), 500.0)).shape == (2, 3)
  np.testing.assert_allclose(single.at([125, 1000, 8000]), 40.0, atol=EXACT)


@pytest.mark.parametrize("bad", [0.0, -100.0, float("nan"), float("inf")])
def test_at_rejects_bad_frequencies(gram, bad):
  with pytest.raises(ParameterError, match=r"freqs_hz: expected finite positive frequencies"):
    gram.at([1000.0, bad])


def test_with_threshold_replaces_and_inserts(gram):
  replaced = gram.with_threshold(1000, 45)
  assert replaced.thresholds_db_hl == (10, 20, 45, 50, 70)
  assert gram.thresholds_db_hl == THRESHOLDS  # the original is unchanged
  inserted = gram.with_threshold(3000, 65)
  assert inserted.freqs_hz == (250, 500, 1000, 2000, 3000, 4000)
  assert inserted.thresholds_db_hl == (10, 20, 30, 50, 65, 70)
  assert (inserted.ear, inserted.name) == ("left", "test")


def test_with_threshold_validates(gram):
  with pytest.raises(ParameterError, match=r"threshold 130 dB HL at 1000 Hz is outside"):
    gram.with_threshold(1000, 130)
  with pytest.raises(ParameterError, match=r"frequency 10000 Hz is outside"):
    gram.with_threshold(10000, 10)
  with pytest.raises(ParameterError, match=r"with_threshold: expected numbers"):
    gram.with_threshold("high", 10)


def test_pta_is_mean_at_half_one_two_four_khz(gram):
  assert gram.pta_db_hl == pytest.approx((20 + 30 + 50 + 70) / 4, abs=EXACT)
  # Missing PTA frequencies are interpolated / extrapolated: 4 kHz -> flat 50 beyond 2 kHz.
  short = Audiogram([500, 1000, 2000], [20, 30, 50])
  assert short.pta_db_hl == pytest.approx((20 + 30 + 50 + 50) / 4, abs=EXACT)


def test_dict_round_trip(gram):
  data = gram.to_dict()
  assert data["points"][2] == {"freq_hz": 1000.0, "threshold_db_hl": 30.0}
  assert Audiogram.from_dict(data) == gram


@pytest.mark.parametrize("data, match", [
    ([], r"audiogram: expected an object/dict, got list"),
    ({"ear": "left"}, r"audiogram: missing field 'points'"),
    ({"points": [], "colour": 1}, r"unknown field\(s\) \['colour'\]"),
    ({"points": {}}, r"points: expected a list, got dict"),
    ({"points": []}, r"points: expected at least one point"),
    ({"points": [5]}, r"points\[0\]: expected an object"),
    ({"points": [{"freq_hz": 250}]}, r"points\[0\]: missing field 'threshold_db_hl'"),
    ({"points": [{"freq_hz": 250, "threshold_db_hl": 0},
                 {"freq_hz": 500, "threshold_db_hl": "abc"}]},
     r"points\[1\]\.threshold_db_hl: 'abc' is not a number"),
    ({"points": [{"freq_hz": True, "threshold_db_hl": 0}]}, r"points\[0\]\.freq_hz: True is not"),
    ({"points": [{"freq_hz": 500, "threshold_db_hl": 0},
                 {"freq_hz": 250, "threshold_db_hl": 0}]}, r"points\[1\]: frequency 250 Hz comes"),
    ({"points": [{"freq_hz": 500, "threshold_db_hl": 0}], "ear": "up"}, r"ear: expected one of"),
])
def test_from_dict_names_the_field_at_fault(data, match):
  with pytest.raises(ParameterError, match=match):
    Audiogram.from_dict(data)


def test_reference_threshold_known_values():
  # ISO 389-7:2005 free field (= ISO 226:2003 threshold), dB SPL.
  got = reference_threshold_db_spl([125, 250, 500, 1000, 2000, 4000, 8000])
  np.testing.assert_allclose(got, [22.1, 11.4, 4.4, 2.4, -1.3, -5.4, 12.6], atol=ISO_TABLE_ATOL)


def test_reference_threshold_intermediate_audiometric_frequencies_are_tabulated():
  # ISO 389-7:2005 tabulates 750, 1500, 3000 and 6000 Hz itself (free field, dB SPL); they are
  # not on the one-third-octave grid, and interpolating that grid misses them by up to 0.23 dB.
  got = reference_threshold_db_spl([750, 1500, 3000, 6000])
  np.testing.assert_allclose(got, [2.4, 2.4, -5.8, 4.3], atol=ISO_TABLE_ATOL)


def test_hl_to_spl_adds_reference_threshold_and_broadcasts():
  got = hl_to_spl([1000, 4000], 40.0)
  np.testing.assert_allclose(got, [42.4, 34.6], atol=ISO_TABLE_ATOL)
  assert hl_to_spl(np.full((2, 2), 1000.0), np.zeros((2, 2))).shape == (2, 2)


def test_hl_spl_round_trip():
  rng = np.random.default_rng(0)
  freqs = np.exp(rng.uniform(np.log(125), np.log(8000), 200))
  db_hl = rng.uniform(-10, 120, 200)
  np.testing.assert_allclose(spl_to_hl(freqs, hl_to_spl(freqs, db_hl)), db_hl, atol=EXACT)
  # and a 0 dB HL tone is the reference threshold, interpolated between table entries.
  mid = np.sqrt(2000 * 2500)
  np.testing.assert_allclose(hl_to_spl(mid, 0.0), (-1.3 - 4.2) / 2, atol=EXACT)


@pytest.mark.parametrize("func, kwargs, match", [
    (hl_to_spl, dict(freqs_hz=100.0, db_hl=0.0), r"freqs_hz: expected frequencies within"),
    (hl_to_spl, dict(freqs_hz=1000.0, db_hl=float("nan")), r"db_hl: expected finite levels"),
    (spl_to_hl, dict(freqs_hz=9000.0, db_spl=0.0), r"freqs_hz: expected frequencies within"),
    (spl_to_hl, dict(freqs_hz=1000.0, db_spl=float("inf")), r"db_spl: expected finite levels"),
    (spl_to_hl, dict(freqs_hz=float("nan"), db_spl=0.0), r"freqs_hz: expected finite frequencies"),
    (spl_to_hl, dict(freqs_hz=[1000, 2000], db_spl=[1, 2, 3]), r"shapes \(2,\) and \(3,\) do not"),
    (hl_to_spl, dict(freqs_hz=[1000, 2000], db_hl=[1, 2, 3]), r"freqs_hz, db_hl: shapes"),
])
def test_conversion_errors(func, kwargs, match):
  with pytest.raises(ParameterError, match=match):
    func(**kwargs)


def test_agrees_with_reads_the_other_audiogram_at_its_own_frequencies():
  full = preset("N3")  # Bisgaard's 10 frequencies, 250..6000 Hz
  shown = Audiogram(EDITOR_FREQS_HZ, full.at(EDITOR_FREQS_HZ), ear="left")  # 8, up to 8 kHz
  assert shown.agrees_with(full) and shown != full
  assert not full.agrees_with(shown)  # the 8-point view interpolates 750 Hz differently
  assert not shown.with_threshold(2000, full.at(2000) + 5).agrees_with(full)
  with pytest.raises(ParameterError, match="other: expected an Audiogram"):
    shown.agrees_with({"N3": 1})


def test_a_name_longer_than_a_label_is_refused():
  Audiogram([1000], [20], name="x" * MAX_NAME_CHARS)
  with pytest.raises(ParameterError, match=f"name: expected at most {MAX_NAME_CHARS} characters"):
    Audiogram([1000], [20], name="x" * (MAX_NAME_CHARS + 1))


def test_more_points_than_a_third_octave_grid_are_refused():
  third_octaves = np.geomspace(125.0, 8000.0, MAX_POINTS)
  Audiogram(third_octaves, np.full(MAX_POINTS, 30.0))
  with pytest.raises(ParameterError, match=f"at most {MAX_POINTS} test frequencies.*got 20"):
    Audiogram(np.geomspace(125.0, 8000.0, 20), np.full(20, 30.0))
