"""Training: configs, checkpoints, the jitted step (NaN guard), train() (loss, resume, cancel),
enhance, and data parallel over two (virtual) devices.

Every training test uses the same tiny model, loss, decay kind, ear design and batch shape, so
the step (CARFAC's gradient: tens of seconds to compile on a 2-core CPU) is compiled once.
"""
import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import serialization

from dal_widgets import atomic
from dal_widgets.aid.seanet import SeanetConfig, init_seanet
from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import designs
from dal_widgets.errors import AudioError, ParameterError, TrainingError
from dal_widgets.hearing.presets import preset
from dal_widgets.loop import checkpoint, train
from dal_widgets.loop.config import PRESETS, DataConfig, LossConfig, TrainConfig, config_for
from dal_widgets.loop.data import SpeechSource

SR = 16000
TINY = SeanetConfig(base_channels=4, strides=(2, 4))  # a few thousand parameters
DATA = DataConfig(clip_s=0.1, snr_db_range=(5.0, 5.0), noise_kinds=("white",), noise_probs=(1.0,))
# final_lr_fraction=1: a constant learning rate, so runs of different lengths take equal steps
CFG = TrainConfig(model=TINY, steps=20, batch_size=2, learning_rate=3e-3, warmup_steps=0,
                  final_lr_fraction=1.0, checkpoint_every=0, log_every=1, max_bad_steps=3,
                  data=DATA)
REPO = Path(__file__).resolve().parents[2]


def _ear():
  hypers = designs.designed(float(SR)).hypers
  return cf.make_weights(hypers, ohc_health=0.5)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _assert_trees_equal(a, b):
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


class FixedSource:
  """The same batch at every step (so a falling loss means the model learned)."""

  def __init__(self):
    self.batch = SpeechSource(DATA).make_batch(0, CFG.batch_size)

  def make_batch(self, step, batch_size):
    return self.batch


class NanSource:
  """The real data, except a NaN noisy batch at the steps in `bad_steps`."""

  def __init__(self, bad_steps):
    self.source, self.bad_steps = SpeechSource(DATA), set(bad_steps)

  def make_batch(self, step, batch_size):
    batch = self.source.make_batch(step, batch_size)
    if step in self.bad_steps:
      batch = dataclasses.replace(batch, noisy=np.full_like(batch.noisy, np.nan))
    return batch


def _stop_after(n):
  calls = []
  def should_stop():
    calls.append(None)
    return len(calls) > n
  return should_stop


# ---------------------------------------------------------------- configs


def test_config_json_round_trip_with_audiogram_and_model_objects():
  cfg = CFG.replace(audiogram=preset("S2"), loss=LossConfig(kind="l2", w_spectral=0.5))
  text = json.dumps(cfg.to_dict())
  assert TrainConfig.from_dict(json.loads(text)) == cfg
  for name in PRESETS:
    restored = TrainConfig.from_dict(json.loads(json.dumps(config_for(name).to_dict())))
    assert restored == PRESETS[name]


def test_presets_are_sized_as_documented():
  widget, paper = config_for("widget"), config_for("paper")
  assert widget.model == "small" and widget.steps <= 100 and widget.data.clip_s <= 0.5
  assert paper.model == "paper" and paper.steps > 10_000


@pytest.mark.parametrize("data, match", [
    ({"stepz": 3}, "unknown field"), ({"loss": {"kind": "l3"}}, "kind"),
    ({"model": "huge"}, "model"), ({"audiogram": "N9"}, "audiogram"),
    ({"batch_size": 0}, "batch_size"), ({"data": {"sr": "16k"}}, "sr"),
    ({"data": {"sr": 96000}}, "sr: expected at most 48000")])
def test_bad_config_dicts_raise(data, match):
  with pytest.raises(ParameterError, match=match):
    TrainConfig.from_dict(data)
  with pytest.raises(ParameterError, match="name"):
    config_for("giant")


def test_learning_rate_schedule_warms_up_then_decays_to_the_final_fraction():
  cfg = TrainConfig(steps=100, learning_rate=1e-3, warmup_steps=10, final_lr_fraction=0.1)
  lr = train.make_schedule(cfg)
  np.testing.assert_allclose([lr(0), lr(4), lr(9), lr(10), lr(55), lr(100), lr(150)],
                             [1e-4, 5e-4, 1e-3, 1e-3, 5.5e-4, 1e-4, 1e-4], rtol=1e-5, atol=1e-9)
  constant = train.make_schedule(cfg.replace(decay="constant"))
  np.testing.assert_allclose([constant(4), constant(100)], [5e-4, 1e-3], rtol=1e-5)


def test_the_first_step_of_a_warm_up_trains():
  cfg = CFG.replace(warmup_steps=5)
  normal = designs.designed(float(SR))
  step = train.make_train_step(TINY, cfg, normal, normal._replace(weights=_ear()))
  state = step.place_state(train.create_train_state(jax.random.PRNGKey(0), TINY, cfg))
  before = _leaves(state.params)
  state, metrics = step(state, SpeechSource(DATA).make_batch(0, 2))
  assert float(metrics["learning_rate"]) == pytest.approx(cfg.learning_rate / 5)
  assert any(not np.array_equal(a, b) for a, b in zip(_leaves(state.params), before, strict=True))


# ---------------------------------------------------------------- checkpoints


def _state(step=5):
  state = train.create_train_state(jax.random.PRNGKey(0), TINY, CFG)
  params = jax.tree_util.tree_map(lambda p: p + 0.25, state.params)
  return state.replace(params=params, step=np.asarray(step, np.int32))


def test_checkpoint_round_trip_gives_equal_state_and_config(tmp_path):
  state = _state()
  path = checkpoint.save(tmp_path, state, CFG)
  assert checkpoint.latest(tmp_path) == path and path.name == "ckpt_00000005.msgpack"
  template = train.create_train_state(jax.random.PRNGKey(1), TINY, CFG)
  restored = checkpoint.restore(tmp_path, target=template)
  assert restored.step == 5 and restored.config == CFG
  _assert_trees_equal(restored.state, state)
  params, cfg, step = checkpoint.restore_params(path)
  _assert_trees_equal(params, state.params)
  assert cfg == CFG and step == 5


def test_set_aside_moves_every_checkpoint_and_the_marker_and_deletes_nothing(tmp_path):
  first = checkpoint.save(tmp_path, _state(step=1), CFG)
  second = checkpoint.save(tmp_path, _state(step=2), CFG)
  data = {p.name: p.read_bytes() for p in (first, second, tmp_path / checkpoint.MARKER)}
  aside = checkpoint.set_aside(tmp_path)
  assert aside.parent == tmp_path and aside.name.startswith("replaced_")
  assert checkpoint.latest(tmp_path) is None and checkpoint.latest(aside).name == second.name
  assert {p.name: p.read_bytes() for p in aside.iterdir()} == data
  assert checkpoint.set_aside(tmp_path) is None  # nothing left to move
  checkpoint.save(tmp_path, _state(step=3), CFG)
  assert checkpoint.set_aside(tmp_path) != aside  # a second fresh start gets its own folder


def test_corrupt_truncated_foreign_or_missing_checkpoints_raise(tmp_path):
  path = checkpoint.save(tmp_path, _state(), CFG)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))
  with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
    checkpoint.restore(path)
  path.write_bytes(bytes(data[: len(data) // 3]))
  with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
    checkpoint.restore(path)
  path.write_bytes(b"hello, not a checkpoint")
  with pytest.raises(checkpoint.CheckpointError):
    checkpoint.restore(path)
  with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
    checkpoint.restore(tmp_path / "ckpt_00000099.msgpack")
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
    checkpoint.restore(empty)


def test_a_folder_whose_newest_checkpoint_is_corrupt_resumes_from_the_one_before(tmp_path):
  checkpoint.save(tmp_path, _state(step=1), CFG)
  newest = checkpoint.save(tmp_path, _state(step=2), CFG)
  newest.write_bytes(newest.read_bytes()[:100])  # damaged outside this code
  with pytest.warns(UserWarning, match=r"ckpt_00000002.*corrupt.*using ckpt_00000001.msgpack"):
    assert checkpoint.restore(tmp_path).step == 1
  with pytest.raises(checkpoint.CheckpointError, match="corrupt"):
    checkpoint.restore(newest)  # a file named on its own is never replaced by another
  (tmp_path / "ckpt_00000001.msgpack").write_bytes(b"junk")
  with pytest.raises(checkpoint.CheckpointError, match="ckpt_00000002.* corrupt"):
    checkpoint.restore(tmp_path)  # none readable: the newest one's error


def test_a_failed_write_never_replaces_the_last_good_checkpoint(tmp_path, monkeypatch):
  good = checkpoint.save(tmp_path, _state(step=1), CFG)
  def fail(fd):
    raise OSError("disk full")
  monkeypatch.setattr(atomic.os, "fsync", fail)
  with pytest.raises(checkpoint.CheckpointError, match="cannot write the checkpoint: disk full"):
    checkpoint.save(tmp_path, _state(step=2), CFG)
  monkeypatch.undo()
  assert checkpoint.latest(tmp_path) == good
  assert sorted(p.name for p in tmp_path.iterdir()) == [good.name, checkpoint.MARKER]
  assert checkpoint.restore(good).step == 1


def _forge(path, body: dict, version=checkpoint.VERSION):
  """A checkpoint file with a valid envelope and checksum around `body`."""
  raw = serialization.msgpack_serialize(body)
  path.write_bytes(serialization.msgpack_serialize({
      "format": checkpoint.FORMAT, "version": version,
      "sha256": hashlib.sha256(raw).hexdigest(), "body": raw}))


def test_well_formed_checkpoints_with_bad_contents_raise(tmp_path):
  path = tmp_path / "ckpt_00000001.msgpack"
  _forge(path, {"state": {}, "step": 1})
  with pytest.raises(checkpoint.CheckpointError, match="lacks its state, step or config"):
    checkpoint.restore(path)
  _forge(path, {"state": {}, "step": 1, "config": "{not json"})
  with pytest.raises(checkpoint.CheckpointError, match="training config is unreadable"):
    checkpoint.restore(path)
  _forge(path, {"state": {}, "step": 1, "config": json.dumps({"steps": -3})})
  with pytest.raises(checkpoint.CheckpointError, match="training config is unreadable.*steps"):
    checkpoint.restore(path)


def test_version_1_aids_read_back_as_the_plain_seanet_they_were_trained_as(tmp_path):
  path = tmp_path / "ckpt_00000001.msgpack"
  body = {"state": {}, "step": 1, "config": json.dumps(CFG.to_dict())}
  _forge(path, body, version=1)
  old = checkpoint.restore(path).config.model_config
  assert (old.checkerboard_free, old.dc_block) == (False, False)
  assert dataclasses.replace(old, checkerboard_free=True, dc_block=True) == CFG.model_config
  _forge(path, body)
  assert checkpoint.restore(path).config == CFG  # this version: the config as written
  _forge(path, body, version=3)
  with pytest.raises(checkpoint.CheckpointError, match=r"version 3, this code reads versions \[1, 2\]"):
    checkpoint.restore(path)


def test_resuming_a_version_1_run_names_its_older_design(tmp_path):
  cfg = CFG.replace(model="small")
  _forge(tmp_path / "ckpt_00000001.msgpack",
         {"state": {}, "step": 1, "config": json.dumps(cfg.to_dict())}, version=1)
  with pytest.raises(ParameterError, match=r'"small" before version 2 .* this run trains a "small" one'):
    train.resumable(tmp_path, cfg)


def test_resuming_with_other_settings_says_what_changes(tmp_path):
  cosine = CFG.replace(final_lr_fraction=0.1)  # decays from 3e-3 to 3e-4 over `steps`
  checkpoint.save(tmp_path, _state(step=5), cosine)
  template = train.create_train_state(jax.random.PRNGKey(0), TINY, cosine)
  longer = cosine.replace(steps=40)
  now, was = train.make_schedule(longer)(5), train.make_schedule(cosine)(5)
  with pytest.warns(UserWarning, match=rf"20-step run as a 40-step one: .* step 6 trains at "
                                       rf"{float(now):.3g} \(the old run: {float(was):.3g}\)"):
    assert int(train._resume(tmp_path, longer, template).step) == 5
  other = cosine.replace(learning_rate=1e-3, batch_size=4,
                        data=dataclasses.replace(DATA, clip_s=0.2))
  with pytest.warns(UserWarning, match=r"differs from this run's in batch_size 2 -> 4, "
                                       r"learning_rate 0\.003 -> 0\.001, data\.clip_s 0\.1 -> "
                                       r"0\.2; continuing with this run's config"):
    train._resume(tmp_path, other, template)
  warming = tmp_path / "warming"  # still warming up: the two runs' rates are the same there
  checkpoint.save(warming, _state(step=5), cosine.replace(warmup_steps=10))
  with pytest.warns(UserWarning, match=r"decays over the new total, after the warm-up \(step 10\)$"):
    train._resume(warming, longer.replace(warmup_steps=10), template)


def test_an_aid_file_without_optimizer_state_is_refused_before_any_work(tmp_path):
  params = init_seanet(jax.random.PRNGKey(0), TINY)
  checkpoint.checkpoint_path(tmp_path, 5).write_bytes(checkpoint.aid_bytes(params, CFG, 5))
  with pytest.raises(ParameterError, match=r"ckpt_00000005.msgpack holds an aid's parameters "
                                           r"alone .* use another workdir"):
    train.resumable(tmp_path, CFG)


def test_the_marker_cannot_point_outside_its_folder(tmp_path):
  outside = checkpoint.save(tmp_path / "other", _state(step=9), CFG)
  run = tmp_path / "run"
  own = checkpoint.save(run, _state(step=2), CFG)
  (run / checkpoint.MARKER).write_text(json.dumps({"file": f"../other/{outside.name}"}))
  with pytest.warns(UserWarning, match="not a checkpoint file of this folder"):
    assert checkpoint.latest(run) == own


def test_only_the_newest_checkpoints_are_kept(tmp_path):
  for step in range(1, 6):
    checkpoint.save(tmp_path, _state(step=step), CFG, keep=2)
  assert sorted(p.name for p in tmp_path.glob("ckpt_*")) == ["ckpt_00000004.msgpack",
                                                              "ckpt_00000005.msgpack"]
  (tmp_path / checkpoint.MARKER).unlink()
  assert checkpoint.latest(tmp_path).name == "ckpt_00000005.msgpack"


def test_restoring_into_another_model_size_raises(tmp_path):
  checkpoint.save(tmp_path, _state(), CFG)
  other = SeanetConfig(base_channels=8, strides=(2, 4))
  with pytest.raises(checkpoint.CheckpointError, match="shapes differ"):
    checkpoint.restore(tmp_path, target=train.create_train_state(jax.random.PRNGKey(0), other, CFG))
  with pytest.raises(ParameterError, match="another workdir"):
    train.train(CFG.replace(model=other), tmp_path, ear=_ear())


# ---------------------------------------------------------------- training


def test_training_lowers_the_loss_and_reports_progress_at_most_10_hz():
  calls = []
  result = train.train(CFG, ear=_ear(), source=FixedSource(),
                       on_progress=lambda *a: calls.append((time.perf_counter(), a)))
  losses = [h["loss"] for h in result.history]
  assert [h["step"] for h in result.history] == list(range(1, CFG.steps + 1))
  assert all(h["finite"] for h in result.history) and result.skipped_steps == 0
  assert np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5])
  assert result.steps_done == CFG.steps and not result.stopped_early
  assert result.loss == pytest.approx(np.mean(losses[-train.RESULT_LOSS_STEPS:]))
  steps = [a[0] for _, a in calls]
  assert steps[-1] == CFG.steps and all(a[1] == CFG.steps and "loss" in a[2] for _, a in calls)
  gaps = np.diff([t for t, _ in calls[:-1]])  # the final report comes regardless of the throttle
  assert np.all(gaps >= train.PROGRESS_INTERVAL_S)


def test_should_stop_saves_and_resume_matches_an_uninterrupted_run(tmp_path):
  cfg = CFG.replace(steps=8, checkpoint_every=3)
  straight = train.train(cfg, ear=_ear())
  stopped = train.train(cfg, tmp_path, ear=_ear(), should_stop=_stop_after(5))
  assert stopped.stopped_early and stopped.steps_done == 5 and len(stopped.history) == 5
  assert checkpoint.latest(tmp_path).name == "ckpt_00000005.msgpack"
  _assert_trees_equal(checkpoint.restore_params(tmp_path)[0], stopped.params)
  resumed = train.train(cfg, tmp_path, ear=_ear())
  assert [h["step"] for h in resumed.history] == [6, 7, 8] and resumed.steps_done == 8
  np.testing.assert_allclose([h["loss"] for h in resumed.history],
                             [h["loss"] for h in straight.history[5:]], rtol=1e-6)
  for a, b in zip(_leaves(resumed.params), _leaves(straight.params), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)
  again = train.train(cfg, tmp_path, ear=_ear())  # already complete: nothing to do
  assert again.history == [] and again.steps_done == 8


def test_ctrl_c_during_a_step_keeps_that_step(tmp_path, monkeypatch, caplog):
  """A step consumes (donates) the state it is given: a Ctrl-C that lands inside the call must
  not leave the run without a state to save (Python's default SIGINT handler, e.g. a script)."""
  import signal
  call = train.TrainStep.__call__
  def interrupted_at_3(self, state, batch):
    new_state, metrics = call(self, state, batch)
    if int(new_state.step) == 3:
      os.kill(os.getpid(), signal.SIGINT)  # raised at the next bytecode: inside this call
    return new_state, metrics
  monkeypatch.setattr(train.TrainStep, "__call__", interrupted_at_3)
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with pytest.raises(KeyboardInterrupt):
      train.train(CFG.replace(steps=6), tmp_path, ear=_ear())
  finally:
    signal.signal(signal.SIGINT, previous)
  assert checkpoint.restore(tmp_path).step == 3
  assert "finishing this step to save it (Ctrl-C again to abort)" in caplog.text
  resumed = train.train(CFG.replace(steps=6), tmp_path, ear=_ear())
  assert [h["step"] for h in resumed.history] == [4, 5, 6]


def test_the_history_file_holds_every_step_once_across_stops_and_kills(tmp_path):
  cfg = CFG.replace(steps=8, checkpoint_every=3)
  straight = train.train(cfg, ear=_ear())
  train.train(cfg, tmp_path, ear=_ear(), should_stop=_stop_after(5))
  rows = checkpoint.read_history(tmp_path, 5)
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
  # killed after the history of a later save was written, before its checkpoint
  checkpoint.write_history(tmp_path, rows + [dict(rows[-1], step=6), dict(rows[-1], step=7)])
  train.train(cfg, tmp_path, ear=_ear())
  rows = checkpoint.read_history(tmp_path, cfg.steps)
  assert [r["step"] for r in rows] == list(range(1, 9))
  np.testing.assert_allclose([r["loss"] for r in rows], [h["loss"] for h in straight.history],
                             rtol=1e-6)
  assert all(r["finite"] is True for r in rows)
  aside = checkpoint.set_aside(tmp_path)  # a fresh run starts a fresh history
  assert (aside / checkpoint.HISTORY).exists() and checkpoint.read_history(tmp_path, 8) == []


class FailingSource:
  """The real data until `step`, then an unreadable corpus file."""

  def __init__(self, step):
    self.source, self.step, self.calls = SpeechSource(DATA), step, 0

  def make_batch(self, step, batch_size):
    self.calls += 1
    if step == self.step:
      raise AudioError("corpus/bad.wav: cannot read audio")
    return self.source.make_batch(step, batch_size)


def test_an_unwritable_workdir_fails_before_any_step(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  source = FailingSource(step=-1)
  with pytest.raises(ParameterError, match="cannot write checkpoints in"):
    train.train(CFG, blocker / "run", ear=_ear(), source=source)
  with pytest.raises(ParameterError, match="a_file' is a file, not a folder for checkpoints"):
    train.train(CFG, blocker, ear=_ear(), source=source)
  assert source.calls == 0


def test_an_error_mid_run_keeps_the_work_done(tmp_path):
  cfg = CFG.replace(steps=6)
  with pytest.raises(TrainingError, match="stopped after step 3: corpus/bad.wav") as info:
    train.train(cfg, tmp_path, ear=_ear(), source=FailingSource(step=3))
  assert isinstance(info.value.__cause__, AudioError)
  assert "last checkpoint" in str(info.value) and "ckpt_00000003" in str(info.value)
  result = info.value.result
  assert result.steps_done == 3 and len(result.history) == 3
  _assert_trees_equal(checkpoint.restore_params(tmp_path)[0], result.params)
  resumed = train.train(cfg, tmp_path, ear=_ear())  # and the run goes on from there
  assert [h["step"] for h in resumed.history] == [4, 5, 6]


def test_a_non_finite_step_is_skipped_inside_jit():
  normal = designs.designed(float(SR))
  step = train.make_train_step(TINY, CFG, normal, normal._replace(weights=_ear()))
  state = step.place_state(train.create_train_state(jax.random.PRNGKey(0), TINY, CFG))
  batch = SpeechSource(DATA).make_batch(0, 2)
  state, metrics = step(state, batch)
  before = _leaves(state.params)
  bad = dataclasses.replace(batch, noisy=np.full_like(batch.noisy, np.nan))
  state, metrics = step(state, bad)
  assert not bool(metrics["finite"]) and int(state.step) == 2
  for a, b in zip(_leaves(state.params), before, strict=True):
    np.testing.assert_array_equal(a, b)
  # Adam's moments skipped the step; the learning-rate schedule did not (it counts steps)
  counts = {path[-1].tuple_name: int(count)
            for path, count in optax.tree_utils.tree_get_all_with_path(state.opt_state, "count")}
  assert counts == {"ScaleByAdamState": 1, "ScaleByScheduleState": 2}
  state, metrics = step(state, batch)
  assert bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))


def test_repeated_non_finite_steps_raise_with_the_last_good_params(tmp_path):
  good = train.train(CFG.replace(steps=2), ear=_ear())
  with pytest.raises(TrainingError, match="3 non-finite steps in a row") as info:
    train.train(CFG.replace(steps=10), tmp_path, ear=_ear(), source=NanSource({2, 3, 4}))
  result = info.value.result
  assert [h["finite"] for h in result.history] == [True, True, False, False, False]
  assert result.skipped_steps == 3
  _assert_trees_equal(result.params, good.params)
  _assert_trees_equal(checkpoint.restore_params(tmp_path)[0], good.params)
  once = train.train(CFG.replace(steps=4), ear=_ear(), source=NanSource({1}))
  assert [h["finite"] for h in once.history] == [True, False, True, True]


def test_enhance_is_the_identity_at_init_for_any_length():
  params = init_seanet(jax.random.PRNGKey(0), TINY)
  x = np.random.default_rng(0).standard_normal(1001).astype(np.float32) * 0.02
  np.testing.assert_array_equal(train.enhance(params, TINY, x), x)
  assert train.enhance(params, TINY, np.stack([x, x])).shape == (2, 1001)
  with pytest.raises(ParameterError, match="x: expected a waveform"):
    train.enhance(params, TINY, np.zeros((1, 2, 3)))
  with pytest.raises(ParameterError, match="NaN"):
    train.enhance(params, TINY, np.full(10, np.nan))
  with pytest.raises(ParameterError, match="model_cfg"):
    train.enhance(params, "tiny", x)


def test_ears_are_checked_against_the_run():
  normal, impaired = train.ears_for(CFG, _ear())
  np.testing.assert_array_equal(impaired.weights.ohc_health, _ear().ohc_health)
  class OtherRate:
    sr, style = 22050.0, "v3"
    def weights(self):
      return _ear()
  with pytest.raises(ParameterError, match="ear: fitted for sr=22050"):
    train.ears_for(CFG, OtherRate())
  with pytest.raises(ParameterError, match="ear: expected an ImpairedEar"):
    train.ears_for(CFG, "N3")
  fitted = train.ears_for(CFG.replace(audiogram="N3"))[1]  # bundled preset fit
  assert float(np.min(fitted.weights.ohc_health)) < 1.0


def test_train_step_checks_its_ears_and_condition():
  normal = designs.designed(float(SR))
  with pytest.raises(ParameterError, match="same CARFAC design"):
    train.make_train_step(TINY, CFG, normal, designs.designed(22050.0))
  film = dataclasses.replace(TINY, film_dim=8)
  with pytest.raises(ParameterError, match="condition"):
    train.make_train_step(film, CFG, normal, normal)
  with pytest.raises(ParameterError, match="impaired: expected a Carfac"):
    train.make_train_step(TINY, CFG, normal, _ear())


def test_sai_loss_needs_clips_of_at_least_one_frame():
  with pytest.raises(ParameterError, match="data.clip_s"):
    train.train(CFG.replace(data=dataclasses.replace(DATA, clip_s=0.01)), ear=_ear())


TWO_DEVICES = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import json, dataclasses
    import jax, numpy as np
    from dal_widgets.errors import ParameterError
    from dal_widgets.aid.seanet import SeanetConfig, checkerboard_free_kernel
    from dal_widgets.cochlea import carfac as cf, designs
    from dal_widgets.loop import train
    from dal_widgets.loop.config import TrainConfig, DataConfig
    from dal_widgets.loop.data import SpeechSource
    assert jax.device_count() == 2
    tiny = SeanetConfig(base_channels=4, strides=(2, 4))
    data = DataConfig(clip_s=0.1)
    cfg = TrainConfig(model=tiny, batch_size=2, learning_rate=3e-3, data=data)
    normal = designs.designed(16000.0)
    impaired = normal._replace(weights=cf.make_weights(normal.hypers, ohc_health=0.5))
    batch = SpeechSource(data).make_batch(0, 2)
    def effective(params):
      # What reaches the output. Float noise in directions without effect has no gradient to
      # stop it, and Adam scales it up: the parts of the upsampling kernels that their
      # constraint removes, and the output bias, a constant that the DC blocker removes.
      params = {name: dict(layer) for name, layer in params.items()}
      for i, stride in enumerate(tiny.strides):
        up = params[f"dec{i}_up"]
        up["kernel"] = checkerboard_free_kernel(up["kernel"], stride)
      params["output_conv"]["bias"] = 0 * params["output_conv"]["bias"]
      return params
    out = {}
    for n in (1, 2):
      step = train.make_train_step(tiny, cfg, normal, impaired, devices=jax.devices()[:n])
      state = step.place_state(train.create_train_state(jax.random.PRNGKey(0), tiny, cfg))
      for _ in range(2):
        state, metrics = step(state, batch)
      out[n] = {"loss": float(metrics["loss"]), "nap": float(metrics["nap"]),
                "params": [np.asarray(p).ravel().tolist()
                           for p in jax.tree_util.tree_leaves(effective(state.params))],
                "n_shards": len(state.params["output_conv"]["kernel"].sharding.device_set)}
    try:
      step.place_batch(SpeechSource(data).make_batch(0, 3))
      out["odd"] = "no error"
    except ParameterError as err:
      out["odd"] = str(err)
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow  # a fresh process compiling the step for a 1- and a 2-device mesh: ~1 min
def test_two_devices_give_the_one_device_loss_and_params():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", TWO_DEVICES], capture_output=True, text=True,
                        cwd=REPO, env=env, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT", 1)[1])
  one, two = out["1"], out["2"]
  # same global batch: only the order of the cross-device gradient sum differs (float32)
  assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
  assert two["nap"] == pytest.approx(one["nap"], rel=1e-5)
  for a, b in zip(two["params"], one["params"], strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert one["n_shards"] == 1 and two["n_shards"] == 2  # params replicated on both devices
  assert "batch_size: expected a multiple of the 2 devices" in out["odd"]


def test_checkpoint_functions_name_a_wrong_path_or_state(tmp_path):
  # each was a TypeError from pathlib or an AttributeError: 'dict' object has no attribute 'step'
  for call in (lambda: checkpoint.restore(None), lambda: checkpoint.latest(5),
               lambda: checkpoint.save(None, _state(), CFG)):
    with pytest.raises(ParameterError, match=r"(path|workdir): expected a folder or file path"):
      call()
  for state in (None, {"params": {}, "opt_state": {}, "step": 0}):
    with pytest.raises(ParameterError, match="state: expected a TrainState"):
      checkpoint.save(tmp_path, state, CFG)
  assert not list(tmp_path.iterdir())
