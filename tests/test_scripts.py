"""The scripts in scripts/ (their pure parts; whole runs are too long for tests)."""
import importlib.util
import pathlib

import pytest

SCRIPTS = pathlib.Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def train_and_evaluate():
  spec = importlib.util.spec_from_file_location("train_and_evaluate",
                                                SCRIPTS / "train_and_evaluate.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _steps(first, last, loss=1.0):
  return [{"step": s, "loss": loss} for s in range(first, last + 1)]


def test_a_resumed_run_keeps_the_history_of_its_earlier_steps(train_and_evaluate):
  earlier = _steps(1, 30)  # killed after step 30; its last checkpoint was at step 20
  resumed = _steps(21, 40, loss=0.5)
  merged = train_and_evaluate.merge_history(earlier, resumed, steps_done=40)
  assert [h["step"] for h in merged] == list(range(1, 41))
  assert merged[25]["loss"] == 0.5  # steps redone after the checkpoint replace the lost ones


def test_a_finished_run_run_again_keeps_its_history(train_and_evaluate):
  earlier = _steps(1, 40)
  assert train_and_evaluate.merge_history(earlier, [], steps_done=40) == earlier


def test_a_fresh_run_does_not_keep_an_old_history(train_and_evaluate):
  # The checkpoint folder was removed: training starts at step 1 again.
  merged = train_and_evaluate.merge_history(_steps(1, 40), _steps(1, 5, 0.5), steps_done=5)
  assert merged == _steps(1, 5, 0.5)


def test_the_loss_summary_says_how_many_steps_it_averages(train_and_evaluate):
  history = [{"step": 1, "loss": 0.6}, {"step": 2, "loss": 0.4}]
  assert train_and_evaluate.loss_summary(history) == "loss first 1 steps 0.6000 -> last 1 steps 0.4000"
  many = _steps(1, 100)
  assert train_and_evaluate.loss_summary(many).startswith("loss first 10 steps 1.0000")
  assert "no training steps" in train_and_evaluate.loss_summary([])
