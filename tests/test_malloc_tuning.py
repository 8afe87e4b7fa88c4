"""malloc_tuning: large freed buffers are reused, not mapped afresh (and zeroed by the OS)."""
import os
import subprocess
import sys
import textwrap

import pytest

from dal_widgets import malloc_tuning

FAULTS = textwrap.dedent("""
    import resource, numpy as np
    from dal_widgets import malloc_tuning
    print(malloc_tuning.tune())
    n = 64 << 18  # 64 MiB of float32, above glibc's largest default mmap threshold (32 MiB)
    np.ones(n, np.float32)  # first use: faults in either case
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
      np.ones(n, np.float32)  # allocated, filled, freed
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(tuning: str):
  env = dict(os.environ, DAL_MALLOC_TUNING=tuning)
  out = subprocess.run([sys.executable, "-c", FAULTS], capture_output=True, text=True, env=env,
                       timeout=120, check=True).stdout.split()
  return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_tuned_malloc_reuses_large_freed_buffers_instead_of_faulting_in_new_pages():
  tuned, faults_tuned = _faults("1")
  untuned, faults_untuned = _faults("0")
  assert tuned and not untuned
  assert faults_untuned > 100  # fresh pages every time (THP: 2 MiB each, 32 per buffer)
  assert faults_tuned < faults_untuned / 10


def test_the_thresholds_keep_a_batch_and_bound_what_is_kept():
  batch_outputs = 2 * 8 * 22050 * 71 * 4  # NAP and BM of 8 one-second clips at 22.05 kHz, float32
  assert batch_outputs / 2 < malloc_tuning.MMAP_THRESHOLD_BYTES < malloc_tuning.TRIM_THRESHOLD_BYTES
