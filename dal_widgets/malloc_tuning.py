"""Keeps large freed buffers in the process, so that the OS does not zero fresh pages every call.

glibc's malloc serves blocks above its mmap threshold (dynamically at most 32 MiB on 64-bit) with
fresh pages from the OS, and gives them back on free: the next call of the same shape gets new
pages that the kernel zeroes first. XLA:CPU allocates every output anew, and the CARFAC outputs of
a batch are that large (8 one-second clips: NAP and BM of 50 MB each): the zeroing took 15% of
such a batch (perf, bench/RESULTS.md, session 7). Raising the mmap threshold serves these blocks
from the heap, and raising the trim threshold keeps freed heap memory for the next call.

`tune()` runs when the CARFAC CPU kernel loads (cochlea/native.py); it changes the whole process's
malloc, so DAL_MALLOC_TUNING=0 leaves it as it is. Not glibc (macOS, musl): nothing is done.
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
# Blocks up to this size come from the heap: a batch of 32 one-second clips' outputs, with room.
MMAP_THRESHOLD_BYTES = 256 << 20
# Free memory the heap keeps at its top before giving it back: bounds what the process retains.
TRIM_THRESHOLD_BYTES = 512 << 20


def tune() -> bool:
  """Sets the thresholds above with glibc's mallopt; True when it did."""
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
  done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
      mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
  log.debug("glibc %s malloc thresholds set: %s", gnu_get_libc_version().decode(), done)
  return done
