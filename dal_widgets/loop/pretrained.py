"""The bundled pretrained hearing aid: a small SEANet trained for Bisgaard N3 on a GPU.

Trained with `python scripts/train_and_evaluate.py --preset N3 --config default --steps 320
--batch-size 64 --lr 2e-3 --w-spectral 0.1` on one H100 (bench/RESULTS.md has its evaluation).
The workbench and notebooks fine-tune from it; `dal enhance` and `dal evaluate` use it by default.
"""
import functools
import importlib.resources

from dal_widgets.loop import checkpoint

PRETRAINED_DIR = ("data", "pretrained")  # inside the dal_widgets package


def pretrained_dir():
  """Path of the bundled checkpoint folder, or None when the package ships none."""
  folder = importlib.resources.files("dal_widgets").joinpath(*PRETRAINED_DIR)
  return folder if folder.is_dir() and checkpoint.latest(folder) is not None else None


@functools.lru_cache(maxsize=1)
def load_pretrained():
  """(params, TrainConfig, step) of the bundled model, or None if there is none."""
  folder = pretrained_dir()
  return None if folder is None else checkpoint.restore_params(folder)
