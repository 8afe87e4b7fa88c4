"""Cochleagram panels: NAPs as images (CF up, time across) with one shared colour scale.

The view builds its Bokeh figures and data sources once; `render()` only assigns `source.data`
(and the shared colour range), so a slider callback sends one small image per panel, and only for
panels whose NAP changed: a NAP given again (the same array object) keeps its image and its panel
is left alone (Bokeh sends every assignment of `source.data`, even of equal data).
"""
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import numpy as np
from bokeh.events import Tap
from bokeh.layouts import gridplot
from bokeh.models import (ColorBar, ColumnDataSource, CustomJSHover, FixedTicker, HoverTool,
                          LinearColorMapper, PrintfTickFormatter, Range1d, Span)
from bokeh.palettes import RdBu11, Viridis256, interp_palette
from bokeh.plotting import figure
from traitlets import Float, HasTraits

from dal_widgets.errors import ParameterError
from dal_widgets.ui.bokeh_setup import bokeh_model

CF_TICKS_HZ = (125, 250, 500, 1000, 2000, 4000, 8000)  # octave labels audiologists read
MAX_COLUMNS = 800  # time columns drawn per panel; more is finer than the screen and slower to send
DISPLAY_PERCENTILE = 99.5  # colour scale top: onset spikes would otherwise darken the whole image
# Blue -> white -> red (255 colours: white sits exactly at 0): blue = less activity than the
# reference panel, red = more.
DIFF_PALETTE = interp_palette(RdBu11, 255)
# Colour bar titles: CARFAC's NAP is a firing-rate-like quantity in arbitrary units.
NAP_COLORBAR_TITLE = "NAP (arb. units)"
DIFF_COLORBAR_TITLE = "Δ NAP (arb. units)"
COLORBAR_WIDTH = 10  # px
# Colour-bar tick labels in at most 8 characters ("0.0035", "-0.00015"), and room for them and the
# title to the right of the frame. Bokeh sizes that border once, for the first range (0..1): labels
# of a later, smaller range ran under the toolbar ("3.500e-3").
COLORBAR_TICK_FORMAT = "%.2g"
COLORBAR_ROOM_PX = 80


def hz_label(freq_hz: float) -> str:
  """Short axis label of a frequency: 125 -> "125", 1000 -> "1k", 1500 -> "1.5k"."""
  if freq_hz >= 1000:
    return f"{freq_hz / 1000:g}k"
  return f"{freq_hz:g}"


def validate_cf_hz(cf_hz) -> np.ndarray:
  """Returns cf_hz as float64 [n_ch], checking it is 1-D, positive and decreasing (channel 0 highest).

  Raises:
    ParameterError: if cf_hz is not a decreasing 1-D array of positive frequencies.
  """
  cf = np.asarray(cf_hz, dtype=np.float64)
  if cf.ndim != 1 or cf.size < 2:
    raise ParameterError(f"cf_hz: expected a 1-D array of at least 2 CFs in Hz, got shape {cf.shape}")
  if not (np.all(np.isfinite(cf)) and np.all(cf > 0) and np.all(np.diff(cf) < 0)):
    raise ParameterError("cf_hz: expected positive CFs in Hz decreasing with channel index "
                         f"(channel 0 = highest CF), got {cf[:3]}...{cf[-3:]}")
  return cf


def cf_axis_ticks(cf_hz: np.ndarray, ticks_hz: Sequence[float] = CF_TICKS_HZ) -> dict[float, str]:
  """Axis positions and labels for CF ticks on an image drawn with the highest CF at the top.

  The image row r (from the bottom) holds channel n_ch - 1 - r and spans y in [r, r + 1]; each tick
  frequency inside the CF range is placed at the centre of its nearest channel's row.

  Args:
    cf_hz: Channel CFs in Hz, shape [n_ch], decreasing (channel 0 = highest CF).
    ticks_hz: Frequencies to label, Hz.

  Returns:
    {y position: label}, e.g. {12.5: "250", ...}.
  """
  n_ch = len(cf_hz)
  ticks = {}
  for freq in ticks_hz:
    if not cf_hz[-1] <= freq <= cf_hz[0]:
      continue
    channel = int(np.argmin(np.abs(np.log(cf_hz / freq))))
    ticks[n_ch - 1 - channel + 0.5] = hz_label(freq)
  return ticks


def max_pool_time(nap: np.ndarray, max_columns: int = MAX_COLUMNS) -> tuple[np.ndarray, int]:
  """Image of a NAP for display: channels as rows (lowest CF first), time max-pooled.

  Max-pooling keeps brief peaks (onsets, glottal pulses) visible after downsampling.

  Args:
    nap: Activity, shape [n_time, n_ch], channel 0 = highest CF.
    max_columns: Most columns to keep.

  Returns:
    (image, factor): image float32 [n_ch, ceil(n_time / factor)], row 0 = lowest CF (Bokeh draws
    row 0 at the bottom); factor = input samples per column.
  """
  n_time = nap.shape[0]
  factor = max(1, -(-n_time // max_columns))
  image = nap
  if factor > 1:  # whole columns as one reshape (10x faster than maximum.reduceat), then the rest
    whole = n_time // factor * factor
    image = nap[:whole].reshape(-1, factor, nap.shape[1]).max(axis=1)
    if whole < n_time:
      image = np.concatenate([image, nap[whole:].max(axis=0, keepdims=True)])
  return np.ascontiguousarray(image.T[::-1], dtype=np.float32), factor


def image_data(image: np.ndarray | None, duration_s: float) -> dict:
  """Column data of one Bokeh image glyph spanning [0, duration_s] x [0, n_rows]; None -> empty."""
  if image is None:
    return dict(image=[], x=[], y=[], dw=[], dh=[])
  return dict(image=[image], x=[0.0], y=[0.0], dw=[duration_s], dh=[image.shape[0]])


def _show_image(source: ColumnDataSource, image: np.ndarray | None, duration_s: float) -> None:
  """Assigns `image_data(image, duration_s)` unless `source` holds this very image (or none)
  already."""
  held = source.data["image"]
  if (held[0] if held else None) is image and (image is None or source.data["dw"][0] == duration_s):
    return
  source.data = image_data(image, duration_s)


def cf_hover(cf_hz: np.ndarray, value_name: str = "value", x_name: str = "time",
             x_format: str = "$x{0.000} s") -> HoverTool:
  """Hover tool showing the CF in Hz under the pointer (rows drawn highest CF at the top)."""
  to_cf = CustomJSHover(args=dict(cf=[float(c) for c in cf_hz]), code="""
    const row = Math.floor(value);
    if (row < 0 || row >= cf.length) { return "-"; }
    return cf[cf.length - 1 - row].toFixed(0) + " Hz";
  """)
  return HoverTool(tooltips=[("CF", "$y{cf}"), (x_name, x_format), (value_name, "@image{0.000}")],
                   formatters={"$y": to_cf})


def style_cf_axis(fig, cf_hz: np.ndarray) -> None:
  """Label a figure's y axis with CF ticks at their channel rows."""
  ticks = cf_axis_ticks(cf_hz)
  fig.yaxis.ticker = FixedTicker(ticks=list(ticks))
  fig.yaxis.major_label_overrides = ticks
  fig.yaxis.axis_label = "CF (Hz)"


def add_colour_bar(fig, mapper, title: str) -> ColorBar:
  """A titled colour bar right of `fig`'s frame, with room for its labels at any range."""
  bar = ColorBar(color_mapper=mapper, width=COLORBAR_WIDTH, title=title,
                 formatter=PrintfTickFormatter(format=COLORBAR_TICK_FORMAT))
  fig.add_layout(bar, "right")
  fig.min_border_right = COLORBAR_ROOM_PX
  return bar


def robust_top(images: Sequence[np.ndarray], symmetric: bool = False) -> float:
  """Top of a shared colour scale: DISPLAY_PERCENTILE of all values (of |values| if symmetric)."""
  values = np.concatenate([np.abs(im).ravel() if symmetric else im.ravel() for im in images])
  top = float(np.percentile(values, DISPLAY_PERCENTILE)) if values.size else 0.0
  return top if top > 0 else 1.0


class CochleagramView(HasTraits):
  """Side-by-side NAP images with shared axes, shared colour scale and a linked time cursor.

  Attributes:
    sources: {label: ColumnDataSource} of each panel (plus "difference" if requested).
    figures: {label: bokeh figure}.
    model: the `jupyter_bokeh.BokehModel` holding all panels.
    widget: an ipywidgets VBox to display.
  """

  cursor_s = Float(0.0, help="Time cursor in s, a vertical line on every panel; a click sets it.")

  def __init__(self, cf_hz, sr: float, labels: Sequence[str] = ("normal",), *, height: int = 180,
               width: int = 330, difference: tuple[str, str] | None = None, ncols: int | None = None,
               max_columns: int = MAX_COLUMNS, value_range: tuple[float, float] | None = None):
    """Builds the figures once.

    Args:
      cf_hz: Channel CFs in Hz, shape [n_ch], decreasing (channel 0 = highest CF).
      sr: Frame rate of the NAP time axis in Hz (the audio rate unless the NAP was decimated).
      labels: Panel names, in display order, e.g. ("normal", "impaired", "NAL-R", "DAL").
      height: Plot frame height of each panel in pixels.
      width: Plot frame width of each panel in pixels.
      difference: (a, b) adds a panel showing NAP b - NAP a in a diverging palette; setting
        `difference` to another pair or None later (the panel empty) takes effect at `render`.
      ncols: Panels per row; default all in one row up to 3 panels, else 2 per row.
      max_columns: Time columns kept per panel (max-pooled).
      value_range: Fixed (low, high) of the colour scale; default: from the data at each render.
    """
    super().__init__()
    self.cf_hz = validate_cf_hz(cf_hz)
    if not sr > 0:
      raise ParameterError(f"sr: expected a positive frame rate in Hz, got {sr!r}")
    labels = tuple(labels)
    if not labels or len(set(labels)) != len(labels):
      raise ParameterError(f"labels: expected distinct panel names, got {labels!r}")
    if difference is not None and not (len(difference) == 2 and set(difference) <= set(labels)
                                       and "difference" not in labels):
      raise ParameterError(f"difference: expected two of {labels} (none named 'difference'), "
                           f"got {difference!r}")
    self.sr = float(sr)
    self.labels = labels
    self.difference = tuple(difference) if difference else None
    self.max_columns = int(max_columns)
    self.value_range = value_range
    n_ch = len(self.cf_hz)
    self.x_range = Range1d(0.0, 1.0)
    self.y_range = Range1d(0.0, n_ch)
    low, high = value_range or (0.0, 1.0)
    self.mapper = LinearColorMapper(palette=Viridis256, low=low, high=high)
    self.diff_mapper = LinearColorMapper(palette=DIFF_PALETTE, low=-1.0, high=1.0)
    self.sources, self.figures, self._spans = {}, {}, []
    self._pooled = {}  # label -> (nap, image, duration_s) of the last render: unchanged NAPs
    self._diff = None  # ((image a, image b), image b - a) of the last difference drawn
    for label in labels:
      self._add_panel(label, label, self.mapper, height, width)
    if self.difference:
      a, b = self.difference
      self._add_panel("difference", f"{b} \u2212 {a}", self.diff_mapper, height, width)
      add_colour_bar(self.figures["difference"], self.diff_mapper, DIFF_COLORBAR_TITLE)
    add_colour_bar(self.figures[labels[-1]], self.mapper, NAP_COLORBAR_TITLE)
    panels = list(self.figures.values())
    ncols = ncols or (len(panels) if len(panels) <= 3 else 2)
    if self.difference and ncols > 1:
      # In the last column, beside no panel on its right: its colour bar then widens no column of
      # NAP panels (in the first column of a 2 x 2 grid it pushed the SAI beside it off the page).
      panels[-1:-1] = [None] * ((ncols - 1 - len(labels) % ncols) % ncols)
    self.layout = gridplot(panels, ncols=ncols, toolbar_location="above")
    self.layout.toolbar.logo = None
    self.model = bokeh_model(self.layout)
    self.model.add_class("dal-cochleagram")  # a handle for browser tests and app CSS
    self.widget = widgets.VBox([self.model])
    self.observe(self._on_cursor_s_changed, "cursor_s")

  def _add_panel(self, key, title, mapper, height, width):
    fig = figure(title=title, frame_height=height, frame_width=width, x_range=self.x_range,
                 y_range=self.y_range, tools="xpan,xwheel_zoom,box_zoom,reset,save",
                 active_scroll=None, toolbar_location=None)
    source = ColumnDataSource(image_data(None, 0.0))
    fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=source, color_mapper=mapper)
    fig.add_tools(cf_hover(self.cf_hz))
    style_cf_axis(fig, self.cf_hz)
    fig.xaxis.axis_label = "time (s)"
    fig.grid.visible = False
    on_dark = mapper is self.mapper  # Viridis is dark at rest; the difference palette is white at 0
    span = Span(location=self.cursor_s, dimension="height", line_color="white" if on_dark else "#333",
                line_alpha=0.8, line_dash="dashed", line_width=1.5)
    fig.add_layout(span)
    fig.on_event(Tap, self._on_tap)
    self._spans.append(span)
    self.sources[key], self.figures[key] = source, fig

  def render(self, naps: Mapping[str, np.ndarray], *, top: float | None = None) -> None:
    """Shows NAPs; panels whose label is missing from `naps` are cleared.

    A panel given the same NAP object as at the last render is left as it is (not pooled or sent
    to the page again), so pass a new array, not one changed in place, to show new values.

    Args:
      naps: {label: nap}, each nap of shape [n_time, n_ch] at rate `sr`, channel 0 = highest CF.
      top: Top of the colour scale (e.g. `scale_top` of a reference NAP); default: from these
        NAPs (ignored with a fixed `value_range`).

    Raises:
      ParameterError: on an unknown label or a NAP of the wrong shape.
    """
    unknown = set(naps) - set(self.labels)
    if unknown:
      raise ParameterError(f"naps: expected labels among {self.labels}, got unknown {sorted(unknown)}")
    images, durations, pooled = {}, {}, {}
    for label, given in naps.items():
      last = self._pooled.get(label)
      if last is not None and last[0] is given:  # the same NAP again: its panel stays as it is
        pooled[label] = last
        images[label], durations[label] = last[1], last[2]
        continue
      nap = np.asarray(given)
      if nap.ndim != 2 or nap.shape[1] != len(self.cf_hz) or nap.shape[0] < 1:
        raise ParameterError(f"naps[{label!r}]: expected shape [n_time, {len(self.cf_hz)}], "
                             f"got {nap.shape}")
      images[label], factor = max_pool_time(nap, self.max_columns)
      durations[label] = images[label].shape[1] * factor / self.sr
      pooled[label] = (given, images[label], durations[label])
    self._pooled = pooled
    if self.value_range is None and (images or top is not None):
      self.mapper.high = top if top is not None else robust_top(list(images.values()))
    for label in self.labels:
      _show_image(self.sources[label], images.get(label), durations.get(label, 0.0))
    if self.difference:
      self._render_difference(images, durations)
    elif "difference" in self.sources:  # switched off: nothing to send while it is hidden
      _show_image(self.sources["difference"], None, 0.0)
    longest = max(durations.values(), default=0.0)
    if longest > 0 and self.x_range.end != longest:
      self.x_range.update(start=0.0, end=longest)

  def scale_top(self, nap: np.ndarray) -> float:
    """The colour-scale top that `render` would give `nap` alone ([n_time, n_ch])."""
    return robust_top([max_pool_time(np.asarray(nap), self.max_columns)[0]])

  def _render_difference(self, images, durations):
    a, b = self.difference
    if a in images and b in images and images[a].shape == images[b].shape:
      pair = (images[a], images[b])
      if self._diff is None or any(x is not y for x, y in zip(self._diff[0], pair)):
        self._diff = (pair, images[b] - images[a])
      diff = self._diff[1]
      top = robust_top([diff], symmetric=True)
      self.diff_mapper.update(low=-top, high=top)
      _show_image(self.sources["difference"], diff, durations[a])
    else:
      _show_image(self.sources["difference"], None, 0.0)

  def _on_tap(self, event):
    if event.x is not None:
      self.cursor_s = max(float(event.x), 0.0)

  def _on_cursor_s_changed(self, change):
    for span in self._spans:
      span.location = change["new"]
