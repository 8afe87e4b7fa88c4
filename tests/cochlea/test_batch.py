"""Batches over CPU cores: the same numbers as one vmapped call, whatever the chunking."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_widgets.cochlea import batch, carfac as cf
from dal_widgets.errors import ParameterError

MODEL = cf.design_carfac(cf.CarfacParams(sr=16000))


def _xs(n, n_samp=640, seed=0):
  xs = 0.03 * np.random.default_rng(seed).standard_normal((n, n_samp)).astype(np.float32)
  xs[0] *= 0.05  # rows at different levels: the AGC state differs per row
  return xs


@pytest.mark.parametrize("n,workers", [(3, 2), (5, 3), (2, 1), (1, 4)])
def test_run_batch_equals_single_runs(n, workers):
  xs = _xs(n)
  weights = cf.make_weights(MODEL.hypers, ohc_health=np.linspace(1, 0.2, MODEL.hypers.n_ch))
  out, state = batch.run_batch(xs, MODEL.hypers, MODEL.coeffs, weights, MODEL.state,
                               workers=workers)
  assert out.nap.shape == (n, xs.shape[1], MODEL.hypers.n_ch)
  for i in range(n):
    single, single_state = cf.run(xs[i], MODEL.hypers, MODEL.coeffs, weights, MODEL.state)
    np.testing.assert_allclose(out.nap[i], single.nap, atol=1e-6)
    np.testing.assert_allclose(out.bm[i], single.bm, atol=1e-6)
    np.testing.assert_allclose(state.car.z2[i], single_state.car.z2, atol=1e-7)


def test_map_chunks_joins_pytrees_in_order_and_drops_padding():
  fn = jax.jit(lambda xs, k: {"double": xs * k, "sum": jnp.sum(xs, axis=1)})
  xs = np.arange(21, dtype=np.float32).reshape(7, 3)
  out = batch.map_chunks(fn, xs, 2.0, workers=3)  # chunks of 3, 3, 1 + 2 zero rows
  np.testing.assert_array_equal(out["double"], 2 * xs)
  np.testing.assert_array_equal(out["sum"], xs.sum(axis=1))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="cores matter on the CPU backend")
def test_default_workers_uses_the_cpu_cores_only_for_the_jax_loop(monkeypatch):
  assert batch.default_workers() == 1  # the compiled kernel spreads a batch over the cores
  monkeypatch.setattr(batch.carfac.native_lib, "default", lambda dtype=None: False)
  assert batch.default_workers() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("xs,match", [
    (np.zeros(100, np.float32), "shape \\(batch, n_samp\\)"),
    (np.zeros((0, 100), np.float32), "shape \\(batch, n_samp\\)"),
    (np.full((2, 100), np.nan, np.float32), "NaN or inf"),
    (np.zeros((2, 0), np.float32), "empty"),
])
def test_run_batch_rejects_bad_batches(xs, match):
  with pytest.raises(ParameterError, match=match):
    batch.run_batch(xs, *MODEL)
