"""FineTunePanel: a background run shows progress, can be cancelled; a failure keeps the model."""
import base64
import dataclasses
import re
import threading
import time
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest

from dal_widgets.errors import TrainingError
from dal_widgets.hearing.presets import preset
from dal_widgets.loop import checkpoint
from dal_widgets.loop.config import WIDGET_CONTINUE_LEARNING_RATE, config_for
from dal_widgets.ui.finetune_panel import FineTunePanel, TrainedAid

WAIT_S = 10.0  # generous: threads on a loaded 2-core CI machine
EAR = SimpleNamespace(audiogram=preset("N3"))  # the panel only reads the listener's audiogram
BASE = config_for("widget").replace(steps=8)


@dataclasses.dataclass
class FakeResult:
  """What loop.train.train returns, reduced to what the panel reads."""
  params: dict
  steps_done: int
  stopped_early: bool
  loss: float


class FakeTrain:
  """A train_fn that takes `cfg.steps` quick steps; optionally waits for `gate` before each step
  after the first, or raises after `fail_after` steps."""

  def __init__(self, *, gate: threading.Event | None = None, fail_after: int | None = None,
               step_s: float = 0.0, diverge_after: int | None = None):
    self.gate, self.fail_after, self.step_s = gate, fail_after, step_s
    self.diverge_after = diverge_after
    self.calls = []
    self.init_params = []

  def __call__(self, cfg, *, ear, on_progress, should_stop, init_params=None):
    self.calls.append((cfg, ear))
    self.init_params.append(init_params)
    for step in range(cfg.steps):
      if step > 0 and self.gate is not None:
        self.gate.wait(WAIT_S)
      if should_stop():
        return FakeResult({"gain": 2.0}, step, True, 1.0 / max(step, 1))
      if self.fail_after is not None and step == self.fail_after:
        raise RuntimeError("loss is NaN")
      if self.diverge_after is not None and step == self.diverge_after:  # as loop.train does
        err = TrainingError(f"training diverged: 3 non-finite steps in a row (up to step "
                            f"{step + 3}); kept the parameters of the last good step")
        err.result = FakeResult({"gain": 1.5}, step, False, 0.25)
        raise err
      time.sleep(self.step_s)
      on_progress(step + 1, cfg.steps, {"loss": 1.0 / (step + 1)})
    return FakeResult({"gain": 2.0}, cfg.steps, False, 1.0 / cfg.steps)


def _panel(train_fn, **kwargs):
  panel = FineTunePanel(train_fn=train_fn, base_config=BASE, **kwargs)
  panel.ear = EAR
  return panel


def _wait_until(predicate, timeout=WAIT_S):
  deadline = time.monotonic() + timeout
  while not predicate():
    if time.monotonic() > deadline:
      raise TimeoutError("condition not reached")
    time.sleep(0.01)


def test_a_run_fills_the_bar_and_the_loss_curve_then_emits_the_model():
  train = FakeTrain()
  panel = _panel(train)
  observer = mock.Mock()
  panel.observe(observer, "model")
  assert panel.start()
  assert panel.wait(WAIT_S)
  assert (panel.progress.value, panel.progress.max) == (BASE.steps, BASE.steps)
  assert panel.source.data["step"] == list(range(1, BASE.steps + 1))  # every step on the curve
  assert panel.source.data["loss"][-1] == pytest.approx(1.0 / BASE.steps)
  last_five = [1.0 / s for s in range(BASE.steps - 4, BASE.steps + 1)]
  assert panel.source.data["smooth"][-1] == pytest.approx(sum(last_five) / 5)
  assert panel.source.data["smooth"][0] == pytest.approx(1.0)  # fewer steps: mean of those
  observer.assert_called_once()
  model = observer.call_args.args[0]["new"]
  assert isinstance(model, TrainedAid) and model.params == {"gain": 2.0}
  assert model.steps_done == BASE.steps and model.audiogram == EAR.audiogram
  assert "done: 8 steps" in panel.status.value and panel.progress.bar_style == "success"
  assert not panel.running and not panel.start_button.disabled and panel.cancel_button.disabled


def test_the_loss_axes_exist_before_a_run_and_span_its_steps_and_losses():
  panel = _panel(FakeTrain())
  x, y = panel.figure.x_range, panel.figure.y_range
  assert (x.start, x.end, y.start, y.end) == (0, BASE.steps + 0.5, 0, 1)  # drawn before any data
  panel.steps.value = 5
  assert panel.start() and panel.wait(WAIT_S)
  assert x.end == 5.5 and y.start == 0  # room for the last step's marker
  assert y.end == pytest.approx(1.1 * max(panel.source.data["loss"]))  # losses 1, 1/2, ... 1/5


def test_the_trained_aid_can_be_downloaded_as_a_checkpoint(tmp_path):
  panel = _panel(FakeTrain())
  assert panel.download.value == ""  # nothing to save yet
  assert panel.start() and panel.wait(WAIT_S)
  link = re.search(r'download="([^"]+)" href="data:application/octet-stream;base64,([^"]+)"',
                   panel.download.value)
  assert link and link.group(1) == "dal_aid_N3_8steps.msgpack"
  saved = tmp_path / link.group(1)
  saved.write_bytes(base64.b64decode(link.group(2)))
  params, cfg, step = checkpoint.restore_params(saved)
  assert params == {"gain": 2.0} and step == 8
  assert cfg == panel.model.train_config and cfg.audiogram == EAR.audiogram
  panel.model = None
  assert panel.download.value == ""


def test_settings_reach_the_training_config():
  train = FakeTrain()
  panel = _panel(train)
  panel.steps.value, panel.learning_rate.value = 3, 1e-3
  panel.w_nap.value, panel.w_sai.value = 0.5, 0.0
  assert panel.start() and panel.wait(WAIT_S)
  cfg, ear = train.calls[0]
  assert (cfg.steps, cfg.learning_rate, cfg.loss.w_nap, cfg.loss.w_sai) == (3, 1e-3, 0.5, 0.0)
  assert cfg.model == "small" and cfg.audiogram == EAR.audiogram and ear is EAR
  # the preset warms up over 4 steps: 3 steps warm up over 1, so the rate reaches the slider's
  assert BASE.warmup_steps == 4 and cfg.warmup_steps == 1
  panel.steps.value = 40
  assert panel.config().warmup_steps == 4


def test_cancel_stops_the_run_and_keeps_the_previous_model():
  gate = threading.Event()
  panel = _panel(FakeTrain(gate=gate))
  previous = TrainedAid(params={"gain": 1.0}, model_config=BASE.model_config, audiogram=None,
                        steps_done=5, loss=0.5)
  panel.model = previous
  assert panel.start()
  _wait_until(lambda: panel.progress.value >= 1)  # the first step reached the bar
  assert panel.running and panel.start_button.disabled and not panel.cancel_button.disabled
  panel.cancel()
  gate.set()
  assert panel.wait(WAIT_S)
  assert panel.model is previous
  assert "cancelled at step 1 of 8" in panel.status.value
  assert panel.progress.value == 1 and not panel.running


def test_a_failure_is_shown_in_the_panel_and_keeps_the_previous_model():
  panel = _panel(FakeTrain(fail_after=2))
  previous = TrainedAid(params={"gain": 1.0}, model_config=BASE.model_config, audiogram=None,
                        steps_done=5, loss=0.5)
  panel.model = previous
  assert panel.start() and panel.wait(WAIT_S)
  assert panel.model is previous
  assert "fine-tune failed: RuntimeError: loss is NaN" in panel.status.value
  assert "Kept the previous model" in panel.status.value and panel.progress.bar_style == "danger"
  assert not panel.start_button.disabled  # ready for another try
  assert panel.start() and panel.wait(WAIT_S)  # the kernel-wide lock was released


def test_a_diverged_run_keeps_its_last_good_step_and_says_so():
  panel = _panel(FakeTrain(diverge_after=3))
  assert panel.start() and panel.wait(WAIT_S)
  assert panel.model.params == {"gain": 1.5} and panel.model.steps_done == 3
  assert "fine-tune stopped: training diverged" in panel.status.value
  assert "The DAL rows now use them (step 3)" in panel.status.value
  assert "Kept the previous model" not in panel.status.value
  assert panel.progress.bar_style == "warning" and not panel.start_button.disabled


def test_one_run_at_a_time_even_across_panels():
  gate = threading.Event()
  first, second = _panel(FakeTrain(gate=gate)), _panel(FakeTrain())
  assert first.start()
  _wait_until(lambda: first.progress.value >= 1)
  shown = first.status.value
  assert not first.start() and not second.start()
  assert first.status.value == shown  # a double click leaves the running panel's status alone
  assert "already running" in second.status.value
  # settings a run would not read are locked while it goes on
  assert first.steps.disabled and first.learning_rate.disabled and first.size.disabled
  gate.set()
  assert first.wait(WAIT_S)
  assert second.start() and second.wait(WAIT_S)
  assert second.model is not None
  assert not first.steps.disabled and not first.w_sai.disabled


def test_the_time_cap_stops_a_run_and_keeps_what_it_learned():
  panel = _panel(FakeTrain(step_s=0.05), max_seconds=0.12)
  assert panel.start() and panel.wait(WAIT_S)
  assert panel.model is not None and 0 < panel.model.steps_done < BASE.steps
  assert "stopped at the 0.12 s cap after" in panel.status.value  # rounding must not hide the cap
  assert panel.progress.bar_style == "warning"


def test_progress_updates_are_throttled_to_the_ui_rate():
  panel = _panel(FakeTrain(), max_steps=400)
  panel.steps.value = 400  # 400 steps in a few ms
  updates = mock.Mock()
  panel.progress.observe(updates, "value")
  assert panel.start() and panel.wait(WAIT_S)
  assert panel.progress.value == 400
  assert updates.call_count <= 3  # first call, then the final flush (10 Hz at most in between)


def test_missing_listener_or_zero_weights_refuse_to_start_with_a_reason():
  panel = FineTunePanel(train_fn=FakeTrain(), base_config=BASE)
  assert panel.start_button.disabled  # nothing to train for yet
  assert not panel.start() and "ear: no listener to fine-tune for yet" in panel.status.value
  panel.ear = EAR
  assert not panel.start_button.disabled
  panel.w_nap.value = panel.w_sai.value = 0.0
  assert not panel.start() and "at least one loss weight" in panel.status.value
  assert not panel.running


def test_caps_bound_the_steps_slider():
  panel = _panel(FakeTrain(), max_steps=5)
  assert panel.steps.max == 5 and panel.steps.value == 5
  with pytest.raises(ValueError, match="max_steps"):
    FineTunePanel(train_fn=FakeTrain(), max_steps=0)
  with pytest.raises(ValueError, match="model_sizes"):
    FineTunePanel(train_fn=FakeTrain(), model_sizes=("huge",))


def test_a_fine_tune_continues_from_the_current_aid():
  train = FakeTrain()
  start = TrainedAid(params={"gain": 1.5}, model_config=BASE.model_config, audiogram=None,
                     steps_done=320, loss=float("nan"))
  panel = _panel(train, initial_model=start)
  assert panel.model is start and "320 steps" in panel.model_text.value
  assert panel.start() and panel.wait(WAIT_S)
  assert train.init_params == [{"gain": 1.5}]
  assert panel.model is not start and panel.model.params == {"gain": 2.0}
  assert panel.model.steps_done == 320 + BASE.steps  # the aid has had both runs' steps
  assert f"{320 + BASE.steps} steps" in panel.model_text.value
  assert panel.model.file_name().endswith(f"_{320 + BASE.steps}steps.msgpack")


def test_the_learning_rate_follows_whether_a_run_would_continue_the_aid():
  start = TrainedAid(params={"gain": 1.5}, model_config=BASE.model_config, audiogram=None,
                     steps_done=320, loss=float("nan"))
  panel = _panel(FakeTrain(), initial_model=start, continue_learning_rate=2e-4)
  assert panel.size.value == BASE.model and panel.learning_rate.value == pytest.approx(2e-4)
  other = next(size for size in panel.size.options if size != BASE.model)
  panel.size.value = other  # a fresh network of another size: the preset's rate
  assert panel.learning_rate.value == pytest.approx(BASE.learning_rate)
  assert panel.config().learning_rate == pytest.approx(BASE.learning_rate)
  panel.size.value = BASE.model
  assert panel.learning_rate.value == pytest.approx(2e-4)
  assert _panel(FakeTrain(), continue_learning_rate=2e-4).learning_rate.value == pytest.approx(
      BASE.learning_rate)  # no aid yet: nothing to continue


def test_a_cancel_after_the_last_step_keeps_the_finished_run():
  train = FakeTrain()
  panel = _panel(train)

  def train_then_cancel(cfg, **kwargs):
    result = train(cfg, **kwargs)
    panel.cancel()  # the click lands while the last step's result is on its way
    return result

  panel.train_fn = train_then_cancel
  assert panel.start() and panel.wait(WAIT_S)
  assert panel.model is not None and panel.model.steps_done == BASE.steps
  assert "done:" in panel.status.value and panel.progress.bar_style == "success"


def test_a_long_status_wraps_in_its_column_and_squeezes_no_neighbour():
  # The browser sizes flex columns by their longest line: without a fixed run column, "done: ..."
  # and the download hint widened it, squeezing the settings (readouts cut) and pushing the loss
  # curve past the page's right edge.
  panel = FineTunePanel(train_fn=FakeTrain(), base_config=BASE)
  settings, run, curve = panel.children[0].children
  assert run.children[1:] == (panel.progress, panel.status, panel.model_text, panel.download)
  assert curve is panel.curve
  assert run.layout.width == "340px"
  assert [column.layout.flex for column in (settings, run, curve)] == ["0 0 auto"] * 3


def test_the_learning_rate_slider_can_show_the_preset_rates_as_they_are():
  # The browser snaps a FloatLogSlider's exponent to min + k * step: the preset rates must be on
  # that grid, or the run trains at a rounded one (0.25 decades gave 1.8e-3 for 2e-3).
  slider = _panel(FakeTrain()).learning_rate
  for rate in (BASE.learning_rate, WIDGET_CONTINUE_LEARNING_RATE):
    k = round((np.log10(rate) - slider.min) / slider.step)
    assert 10 ** (slider.min + k * slider.step) == pytest.approx(rate, rel=0.01), rate
