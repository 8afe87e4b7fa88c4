"""The benchmark scripts in bench/: they measure what they say (no timings asserted)."""
import argparse
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import pytest

from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import host_call

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
SHORT_SAMPLES = 64  # lowering, not running: any length shows the loop's shape


def _load(name):
  spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def sweep_loop():
  return _load("sweep_loop")


def test_sweep_loop_settings_are_parsed_with_a_clear_error(sweep_loop):
  assert sweep_loop.setting("8,0") == (8, False) and sweep_loop.setting("4,1") == (4, True)
  for bad in ("8", "8,2", "0,1", "a,b"):
    with pytest.raises(argparse.ArgumentTypeError, match="UNROLL"):
      sweep_loop.setting(bad)


def test_sweep_loop_times_the_jax_loop_and_each_shape_changes_the_program(sweep_loop):
  # On a CPU carfac.run calls the compiled kernel by default, which no loop setting changes:
  # the sweep must run the JAX loop, so that two loop shapes give two programs.
  design = cf.design_carfac(cf.CarfacParams(sr=16000.0))
  before = dict(cf.LOOP_SETTINGS)
  xb = jnp.zeros((1, SHORT_SAMPLES), jnp.float32)
  texts = {}
  for unroll in (1, 2):
    fwd, grad = sweep_loop.loop_functions(design, unroll, False)
    texts[unroll] = (fwd.lower(xb).as_text(), grad.lower(xb).as_text())
  assert texts[1][0] != texts[2][0] and texts[1][1] != texts[2][1]
  assert host_call.TARGET not in texts[1][0] + texts[2][0]  # the compiled kernel's FFI call
  assert cf.LOOP_SETTINGS == before


def test_sweep_loop_prints_one_table_row_per_setting(sweep_loop, monkeypatch, capsys):
  monkeypatch.setattr(sweep_loop, "time_call", lambda fn, x, n_runs: (0.5, [0.25] * n_runs))
  sweep_loop.main(["--batch", "2", "--sr", "8000", "--n-runs", "5", "--settings", "1,0", "2,1"])
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("### CARFAC JAX loop shapes, batch 2 x 1 s, 8000 Hz, median of 5")
  assert "s of audio per s" in lines[lines.index(sweep_loop.TABLE_HEAD.splitlines()[0])]
  assert lines[-2:] == ["| 1 | no | 8.0 | 0.5 | 8.0 | 0.5 |", "| 2 | yes | 8.0 | 0.5 | 8.0 | 0.5 |"]


def test_bench_fit_names_the_preset_path_it_times():
  bench_fit = _load("bench_fit")
  assert bench_fit.preset_case("N3", 16000.0) == "bundled preset N3"
  # No bundled fits at 22050 Hz: fit_cochlea runs a whole fit there (5.8 s, not 0.2 ms).
  assert bench_fit.preset_case("N3", 22050.0) == "preset N3, no bundled fit at 22050 Hz: full fit"
