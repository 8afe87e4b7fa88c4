"""Train a DAL hearing aid for one listener, then compare it with NAL-R+WDRC on held-out speech.

    python scripts/train_and_evaluate.py --preset N3 --config paper --steps 400 --out runs/n3

--init starts from a checkpoint's parameters (a fine-tune) instead of the identity; its model must
have the shapes of --config's.

Writes <out>/results.md (the evaluation table, per SNR, then DAL minus each other system per
held-out recording), <out>/history.json (loss per step) and the checkpoint folder <out>/ckpt
(resumable with `dal train --workdir <out>/ckpt`). Run again with the same --out, it resumes from
<out>/ckpt and keeps the earlier steps' history. Files are replaced atomically. Used for the GPU
results in the DAL issue; any device count works (data parallel over local devices).
"""
import argparse
import dataclasses
import json
import pathlib
import time

import dal_widgets  # noqa: F401  first: one CPU device per core (dal_widgets/cpu_cores.py)
import jax
import numpy as np

from dal_widgets import atomic

from dal_widgets.hearing import fit_cochlea
from dal_widgets.loop import checkpoint
from dal_widgets.loop import data as data_lib
from dal_widgets.loop import evaluate as ev
from dal_widgets.loop import paired
from dal_widgets.loop import train as train_lib
from dal_widgets.loop.config import config_for, short_run_warmup

SUMMARY_STEPS = 10  # steps averaged at each end of the loss history


def merge_history(previous: list, new: list, steps_done: int) -> list:
  """The run's whole history: the earlier entries of `previous` (history.json of an earlier call
  with this checkpoint folder) that this call did not redo, then this call's `new` entries."""
  first_new = new[0]["step"] if new else steps_done + 1
  return [h for h in previous if h.get("step", 0) < first_new] + list(new)


def loss_summary(history: list) -> str:
  """Mean loss over the first and the last steps, or why there is none."""
  if not history:
    return "no training steps recorded (the checkpoint had already reached --steps)"
  n = max(1, min(SUMMARY_STEPS, len(history) // 2))
  first = np.mean([h["loss"] for h in history[:n]])
  last = np.mean([h["loss"] for h in history[-n:]])
  return f"loss first {n} steps {first:.4f} -> last {n} steps {last:.4f}"


def main():
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--preset", default="N3")
  ap.add_argument("--config", default="paper")
  ap.add_argument("--steps", type=int, default=400)
  ap.add_argument("--batch-size", type=int, default=None)
  ap.add_argument("--lr", type=float, default=None)
  ap.add_argument("--warmup", type=int, default=None)
  ap.add_argument("--w-spectral", type=float, default=None, help="weight of the spectral term")
  ap.add_argument("--n-clips", type=int, default=6)
  ap.add_argument("--clip-s", type=float, default=1.0,
                  help="seconds of each held-out clip (HASPI wants 2 s or more; bench/RESULTS.md)")
  ap.add_argument("--snr", type=float, nargs="+", default=[0.0, 5.0])
  ap.add_argument("--out", type=pathlib.Path, required=True)
  ap.add_argument("--ckpt", type=pathlib.Path, default=None, help="checkpoint folder (default <out>/ckpt)")
  ap.add_argument("--checkpoint-every", type=int, default=0,
                  help="also checkpoint every N steps, so a killed run resumes (0: only at the end)")
  ap.add_argument("--init", type=pathlib.Path, default=None,
                  help="start from this checkpoint's parameters (a file or a checkpoint folder)")
  args = ap.parse_args()
  cfg = config_for(args.config)
  changes = {"audiogram": args.preset, "steps": args.steps, "checkpoint_every": args.checkpoint_every,
             "log_every": max(1, args.steps // 20)}
  if args.batch_size:
    changes["batch_size"] = args.batch_size
  if args.lr:
    changes["learning_rate"] = args.lr
  changes["warmup_steps"] = args.warmup if args.warmup is not None else short_run_warmup(args.steps)
  if args.w_spectral is not None:
    changes["loss"] = dataclasses.replace(cfg.loss, w_spectral=args.w_spectral)
  cfg = cfg.replace(**changes)
  args.out.mkdir(parents=True, exist_ok=True)
  ear = fit_cochlea(train_lib.listener_audiogram(cfg), cfg.data.sr, style=cfg.style)
  print(f"devices: {jax.devices()}\nlistener {args.preset}:\n{ear.table()}", flush=True)
  t0 = time.perf_counter()
  init = None
  if args.init is not None:
    init, init_cfg, init_step = checkpoint.restore_params(args.init)
    print(f"starting from {args.init} (step {init_step}, model {init_cfg.model_config})", flush=True)
  result = train_lib.train(cfg, args.ckpt or args.out / "ckpt", ear=ear, resume=True, progress=False,
                           init_params=init,
                           on_progress=lambda step, total, m: print(
                               f"step {step}/{total} loss {m.get('loss', float('nan')):.4f}", flush=True)
                           if step % cfg.log_every == 0 else None)
  train_s = time.perf_counter() - t0
  history_path = args.out / "history.json"
  previous = json.loads(history_path.read_text()) if history_path.is_file() else []
  history = merge_history(previous, result.history, result.steps_done)
  atomic.write_text_atomic(history_path, json.dumps(history, default=float))
  clips = data_lib.evaluation_clips(cfg.data, snrs_db=tuple(args.snr), n_clips=args.n_clips,
                                    clip_s=args.clip_s)
  systems = [ev.unprocessed(), ev.master_hearing_aid_system(ear.audiogram),
             ev.dal_system(result.params, cfg.model_config)]
  table = ev.evaluate(clips, cfg.data.sr, ear, systems)
  device = f"{jax.devices()[0].device_kind} x{len(train_lib.default_devices(cfg.batch_size))}"
  this_call = (f"in {train_s:.0f} s" if len(result.history) == result.steps_done else
               f"({len(result.history)} of them in this call, {train_s:.0f} s)")
  text = (f"listener {args.preset}, config {args.config}, {result.steps_done} steps of batch "
          f"{cfg.batch_size} {this_call} on {device}; {len(clips)} held-out clips "
          f"({args.clip_s:g} s) at SNR {args.snr} dB\n\n{table.to_markdown()}\n"
          f"DAL minus each other system, per held-out recording ({paired.CONFIDENCE:.0%} "
          f"intervals):\n\n"
          f"{paired.to_markdown(paired.differences(table, 'DAL'))}")
  atomic.write_text_atomic(args.out / "results.md", text)
  print(text)
  print(loss_summary(history))


if __name__ == "__main__":
  main()
