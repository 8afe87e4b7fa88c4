"""One XLA CPU device per core, so that data-parallel training uses every core of a CPU.

XLA:CPU runs one program on one core, and CARFAC's time loop is made of kernels too small to be
spread over threads. With one CPU device per core, `loop.train` splits each batch over the cores
(measured on the 2-core CI machine, bench/bench_train_step.py --batch 2: a small-SEANet step of
2 x 1 s takes 674 ms on two devices instead of 1158 ms on one). The XLA flag only acts before JAX starts, so `dal_widgets`
sets it when imported, unless JAX is already imported, XLA_FLAGS already sets a device count, or
the machine has an NVIDIA GPU (JAX then computes there; JAX_PLATFORMS without "cpu" counts too).
DAL_CPU_DEVICES=N chooses the count (1 leaves JAX as it is).
"""
import os
import platform
import sys

ENV_VAR = "DAL_CPU_DEVICES"
XLA_FLAG = "--xla_force_host_platform_device_count"
NVIDIA_DEVICE = "/dev/nvidiactl"  # present wherever an NVIDIA driver serves a GPU


def cpu_signature() -> str:
  """The machine type and the CPU's feature flags: code compiled for this CPU runs where they
  are the same (keys of the kernel build and of the compilation cache folder)."""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next(line for line in f if line.startswith(("flags", "Features")))
  except (OSError, StopIteration):
    flags = platform.processor()
  return platform.machine() + flags.strip()


def usable_cores() -> int:
  """CPU cores this process may run on."""
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # not on Linux
    return max(1, os.cpu_count() or 1)


def configure() -> int | None:
  """Adds XLA_FLAG=<cores> (or DAL_CPU_DEVICES) to XLA_FLAGS while that can still act.

  Returns:
    The device count set, or None when nothing was changed.
  """
  flags = os.environ.get("XLA_FLAGS", "")
  if "jax" in sys.modules or XLA_FLAG in flags:
    return None
  wanted = os.environ.get(ENV_VAR, "").strip()
  platforms = os.environ.get("JAX_PLATFORMS", "")
  on_accelerator = (platforms and "cpu" not in platforms) or (
      not platforms and os.path.exists(NVIDIA_DEVICE))
  if on_accelerator and not wanted:
    return None
  n = int(wanted) if wanted.isdigit() else usable_cores()
  if n <= 1:
    return None
  os.environ["XLA_FLAGS"] = f"{flags} {XLA_FLAG}={n}".strip()
  return n
