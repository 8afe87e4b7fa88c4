"""Audiogram editor: a slider per audiometric frequency, presets, file load/save, a clinical plot.

`AudiogramState` holds the thresholds (no display code); `AudiogramPlot` draws them the way
audiologists read them (dB HL increasing downward, octave frequency axis, O right ear in red, X left
ear in blue); `AudiogramEditor` wires widgets to the state and emits one `Audiogram` per user action
through its `audiogram` trait.
"""
import contextlib
import html
import pathlib

import ipywidgets as widgets
import numpy as np
from bokeh.models import (BoxAnnotation, ColumnDataSource, FixedTicker, HoverTool, Label, Range1d)
from bokeh.plotting import figure
from traitlets import Enum, Float, HasTraits, Instance, List, Tuple, Unicode, validate

from dal_widgets.errors import ParameterError
from dal_widgets.hearing.audiogram import (EARS, MAX_THRESHOLD_DB_HL, MIN_THRESHOLD_DB_HL, Audiogram)
from dal_widgets.hearing.audiogram_io import dumps_audiogram, loads_audiogram
from dal_widgets.hearing.presets import PRESET_NAMES, preset
from dal_widgets.ui.ab_player import download_link, file_stem
from dal_widgets.ui.bokeh_setup import bokeh_model

FREQS_HZ = (250.0, 500.0, 1000.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0)  # clinical test frequencies
STEP_DB = 5.0  # clinical audiometry steps thresholds in 5 dB
CUSTOM = "custom"  # preset name shown once the thresholds were edited or loaded from a file
AXIS_FREQS_HZ = (125, 250, 500, 1000, 2000, 4000, 8000)  # octave grid of an audiogram form
NORMAL_LIMIT_DB_HL = 20.0  # thresholds up to 20 dB HL count as normal hearing (WHO 2021 grades)
EAR_STYLE = {"right": ("circle", "#d62728"), "left": ("x", "#1f4fd6")}  # audiogram symbol convention


class AudiogramState(HasTraits):
  """Thresholds of one ear at FREQS_HZ, plus which preset (if any) they came from."""

  freqs_hz = Tuple(default_value=FREQS_HZ, read_only=True, help="Test frequencies, Hz.")
  thresholds_db_hl = List(Float(), default_value=[0.0] * len(FREQS_HZ), minlen=len(FREQS_HZ),
                          maxlen=len(FREQS_HZ), help="Threshold per frequency, dB HL.")
  ear = Enum(EARS, default_value="right", help="Which ear.")
  preset = Unicode("normal", help=f"Preset the thresholds came from, or {CUSTOM!r}.")
  name = Unicode("normal", help="Name carried into the Audiogram ('' for none).")

  @validate("thresholds_db_hl")
  def _clamp_thresholds(self, proposal):
    values = [float(v) for v in proposal["value"]]
    if not all(np.isfinite(values)):
      raise ParameterError(f"thresholds_db_hl: expected finite dB HL values, got {values}")
    return [min(max(v, MIN_THRESHOLD_DB_HL), MAX_THRESHOLD_DB_HL) for v in values]

  def to_audiogram(self) -> Audiogram:
    """The state as an immutable Audiogram."""
    return Audiogram(self.freqs_hz, self.thresholds_db_hl, ear=self.ear, name=self.name or None)


def _fitting_note(audiogram: Audiogram, freqs_hz) -> str:
  """What showing `audiogram` at the editor's `freqs_hz` changed ("" when nothing)."""
  given, shown = tuple(audiogram.freqs_hz), tuple(freqs_hz)
  hz = lambda fs: ", ".join(f"{f:g}" for f in fs)
  notes = []
  dropped = [f for f in given if f not in shown]
  if dropped:
    notes.append(f"{hz(dropped)} Hz not among the editor's frequencies (they shape the "
                 "interpolation; a saved file has the editor's frequencies only)")
  outside = [f for f in shown if f < given[0] or f > given[-1]]
  if outside:
    notes.append(f"{hz(outside)} Hz outside the file's {hz([given[0]])}-{hz([given[-1]])} Hz: "
                 "set to the threshold of its nearest point")
  between = [f for f in shown if given[0] < f < given[-1] and f not in given]
  if between:
    notes.append(f"{hz(between)} Hz interpolated")
  return f" ({'; '.join(notes)})" if notes else ""


def _hz_label(freq_hz: float) -> str:
  return f"{freq_hz / 1000:g}k" if freq_hz >= 1000 else f"{freq_hz:g}"


class AudiogramPlot:
  """A Bokeh audiogram form; `render(audiogram)` only assigns the data sources."""

  def __init__(self, *, width: int = 340, height: int = 250):
    self.sources = {ear: ColumnDataSource(dict(freq_hz=[], threshold_db_hl=[])) for ear in EARS}
    pad = 2 ** 0.35  # a third of an octave and a bit of margin on both sides
    self.figure = figure(title="Audiogram", frame_width=width, frame_height=height,
                         x_axis_type="log",
                         x_range=Range1d(AXIS_FREQS_HZ[0] / pad, AXIS_FREQS_HZ[-1] * pad),
                         y_range=Range1d(MAX_THRESHOLD_DB_HL + 5, MIN_THRESHOLD_DB_HL - 5),
                         tools="", toolbar_location=None)
    fig = self.figure
    fig.add_layout(BoxAnnotation(bottom=MIN_THRESHOLD_DB_HL - 5, top=NORMAL_LIMIT_DB_HL,
                                 fill_color="#2ca02c", fill_alpha=0.08, line_alpha=0))
    fig.add_layout(Label(x=AXIS_FREQS_HZ[0] / pad, y=NORMAL_LIMIT_DB_HL - 1, x_offset=3, text="normal",
                         text_font_size="8pt", text_color="#2ca02c"))  # left of 250 Hz: no overlap
    for ear, (marker, colour) in EAR_STYLE.items():
      source = self.sources[ear]
      fig.line("freq_hz", "threshold_db_hl", source=source, line_color=colour, line_width=2)
      points = fig.scatter("freq_hz", "threshold_db_hl", source=source, marker=marker, size=11,
                           line_color=colour, line_width=2,
                           fill_color="white" if marker == "circle" else None)
      fig.add_tools(HoverTool(renderers=[points], tooltips=[
          ("frequency", "@freq_hz{0} Hz"), ("threshold", "@threshold_db_hl{0.0} dB HL")]))
    fig.xaxis.ticker = FixedTicker(ticks=list(AXIS_FREQS_HZ), minor_ticks=[750, 1500, 3000, 6000])
    fig.xaxis.major_label_overrides = {f: _hz_label(f) for f in AXIS_FREQS_HZ}
    fig.xaxis.axis_label = "frequency (Hz)"
    fig.yaxis.ticker = FixedTicker(ticks=list(range(-10, 121, 10)))
    fig.yaxis.axis_label = "hearing level (dB HL)"
    fig.xgrid.ticker = fig.xaxis.ticker
    fig.ygrid.ticker = fig.yaxis.ticker
    self.model = bokeh_model(fig)
    self.model.add_class("dal-audiogram-plot")  # a handle for browser tests and app CSS

  def render(self, audiogram: Audiogram) -> None:
    """Draws the audiogram's points in its ear's symbol; the other ear's points are cleared."""
    for ear, source in self.sources.items():
      if ear == audiogram.ear:
        source.data = dict(freq_hz=list(audiogram.freqs_hz),
                           threshold_db_hl=list(audiogram.thresholds_db_hl))
      elif source.data["freq_hz"]:
        source.data = dict(freq_hz=[], threshold_db_hl=[])
    label = audiogram.name or CUSTOM
    self.figure.title.text = f"Audiogram \u2013 {audiogram.ear} ear ({label})"


class AudiogramEditor(widgets.VBox):
  """Sliders, preset menu, ear buttons, file upload/download and an audiogram plot.

  Observe `audiogram` (an Audiogram) to react: one user action emits exactly one change.

  Attributes:
    state: the AudiogramState edited.
    sliders: one vertical FloatSlider per frequency of FREQS_HZ.
    preset_dropdown, ear_buttons, upload, download, message: the other widgets.
    plot: the AudiogramPlot.
  """

  audiogram = Instance(Audiogram, allow_none=True, help="The current audiogram (read it, observe it).")

  def __init__(self, state: AudiogramState | None = None, **kwargs):
    self.state = state if state is not None else AudiogramState()
    self._syncing = False  # True while widgets are updated from the state
    self._batch_depth = 0  # > 0 while several state traits change as one action
    self.sliders = [widgets.FloatSlider(
        value=v, min=MIN_THRESHOLD_DB_HL, max=MAX_THRESHOLD_DB_HL, step=STEP_DB,
        description=_hz_label(f),
        orientation="vertical", continuous_update=False, readout_format=".0f",
        layout=widgets.Layout(width="44px", height="250px"))
        for f, v in zip(self.state.freqs_hz, self.state.thresholds_db_hl)]
    for i, slider in enumerate(self.sliders):
      slider.observe(lambda change, i=i: self._on_slider_value_changed(i, change), "value")
    self.preset_dropdown = widgets.Dropdown(options=(CUSTOM,) + PRESET_NAMES, value=self.state.preset,
                                            description="preset", layout=widgets.Layout(width="170px"))
    self.preset_dropdown.observe(self._on_preset_dropdown_changed, "value")
    self.ear_buttons = widgets.ToggleButtons(options=EARS[::-1], value=self.state.ear,
                                             style=widgets.ToggleButtonsStyle(button_width="60px"))
    widgets.link((self.state, "ear"), (self.ear_buttons, "value"))
    self.upload = widgets.FileUpload(accept=".json,.csv", multiple=False, description="load file",
                                     layout=widgets.Layout(width="120px"))
    self.upload.observe(self._on_upload_value_changed, "value")
    self.download = widgets.HTML()
    self.message = widgets.HTML()
    self.plot = AudiogramPlot()
    self.state.observe(self._on_state_changed, ["thresholds_db_hl", "ear", "name", "preset"])
    caption = widgets.HTML('<div style="font-size:11px;line-height:1.3;color:#555">Threshold in dB HL '
                           "per frequency (Hz). Slider up = higher threshold = more loss (lower on "
                           "the audiogram). Presets N1-N7, S1-S3: Bisgaard et al. 2010.</div>")
    controls = widgets.HBox([self.preset_dropdown, self.ear_buttons, self.upload, self.download],
                            layout=widgets.Layout(align_items="center"))
    sliders = widgets.VBox([widgets.HBox(self.sliders), caption], layout=widgets.Layout(width="380px"))
    body = widgets.HBox([sliders, self.plot.model])
    super().__init__([controls, body, self.message], **kwargs)
    self._refresh()

  def apply_preset(self, name: str) -> None:
    """Sets all thresholds from a preset (interpolated to FREQS_HZ); emits one audiogram change.

    Frequencies beyond the preset's highest (Bisgaard stops at 6 kHz) take its last threshold.
    """
    audiogram = preset(name, ear=self.state.ear)
    self.message.value = ""  # a note on a loaded file is not about this audiogram
    with self._batch():
      self.state.thresholds_db_hl = [float(v) for v in audiogram.at(self.state.freqs_hz)]
      self.state.preset = audiogram.name
      self.state.name = audiogram.name

  def set_audiogram(self, audiogram: Audiogram) -> None:
    """Shows an Audiogram (interpolated to FREQS_HZ, flat beyond its ends); emits one change."""
    with self._batch():
      self.state.thresholds_db_hl = [float(v) for v in audiogram.at(self.state.freqs_hz)]
      self.state.ear = audiogram.ear
      self.state.preset = CUSTOM
      self.state.name = audiogram.name or ""

  def load_file(self, data: bytes, filename: str) -> bool:
    """Loads an audiogram file (JSON or CSV by suffix); problems go to `message`, never raise.

    Returns:
      True if loaded; False if the file was rejected (the previous audiogram is kept).
    """
    try:
      fmt = pathlib.PurePath(filename).suffix.lower().lstrip(".")
      if fmt not in ("json", "csv"):
        raise ParameterError(f"file: expected a .json or .csv audiogram, got {filename!r}")
      audiogram = loads_audiogram(bytes(data), fmt)
    except Exception as err:  # noqa: BLE001 - any bad file must end as a message, not a traceback
      self._show_message(f"Could not load {filename}: {err}", error=True)
      return False
    self.set_audiogram(audiogram)
    self._show_message(f"Loaded {filename}{_fitting_note(audiogram, self.state.freqs_hz)}.")
    return True

  @contextlib.contextmanager
  def _batch(self):
    self._batch_depth += 1
    try:
      yield
    finally:
      self._batch_depth -= 1
      if self._batch_depth == 0:
        self._refresh()

  def _refresh(self):
    """Widgets, plot, download link and the `audiogram` trait from the state (one emission)."""
    self._syncing = True
    try:
      for slider, value in zip(self.sliders, self.state.thresholds_db_hl):
        with slider.hold_sync():
          slider.value = value
      self.preset_dropdown.value = self.state.preset
    finally:
      self._syncing = False
    audiogram = self.state.to_audiogram()
    self.plot.render(audiogram)
    stem = file_stem("_".join(filter(None, ["audiogram", audiogram.ear, audiogram.name])))
    self.download.value = download_link(dumps_audiogram(audiogram, "json").encode("utf-8"),
                                        f"{stem}.json", "application/json", "save JSON")
    self.audiogram = audiogram

  def _show_message(self, text, error=False):
    colour = "#c0392b" if error else "#2e7d32"
    self.message.value = f'<span style="color:{colour}">{html.escape(text)}</span>'

  def _on_slider_value_changed(self, i, change):
    if self._syncing:
      return
    self.message.value = ""
    with self._batch():
      thresholds = list(self.state.thresholds_db_hl)
      thresholds[i] = float(change["new"])
      self.state.thresholds_db_hl = thresholds
      self.state.preset = CUSTOM
      self.state.name = ""

  def _on_preset_dropdown_changed(self, change):
    if self._syncing:
      return
    if change["new"] == CUSTOM:
      self.state.preset = CUSTOM
    else:
      self.apply_preset(change["new"])

  def _on_state_changed(self, change):
    if self._batch_depth == 0:
      self._refresh()

  def _on_upload_value_changed(self, change):
    if not change["new"]:
      return
    item = change["new"][0]
    self.load_file(bytes(item["content"]), item["name"])
    self.upload.value = ()  # so choosing the same file again loads it again
