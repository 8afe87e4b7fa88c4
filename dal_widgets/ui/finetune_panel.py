"""Fine-tune a DAL hearing aid from a notebook: settings, Start / Cancel, progress and a loss curve.

Training runs in a background thread (one run per kernel at a time: the CPU is shared); progress
reaches the widgets at most MAX_UI_RATE_HZ through a Throttle; a threading.Event cancels. A run
that completes (or reaches the per-run time cap) replaces the `model` trait; a cancelled or failed
run keeps the previous model and says why in the panel.
"""
import dataclasses
import html
import math
import threading
import time
from typing import Any, Callable

import ipywidgets as widgets
from bokeh.models import ColumnDataSource, Range1d
from bokeh.plotting import figure
from traitlets import Any as AnyTrait
from traitlets import Bool, Instance

from dal_widgets.aid.seanet import SEANET_SIZES, SeanetConfig
from dal_widgets.errors import ParameterError, TrainingError
from dal_widgets.hearing.audiogram import Audiogram
from dal_widgets.loop import checkpoint
from dal_widgets.loop.config import TrainConfig, config_for, fitting_warmup
from dal_widgets.ui import compute
from dal_widgets.ui.ab_player import download_link, file_stem
from dal_widgets.ui.bokeh_setup import bokeh_model
from dal_widgets.ui.busy import Throttle

MAX_STEPS = 100  # default per-run cap on steps (a public app sets its own, see ui.app)
MAX_SECONDS = 240.0  # default per-run cap on wall time, s, compilation included
LEARNING_RATE_RANGE = (1e-4, 1e-2)  # slider range; AdamW on the zero-started SEANet residual
# Slider step in decades: 0.05 lands within 0.3% of 2e-3 and 2e-4 (10^-2.7, 10^-3.7); 0.25 snapped
# them to 1.8e-3 and 1.8e-4 in the browser.
LEARNING_RATE_STEP_DECADES = 0.05
MAX_LOSS_WEIGHT = 2.0  # slider range of the NAP and SAI weights
LOSS_AXIS_HEADROOM = 1.1  # the loss axis ends 10% above the largest loss so far
LAST_STEP_ROOM = 0.5  # steps of axis right of the last step: its marker shows whole
SMOOTH_STEPS = 5  # the loss curve also shows the mean of the last this many steps (batches vary)
SETTINGS_WIDTH = "330px"  # the setting sliders and the caps note
RUN_COLUMN_WIDTH = "340px"  # Start/Cancel, progress and status; long status lines wrap inside it
FIXED_COLUMN = "0 0 auto"  # flex of the columns: a long status line squeezes no neighbour
COMPILE_NOTE = ("preparing: making training data and compiling the training step "
                "(up to a minute the first time, seconds once cached)\u2026")


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedAid:
  """A fine-tuned DAL hearing aid (compared and hashed by identity: each run makes a new one).

  Attributes:
    params: SEANet parameters (host arrays).
    model_config: Their SeanetConfig.
    audiogram: The listener it was trained for (None if unknown).
    steps_done: Optimizer steps taken.
    loss: Mean loss of the last steps (TrainResult.loss).
    train_config: The TrainConfig it was trained with (None if unknown); makes it downloadable.
  """
  params: Any
  model_config: SeanetConfig
  audiogram: Audiogram | None
  steps_done: int
  loss: float
  train_config: TrainConfig | None = None

  def describe(self) -> str:
    """One line for people: size, steps, loss, listener."""
    size = next((k for k, v in SEANET_SIZES.items() if v == self.model_config), "custom")
    who = (self.audiogram.name or "custom audiogram") if self.audiogram else "unknown listener"
    loss = f", loss {self.loss:.4g}" if math.isfinite(self.loss) else ""
    return f"{size} SEANet, {self.steps_done} steps{loss}, for {who}"

  def file_name(self) -> str:
    """A file name for its checkpoint, e.g. dal_aid_N3_40steps.msgpack."""
    who = self.audiogram.name if self.audiogram and self.audiogram.name else "custom"
    return f"dal_aid_{file_stem(who)}_{self.steps_done}steps.msgpack"


def _sizes(model_sizes):
  sizes = tuple(model_sizes) if model_sizes is not None else tuple(SEANET_SIZES)
  unknown = [s for s in sizes if s not in SEANET_SIZES]
  if not sizes or unknown:
    raise ParameterError(f"model_sizes: expected names among {tuple(SEANET_SIZES)}, got {sizes!r}")
  return sizes


class FineTunePanel(widgets.VBox):
  """Settings, Start / Cancel, an IntProgress and a live loss curve for one DAL fine-tune.

  Set `ear` (an ImpairedEar: the listener) before starting; observe `model` (a TrainedAid).

  Attributes:
    steps, learning_rate, w_nap, w_sai, size: the setting widgets.
    start_button, cancel_button, progress, status: the run widgets.
    source: ColumnDataSource of the loss curve (step, loss).
  """

  model = Instance(TrainedAid, allow_none=True, help="The current fine-tuned aid (None: none yet).")
  ear = AnyTrait(None, allow_none=True, help="The listener to train for (an ImpairedEar).")
  running = Bool(False, help="True while a run is in progress (read it; do not set it).")

  # One fine-tune per kernel at a time: they share the CPU. Class-level on purpose (see module doc).
  _kernel_lock = threading.Lock()

  def __init__(self, *, train_fn: Callable | None = None, base_config: TrainConfig | None = None,
               max_steps: int = MAX_STEPS, max_seconds: float = MAX_SECONDS, model_sizes=None,
               initial_model: "TrainedAid | None" = None,
               continue_learning_rate: float | None = None, **kwargs):
    """Builds the panel.

    Args:
      train_fn: train_fn(cfg, *, ear, on_progress, should_stop) -> TrainResult-like (params,
        steps_done, stopped_early, loss); default `compute.train` (loop.train.train in memory).
        on_progress(step, total, metrics) may be called from any thread.
      base_config: TrainConfig the settings start from; default loop.config_for("widget").
      max_steps: Cap on the steps of one run (the steps slider's maximum).
      max_seconds: Cap on the wall time of one run, s; a run reaching it stops and keeps its model.
      model_sizes: SEANet size names offered (keys of aid.seanet.SEANET_SIZES); default all.
      initial_model: the aid to start from (e.g. the bundled pretrained one); a fine-tune of the
        same model size continues from the current aid (train_fn then gets `init_params`).
      continue_learning_rate: learning rate the slider shows while the chosen size would continue
        the current aid (base_config's is for a fresh network); None: always base_config's.
    """
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
      raise ParameterError(f"max_steps: expected an int >= 1, got {max_steps!r}")
    if not max_seconds > 0:
      raise ParameterError(f"max_seconds: expected a positive number of seconds, got {max_seconds!r}")
    self.train_fn = train_fn if train_fn is not None else compute.train
    self.base_config = base_config if base_config is not None else config_for("widget")
    self.max_steps, self.max_seconds = max_steps, float(max_seconds)
    self._cancel = threading.Event()
    self._thread = None
    self._ui_lock = threading.Lock()  # progress updates (Throttle timer) vs the final message
    self._training = False  # True while progress updates may still reach the widgets
    base = self.base_config
    style = {"description_width": "110px"}
    wide = widgets.Layout(width=SETTINGS_WIDTH)
    self.steps = widgets.IntSlider(value=min(base.steps, max_steps), min=1, max=max_steps,
                                   description="steps", style=style, layout=wide)
    self.learning_rate = widgets.FloatLogSlider(
        value=base.learning_rate, base=10, min=math.log10(LEARNING_RATE_RANGE[0]),
        max=math.log10(LEARNING_RATE_RANGE[1]), step=LEARNING_RATE_STEP_DECADES, readout_format=".1e",
        description="learning rate", style=style, layout=wide)
    self.w_nap = widgets.FloatSlider(value=base.loss.w_nap, min=0.0, max=MAX_LOSS_WEIGHT, step=0.25,
                                     description="NAP weight", style=style, layout=wide)
    self.w_sai = widgets.FloatSlider(value=base.loss.w_sai, min=0.0, max=MAX_LOSS_WEIGHT, step=0.25,
                                     description="SAI weight", style=style, layout=wide)
    sizes = _sizes(model_sizes)
    base_size = base.model if isinstance(base.model, str) and base.model in sizes else sizes[0]
    self.size = widgets.Dropdown(options=sizes, value=base_size, description="model size",
                                 style=style, layout=wide)
    self.start_button = widgets.Button(description="Start fine-tune", button_style="primary",
                                       icon="play", layout=widgets.Layout(width="160px"))
    self.cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True,
                                        layout=widgets.Layout(width="100px"))
    self.start_button.on_click(lambda _: self.start())
    self.cancel_button.on_click(lambda _: self.cancel())
    self.progress = widgets.IntProgress(value=0, min=0, max=self.steps.value, description="step",
                                        bar_style="info", layout=widgets.Layout(width=SETTINGS_WIDTH))
    self.progress.add_class("dal-finetune-progress")
    self.status = widgets.HTML("")
    self.status.add_class("dal-finetune-status")
    if initial_model is not None:
      self.model = initial_model
    self.continue_learning_rate = continue_learning_rate
    self.size.observe(self._offer_learning_rate, "value")
    self._offer_learning_rate()
    self.model_text = widgets.HTML(self._model_html())
    self.download = widgets.HTML(self._download_html())
    self.download.add_class("dal-finetune-download")
    self.source = ColumnDataSource(dict(step=[], loss=[], smooth=[]))
    # Explicit ranges: axes before the first step too (a data range with no data draws none).
    fig = figure(title="DAL loss per step", frame_width=360, frame_height=150, tools="",
                 toolbar_location=None, x_range=Range1d(0, self.steps.value + LAST_STEP_ROOM),
                 y_range=Range1d(0, 1))
    fig.line("step", "loss", source=self.source, line_width=1, color="#9ecae1", legend_label="step")
    fig.scatter("step", "loss", source=self.source, size=4, color="#6baed6", legend_label="step")
    fig.line("step", "smooth", source=self.source, line_width=2.5, color="#08519c",
             legend_label=f"mean of {SMOOTH_STEPS}")
    # bottom left: a loss curve starts high on the left (top right covered a short run's points)
    fig.legend.location, fig.legend.label_text_font_size = "bottom_left", "8pt"
    fig.xaxis.axis_label, fig.yaxis.axis_label = "step", "loss"
    self.figure = fig
    self.curve = bokeh_model(fig)
    self.curve.add_class("dal-loss-curve")
    caps = widgets.HTML(f"<small>Per run: at most {max_steps} steps and {self.max_seconds:g} s "
                        "(compilation included). Changing a loss weight or the model size "
                        "compiles a new training step.</small>",
                        layout=widgets.Layout(width=SETTINGS_WIDTH))
    settings = widgets.VBox([self.steps, self.learning_rate, self.w_nap, self.w_sai, self.size,
                             caps], layout=widgets.Layout(flex=FIXED_COLUMN))
    run = widgets.VBox([widgets.HBox([self.start_button, self.cancel_button]), self.progress,
                        self.status, self.model_text, self.download],
                       layout=widgets.Layout(width=RUN_COLUMN_WIDTH, flex=FIXED_COLUMN))
    self.curve.layout.flex = FIXED_COLUMN
    super().__init__([widgets.HBox([settings, run, self.curve],
                                   layout=widgets.Layout(align_items="flex-start"))], **kwargs)
    self.observe(self._on_model_changed, "model")
    self.observe(self._on_ear_changed, "ear")
    self._on_ear_changed(None)

  def config(self) -> TrainConfig:
    """The TrainConfig of the current settings for the current listener.

    Raises:
      ParameterError: no listener (`ear` unset) or both loss weights 0.
    """
    if self.ear is None:
      raise ParameterError("ear: no listener to fine-tune for yet (set the fitted ear; in the "
                           "workbench, wait until the new audiogram is fitted)")
    if self.w_nap.value == 0 and self.w_sai.value == 0:
      raise ParameterError("w_nap, w_sai: expected at least one loss weight above 0, got both 0")
    base = self.base_config
    audiogram = getattr(self.ear, "audiogram", None)
    loss = dataclasses.replace(base.loss, w_nap=float(self.w_nap.value), w_sai=float(self.w_sai.value))
    steps = int(self.steps.value)
    return base.replace(steps=steps, warmup_steps=fitting_warmup(base.warmup_steps, steps),
                        learning_rate=float(self.learning_rate.value), model=self.size.value,
                        loss=loss,
                        audiogram=audiogram if isinstance(audiogram, Audiogram) else base.audiogram)

  def start(self) -> bool:
    """Starts a run in a background thread; False (and a message) if it cannot start now."""
    try:
      cfg = self.config()
    except ParameterError as err:
      self._show(str(err), error=True)
      return False
    if self.running:
      return False  # e.g. a double click: this panel's run goes on, its status stays
    if not self._kernel_lock.acquire(blocking=False):
      self._show("A fine-tune is already running in this kernel; wait for it or cancel it.",
                 error=True)
      return False
    self._cancel.clear()
    self.running = True
    self._enable_settings(False)
    with self.progress.hold_sync():
      self.progress.value, self.progress.max, self.progress.bar_style = 0, cfg.steps, "info"
    self.source.data = dict(step=[], loss=[], smooth=[])
    self.figure.x_range.end = cfg.steps + LAST_STEP_ROOM
    self._show(COMPILE_NOTE)
    self._thread = threading.Thread(target=self._run, args=(cfg, self.ear), daemon=True)
    self._thread.start()
    return True

  def cancel(self) -> None:
    """Asks the running fine-tune to stop before its next step (its result is discarded)."""
    if self.running:
      self._cancel.set()
      self.cancel_button.disabled = True
      self._show("cancelling after the current step\u2026")

  def wait(self, timeout: float | None = None) -> bool:
    """Blocks until the current run (if any) has finished; False on timeout."""
    thread = self._thread
    if thread is not None:
      thread.join(timeout)
      return not thread.is_alive()
    return True

  def _run(self, cfg, ear):
    t0 = time.monotonic()
    history = []
    show_progress = Throttle(self._show_progress)

    def on_progress(step, total, metrics):
      history.append((int(step), float(metrics["loss"])))
      show_progress(int(step), int(total), list(history), time.monotonic() - t0)

    def should_stop():
      return self._cancel.is_set() or time.monotonic() - t0 > self.max_seconds

    self._training = True
    try:
      start, base_steps = {}, 0
      if self.model is not None and self.model.model_config == cfg.model_config:
        start["init_params"] = self.model.params  # fine-tune the current aid, not a fresh one
        base_steps = self.model.steps_done  # the new aid has had those steps and this run's
      result = self.train_fn(cfg, ear=ear, on_progress=on_progress, should_stop=should_stop,
                             **start)
      self._stop_progress(show_progress)
      self._finish(cfg, result, time.monotonic() - t0, base_steps)
    except Exception as err:  # noqa: BLE001 - any failure must end as a message, not a traceback
      self._stop_progress(show_progress)
      partial = getattr(err, "result", None)  # TrainingError: the steps before the failure
      if isinstance(err, TrainingError) and partial is not None and int(partial.steps_done) > 0:
        self.progress.bar_style = "warning"
        self._keep(cfg, partial, base_steps)
        self._show(f"fine-tune stopped: {err}. The DAL rows now use them (step "
                   f"{int(partial.steps_done)}); a lower learning rate may help.", error=True)
      else:
        self.progress.bar_style = "danger"
        self._show(f"fine-tune failed: {type(err).__name__}: {err}. Kept the previous model.",
                   error=True)
    finally:
      self._enable_settings(True)
      self.running = False
      self._kernel_lock.release()

  def _stop_progress(self, show_progress):
    show_progress.flush()
    with self._ui_lock:
      self._training = False

  def _finish(self, cfg, result, elapsed_s, base_steps):
    steps = int(result.steps_done)
    if self._cancel.is_set() and steps < cfg.steps:  # a Cancel after the last step keeps the run
      self.progress.bar_style = "warning"
      self._show(f"cancelled at step {steps} of {cfg.steps} after {elapsed_s:.1f} s; "
                 "kept the previous model.")
      return
    if steps == 0:
      self.progress.bar_style = "danger"
      self._show(f"no step finished within the {self.max_seconds:g} s cap; kept the previous "
                 "model.", error=True)
      return
    capped = bool(result.stopped_early)
    self.progress.bar_style = "warning" if capped else "success"
    self._keep(cfg, result, base_steps)
    why = f"stopped at the {self.max_seconds:g} s cap after" if capped else "done:"
    self._show(f"{why} {steps} steps in {elapsed_s:.1f} s; the DAL rows now use this model.")

  def _keep(self, cfg, result, base_steps):
    """Makes the parameters of `result` (a TrainResult of a run that started from an aid of
    `base_steps` steps) the current model."""
    self.model = TrainedAid(params=result.params, model_config=cfg.model_config,
                            audiogram=cfg.audiogram if isinstance(cfg.audiogram, Audiogram) else None,
                            steps_done=base_steps + int(result.steps_done), loss=float(result.loss),
                            train_config=cfg)

  def _enable_settings(self, enabled):
    """Start and the settings while no run is going (a run does not read them), Cancel during one."""
    with self.hold_sync():
      for w in (self.steps, self.learning_rate, self.w_nap, self.w_sai, self.size):
        w.disabled = not enabled
      self.start_button.disabled = not enabled or self.ear is None
      self.cancel_button.disabled = enabled

  def _show_progress(self, step, total, history, elapsed_s):
    with self._ui_lock:
      if not self._training:
        return
      with self.progress.hold_sync():
        self.progress.max, self.progress.value = total, step
      losses = [h[1] for h in history]
      smooth = [sum(losses[max(0, i + 1 - SMOOTH_STEPS):i + 1]) / min(i + 1, SMOOTH_STEPS)
                for i in range(len(losses))]
      self.source.data = dict(step=[h[0] for h in history], loss=losses, smooth=smooth)
      finite = [v for v in losses if math.isfinite(v)]
      if finite:
        self.figure.y_range.end = LOSS_AXIS_HEADROOM * max(finite)
      if not self._cancel.is_set():
        self._show(f"step {step}/{total} \u00b7 loss {history[-1][1]:.4g} \u00b7 {elapsed_s:.0f} s")

  def _show(self, text, error=False):
    colour = "#c0392b" if error else "#333"
    self.status.value = f'<span style="color:{colour}">{html.escape(text)}</span>'

  def _model_html(self):
    text = self.model.describe() if self.model is not None else "none yet (DAL rows stay empty)"
    return f"<small><b>current DAL model:</b> {html.escape(text)}</small>"

  def _download_html(self):
    """A link that saves the current aid as a checkpoint file (nothing is lost with the page)."""
    aid = self.model
    if aid is None or aid.train_config is None:
      return ""
    data = checkpoint.aid_bytes(aid.params, aid.train_config, aid.steps_done)
    name = aid.file_name()
    link = download_link(data, name, "application/octet-stream", "download this aid")
    return (f"<small>{link} ({len(data) / 1e6:.1f} MB; then <code>dal enhance in.wav out.wav "
            f"--checkpoint {html.escape(name)}</code>)</small>")

  def _offer_learning_rate(self, change=None):
    """The slider starts at the rate for what a run of the chosen size would do: continue the
    current aid (continue_learning_rate) or train a fresh network (base_config's)."""
    if self.continue_learning_rate is None:
      return
    fresh = self.base_config.replace(model=self.size.value).model_config
    continues = self.model is not None and self.model.model_config == fresh
    self.learning_rate.value = (self.continue_learning_rate if continues
                                else self.base_config.learning_rate)

  def _on_model_changed(self, change):
    self.model_text.value = self._model_html()
    self.download.value = self._download_html()

  def _on_ear_changed(self, change):
    """Start waits for a listener (e.g. while a workbench fits a new audiogram)."""
    waiting = self.ear is None
    self.start_button.tooltip = "waiting for the listener's fit" if waiting else ""
    if not self.running:
      self.start_button.disabled = waiting
