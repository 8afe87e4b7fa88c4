"""One CPU device per core: set on import of dal_widgets, only while it can act, never forced."""
import os
import subprocess
import sys

import jax
import pytest

from dal_widgets import cpu_cores
from dal_widgets.loop import train

PROBE = ("import os, dal_widgets, jax; "
         "print(os.environ.get('XLA_FLAGS', ''), '|', jax.device_count())")


def _probe(**env_changes):
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", cpu_cores.ENV_VAR)}
  env.update(env_changes, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env,
                       timeout=120, check=True).stdout.strip()
  flags, count = out.rsplit("|", 1)
  return flags.strip(), int(count)


def test_import_gives_one_cpu_device_per_core():
  flags, count = _probe()
  cores = cpu_cores.usable_cores()
  assert count == cores
  assert (f"{cpu_cores.XLA_FLAG}={cores}" in flags) == (cores > 1)


@pytest.mark.parametrize("wanted,expected", [("3", 3), ("1", 1)])
def test_env_var_chooses_the_count(wanted, expected):
  flags, count = _probe(**{cpu_cores.ENV_VAR: wanted})
  assert count == expected
  assert (cpu_cores.XLA_FLAG in flags) == (expected > 1)


def test_a_count_already_in_xla_flags_is_kept():
  flags, count = _probe(XLA_FLAGS=f"{cpu_cores.XLA_FLAG}=1")
  assert (flags, count) == (f"{cpu_cores.XLA_FLAG}=1", 1)


def test_nothing_changes_once_jax_is_imported(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert "jax" in sys.modules and cpu_cores.configure() is None
  assert "XLA_FLAGS" not in os.environ


def test_training_keeps_one_cpu_device_with_the_compiled_kernel():
  assert train.default_devices(2) == jax.local_devices()[:1]


@pytest.mark.parametrize("batch_size", [1, 2, 3, 4, 6])
def test_training_splits_a_batch_over_the_most_devices_that_divide_it(batch_size, monkeypatch):
  monkeypatch.setattr(train.cf.native_lib, "default", lambda dtype=None: False)  # the JAX loop
  devices = train.default_devices(batch_size)
  n_local = len(jax.local_devices())
  assert devices == jax.local_devices()[:len(devices)]
  assert batch_size % len(devices) == 0
  assert all(batch_size % k for k in range(len(devices) + 1, n_local + 1))


@pytest.mark.parametrize("platforms,wanted,expected", [
    ("cuda", "", None),    # an accelerator computes: leave the CPU backend alone
    ("cuda", "2", 2),      # unless asked
    ("cpu", "4", 4),
])
def test_configure_before_jax_starts(monkeypatch, platforms, wanted, expected):
  monkeypatch.delitem(sys.modules, "jax")  # as if JAX were not imported yet (restored after)
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  monkeypatch.setenv("JAX_PLATFORMS", platforms)
  monkeypatch.setenv(cpu_cores.ENV_VAR, wanted)
  assert cpu_cores.configure() == expected
  assert os.environ.get("XLA_FLAGS", "") == ("" if expected is None else
                                             f"{cpu_cores.XLA_FLAG}={expected}")
