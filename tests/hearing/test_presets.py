"""Tests of dal_widgets.hearing.presets: names, order, values (Bisgaard et al. 2010), errors."""
import pytest

from dal_widgets.errors import ParameterError
from dal_widgets.hearing import presets
from dal_widgets.hearing.presets import NORMAL, PRESET_NAMES, preset


def test_names_in_display_order():
  assert PRESET_NAMES == ("normal", "N1", "N2", "N3", "N4", "N5", "N6", "N7", "S1", "S2", "S3")


def test_normal_is_zero_db_hl_everywhere():
  assert NORMAL.thresholds_db_hl == (0.0,) * 10
  assert NORMAL.name == "normal"
  assert preset("normal") is NORMAL


@pytest.mark.parametrize("name, freq_hz, expected_db_hl", [
    ("N1", 250, 10), ("N1", 6000, 40), ("N2", 750, 22.5), ("N3", 1000, 40), ("N4", 3000, 70),
    ("N5", 375, 67.5), ("N6", 4000, 100), ("N7", 750, 100), ("N7", 6000, 105),
    ("S1", 4000, 55), ("S2", 3000, 75), ("S3", 750, 47.5), ("S3", 6000, 85),
])
def test_spot_values(name, freq_hz, expected_db_hl):
  gram = preset(name)
  assert gram.freqs_hz == (250, 375, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000)
  assert gram.thresholds_db_hl[gram.freqs_hz.index(freq_hz)] == expected_db_hl


def test_full_rows_and_names():
  assert preset("N4").thresholds_db_hl == (55, 55, 55, 55, 55, 60, 65, 70, 75, 80)
  assert preset("S2").thresholds_db_hl == (20, 20, 20, 22.5, 25, 35, 55, 75, 95, 95)
  for name in PRESET_NAMES:
    assert preset(name).name == name


def test_n_series_increases_in_degree():
  ptas = [preset(f"N{i}").pta_db_hl for i in range(1, 8)]
  assert ptas == sorted(ptas) and len(set(ptas)) == 7


def test_lookup_is_case_insensitive_and_sets_ear():
  assert preset("n3") == presets.preset("N3")
  assert preset(" NORMAL ") is NORMAL
  left = preset("s1", ear="left")
  assert left.ear == "left" and left.thresholds_db_hl == preset("S1").thresholds_db_hl


def test_unknown_name_lists_valid_names():
  with pytest.raises(ParameterError, match=r"name: expected one of normal, N1, .*S3, got 'N8'"):
    preset("N8")


def test_bad_ear():
  with pytest.raises(ParameterError, match=r"ear: expected one of"):
    preset("N1", ear="middle")
