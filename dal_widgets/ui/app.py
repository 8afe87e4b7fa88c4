"""The Voila apps: `make_app(kind)` builds one (apps/*.ipynb hold a single call to it).

- "audiogram_explorer": audiogram sliders -> the impaired NAP and the sound as that ear hears it.
- "sai_explorer": vowels, harmonic complexes, click trains and speech -> NAP and SAI (pitch).
- "hearing_aid_lab": the whole Workbench with NAL-R, DAL, metrics and a short fine-tune.

Limits for public servers come from environment variables (see AppConfig.from_env), so a
deployment sets them next to its voila.json without touching code. The apps keep JAX's compiled
programs in a persistent cache (DAL_JAX_CACHE_DIR, compile_cache.py), so only the very first
kernel on a machine pays for compiling CARFAC and the training step.
"""
import dataclasses
import html
import math
import os

import ipywidgets as widgets
import traitlets
from jupyter_bokeh.widgets import BokehModel

from dal_widgets import compile_cache
from dal_widgets.aid.seanet import SEANET_SIZES
from dal_widgets.errors import ParameterError
from dal_widgets.hearing.presets import PRESET_NAMES, preset
from dal_widgets.loop.config import WIDGET_CONTINUE_LEARNING_RATE, config_for
from dal_widgets.ui import compute as compute_module
from dal_widgets.ui.ab_player import ABPlayer
from dal_widgets.ui.bokeh_setup import load_bokeh
from dal_widgets.ui.busy import BackgroundRunner, BusyIndicator
from dal_widgets.ui.cochleagram_view import CochleagramView, robust_top
from dal_widgets.ui.sai_view import SAIView
from dal_widgets.ui.finetune_panel import TrainedAid
from dal_widgets.ui.workbench import AIDS, PLAYBACK_GAIN_DB, Workbench

KINDS = ("audiogram_explorer", "sai_explorer", "hearing_aid_lab")
STIMULUS_S = 1.0  # duration of the SAI explorer's test sounds, s
F0_RANGE_HZ = (60, 400)  # pitch / click rate slider: male voice low end to child voice high end
DEFAULT_F0_HZ = 125  # a typical male voice
APP_CSS = ("<style>.dal-app{max-width:1260px}.dal-app .widget-html-content{line-height:1.35}"
           "</style>")


@dataclasses.dataclass(frozen=True)
class AppConfig:
  """Per-run limits of the public apps.

  Attributes:
    finetune_steps: Steps a fine-tune starts with.
    max_steps: Most steps of one fine-tune.
    max_seconds: Most wall time of one fine-tune, s (compilation included).
    model_sizes: SEANet sizes offered (aid.seanet.SEANET_SIZES keys).
    upload_max_bytes: Largest accepted upload, bytes.
    upload_max_s: Longest accepted upload, s.
    cache_dir: JAX persistent compilation cache folder ("" turns it off).
  """
  finetune_steps: int = 20  # "a short fine-tune": visible progress in well under a minute
  max_steps: int = 60
  max_seconds: float = 180.0
  model_sizes: tuple = ("small",)  # the paper-size SEANet takes seconds per step on a CPU
  upload_max_bytes: int = 4_000_000
  upload_max_s: float = 10.0
  cache_dir: str = dataclasses.field(default_factory=lambda: str(compile_cache.default_folder()))

  @classmethod
  def from_env(cls, environ=None) -> "AppConfig":
    """The defaults, overridden by DAL_FINETUNE_STEPS, DAL_FINETUNE_MAX_STEPS, DAL_FINETUNE_MAX_S,
    DAL_MODEL_SIZES (comma separated), DAL_UPLOAD_MAX_BYTES, DAL_UPLOAD_MAX_S, DAL_JAX_CACHE_DIR.

    Raises:
      ParameterError: a variable that does not parse, naming it.
    """
    environ = os.environ if environ is None else environ
    sizes = lambda v: tuple(s.strip() for s in v.split(",") if s.strip())
    count = lambda v: v >= 1
    seconds = lambda v: 0 < v < math.inf  # NaN fails too
    known = lambda v: bool(v) and all(size in SEANET_SIZES for size in v)
    fields = {"finetune_steps": ("DAL_FINETUNE_STEPS", int, count, "an integer >= 1"),
              "max_steps": ("DAL_FINETUNE_MAX_STEPS", int, count, "an integer >= 1"),
              "max_seconds": ("DAL_FINETUNE_MAX_S", float, seconds, "seconds > 0"),
              "model_sizes": ("DAL_MODEL_SIZES", sizes, known,
                              f"comma-separated names among {', '.join(SEANET_SIZES)}"),
              "upload_max_bytes": ("DAL_UPLOAD_MAX_BYTES", int, count, "an integer >= 1"),
              "upload_max_s": ("DAL_UPLOAD_MAX_S", float, seconds, "seconds > 0"),
              "cache_dir": (compile_cache.ENV_VAR, str, lambda v: True, "a folder")}
    values = {}
    for field, (variable, parse, ok, expected) in fields.items():
      if variable in environ:
        try:
          values[field] = parse(environ[variable])
        except ValueError:
          values[field] = None
        if values[field] is None or not ok(values[field]):
          raise ParameterError(f"{variable}: expected {expected}, got {environ[variable]!r}")
    return cls(**values)


class SAIExplorer(widgets.VBox):
  """A test sound or a speech clip -> NAP of a chosen listener -> SAI frames, cursors linked.

  Attributes:
    sound, f0, listener: the input widgets; cochleagram, sai_view, player, busy: the outputs.
  """

  def __init__(self, compute=compute_module, **kwargs):
    self.compute, sr = compute, compute.SR
    clips = [info.name for info in compute.clips()]
    self.sound = widgets.Dropdown(options=list(compute.STIMULI) + [f"speech: {n}" for n in clips],
                                  value=compute.STIMULI[0], description="sound")
    self.f0 = widgets.IntSlider(value=DEFAULT_F0_HZ, min=F0_RANGE_HZ[0], max=F0_RANGE_HZ[1], step=5,
                                description="f0 / rate (Hz)", continuous_update=False,
                                style={"description_width": "100px"},
                                layout=widgets.Layout(width="360px"))
    self.listener = widgets.Dropdown(options=PRESET_NAMES, value="normal", description="listener")
    self.busy = BusyIndicator()
    self.note = widgets.HTML()
    cf_hz = compute.cf_hz(sr)
    params = compute.sai_params(sr, len(cf_hz))
    hop_s = params.input_segment_width / sr  # frame i has seen (i + 1) hops of NAP
    self.cochleagram = CochleagramView(cf_hz, sr, ("NAP",), height=240, width=480)
    self.sai_view = SAIView(cf_hz, compute.sai_lags_ms(params, sr),
                            hop_s=hop_s, offset_s=hop_s, height=240, width=400)
    traitlets.link((self.cochleagram, "cursor_s"), (self.sai_view, "cursor_s"))
    self.player = ABPlayer(("sound", "as the listener hears it"), gain_db=PLAYBACK_GAIN_DB)
    self._runner = BackgroundRunner(self._compute, self._show, busy=self.busy)
    for w in (self.sound, self.f0, self.listener):
      w.observe(self._on_setting_changed, "value")
    controls = widgets.HBox([self.sound, self.f0, self.listener])
    views = widgets.HBox([self.cochleagram.widget, self.sai_view.widget],
                         layout=widgets.Layout(align_items="flex-end"))
    super().__init__([controls, widgets.HBox([self.busy, self.note]), views, self.player], **kwargs)
    self._refresh()

  def _refresh(self):
    self.f0.disabled = self.sound.value.startswith("speech: ")
    self._runner.request(self.sound.value, self.f0.value, self.listener.value)

  def wait(self, timeout=None) -> bool:
    """Blocks until the background computation is done; False on timeout."""
    return self._runner.wait(timeout)

  def _compute(self, sound, f0_hz, listener):
    c, sr = self.compute, self.compute.SR
    if sound.startswith("speech: "):
      x = c.at_speech_level(c.load_clip(sound.removeprefix("speech: "), sr))
    else:
      x = c.stimulus(sound, float(f0_hz), STIMULUS_S, sr)
    audiogram = None if listener == "normal" else preset(listener)
    ear = None if audiogram is None else c.fit_ear(audiogram, sr, refine=True)  # presets: bundled
    sai = lambda nap: c.sai_frames(nap, c.sai_params(sr, nap.shape[1]))
    nap = c.nap(x, sr, ear)
    frames = sai(nap)
    heard = x if audiogram is None else c.heard(x, sr, audiogram)
    # colour scales of the normal ear hearing this sound: a loss then shows as less activity
    normal = nap if audiogram is None else c.nap(x, sr)
    tops = (self.cochleagram.scale_top(normal),
            robust_top([frames if audiogram is None else sai(normal)]))
    return sound, f0_hz, listener, x, heard, nap, frames, tops

  def _show(self, result):
    sound, f0_hz, listener, x, heard, nap, frames, (nap_top, sai_top) = result
    self.cochleagram.figures["NAP"].title.text = f"NAP \u00b7 {sound} \u00b7 {listener} ear"
    self.sai_view.figure.title.text = f"SAI \u00b7 {sound} \u00b7 {listener} ear"
    self.cochleagram.render({"NAP": nap}, top=nap_top)
    self.sai_view.render(frames, top=sai_top)
    if self.cochleagram.cursor_s == 0.0:  # frame 0 has seen 25 ms only: start mid-sound
      self.cochleagram.cursor_s = round(0.5 * nap.shape[0] / self.compute.SR, 3)
    self.player.set_signals({"sound": (x, self.compute.SR),
                             "as the listener hears it": (heard, self.compute.SR)})
    if sound.startswith("speech: "):
      text = "Speech: the pitch ridge moves as the voice's pitch changes."
    else:
      text = (f"Period 1/f0 = {1000.0 / f0_hz:.1f} ms: the SAI shows ridges at that lag and its "
              "multiples.")
    if listener != "normal":
      text += " Colours on the normal ear's scale for this sound: less colour is less activity."
    self.note.value = f'<span style="font-size:13px">{html.escape(text)}</span>'

  def _on_setting_changed(self, change):
    self._refresh()


def _widget_tree(root: widgets.Widget):
  """Every widget under `root` (children, layouts and styles), Bokeh models excluded."""
  seen, stack = set(), [root]
  while stack:
    widget = stack.pop()
    if id(widget) in seen or isinstance(widget, BokehModel):
      continue  # bokeh_setup.bokeh_model re-sends Bokeh documents itself
    seen.add(id(widget))
    yield widget
    stack.extend(w for w in (getattr(widget, "layout", None), getattr(widget, "style", None))
                 if isinstance(w, widgets.Widget))
    stack.extend(getattr(widget, "children", ()))


def resend_state_when_shown(root: widgets.DOMWidget) -> None:
  """Re-sends the state of every widget under `root` when a browser view of it appears.

  The apps start computing in background threads before the page has loaded its widgets; an
  update sent between the page's state request and the creation of its widget models is dropped
  (e.g. a Play button would stay disabled). Once `root` has a view, every model exists, so sending
  the current state again makes the page right.
  """
  root._view_count = 0  # ask the page to report its views

  def _on_view_count_changed(change):
    if (change["new"] or 0) > (change["old"] or 0):
      for widget in _widget_tree(root):
        widget.send_state()

  root.observe(_on_view_count_changed, "_view_count")


def _pretrained(compute):
  """The bundled pretrained aid as a TrainedAid (None if the package or compute has none)."""
  found = getattr(compute, "pretrained_aid", lambda: None)()
  if found is None:
    return None
  params, model_config, audiogram, steps = found
  return TrainedAid(params=params, model_config=model_config, audiogram=audiogram,
                    steps_done=steps, loss=float("nan"))


def make_app(kind: str, *, config: AppConfig | None = None, compute=compute_module) -> widgets.Widget:
  """Builds one of the apps (after loading BokehJS inline into the page, once per kernel).

  Args:
    kind: One of KINDS.
    config: Limits; default AppConfig.from_env().
    compute: The compute adapters (dal_widgets.ui.compute; tests pass fakes).

  Returns:
    The app's widget; heavy work continues in background threads after it is shown.

  Raises:
    ParameterError: unknown kind or a bad configuration variable.
  """
  if kind not in KINDS:
    raise ParameterError(f"kind: expected one of {KINDS}, got {kind!r}")
  config = AppConfig.from_env() if config is None else config
  compile_cache.enable(config.cache_dir)
  load_bokeh()
  limits = dict(upload_max_bytes=config.upload_max_bytes, upload_max_s=config.upload_max_s)
  if kind == "audiogram_explorer":
    app = Workbench(compute=compute, aids=(), sai=False, finetune=False, metrics=False,
                    noise="quiet", **limits)
  elif kind == "sai_explorer":
    app = SAIExplorer(compute)
  else:
    initial_model = _pretrained(compute)
    base = config_for("widget")
    base = base.replace(steps=min(config.finetune_steps, config.max_steps))
    finetune = dict(base_config=base, max_steps=config.max_steps, max_seconds=config.max_seconds,
                    model_sizes=config.model_sizes, train_fn=compute.train,
                    initial_model=initial_model,
                    continue_learning_rate=WIDGET_CONTINUE_LEARNING_RATE)
    app = Workbench(compute=compute, aids=AIDS, preset="N3", finetune_options=finetune, **limits)
  app.add_class("dal-app")
  root = widgets.VBox([widgets.HTML(APP_CSS), app])
  resend_state_when_shown(root)
  return root
