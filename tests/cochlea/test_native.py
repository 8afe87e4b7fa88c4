"""The compiled CPU kernel (cochlea/native.py) against the JAX loop: outputs, state, gradients,
streaming across both paths, batching, build cache and fallback."""
import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_widgets.cochlea import agc as agc_lib
from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import native
from dal_widgets.errors import ParameterError

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the kernel is CPU-only")

# float32: the paths round differently (serial vs closed-form ripple) and the AGC loop amplifies
# it to ~1e-4 of NAP peaks of ~5 (as between one-shot and segmented runs, test_carfac.py).
F32_ATOL = 2e-3
F64_RTOL = 1e-9  # float64: the same arithmetic up to order, measured ~1e-13


def _both(model, x, weights=None, linear=False):
  hypers, coeffs, w, state = model
  w = w if weights is None else weights
  f = lambda nat: jax.jit(lambda x: cf.run(x, hypers, coeffs, w, state, linear=linear,
                                           native=nat))(x)
  return f(True), f(False)


def test_kernel_builds_on_this_machine():
  assert native.available(jnp.float32) and native.available(jnp.float64)
  assert not native.available(jnp.float16)


@pytest.mark.parametrize("sr,style,linear", [(22050, "v3", False), (22050, "v2", False),
                                              (16000, "v3", False), (16000, "v3", True)])
def test_forward_matches_the_jax_loop(sr, style, linear):
  model = cf.design_carfac(cf.CarfacParams(sr=sr, style=style))
  x = jnp.asarray(0.05 * np.random.default_rng(0).standard_normal(4001), jnp.float32)
  health = cf.make_weights(model.hypers, ohc_health=np.linspace(0.2, 1, model.hypers.n_ch))
  (out_n, state_n), (out_j, state_j) = _both(model, x, health, linear)
  assert out_n.nap.shape == out_j.nap.shape and out_n.agc.shape == out_j.agc.shape
  np.testing.assert_allclose(out_n.nap, out_j.nap, atol=F32_ATOL)
  np.testing.assert_allclose(out_n.bm, out_j.bm, atol=F32_ATOL)
  np.testing.assert_allclose(out_n.agc, out_j.agc, atol=1e-5)
  for a, b in zip(jax.tree.leaves(state_n), jax.tree.leaves(state_j)):
    np.testing.assert_allclose(a, b, atol=F32_ATOL)
  assert state_n.agc.phase == state_j.agc.phase == 4001 % 8


def test_float64_forward_matches_to_rounding():
  with jax.enable_x64(True):
    model = cf.design_carfac(cf.CarfacParams(sr=16000), dtype=jnp.float64)
    x = jnp.asarray(0.05 * np.random.default_rng(1).standard_normal(1500))
    (out_n, _), (out_j, _) = _both(model, x)
    assert out_n.nap.dtype == jnp.float64
    np.testing.assert_allclose(out_n.nap, out_j.nap, rtol=F64_RTOL, atol=1e-12)


def test_a_stream_can_switch_paths_between_segments():
  """The state layout is shared: native then JAX then native equals one native run."""
  with jax.enable_x64(True):
    hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000), dtype=jnp.float64)
    x = jnp.asarray(0.05 * np.random.default_rng(2).standard_normal(1000))
    whole, _ = cf.run(x, hypers, coeffs, weights, state, native=True)
    naps = []
    for part, nat in zip(jnp.split(x, (333, 590)), (True, False, True)):
      out, state = cf.run(part, hypers, coeffs, weights, state, native=nat)
      naps.append(out.nap)
    np.testing.assert_allclose(np.concatenate(naps), whole.nap, rtol=F64_RTOL, atol=1e-12)


@pytest.mark.parametrize("style,width_scale,sr", [("v3", None, 16000), ("v2", None, 16000),
                                                  ("v3", (0.8, 1.0, 1.3), 16000),
                                                  ("v3", None, 22050)])
def test_gradient_matches_the_jax_loop_in_float64(style, width_scale, sr):
  """Cotangents of every output (NAP, BM, AGC output, final state) reach the input, both weights
  and the initial state; the run starts mid-AGC-block and does not fill its last checkpoint.
  width_scale: unequal synapse sigmoid widths (the kernel's general form). The AGC smoother has
  5 taps at 16 kHz and 3 at 22.05 kHz."""
  with jax.enable_x64(True):
    hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=sr, style=style),
                                                      dtype=jnp.float64)
    assert hypers.agc.n_taps[0] == (5 if sr == 16000 else 3)
    if width_scale:
      widths = coeffs.syn.v_widths * jnp.asarray(width_scale)[:, None]
      coeffs = dataclasses.replace(coeffs, syn=dataclasses.replace(coeffs.syn, v_widths=widths))
    rng = np.random.default_rng(3)
    warm, state = cf.run(jnp.asarray(0.05 * rng.standard_normal(37)), hypers, coeffs, weights,
                         state, native=False)
    n = 2 * native.SEG + 19
    x = jnp.asarray(0.05 * rng.standard_normal(n))
    probe = jnp.asarray(rng.standard_normal((n, hypers.n_ch)))

    def loss(x, ohc, ihc, z2, nat):
      w = cf.CarfacWeights(ohc_health=ohc, ihc_gain=ihc)
      s = cf.CarfacState(car=state.car.__class__(**{**state.car.__dict__, "z2": z2}),
                         ihc=state.ihc, agc=state.agc, syn=state.syn)
      out, end = cf.run(x, hypers, coeffs, w, s, native=nat)
      return (jnp.sum(out.nap * probe) + 0.3 * jnp.sum(out.bm * probe) + 5 * jnp.sum(out.agc)
              + jnp.sum(end.car.z1) + jnp.sum(end.agc.memory) + jnp.sum(end.ihc.cap1))

    args = (x, jnp.linspace(0.3, 0.9, hypers.n_ch), jnp.full((hypers.n_ch,), 0.8), state.car.z2)
    g_n = jax.jit(jax.grad(lambda *a: loss(*a, True), argnums=(0, 1, 2, 3)))(*args)
    g_j = jax.jit(jax.grad(lambda *a: loss(*a, False), argnums=(0, 1, 2, 3)))(*args)
    for a, b in zip(g_n, g_j):
      assert np.abs(np.asarray(b)).max() > 0
      np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9 * np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("output", ["nap", "bm", "agc"])
def test_gradient_of_one_output_matches_the_jax_loop(output):
  """Bars of the unused outputs arrive as symbolic zeros and are never materialised."""
  with jax.enable_x64(True):
    hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000),
                                                      dtype=jnp.float64)
    x = jnp.asarray(0.05 * np.random.default_rng(8).standard_normal(native.SEG + 41))

    def loss(x, ohc, nat):
      w = cf.CarfacWeights(ohc_health=ohc, ihc_gain=weights.ihc_gain)
      out, _ = cf.run(x, hypers, coeffs, w, state, native=nat)
      return jnp.sum(jnp.sin(3 * getattr(out, output)))

    args = (x, jnp.linspace(0.3, 0.9, hypers.n_ch))
    g_n = jax.jit(jax.grad(lambda *a: loss(*a, True), argnums=(0, 1)))(*args)
    g_j = jax.jit(jax.grad(lambda *a: loss(*a, False), argnums=(0, 1)))(*args)
    for a, b in zip(g_n, g_j):
      assert np.abs(np.asarray(b)).max() > 0
      np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9 * np.abs(np.asarray(b)).max())


def test_vmapped_gradient_and_batched_weights_match_single_runs():
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000))
  rng = np.random.default_rng(4)
  xs = jnp.asarray(0.03 * rng.standard_normal((3, 900)), jnp.float32)
  healths = jnp.asarray(rng.uniform(0.2, 1.0, (3, hypers.n_ch)), jnp.float32)

  def loss(x, ohc):
    w = cf.CarfacWeights(ohc_health=ohc, ihc_gain=weights.ihc_gain)
    return jnp.mean(cf.run(x, hypers, coeffs, w, state, native=True)[0].nap ** 2)

  grad = jax.grad(loss, argnums=(0, 1))
  batched = jax.jit(jax.vmap(grad))(xs, healths)
  for i in range(3):
    single = jax.jit(grad)(xs[i], healths[i])
    for b, s in zip(batched, single):
      np.testing.assert_allclose(b[i], s, rtol=1e-5, atol=1e-9)


def test_jit_of_a_vmap_over_a_numpy_batch_closed_over():
  # The batch is a numpy constant of the jitted function (e.g. a data batch in a loss closure).
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000))
  xs = (0.03 * np.random.default_rng(5).standard_normal((2, 700))).astype(np.float32)
  mean_nap = lambda x, nat: jnp.mean(cf.run(x, hypers, coeffs, weights, state, native=nat)[0].nap)
  per_clip = lambda gain, nat: gain * jax.vmap(lambda x: mean_nap(x, nat))(xs)  # xs not traced
  for f in (per_clip, jax.grad(lambda gain, nat: jnp.sum(per_clip(gain, nat)))):
    got = jax.jit(f, static_argnums=1)(1.5, True)
    np.testing.assert_allclose(got, jax.jit(f, static_argnums=1)(1.5, False), rtol=1e-3)


def test_build_is_cached_per_source_and_cpu(tmp_path, monkeypatch):
  monkeypatch.setenv("DAL_NATIVE_CACHE", str(tmp_path))
  native.library.cache_clear()
  try:
    assert native.library() is not None
    built = list(tmp_path.glob("carfac_kernel_*.so"))
    assert len(built) == 1
    mtime = built[0].stat().st_mtime_ns
    native.library.cache_clear()
    assert native.library() is not None
    assert built[0].stat().st_mtime_ns == mtime, "a second load must reuse the cached build"
  finally:
    monkeypatch.undo()
    native.library.cache_clear()


@pytest.mark.parametrize("refuses", ["-march=native", "-c"], ids=["no -march", "broken"])
def test_a_compiler_that_fails_is_reported_or_worked_around(tmp_path, monkeypatch, caplog,
                                                             refuses):
  """Both precisions compile at once; a compiler that rejects -march=native gets a plain build,
  and one that fails outright leaves the JAX loop with a warning that quotes its error."""
  cc = tmp_path / "cc"
  cc.write_text(f'#!/bin/sh\ncase " $* " in *" {refuses} "*) echo "cc: refused {refuses}" >&2; '
                'exit 1;; esac\nexec gcc "$@"\n')
  cc.chmod(0o755)
  monkeypatch.setenv("DAL_NATIVE_CACHE", str(tmp_path / "cache"))
  monkeypatch.setenv("CC", str(cc))
  native.library.cache_clear()
  try:
    with caplog.at_level(logging.WARNING):
      built = native.library() is not None
    assert built == (refuses == "-march=native")
    if not built:
      assert f"cc: refused {refuses}" in caplog.text
  finally:
    monkeypatch.undo()
    native.library.cache_clear()


@pytest.mark.parametrize("env,value", [("DAL_NATIVE", "0"), ("CC", "/no/such/compiler")])
def test_without_the_kernel_run_falls_back_to_jax(tmp_path, monkeypatch, caplog, env, value):
  monkeypatch.setenv("DAL_NATIVE_CACHE", str(tmp_path))  # an empty cache: CC must build
  monkeypatch.setenv(env, value)
  monkeypatch.setattr(native.sysconfig, "get_config_var", lambda name: None)
  monkeypatch.setattr(native.shutil, "which", lambda cmd: None if env == "CC" else "/usr/bin/cc")
  native.library.cache_clear()
  try:
    with caplog.at_level(logging.WARNING):
      assert not native.available()
    if env == "CC":
      assert "no C compiler" in caplog.text
    model = cf.design_carfac(cf.CarfacParams(sr=16000))
    x = np.zeros(100, np.float32)
    out, _ = cf.run(x, *model)  # auto: the JAX loop
    assert out.nap.shape == (100, model.hypers.n_ch)
    with pytest.raises(ParameterError, match="native=False"):
      cf.run(x, *model, native=True)
  finally:
    monkeypatch.undo()
    native.library.cache_clear()


@pytest.mark.parametrize("batch", [2, 5, 19])
def test_lockstep_lanes_equal_single_runs(batch):
  """vmap runs groups of waveforms in lockstep (native.MAX_LANES per group), each with its own
  weights; every row equals its own run."""
  hypers, coeffs, _, state = cf.design_carfac(cf.CarfacParams(sr=16000))
  rng = np.random.default_rng(5)
  xs = jnp.asarray(0.05 * rng.standard_normal((batch, 1003)), jnp.float32)
  healths = jnp.asarray(rng.uniform(0.2, 1.0, (batch, hypers.n_ch)), jnp.float32)

  def one(x, ohc):
    w = cf.CarfacWeights(ohc_health=ohc, ihc_gain=jnp.ones_like(ohc))
    out, end = cf.run(x, hypers, coeffs, w, state, native=True)
    return out.nap, out.bm, out.agc, end.car.g, end.agc.memory

  batched = jax.jit(jax.vmap(one))(xs, healths)
  for i in (0, batch // 2, batch - 1):
    single = jax.jit(one)(xs[i], healths[i])
    for b, s in zip(batched, single):
      np.testing.assert_allclose(b[i], s, atol=F32_ATOL)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_lane_groups_cover_the_batch_in_vector_sized_groups(workers):
  """Every waveform in exactly one group, groups of 1, 2, 4, 8 or 16 (the kernel's vector
  ripples), one near-equal share of the batch per worker."""
  for size in range(1, 41):
    per_worker = native._lane_groups(size, min(size, workers))
    groups = [g for share in per_worker for g in share]
    assert [lo for lo, _ in groups] == [0] + [hi for _, hi in groups[:-1]]
    assert groups[-1][1] == size
    assert all(hi - lo in (1, 2, 4, 8, 16) for lo, hi in groups)
    shares = [share[-1][1] - share[0][0] for share in per_worker]
    assert len(shares) == min(size, workers) and max(shares) - min(shares) <= 1


def test_synapse_with_unequal_widths_matches_the_jax_loop():
  """The kernel shares one exp between the three fibre classes when their sigmoid widths are
  equal (the design's); other widths take the general form."""
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000))
  widths = coeffs.syn.v_widths * jnp.asarray([[0.8], [1.0], [1.3]], jnp.float32)
  coeffs = dataclasses.replace(coeffs, syn=dataclasses.replace(coeffs.syn, v_widths=widths))
  x = jnp.asarray(0.05 * np.random.default_rng(7).standard_normal(3001), jnp.float32)
  (out_n, _), (out_j, _) = _both((hypers, coeffs, weights, state), x)
  base_n, _ = _both(cf.design_carfac(cf.CarfacParams(sr=16000)), x)[0]
  assert np.abs(out_j.nap - base_n.nap).max() > 10 * F32_ATOL  # the widths matter
  np.testing.assert_allclose(out_n.nap, out_j.nap, atol=F32_ATOL)


def test_states_with_different_agc_counts_run_one_by_one():
  """Lockstep needs one AGC schedule; rows whose states differ in AGC count still run right."""
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000))
  rng = np.random.default_rng(6)
  _, later = cf.run(jnp.asarray(0.05 * rng.standard_normal(24), jnp.float32), hypers, coeffs,
                    weights, state, native=True)
  assert int(later.agc.n_updates) != int(state.agc.n_updates) and later.agc.phase == 0
  states = jax.tree.map(lambda a, b: jnp.stack([a, b]), state, later)
  xs = jnp.asarray(0.05 * rng.standard_normal((2, 500)), jnp.float32)
  run = lambda x, s: cf.run(x, hypers, coeffs, weights, s, native=True)[0].nap
  batched = jax.vmap(run)(xs, states)
  np.testing.assert_allclose(batched[0], run(xs[0], state), atol=F32_ATOL)
  np.testing.assert_allclose(batched[1], run(xs[1], later), atol=F32_ATOL)


def test_loading_the_kernel_keeps_subnormal_floats_in_the_process():
  """Linking with -ffast-math (GCC < 13) would set flush-to-zero for all of Python on load."""
  assert native.library() is not None
  tiny = np.finfo(np.float32).smallest_subnormal
  assert np.float32(tiny) * np.float32(3) == 3 * tiny > 0


def test_designs_the_kernel_cannot_run_take_the_jax_loop():
  """More AGC stages than the kernel has room for, or per-channel synapse coefficients: the
  default path is the JAX loop, and native=True says why it cannot."""
  n_stages = native.MAX_STAGES + 1
  agc = agc_lib.AgcParams(time_constants_s=tuple(0.002 * 2 ** k for k in range(n_stages)),
                          decimation=(8, 2) + (1,) * (n_stages - 2),
                          agc1_scales=tuple(np.sqrt(2) ** k for k in range(n_stages)),
                          agc2_scales=tuple(1.65 * np.sqrt(2) ** k for k in range(n_stages)))
  deep = cf.design_carfac(cf.CarfacParams(sr=16000, agc=agc))
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000))
  per_channel = jnp.broadcast_to(coeffs.syn.v_halfs, (3, hypers.n_ch))
  syn = dataclasses.replace(coeffs.syn, v_halfs=per_channel)
  wide = (hypers, dataclasses.replace(coeffs, syn=syn), weights, state)
  x = jnp.asarray(0.05 * np.random.default_rng(8).standard_normal(400), jnp.float32)
  for model, why in ((deep, "9 AGC stages"),
                     (wide, "synapse coefficient v_halfs of shape \\(3, 65\\)")):
    with pytest.raises(ParameterError, match=f"cannot run this design: {why}.*native=False"):
      cf.run(x, *model, native=True)
    default, _ = cf.run(x, *model)
    np.testing.assert_array_equal(default.nap, cf.run(x, *model, native=False)[0].nap)


def test_a_hand_built_stage1_accumulator_counts_on_both_paths():
  """accum[0] of a state at phase 0 joins the first AGC update (runs leave it 0; a state built
  by hand may not), in the forward and in the gradient, as a finite difference confirms."""
  with jax.enable_x64(True):
    hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000), dtype=jnp.float64)
    x = jnp.asarray(0.05 * np.random.default_rng(1).standard_normal(40))
    assert state.agc.phase == 0

    def loss(acc0, nat):
      agc = dataclasses.replace(state.agc, accum=state.agc.accum.at[0].set(acc0))
      out, end = cf.run(x, hypers, coeffs, weights, dataclasses.replace(state, agc=agc), native=nat)
      return jnp.sum(out.nap) + jnp.sum(jnp.sin(end.agc.accum))

    acc0 = jnp.full((hypers.n_ch,), 1e-3)
    np.testing.assert_allclose(loss(acc0, True), loss(acc0, False), rtol=1e-12)
    g_n, g_j = (jax.grad(loss)(acc0, nat) for nat in (True, False))
    np.testing.assert_allclose(g_n, g_j, rtol=1e-8, atol=1e-12)
    step = 1e-6 * jnp.eye(hypers.n_ch)[10]
    fd = (loss(acc0 + step, False) - loss(acc0 - step, False)) / 2e-6
    assert abs(g_j[10]) > 1e-3 and float(g_j[10]) == pytest.approx(float(fd), rel=1e-5)


@pytest.mark.parametrize("batch", [None, 8])  # None: one waveform, written straight to XLA's buffer
@pytest.mark.parametrize("native_path", [True, False])
def test_without_bm_the_nap_state_and_gradient_are_unchanged(batch, native_path):
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000))
  shape = (1500,) if batch is None else (batch, 1500)
  x = jnp.asarray(0.05 * np.random.default_rng(6).standard_normal(shape), jnp.float32)

  def one(x, bm):
    out, end = cf.run(x, hypers, coeffs, weights, state, native=native_path, bm=bm)
    assert (out.bm is None) == (not bm)
    return out.nap, end.car.g

  nap, loss = one, lambda x, bm: jnp.mean(one(x, bm)[0] ** 2)
  if batch is not None:
    nap, loss = jax.vmap(nap, in_axes=(0, None)), jax.vmap(loss, in_axes=(0, None))
  run = jax.jit(nap, static_argnums=1)
  grad = jax.jit(jax.grad(lambda x, bm: jnp.sum(loss(x, bm))), static_argnums=1)
  for with_bm, without in zip(run(x, True) + (grad(x, True),), run(x, False) + (grad(x, False),)):
    np.testing.assert_array_equal(without, with_bm)  # the same arithmetic: bitwise equal


def test_cochleagram_without_bm_needs_half_the_memory(monkeypatch):
  from dal_widgets.cochlea import designs
  x = np.zeros(16000, np.float32)
  hypers = designs.designed(16000.0).hypers
  nap_only = designs.PEAK_PER_OUTPUT_BYTE * x.size * hypers.n_ch * 4
  monkeypatch.setattr(designs, "available_memory_bytes", lambda: int(1.5 * nap_only))
  assert designs.cochleagram(x, 16000.0, bm=False).bm is None
  with pytest.raises(ParameterError, match="for its NAP and BM"):
    designs.cochleagram(x, 16000.0)
