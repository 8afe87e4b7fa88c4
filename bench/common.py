"""Timing helpers shared by the benchmarks (plain scripts; they print, never pass or fail)."""
import statistics
import subprocess
import time

import dal_widgets  # noqa: F401  first: one CPU device per core (dal_widgets/cpu_cores.py)
import jax
import numpy as np


def header(title: str) -> str:
  """Markdown header line: what ran where (device, jax version, git commit)."""
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    commit = "unknown"
  dev = jax.devices()[0]
  return f"### {title}\n\ndevice: {dev.platform} {dev.device_kind} x{jax.device_count()} · jax {jax.__version__} · commit {commit}\n"


def time_call(fn, *args, n_runs: int = 20):
  """(compile_s, [run_s, ...]): first call timed as compile, then n_runs timed calls."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  compile_s = time.perf_counter() - t0
  runs = []
  for _ in range(n_runs):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    runs.append(time.perf_counter() - t0)
  return compile_s, runs


def row(case: str, n_samp: int, audio_s: float, compile_s: float, runs, extra: str = "") -> str:
  """Markdown row: case | n_samp | compile_s | median_ms | p10 | p90 | x real time | extra."""
  ms = np.asarray(runs) * 1e3
  median = statistics.median(ms)
  return (f"| {case} | {n_samp} | {compile_s:.2f} | {median:.1f} | {np.percentile(ms, 10):.1f} | "
          f"{np.percentile(ms, 90):.1f} | {audio_s / (median / 1e3):.1f} | {extra} |")


TABLE_HEAD = ("| case | n_samp | compile_s | median_ms | p10 | p90 | x real time | notes |\n"
              "|---|---|---|---|---|---|---|---|")
