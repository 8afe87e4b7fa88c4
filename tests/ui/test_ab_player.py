"""ABPlayer: valid WAV per row, one shared scale (no per-clip normalisation), visible clipping."""
import base64
import io
import re

import numpy as np
import pytest
import soundfile as sf

from dal_widgets.errors import ParameterError
from dal_widgets.ui.ab_player import ABPlayer, wav_bytes

SR = 16000
PCM16_TOLERANCE_DB = 0.01  # 16-bit quantisation of a 0.05-amplitude tone moves its level far less


def _tone(amplitude, n=SR // 2, freq_hz=440.0):
  t = np.arange(n) / SR
  return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _read(wav):
  return sf.read(io.BytesIO(wav), dtype="float32")


def _rms_db(x):
  return 20 * np.log10(np.sqrt(np.mean(np.square(x))))


def test_rows_hold_valid_wav_with_the_right_rate_and_length():
  player = ABPlayer()
  player.set_signals({"clean": (_tone(0.1), SR), "DAL": (_tone(0.1, n=1234), 22050)})
  x, sr = _read(player.players["clean"].value)
  assert (sr, len(x)) == (SR, SR // 2)
  x, sr = _read(player.players["DAL"].value)
  assert (sr, len(x)) == (22050, 1234)
  assert player.players["clean"].format == "wav" and not player.players["clean"].autoplay


def test_no_per_clip_normalisation_levels_stay_6_db_apart():
  player = ABPlayer(("clean", "noisy"))
  player.set_signals({"clean": (_tone(0.1), SR), "noisy": (_tone(0.05), SR)})
  loud, _ = _read(player.players["clean"].value)
  quiet, _ = _read(player.players["noisy"].value)
  assert _rms_db(loud) - _rms_db(quiet) == pytest.approx(20 * np.log10(2), abs=PCM16_TOLERANCE_DB)
  assert _rms_db(loud) == pytest.approx(_rms_db(_tone(0.1)), abs=PCM16_TOLERANCE_DB)


def test_shared_gain_applies_to_every_row_alike():
  player = ABPlayer(("clean", "noisy"), gain_db=-6.0)
  player.set_signals({"clean": (_tone(0.2), SR)})
  x, _ = _read(player.players["clean"].value)
  assert _rms_db(x) - _rms_db(_tone(0.2)) == pytest.approx(-6.0, abs=PCM16_TOLERANCE_DB)


def test_clipping_is_flagged_not_normalised():
  player = ABPlayer(("clean", "noisy"))
  player.set_signals({"clean": (_tone(0.1), SR), "noisy": (_tone(2.0), SR)})
  x, _ = _read(player.players["noisy"].value)
  assert np.max(np.abs(x)) == pytest.approx(1.0, abs=1e-4)
  assert "clipped" in player.warnings["noisy"].value and "+6.0 dB FS" in player.warnings["noisy"].value
  assert player.warnings["clean"].value == ""
  one = np.full(100, 0.5)
  one[50] = 1.5
  player.set_signals({"clean": (one, SR)})
  assert "clipped 1 sample (" in player.warnings["clean"].value


def test_download_link_carries_the_same_wav():
  player = ABPlayer()
  player.set_signals({"unaided (impaired)": (_tone(0.1), SR)})
  match = re.search(r'download="([^"]+)" href="data:audio/wav;base64,([^"]+)"',
                    player.links["unaided (impaired)"].value)
  assert match.group(1) == "unaided__impaired.wav"
  assert base64.b64decode(match.group(2)) == player.players["unaided (impaired)"].value


def test_rows_missing_from_signals_are_emptied():
  player = ABPlayer(("clean", "DAL"))
  player.set_signals({"clean": (_tone(0.1), SR), "DAL": (_tone(0.1), SR)})
  player.set_signals({"clean": (_tone(0.1), SR)})
  assert player.players["DAL"].value == b"" and player.links["DAL"].value == ""
  assert player.players["DAL"].layout.visibility == "hidden"
  assert "not computed" in player.warnings["DAL"].value


def test_an_empty_row_is_an_empty_url_not_an_empty_wav_blob():
  # The page makes a blob URL of WAV bytes; a 0-byte blob's range request fails with a console
  # error, so a row without sound must give the page nothing to fetch: an empty URL.
  player = ABPlayer(("clean", "DAL"))
  for name in ("clean", "DAL"):  # before any signal
    assert (player.players[name].format, player.players[name].value) == ("url", b"")
  player.set_signals({"clean": (_tone(0.1), SR), "DAL": (_tone(0.1), SR)})
  player.set_signals({"clean": (_tone(0.1), SR)})
  assert (player.players["DAL"].format, player.players["DAL"].value) == ("url", b"")
  assert player.players["clean"].format == "wav" and player.players["clean"].value[:4] == b"RIFF"


def test_bad_signals_raise_parameter_error_and_change_nothing():
  player = ABPlayer(("clean",))
  with pytest.raises(ParameterError, match="unknown"):
    player.set_signals({"aided": (_tone(0.1), SR)})
  bad = _tone(0.1)
  bad[3] = np.nan
  with pytest.raises(ParameterError, match=r"signals\['clean'\].*finite"):
    player.set_signals({"clean": (bad, SR)})
  with pytest.raises(ParameterError, match="sr"):
    wav_bytes(_tone(0.1), 0)
  assert player.players["clean"].value == b""
