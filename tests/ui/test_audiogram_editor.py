"""AudiogramEditor: one user action -> one threshold change -> one emitted Audiogram."""
import base64
import datetime
import html
import re
from unittest import mock

import pytest

from dal_widgets.errors import ParameterError
from dal_widgets.hearing.audiogram_io import dumps_audiogram, loads_audiogram
from dal_widgets.hearing.presets import preset
from dal_widgets.ui.audiogram_editor import FREQS_HZ, AudiogramEditor, AudiogramState

I_4K = FREQS_HZ.index(4000.0)


def _uploaded(name, content: bytes):
  """A FileUpload value as the browser sends it (one file)."""
  return ({"name": name, "type": "", "size": len(content), "content": memoryview(content),
           "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


def _observed_editor():
  editor = AudiogramEditor()
  observer = mock.Mock()
  editor.observe(observer, "audiogram")
  return editor, observer


def test_moving_the_4k_slider_changes_only_that_threshold_and_emits_once():
  editor, observer = _observed_editor()
  before = list(editor.state.thresholds_db_hl)
  editor.sliders[I_4K].value = 55
  after = editor.state.thresholds_db_hl
  assert [i for i, (a, b) in enumerate(zip(before, after)) if a != b] == [I_4K]
  assert after[I_4K] == 55
  observer.assert_called_once()
  emitted = observer.call_args.args[0]["new"]
  assert emitted.thresholds_db_hl == tuple(after) and emitted.name is None
  assert editor.preset_dropdown.value == "custom"
  assert editor.plot.sources["right"].data["threshold_db_hl"][I_4K] == 55


def test_preset_updates_every_slider_and_emits_once():
  editor, observer = _observed_editor()
  editor.preset_dropdown.value = "S2"
  expected = [float(v) for v in preset("S2").at(FREQS_HZ)]
  assert [s.value for s in editor.sliders] == expected
  observer.assert_called_once()
  assert observer.call_args.args[0]["new"].name == "S2"


def test_ear_switch_redraws_with_the_other_symbol():
  editor, observer = _observed_editor()
  editor.ear_buttons.value = "left"
  observer.assert_called_once()
  assert editor.audiogram.ear == "left"
  assert editor.plot.sources["right"].data["freq_hz"] == []
  assert editor.plot.sources["left"].data["freq_hz"] == list(FREQS_HZ)


def test_plot_is_clinical_hearing_level_increases_downward():
  y_range = AudiogramEditor().plot.figure.y_range
  assert y_range.start > y_range.end  # Bokeh puts `start` at the bottom
  assert y_range.end <= -10 and y_range.start >= 120


def test_state_clamps_thresholds_and_rejects_nan():
  state = AudiogramState()
  state.thresholds_db_hl = [-30, 0, 10, 20, 30, 40, 150, 120]
  assert state.thresholds_db_hl == [-10, 0, 10, 20, 30, 40, 120, 120]
  with pytest.raises(ParameterError, match="thresholds_db_hl"):
    state.thresholds_db_hl = [float("nan")] * 8


def test_bad_upload_shows_an_error_and_keeps_the_audiogram():
  editor, observer = _observed_editor()
  editor.preset_dropdown.value = "N2"
  before = editor.audiogram
  observer.reset_mock()
  editor.upload.value = _uploaded("mine.json", b'{"points": 5}')
  assert "Could not load mine.json" in editor.message.value and "points" in editor.message.value
  assert editor.audiogram == before
  observer.assert_not_called()
  assert editor.load_file(b"freq_hz,threshold_db_hl\n250,20\n", "audiogram.txt") is False
  assert ".json or .csv" in editor.message.value


def test_csv_upload_sets_thresholds_ear_and_name_in_one_emission():
  editor, observer = _observed_editor()
  text = "# ear: left\n# name: listener 7\nfreq_hz,threshold_db_hl\n250,10\n1000,30\n8000,70\n"
  editor.upload.value = _uploaded("l7.csv", text.encode())
  observer.assert_called_once()
  emitted = editor.audiogram
  assert (emitted.ear, emitted.name) == ("left", "listener 7")
  assert emitted.thresholds_db_hl[FREQS_HZ.index(1000.0)] == 30
  assert emitted.thresholds_db_hl[-1] == 70
  assert "500, 2000, 3000, 4000, 6000 Hz interpolated" in editor.message.value
  assert editor.upload.value == ()


def test_loading_says_what_was_extrapolated_and_dropped():
  editor, _ = _observed_editor()
  text = b"freq_hz,threshold_db_hl\n750,30\n4000,60\n8000,70\n"
  assert editor.load_file(text, "odd.csv")
  message = html.unescape(editor.message.value)
  assert "750 Hz not among the editor's frequencies" in message
  assert "250, 500 Hz outside the file's 750-8000 Hz: set to the threshold of its nearest point" \
      in message
  assert editor.audiogram.thresholds_db_hl[0] == 30
  assert editor.load_file(b'{"ear": "Left", "points": [{"freq_hz": 250, "threshold_db_hl": 10}]}',
                          "left.json")
  assert editor.audiogram.ear == "left"


def test_json_download_round_trips():
  editor = AudiogramEditor()
  editor.preset_dropdown.value = "N3"
  editor.sliders[0].value = 45
  match = re.search(r'href="data:application/json;base64,([^"]+)"', editor.download.value)
  loaded = loads_audiogram(base64.b64decode(match.group(1)), "json")
  assert loaded == editor.audiogram
  assert dumps_audiogram(loaded, "json") == dumps_audiogram(editor.audiogram, "json")


def test_two_editors_do_not_share_state():
  first, second = AudiogramEditor(), AudiogramEditor()
  first.sliders[0].value = 40
  assert second.state.thresholds_db_hl[0] == 0
