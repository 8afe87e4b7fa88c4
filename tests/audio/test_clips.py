"""Bundled clips: listed, loadable, 16 kHz, 1-4 s, 65 dB SPL, small."""
import importlib.resources

import numpy as np
import pytest

from dal_widgets.audio import calibration, clips
from dal_widgets.errors import ParameterError

LEVEL_TOL_DB = 0.1  # set to 65 dB SPL in float, then 16-bit FLAC: quantisation moves it < 0.01 dB
MAX_TOTAL_BYTES = 1_500_000  # the package must stay small


def test_list_clips():
  infos = clips.list_clips()
  assert 10 <= len(infos) <= 12
  assert len({c.name for c in infos}) == len(infos)
  assert {c.voice for c in infos} == {"kal16", "awb", "rms", "slt"}
  assert all(c.text.endswith(".") and c.file == f"{c.name}.flac" for c in infos)
  infos.clear()  # callers get their own list
  assert len(clips.list_clips()) >= 10


@pytest.mark.parametrize("info", clips.list_clips(), ids=lambda c: c.name)
def test_every_clip_is_16k_1_to_4_s_at_65_db_spl(info):
  x, sr = clips.load_clip(info.name)
  assert sr == clips.DEFAULT_SR == 16000
  assert x.dtype == np.float32 and x.ndim == 1
  assert 1.0 <= len(x) / sr <= 4.0
  assert len(x) / sr == pytest.approx(info.duration_s, abs=1e-3)
  assert calibration.rms_to_db_spl(calibration.rms(x)) == pytest.approx(65.0, abs=LEVEL_TOL_DB)
  assert np.abs(x).max() < 1.0


def test_load_clip_by_file_name_and_resampled():
  x, _ = clips.load_clip("slt_04")
  y, _ = clips.load_clip("slt_04.flac")
  np.testing.assert_array_equal(x, y)
  z, sr = clips.load_clip("slt_04", sr=22050)
  assert sr == 22050 and abs(len(z) - len(x) * 22050 / 16000) <= 1


def test_unknown_clip():
  with pytest.raises(ParameterError, match=r"name: expected one of .*'slt_04'.*got 'nope'"):
    clips.load_clip("nope")


def test_package_data_is_small():
  folder = importlib.resources.files("dal_widgets") / "data" / "clips"
  total = sum(len(f.read_bytes()) for f in folder.iterdir() if f.is_file())
  assert total < MAX_TOTAL_BYTES
