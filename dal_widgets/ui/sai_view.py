"""Stabilized auditory image (SAI) frames: one image (CF up, lag across) per frame, with Play.

The frame shown and the time cursor are traitlets; link `cursor_s` with a CochleagramView's
`cursor_s` and both follow each other (frame i <-> time offset_s + i * hop_s).
"""
import ipywidgets as widgets
import numpy as np
from bokeh.models import ColumnDataSource, LinearColorMapper, Range1d, Span
from bokeh.palettes import Viridis256
from bokeh.plotting import figure
from traitlets import Float, HasTraits, Int, observe

from dal_widgets.errors import ParameterError
from dal_widgets.ui.bokeh_setup import bokeh_model
from dal_widgets.ui.cochleagram_view import (add_colour_bar, cf_hover, robust_top, style_cf_axis,
                                              validate_cf_hz)

PLAY_INTERVAL_MS = 100  # one frame per 100 ms keeps UI updates at <= 10 Hz
SAI_COLORBAR_TITLE = "SAI (arb. units)"  # blended NAP segments: the NAP's arbitrary units


class SAIView(HasTraits):
  """SAI frames as an image (x = lag in ms, y = CF), a frame slider and a Play button.

  Attributes:
    source: the ColumnDataSource of the image.
    figure: the Bokeh figure.
    play, slider: the Play and IntSlider widgets (linked in the browser).
    widget: an ipywidgets VBox to display.
  """

  frame = Int(0, help="Index of the frame shown.")
  cursor_s = Float(0.0, help="Time of the frame shown, s (offset_s + frame * hop_s).")

  def __init__(self, cf_hz, lag_ms, hop_s: float, *, offset_s: float = 0.0, height: int = 240,
               width: int = 420):
    """Builds the figure once.

    Args:
      cf_hz: Channel CFs in Hz, shape [n_ch], decreasing (channel 0 = highest CF).
      lag_ms: Lag of each SAI column in ms, shape [n_lags], increasing and evenly spaced.
      hop_s: Time between frames in s.
      offset_s: Time of frame 0 in s.
      height: Plot frame height in pixels.
      width: Plot frame width in pixels.
    """
    super().__init__()
    self.cf_hz = validate_cf_hz(cf_hz)
    lag = np.asarray(lag_ms, dtype=np.float64)
    if lag.ndim != 1 or lag.size < 2 or not np.all(np.diff(lag) > 0):
      raise ParameterError("lag_ms: expected an increasing 1-D array of lags in ms, "
                           f"got shape {lag.shape}")
    if not hop_s > 0:
      raise ParameterError(f"hop_s: expected a positive frame hop in s, got {hop_s!r}")
    self.lag_ms, self.hop_s, self.offset_s = lag, float(hop_s), float(offset_s)
    self._lag_step_ms = (lag[-1] - lag[0]) / (lag.size - 1)
    self._frames = np.zeros((0, len(self.cf_hz), lag.size), np.float32)
    self._following_cursor = False  # True while the frame follows an outside cursor_s change
    self.mapper = LinearColorMapper(palette=Viridis256, low=0.0, high=1.0)
    self.source = ColumnDataSource(dict(image=[], x=[], y=[], dw=[], dh=[]))
    x0 = lag[0] - self._lag_step_ms / 2
    self.figure = figure(title="SAI", frame_height=height, frame_width=width,
                         x_range=Range1d(x0, x0 + lag.size * self._lag_step_ms),
                         y_range=Range1d(0, len(self.cf_hz)), tools="box_zoom,reset,save",
                         toolbar_location="above")
    self.figure.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.source,
                      color_mapper=self.mapper)
    self.figure.add_tools(cf_hover(self.cf_hz, x_name="lag", x_format="$x{0.00} ms"))
    self.figure.add_layout(Span(location=0.0, dimension="height", line_color="white",
                                line_alpha=0.5, line_dash="dotted"))
    add_colour_bar(self.figure, self.mapper, SAI_COLORBAR_TITLE)
    style_cf_axis(self.figure, self.cf_hz)
    self.figure.toolbar.logo = None
    self.figure.xaxis.axis_label = "lag (ms)"
    self.figure.grid.visible = False
    self.model = bokeh_model(self.figure)
    self.model.add_class("dal-sai")  # a handle for browser tests and app CSS
    self.play = widgets.Play(value=0, min=0, max=0, step=1, interval=PLAY_INTERVAL_MS,
                             description="play", disabled=True)
    self.slider = widgets.IntSlider(value=0, min=0, max=0, description="frame", readout=False,
                                    disabled=True, layout=widgets.Layout(width="300px"))
    self.time_label = widgets.Label(value=self._time_text(0))
    widgets.jslink((self.play, "value"), (self.slider, "value"))
    self.slider.observe(self._on_slider_value_changed, "value")
    self.widget = widgets.VBox([widgets.HBox([self.play, self.slider, self.time_label]), self.model])

  def frame_time_s(self, frame: int) -> float:
    """Time of a frame in s."""
    return self.offset_s + frame * self.hop_s

  def render(self, sai: np.ndarray, *, top: float | None = None) -> None:
    """Stores SAI frames and shows the current one (clamped to the new frame count).

    Args:
      sai: Frames, shape [n_frames, n_ch, n_lags], channel 0 = highest CF.
      top: Top of the colour scale (e.g. robust_top of a reference's frames); default: from
        these frames.

    Raises:
      ParameterError: if sai has the wrong shape.
    """
    sai = np.asarray(sai, dtype=np.float32)
    expected = (len(self.cf_hz), self.lag_ms.size)
    if sai.ndim != 3 or sai.shape[1:] != expected or sai.shape[0] < 1:
      raise ParameterError(f"sai: expected shape [n_frames, {expected[0]}, {expected[1]}], "
                           f"got {sai.shape}")
    self._frames = sai[:, ::-1, :]  # row 0 = lowest CF: Bokeh draws row 0 at the bottom
    # one scale for all frames: Play is honest
    self.mapper.high = top if top is not None else robust_top([self._frames])
    last = sai.shape[0] - 1
    with self.play.hold_sync(), self.slider.hold_sync():
      self.play.max = self.slider.max = last
      self.play.disabled = self.slider.disabled = last == 0
    if self.frame > last:
      self.frame = last
    else:
      self._show(self.frame)

  def clear(self) -> None:
    """Shows no image (e.g. when there is nothing to show for the chosen source)."""
    self._frames = np.zeros((0, len(self.cf_hz), self.lag_ms.size), np.float32)
    self.source.data = dict(image=[], x=[], y=[], dw=[], dh=[])
    with self.play.hold_sync(), self.slider.hold_sync():
      self.play.disabled = self.slider.disabled = True

  def _show(self, frame: int) -> None:
    if frame < len(self._frames):
      x0 = self.lag_ms[0] - self._lag_step_ms / 2
      self.source.data = dict(image=[np.ascontiguousarray(self._frames[frame])], x=[x0], y=[0.0],
                              dw=[self.lag_ms.size * self._lag_step_ms], dh=[len(self.cf_hz)])
    self.time_label.value = self._time_text(frame)

  def _time_text(self, frame: int) -> str:
    return f"t = {self.frame_time_s(frame):.3f} s"

  def _on_slider_value_changed(self, change):
    self.frame = change["new"]

  @observe("frame")
  def _on_frame_changed(self, change):
    frame = change["new"]
    self.slider.value = frame
    # Play and the slider are linked in the browser only (jslink): keep the kernel's Play value
    # in step too, or a page that receives the whole state again would jump to a stale frame.
    self.play.value = frame
    self._show(frame)
    if not self._following_cursor:
      self.cursor_s = self.frame_time_s(frame)

  @observe("cursor_s")
  def _on_cursor_s_changed(self, change):
    # Keep cursor_s as set (traitlets.link breaks if a linked value is changed back while it
    # propagates); only the frame snaps to the nearest one.
    last = max(len(self._frames) - 1, 0)
    self._following_cursor = True
    try:
      self.frame = int(np.clip(round((change["new"] - self.offset_s) / self.hop_s), 0, last))
    finally:
      self._following_cursor = False
