"""SAIView: one frame shown at a time; the frame and the time cursor follow each other."""
import numpy as np
import pytest
import traitlets
from bokeh.models import ColorBar

from dal_widgets.errors import ParameterError
from dal_widgets.ui.cochleagram_view import CochleagramView
from dal_widgets.ui.sai_view import SAIView

N_CH = 40
CF_HZ = np.geomspace(8000.0, 100.0, N_CH)
LAG_MS = np.arange(-40, 11) * 0.5  # 51 lags, 0.5 ms apart
HOP_S = 0.02


def _sai(n_frames=30):
  rng = np.random.default_rng(0)
  return rng.random((n_frames, N_CH, LAG_MS.size)).astype(np.float32)


def test_render_shows_current_frame_with_highest_cf_on_top():
  view = SAIView(CF_HZ, LAG_MS, HOP_S)
  sai = _sai()
  view.render(sai)
  view.slider.value = 7
  image = view.source.data["image"][0]
  np.testing.assert_array_equal(image[-1], sai[7, 0])  # top row = channel 0 = highest CF
  assert image.shape == (N_CH, LAG_MS.size)
  assert view.play.max == view.slider.max == 29
  assert view.source.data["dw"][0] == pytest.approx(LAG_MS.size * 0.5)


def test_the_colour_bar_names_its_quantity_and_units():
  view = SAIView(CF_HZ, LAG_MS, HOP_S)
  bars = [r for r in view.figure.right if isinstance(r, ColorBar)]
  assert [bar.title for bar in bars] == ["SAI (arb. units)"]


def test_cursor_is_linked_with_a_cochleagram():
  cochleagram = CochleagramView(CF_HZ, 16000, ("normal",))
  sai_view = SAIView(CF_HZ, LAG_MS, HOP_S, offset_s=0.01)
  sai_view.render(_sai())
  traitlets.link((cochleagram, "cursor_s"), (sai_view, "cursor_s"))
  cochleagram.cursor_s = 0.2 + 0.004  # nearest frame: (0.204 - 0.01) / 0.02 = 9.7 -> 10
  assert sai_view.frame == 10 and sai_view.slider.value == 10
  sai_view.slider.value = 3
  assert cochleagram.cursor_s == pytest.approx(0.01 + 3 * HOP_S)
  assert cochleagram._spans[0].location == pytest.approx(0.07)


def test_fewer_frames_clamp_the_frame():
  view = SAIView(CF_HZ, LAG_MS, HOP_S)
  view.render(_sai(30))
  view.frame = 25
  view.render(_sai(5))
  assert view.frame == 4 and view.slider.max == 4


def test_bad_inputs_raise_parameter_error():
  with pytest.raises(ParameterError, match="lag_ms"):
    SAIView(CF_HZ, LAG_MS[::-1], HOP_S)
  with pytest.raises(ParameterError, match="hop_s"):
    SAIView(CF_HZ, LAG_MS, 0.0)
  with pytest.raises(ParameterError, match="sai"):
    SAIView(CF_HZ, LAG_MS, HOP_S).render(np.zeros((3, N_CH, 7)))


def test_frames_set_from_python_move_the_play_button():
  # Play and the slider are linked only in the browser, so the kernel's Play value must follow
  # frames set from Python (a cursor, a new sound) or a re-sent page state shows a stale frame.
  view = SAIView(CF_HZ, LAG_MS, HOP_S)
  view.render(_sai())
  view.frame = 12
  assert view.play.value == view.slider.value == 12
  view.cursor_s = view.frame_time_s(4)
  assert view.play.value == view.frame == 4
  view.render(_sai()[:3])  # fewer frames: the frame is clamped, Play follows
  assert view.play.value == view.frame == 2
