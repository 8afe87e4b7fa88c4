"""The bundled pretrained hearing aid and fine-tuning from given parameters."""
import jax
import numpy as np
import pytest

from dal_widgets.audio import load_clip
from dal_widgets.audio.calibration import rms_to_db_spl
from dal_widgets.errors import ParameterError
from dal_widgets.loop import pretrained
from dal_widgets.loop import train as train_lib
from dal_widgets.loop.config import DataConfig, TrainConfig

QUIET_DB_SPL = 20.0  # a quiet room; normal hearing thresholds are 0-15 dB SPL at 0.5-4 kHz


def test_bundled_model_loads_and_changes_sound():
  params, cfg, step = pretrained.load_pretrained()
  assert step > 0 and cfg.model == "small" and cfg.audiogram == "N3"
  x, sr = load_clip("slt_04")
  x = x[: sr // 2]
  y = np.asarray(train_lib.enhance(params, cfg.model_config, x))
  assert y.shape == x.shape and np.all(np.isfinite(y))
  gain_db = 20 * np.log10(np.sqrt(np.mean(y**2)) / np.sqrt(np.mean(x**2)))
  assert gain_db > 3  # an N3 aid amplifies (it is not the identity any more)


def test_bundled_aid_keeps_silence_silent():
  """The version-1 aid whistled at 2 kHz, 55 dB SPL, in silence (plain transposed convs), and
  clicked at 64 dB SPL where a recording starts and ends."""
  params, cfg, _ = pretrained.load_pretrained()
  assert cfg.model_config.checkerboard_free and cfg.model_config.dc_block
  sr = cfg.data.sr
  y = np.asarray(train_lib.enhance(params, cfg.model_config, np.zeros(2 * sr, np.float32)))
  edge = sr // 20  # no transient where the recording starts or ends (seanet.apply_to_recording)
  for part in (y[:edge], y[edge:-edge], y[-edge:]):
    assert rms_to_db_spl(np.sqrt(np.mean(part ** 2))) < QUIET_DB_SPL


def test_fine_tune_starts_from_given_params_and_rejects_misfits():
  cfg = TrainConfig(model="small", steps=2, warmup_steps=1, batch_size=1, data=DataConfig(clip_s=0.25))
  params = pretrained.load_pretrained()[0]
  result = train_lib.train(cfg, init_params=params)
  moved = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), result.params, params)
  assert 0 < max(jax.tree.leaves(moved)) < 0.1  # small steps away from the pretrained aid
  bad = jax.tree.map(lambda a: np.zeros(np.shape(a)[:-1] + (np.shape(a)[-1] + 1,)) if np.ndim(a) else a, params)
  with pytest.raises(ParameterError, match="init_params"):
    train_lib.train(cfg, init_params=bad)


def test_resuming_a_checkpoint_of_another_listener_is_refused(tmp_path):
  cfg = TrainConfig(model="small", steps=1, batch_size=1, audiogram="N2", data=DataConfig(clip_s=0.25))
  train_lib.train(cfg, tmp_path)
  with pytest.raises(ParameterError, match="holds a model for listener"):
    train_lib.train(cfg.replace(audiogram="S2", steps=2), tmp_path)
