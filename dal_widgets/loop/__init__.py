"""dal_widgets.loop: the Differentiable Auditory Loop -- losses, data, training, evaluation.

- config.py: LossConfig, DataConfig, TrainConfig (frozen, JSON round trip); presets.
- losses.py: the DAL loss (impaired NAP/SAI of the aided sound vs normal NAP/SAI of clean speech).
- data.py: noisy-speech batches from the bundled clips or a corpus; held-out sets.
- checkpoint.py: atomic msgpack checkpoints (params, optimizer state, step, config).
- train.py: optimizer, train state, the jitted data-parallel step, `train`, `enhance`.
- metrics.py, evaluate.py: evaluation of hearing-aid systems.
- paired.py: differences between two evaluated systems per held-out recording, with confidence
  intervals.
"""
from dal_widgets.loop.checkpoint import CheckpointError, latest, restore, restore_params
from dal_widgets.loop.config import (PRESETS, DataConfig, LossConfig, TrainConfig, config_for,
                                     default_config)
from dal_widgets.loop.data import Batch, SpeechSource, evaluation_clips, held_out_set
from dal_widgets.loop.losses import dal_loss, loss_of_aided, targets
from dal_widgets.loop.train import (TrainResult, TrainState, create_train_state, ears_for, enhance,
                                    make_optimizer, make_train_step)

__all__ = [
    "Batch", "CheckpointError", "DataConfig", "LossConfig", "PRESETS", "SpeechSource",
    "TrainConfig", "TrainResult", "TrainState", "config_for", "create_train_state", "dal_loss",
    "default_config", "ears_for", "enhance", "evaluation_clips", "held_out_set", "latest",
    "loss_of_aided", "make_optimizer", "make_train_step", "restore", "restore_params",
    "targets",
]
# `train` (the function) is not re-exported: it would hide the submodule loop.train.
