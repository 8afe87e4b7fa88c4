"""The bundled pretrained hearing aid: a small SEANet trained for Bisgaard N3.

Trained with `python scripts/train_and_evaluate.py --preset N3 --config default --steps 320
--batch-size 64 --lr 2e-3 --w-spectral 0.1` on one H100, then (checkpoint version 2) moved to the
checkerboard-free, DC-blocked SEANet (aid/seanet.py) and fine-tuned on a 2-core CPU with
`... --init <the version-1 aid> --steps 150 --batch-size 16 --lr 1e-3 --warmup 5`: the version-1
aid whistled at 2 kHz (54 dB SPL in silence). bench/RESULTS.md has both evaluations.
The workbench (the apps, notebook 5) fine-tunes from it; notebook 4 starts at the identity and
shows it as a column. `dal enhance` and `dal evaluate` use it by default.
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
