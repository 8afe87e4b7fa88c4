"""CochleagramView: figures built once, render() fills the sources with CF-up, time-pooled images."""
import numpy as np
import pytest
from bokeh.events import Tap
from bokeh.models import ColorBar

from dal_widgets.errors import ParameterError
from dal_widgets.ui.cochleagram_view import (COLORBAR_ROOM_PX, CochleagramView, cf_axis_ticks, max_pool_time)

SR = 22050
N_CH = 71
CF_HZ = np.geomspace(9000.0, 60.0, N_CH)  # decreasing: channel 0 = highest CF, like CARFAC


def _nap(n_time=SR // 2, hot_channel=None, value=1.0):
  nap = np.zeros((n_time, N_CH), np.float32)
  if hot_channel is not None:
    nap[:, hot_channel] = value
  return nap


def test_builds_one_figure_and_source_per_label_plus_difference():
  view = CochleagramView(CF_HZ, SR, ("normal", "impaired", "NAL-R", "DAL"),
                         difference=("normal", "DAL"))
  assert list(view.sources) == ["normal", "impaired", "NAL-R", "DAL", "difference"]
  assert view.model.render_bundle  # BokehModel serialised the layout
  assert view.widget.children == (view.model,)
  # honest comparison: every panel shares the ranges and the non-difference panels one colour mapper
  figs = list(view.figures.values())
  assert all(f.x_range is view.x_range and f.y_range is view.y_range for f in figs)
  mappers = {id(f.renderers[0].glyph.color_mapper) for f in figs[:4]}
  assert mappers == {id(view.mapper)}


@pytest.mark.parametrize("n_labels, ncols", [(4, 2), (2, 3), (3, 2), (2, 2)])
def test_the_difference_panel_sits_in_the_last_column(n_labels, ncols):
  # its colour bar needs room: in another column it widens the grid (and pushes what is beside it)
  labels = ("normal", "impaired", "NAL-R", "DAL")[:n_labels]
  view = CochleagramView(CF_HZ, SR, labels, difference=("normal", labels[-1]), ncols=ncols)
  cells = {id(fig): (row, col) for fig, row, col in view.layout.children}
  assert cells[id(view.figures["difference"])][1] == ncols - 1
  assert [cells[id(view.figures[label])] for label in labels] == [divmod(i, ncols)
                                                                  for i in range(n_labels)]


def test_every_colour_bar_names_its_quantity_and_units():
  view = CochleagramView(CF_HZ, SR, ("normal", "impaired"), difference=("normal", "impaired"))
  bars = {label: [r for r in fig.right if isinstance(r, ColorBar)]
          for label, fig in view.figures.items()}
  assert [bar.title for bar in bars["impaired"]] == ["NAP (arb. units)"]
  assert [bar.title for bar in bars["difference"]] == ["\u0394 NAP (arb. units)"]
  assert bars["normal"] == []  # one shared scale, drawn once beside the last NAP panel


def test_colour_bar_labels_stay_short_at_any_scale_and_have_room():
  view = CochleagramView(CF_HZ, SR, ("normal", "impaired"), difference=("normal", "impaired"))
  for label in ("impaired", "difference"):
    fig = view.figures[label]
    (bar,) = [r for r in fig.right if isinstance(r, ColorBar)]
    assert fig.min_border_right >= COLORBAR_ROOM_PX
    for top in (5.2, 0.73, 3.5e-3, 1.6e-4, 2.2e-5):
      # Bokeh's ticks: about 6 over the range, at multiples of 1, 2 or 5 x 10^k
      step = min((m * 10.0 ** k for m in (1, 2, 5) for k in range(-7, 2)),
                 key=lambda s: abs(np.log(s / (2 * top / 6))))
      ticks = step * np.arange(np.ceil(-top / step), np.floor(top / step) + 1)
      assert max(len(bar.formatter.format % t) for t in ticks) <= 8, (top, ticks)


def test_render_puts_highest_cf_on_the_top_row():
  view = CochleagramView(CF_HZ, SR, ("normal",))
  view.render({"normal": _nap(hot_channel=0)})  # channel 0 = highest CF
  image = view.sources["normal"].data["image"][0]
  assert image.dtype == np.float32
  assert image.shape[0] == N_CH and image.shape[1] <= 800
  # Bokeh draws image row 0 at the bottom, so the top of the plot is the last row
  assert np.all(image[-1] == 1.0) and np.all(image[:-1] == 0.0)


def test_render_time_axis_in_seconds_and_pooling_keeps_peaks():
  nap = _nap(n_time=SR)  # 1 s
  nap[12345, 30] = 7.0  # a single-sample spike must survive the downsampling
  view = CochleagramView(CF_HZ, SR, ("normal",))
  view.render({"normal": nap})
  data = view.sources["normal"].data
  column_s = 1.0 / data["image"][0].shape[1]
  assert data["dw"][0] == pytest.approx(1.0, abs=column_s)
  assert view.x_range.end == pytest.approx(data["dw"][0])
  assert data["image"][0].max() == 7.0


def test_max_pool_time_factor_and_columns():
  image, factor = max_pool_time(np.arange(10.0)[:, None] * np.ones((1, 3)), max_columns=4)
  assert factor == 3
  np.testing.assert_array_equal(image[0], [2.0, 5.0, 8.0, 9.0])


@pytest.mark.parametrize("n_time", [1600, 1601, 2399, 35200, 34000])
def test_max_pool_time_keeps_the_maximum_of_each_column_and_of_a_short_last_one(n_time):
  nap = np.random.default_rng(n_time).random((n_time, N_CH), dtype=np.float32)
  image, factor = max_pool_time(nap, 800)
  starts = np.arange(0, n_time, factor)
  np.testing.assert_array_equal(image, np.maximum.reduceat(nap, starts, axis=0).T[::-1])


def test_shared_colour_scale_is_set_by_the_louder_panel():
  view = CochleagramView(CF_HZ, SR, ("normal", "impaired"))
  view.render({"normal": _nap(hot_channel=10, value=4.0), "impaired": _nap(hot_channel=10, value=1.0)})
  assert view.mapper.high == pytest.approx(4.0)


def test_difference_panel_is_b_minus_a_on_a_symmetric_scale():
  view = CochleagramView(CF_HZ, SR, ("normal", "impaired"), difference=("normal", "impaired"))
  view.render({"normal": _nap(hot_channel=5, value=3.0), "impaired": _nap(hot_channel=5, value=1.0)})
  diff = view.sources["difference"].data["image"][0]
  assert diff[N_CH - 1 - 5].min() == pytest.approx(-2.0)
  assert view.diff_mapper.low == pytest.approx(-view.diff_mapper.high)


def _sent_sources(view):
  """The labels of the sources whose data the view's Bokeh document sends to the page, in order."""
  names = {id(source): label for label, source in view.sources.items()}
  sent = []
  view.model._document.on_change(lambda event: sent.append(names.get(id(getattr(event, "model", None)))))
  return sent


def test_a_nap_given_again_is_not_sent_to_the_page_again():
  view = CochleagramView(CF_HZ, SR, ("normal", "impaired"), difference=("normal", "impaired"))
  normal, impaired = _nap(hot_channel=5, value=3.0), _nap(hot_channel=5, value=1.0)
  view.render({"normal": normal, "impaired": impaired})
  sent = _sent_sources(view)
  view.render({"normal": normal, "impaired": impaired})
  assert [label for label in sent if label] == []
  view.render({"normal": normal, "impaired": _nap(hot_channel=6, value=1.0)})
  assert [label for label in sent if label] == ["impaired", "difference"]
  diff = view.sources["difference"].data["image"][0]
  assert diff[N_CH - 1 - 5].min() == pytest.approx(-3.0) and diff[N_CH - 1 - 6].max() == 1.0


def test_missing_label_clears_its_panel():
  view = CochleagramView(CF_HZ, SR, ("normal", "DAL"))
  view.render({"normal": _nap(), "DAL": _nap()})
  view.render({"normal": _nap()})
  assert view.sources["DAL"].data["image"] == []
  assert len(view.sources["normal"].data["image"]) == 1


def test_cf_ticks_sit_on_the_nearest_channel_row():
  ticks = cf_axis_ticks(CF_HZ)
  channel_1k = int(np.argmin(np.abs(CF_HZ - 1000.0)))
  assert ticks[N_CH - 1 - channel_1k + 0.5] == "1k"
  assert "16k" not in ticks.values() and "125" in ticks.values()


def test_cursor_moves_every_panel_line():
  view = CochleagramView(CF_HZ, SR, ("normal", "impaired"), difference=("normal", "impaired"))
  view.cursor_s = 0.25
  assert [span.location for span in view._spans] == [0.25, 0.25, 0.25]


def test_a_click_on_a_panel_sets_the_cursor():
  view = CochleagramView(CF_HZ, SR, ("normal", "impaired"))
  view.figures["impaired"]._trigger_event(Tap(view.figures["impaired"], x=0.4, y=10.0))
  assert view.cursor_s == pytest.approx(0.4)
  assert view._spans[0].location == pytest.approx(0.4)


def test_bad_inputs_raise_parameter_error():
  with pytest.raises(ParameterError, match="cf_hz"):
    CochleagramView(CF_HZ[::-1], SR)
  with pytest.raises(ParameterError, match="difference"):
    CochleagramView(CF_HZ, SR, ("normal",), difference=("normal", "DAL"))
  view = CochleagramView(CF_HZ, SR, ("normal",))
  with pytest.raises(ParameterError, match="unknown"):
    view.render({"aided": _nap()})
  with pytest.raises(ParameterError, match=r"naps\['normal'\]"):
    view.render({"normal": np.zeros((100, N_CH - 1))})
