"""What a trained aid adds by itself: its output for a silent input, and the steady tones it adds
at the frequencies where transposed-conv checkerboard artifacts fall.

    python scripts/aid_in_silence.py [--checkpoint DIR] [--seconds 2]

Default: the bundled aid. Silence: the output level inside the clip and in its first and last
EDGE_S (where the non-causal network sees its zero padding). Tones: a transposed conv of stride
s_i, below which the strides multiply to P_i, repeats a steady input pattern every P_i samples:
lines at multiples of sr / P_i. Their levels are measured in y - x (what the aid adds) as
coherent 1 Hz lines, averaged over 1 s frames, for silence and for held-out speech at 65 dB SPL.
"""
import argparse
import math
import pathlib

import dal_widgets  # noqa: F401  first: one CPU device per core
import numpy as np

from dal_widgets.audio.calibration import rms_to_db_spl
from dal_widgets.loop import checkpoint, data, pretrained, train

EDGE_S = 0.05


def line_levels_db_spl(y, sr: int):
  """Level (dB SPL) of the steady sine at every whole frequency 0..sr/2 Hz (1 s frames)."""
  frames = y[: len(y) // sr * sr].reshape(-1, sr)
  amplitude = 2 * np.abs(np.fft.rfft(frames, axis=-1)).mean(axis=0) / sr
  return rms_to_db_spl(np.maximum(amplitude / np.sqrt(2), 1e-12))


def checkerboard_freqs_hz(strides, sr: int) -> list:
  """Multiples of sr / P below Nyquist, P every partial product of the strides."""
  periods = {math.prod(strides[:i + 1]) for i in range(len(strides))}
  return sorted({round(k * sr / p) for p in periods for k in range(1, p // 2 + 1)})


def strongest(levels, freqs):
  i = int(np.argmax(levels[freqs]))
  return f"{levels[freqs][i]:.1f} dB SPL at {freqs[i]} Hz"


def main():
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--checkpoint", type=pathlib.Path, default=None)
  ap.add_argument("--seconds", type=int, default=2)
  args = ap.parse_args()
  if args.checkpoint is None:
    params, cfg, step = pretrained.load_pretrained()
  else:
    params, cfg, step = checkpoint.restore_params(args.checkpoint)
  sr, model = cfg.data.sr, cfg.model_config
  freqs = checkerboard_freqs_hz(model.strides, sr)
  level = lambda a: f"{rms_to_db_spl(np.sqrt(np.mean(a ** 2))):.1f}"
  print(f"aid: step {step}, {model}")
  y = train.enhance(params, model, np.zeros(args.seconds * sr, np.float32))
  edge = int(EDGE_S * sr)
  print(f"silence in: {level(y[edge:-edge])} dB SPL out inside, {level(y[:edge])} / "
        f"{level(y[-edge:])} dB SPL in the first / last {EDGE_S * 1000:.0f} ms; strongest "
        f"checkerboard tone {strongest(line_levels_db_spl(y, sr), freqs)}")
  clips = data.evaluation_clips(cfg.data, snrs_db=(0.0, 5.0), n_clips=6, clip_s=args.seconds)
  added = [train.enhance(params, model, noisy) - noisy for noisy, *_ in clips]
  levels = np.mean([line_levels_db_spl(d, sr) for d in added], axis=0)
  print(f"held-out speech at 65 dB SPL ({len(clips)} clips): strongest checkerboard tone added "
        f"{strongest(levels, freqs)}")


if __name__ == "__main__":
  main()
