"""DAL training-step speed: `python bench/bench_train_step.py [--size small] [--batch 1]`.

Times one jitted training step (normal-ear target NAP/SAI, SEANet forward, impaired-ear NAP/SAI,
gradients through CARFAC, clipped AdamW update) at 16 kHz, v3, for the N3-like ear used in
tests (the cost does not depend on the ear's weights). The first step is timed as compile time.
"x real time" is seconds of training audio (batch x length) per second of wall time: the
throughput. "page faults/step" counts the pages the OS had to hand the process afresh during a
step: near 0 when the step reuses freed memory (dal_widgets/malloc_tuning.py). On a GPU: `--size
paper --batch 16`. The batch is split over `train.default_devices(batch)`, as in training: the
local devices whose count divides it, but one device on the CPU with the compiled CARFAC kernel
(the kernel spreads a batch over the cores itself); the notes column says how many.
Paste the printed table into bench/RESULTS.md.
"""
import argparse
import os
import resource
import sys
import threading

import dal_widgets  # noqa: F401  first: one CPU device per core (dal_widgets/cpu_cores.py)
import jax

sys.path.insert(0, os.path.dirname(__file__))
from common import TABLE_HEAD, header, row, time_call  # noqa: E402

from dal_widgets.aid.seanet import SEANET_SIZES, count_params, init_seanet  # noqa: E402
from dal_widgets.cochlea import carfac as cf  # noqa: E402
from dal_widgets.cochlea import designs  # noqa: E402
from dal_widgets.loop import train  # noqa: E402
from dal_widgets.loop.config import DataConfig, LossConfig, TrainConfig  # noqa: E402
from dal_widgets.loop.data import SpeechSource  # noqa: E402

SR = 16000  # DAL default rate (65 CARFAC channels)
BENCH_OHC_HEALTH = 0.5  # any impaired ear costs the same


def page_faults_per_call(fn, n_calls: int = 3) -> float:
  """Minor page faults of this process per call of `fn` (after it has run before)."""
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  for _ in range(n_calls):
    jax.block_until_ready(fn())
  return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n_calls


def main():
  ap = argparse.ArgumentParser(description=__doc__)
  ap.add_argument("--n-runs", type=int, default=5, help="timed steps after the compile step")
  ap.add_argument("--lengths", type=float, nargs="+", default=[1.0], help="seconds per example")
  ap.add_argument("--size", default="small", choices=sorted(SEANET_SIZES))
  ap.add_argument("--batch", type=int, default=1, help="examples per step, over all the devices used (default 1)")
  ap.add_argument("--w-sai", type=float, default=LossConfig().w_sai, help="0 drops the SAI term")
  ap.add_argument("--thread", action="store_true",
                  help="run the steps in a background thread, as the fine-tune panel does")
  args = ap.parse_args()
  if args.thread:
    worker = threading.Thread(target=run, args=(args,))
    worker.start()
    worker.join()
  else:
    run(args)


def run(args):
  model_cfg = SEANET_SIZES[args.size]
  normal = designs.designed(float(SR), "v3")
  impaired = normal._replace(weights=cf.make_weights(normal.hypers, ohc_health=BENCH_OHC_HEALTH))
  n_params = count_params(init_seanet(jax.random.PRNGKey(0), model_cfg))
  print(header(f"DAL train step, SEANet {args.size} ({n_params:,} params), batch {args.batch}, "
               f"{SR} Hz v3, w_sai {args.w_sai}"))
  print(TABLE_HEAD)
  for seconds in args.lengths:
    cfg = TrainConfig(model=args.size, batch_size=args.batch, data=DataConfig(clip_s=seconds),
                      loss=LossConfig(w_sai=args.w_sai))
    step = train.make_train_step(model_cfg, cfg, normal, impaired)
    batch = step.place_batch(SpeechSource(cfg.data).make_batch(0, args.batch))
    holder = [step.place_state(train.create_train_state(jax.random.PRNGKey(0), model_cfg, cfg))]

    def one_step():
      holder[0], metrics = step(holder[0], batch)  # the old state is donated
      return metrics["loss"]

    compile_s, runs = time_call(one_step, n_runs=args.n_runs)
    faults = page_faults_per_call(one_step)
    n_samp = cfg.data.n_samples
    where = ", in a thread" if args.thread else ""
    print(row(f"{args.size} batch {args.batch}{where}", n_samp, seconds * args.batch, compile_s, runs,
              f"{step.n_devices} device(s), {faults:.0f} page faults/step"), flush=True)


if __name__ == "__main__":
  main()
