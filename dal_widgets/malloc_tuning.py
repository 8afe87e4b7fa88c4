"""Keeps large freed buffers in the process, so that the OS does not zero fresh pages every call.

glibc's malloc serves blocks above its mmap threshold (dynamically at most 32 MiB on 64-bit) with
fresh pages from the OS, and gives them back on free: the next call of the same shape gets new
pages that the kernel faults in and zeroes first. XLA:CPU allocates every output and its temporary
buffer anew at each call, and these are large: a batch of 8 one-second CARFAC clips writes NAP and
BM of 50 MB each (the zeroing took 15% of it, session 7), and a CPU training step of 4 one-second
clips at 16 kHz has a 0.6 GB temporary buffer (at 256 MiB thresholds its faults took 28% of the
step, bench/RESULTS.md). Raising the mmap threshold serves these blocks from the heap, and raising
the trim threshold keeps freed heap memory for the next call. Both are `keep_bytes()`: what the
process keeps is then at most what it has just used, and at most an eighth of the machine's memory.

Only the main thread's heap (glibc's main arena) grows past 64 MiB blocks: in other threads, blocks
that large are always mapped afresh. So `execute_in_calling_thread()` also turns JAX's asynchronous
CPU dispatch off: a program then runs, and allocates, in the thread that calls it. `tune()` runs
when the CARFAC kernel loads and `execute_in_calling_thread()` when cochlea/native.py is imported
(before JAX makes its CPU client, in the usual order of imports); both change the whole process,
so DAL_MALLOC_TUNING=0 leaves malloc and JAX as they are. Not glibc (macOS, musl): malloc is left
as it is.
"""
import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

ENV_VAR = "DAL_MALLOC_TUNING"
# mallopt(3) parameter numbers, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# mallopt(3) takes the thresholds as a C int.
MALLOPT_MAX = 2**31 - 1
# The thresholds as a share of the machine's memory, and their floor: the outputs of a batch of 32
# one-second clips at 22.05 kHz (NAP and BM, float32), with room.
KEEP_SHARE_OF_RAM = 1 / 8
MIN_KEEP_BYTES = 256 << 20


def keep_bytes() -> int:
  """The mmap and trim thresholds, bytes: blocks up to this size come from the heap, and up to this
  much freed memory stays at the heap's top for the next call."""
  try:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (AttributeError, ValueError, OSError):  # no sysconf, or these names unknown
    ram = 0
  return min(MALLOPT_MAX, max(MIN_KEEP_BYTES, int(ram * KEEP_SHARE_OF_RAM)))


def tune() -> bool:
  """Sets both thresholds to `keep_bytes()` with glibc's mallopt; True when it did."""
  if os.environ.get(ENV_VAR, "1") == "0":
    return False
  name = ctypes.util.find_library("c")
  try:
    libc = ctypes.CDLL(name)
    mallopt = libc.mallopt
    gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only
  except (OSError, AttributeError, TypeError):
    return False
  gnu_get_libc_version.restype = ctypes.c_char_p
  keep = keep_bytes()
  done = bool(mallopt(M_MMAP_THRESHOLD, keep)) and bool(mallopt(M_TRIM_THRESHOLD, keep))
  log.debug("glibc %s malloc thresholds set: %s", gnu_get_libc_version().decode(), done)
  return done


def execute_in_calling_thread() -> bool:
  """Turns JAX's asynchronous dispatch on the CPU off (`jax_cpu_enable_async_dispatch`); acts only
  before JAX makes its CPU client. With it on, XLA runs each program in a worker thread, where the
  thresholds do not act on its temporary buffer: a training step of 4 x 1 s faulted in 107,000
  pages at every call and took 410 instead of 315 ms (bench/RESULTS.md). Programs that called the
  CARFAC kernel through a Python callback ran in the calling thread anyway. True when it did."""
  if os.environ.get(ENV_VAR, "1") == "0":
    return False
  import jax  # here: `dal_widgets` itself does not import JAX (cpu_cores.py)
  try:
    jax.config.update("jax_cpu_enable_async_dispatch", False)
  except (AttributeError, KeyError, ValueError):  # a JAX without this option: nothing to do
    return False
  return True
