"""malloc_tuning: large freed buffers are reused, not mapped afresh (and zeroed by the OS)."""
import os
import subprocess
import sys
import textwrap

import pytest

from dal_widgets import malloc_tuning

LINUX_ONLY = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
# A CPU training step of the CLI's default shape (batch 4 x 1 s, 16 kHz, small SEANet) has a
# temporary buffer of about 0.6 GB (bench/RESULTS.md); this is that, with room.
TRAIN_STEP_TEMP_BYTES = 768 << 20

FAULTS = textwrap.dedent("""
    import resource, sys, numpy as np
    from dal_widgets import malloc_tuning
    print(malloc_tuning.tune())
    n = int(sys.argv[1]) // 4  # float32 values in the buffer
    np.ones(n, np.float32)  # first use: faults in either case
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
      np.ones(n, np.float32)  # allocated, filled, freed
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")

TRAIN_STEP_FAULTS = textwrap.dedent("""
    import resource, jax
    from dal_widgets.cochlea import carfac as cf, designs
    from dal_widgets.loop import train
    from dal_widgets.loop.config import TrainConfig
    from dal_widgets.loop.data import SpeechSource
    from dal_widgets.aid.seanet import SEANET_SIZES
    normal = designs.designed(16000.0, "v3")
    impaired = normal._replace(weights=cf.make_weights(normal.hypers, ohc_health=0.5))
    cfg = TrainConfig(model="small", batch_size=4)  # the CLI's default shape: 4 x 1 s
    model = SEANET_SIZES["small"]
    step = train.make_train_step(model, cfg, normal, impaired)
    batch = step.place_batch(SpeechSource(cfg.data).make_batch(0, cfg.batch_size))
    state = step.place_state(train.create_train_state(jax.random.PRNGKey(0), model, cfg))
    for _ in range(2):  # compile, then one step that may still grow the heap
      state, metrics = step(state, batch)
      metrics["loss"].block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
      state, metrics = step(state, batch)
      metrics["loss"].block_until_ready()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
""")


def _run(script: str, tuning: str, *args):
  env = dict(os.environ, DAL_MALLOC_TUNING=tuning)
  return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                        text=True, env=env, timeout=600, check=True).stdout.split()


def _faults(tuning: str, nbytes: int):
  out = _run(FAULTS, tuning, nbytes)
  return out[0] == "True", int(out[1])


@LINUX_ONLY
@pytest.mark.parametrize("nbytes", [64 << 20, TRAIN_STEP_TEMP_BYTES])
def test_tuned_malloc_reuses_large_freed_buffers_instead_of_faulting_in_new_pages(nbytes):
  nbytes = min(nbytes, malloc_tuning.keep_bytes())  # what this machine keeps (>= 256 MiB)
  tuned, faults_tuned = _faults("1", nbytes)
  untuned, faults_untuned = _faults("0", nbytes)
  assert tuned and not untuned
  assert faults_untuned > 100  # fresh pages every time (THP: 2 MiB each, 32 per 64 MiB)
  assert faults_tuned < faults_untuned / 10


@LINUX_ONLY
def test_a_cpu_training_step_reuses_its_buffers_from_one_step_to_the_next():
  faults_per_step = float(_run(TRAIN_STEP_FAULTS, "1")[-1])
  # Untuned (or at the old 256 MiB thresholds) a step faults in its whole temporary buffer:
  # about 130,000 pages of 4 KiB. Tuned, a few dozen; on a machine too small to keep the buffer
  # (under about 6 GiB), the step still maps it afresh, as the module docstring says.
  if TRAIN_STEP_TEMP_BYTES > malloc_tuning.keep_bytes():
    assert faults_per_step > 10_000
    return
  assert faults_per_step < 2500


def test_the_thresholds_keep_a_batch_and_bound_what_is_kept():
  batch_outputs = 2 * 8 * 22050 * 71 * 4  # NAP and BM of 8 one-second clips at 22.05 kHz, float32
  keep = malloc_tuning.keep_bytes()
  assert batch_outputs < malloc_tuning.MIN_KEEP_BYTES <= keep <= malloc_tuning.MALLOPT_MAX
  ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  assert keep <= max(malloc_tuning.MIN_KEEP_BYTES, ram / 8)


ASYNC_DISPATCH = ("import dal_widgets.cochlea, jax; "
                  "print(jax.config.values['jax_cpu_enable_async_dispatch'])")


@pytest.mark.parametrize("tuning,expected", [("1", "False"), ("0", "True")])
def test_importing_the_cochlea_runs_cpu_programs_in_the_calling_thread(tuning, expected):
  """Asynchronous dispatch would run the step above in a worker thread, where its buffer is mapped
  afresh at every call whatever the thresholds; DAL_MALLOC_TUNING=0 leaves JAX's default."""
  assert _run(ASYNC_DISPATCH, tuning) == [expected]
