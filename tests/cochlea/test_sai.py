"""Tests of dal_widgets.cochlea.sai: golden parity, transforms, gradients, known answers, errors."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from dal_widgets.cochlea import sai
from dal_widgets.errors import ParameterError

SR = 22050.0  # rate of the golden NAP, Hz
N_FRAMES = 10  # frames in the golden SAI file
GOLDEN_ATOL_F32 = 2e-3  # project tolerance for float32 (DESIGN.md); measured 2.9e-6
GOLDEN_ATOL_F64 = 4e-6  # golden frames are rounded to 2^-18 (|error| <= 1.9e-6); measured 1.9e-6
TRANSFORM_ATOL = 1e-6  # jit/vmap/chunking only reorder float32 arithmetic of values <= 1
GRAD_EPS = 1e-6  # finite-difference step in float64, far below the gaps between trigger candidates
GRAD_TOL = 1e-6  # float64 central differences of a piecewise-smooth map: error ~ eps^2
BLEND_GRAD_RTOL = 1e-12  # float64: the same products and sums as JAX's gradient, in another order
BLEND_GRAD_ATOL = 1e-14
SMALL = sai.SaiParams(num_channels=8, sai_width=16, future_lags=7, num_triggers_per_frame=2,
                      trigger_window_width=24, input_segment_width=20)  # buffer 52 samples


@pytest.fixture(scope="module")
def golden(load_golden):
  d = load_golden("carfac_golden_d_sai_a_v3.npz")  # provenance: golden README, "SAI file (d)"
  nap = load_golden("carfac_golden_a_v3_22050.npz")["nap"]  # [22050, 71] float64
  frames = d["sai_frames_T"].T.reshape(N_FRAMES, 71, 441)
  return nap, frames, json.loads(str(d["sai_params_json"])), d


@pytest.fixture
def x64():
  with jax.enable_x64(True):
    yield


def random_nap(seed, n_samp=3 * SMALL.input_segment_width, n_ch=SMALL.num_channels):
  """NAP-like values, mostly positive, some negative (as v2 NAPs are)."""
  return np.random.default_rng(seed).uniform(-0.2, 1.0, (n_samp, n_ch))


def test_params_for_golden_configuration(golden):
  _, _, ref_params, _ = golden
  p = sai.sai_params_for(SR, 71)
  for f in dataclasses.fields(p):
    assert getattr(p, f.name) == ref_params[f.name], f.name
  assert p.buffer_width == ref_params["buffer_width"]
  assert p.past_lags == 220


def test_matches_golden_float32(golden):
  nap, ref, _, d = golden
  frames = jax.jit(sai.sai_frames, static_argnames="params")(nap, params=sai.sai_params_for(SR, 71))
  assert frames.shape == (N_FRAMES, 71, 441) and frames.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(frames), ref, rtol=0, atol=GOLDEN_ATOL_F32)
  np.testing.assert_allclose(np.asarray(frames, np.float64).sum(axis=(1, 2)), d["sai_frame_sum"], rtol=1e-5)


def test_matches_golden_float64(golden, x64):
  nap, ref, _, d = golden
  frames = np.asarray(sai.sai_frames(nap, sai.sai_params_for(SR, 71)))
  assert frames.dtype == np.float64
  np.testing.assert_allclose(frames, ref, rtol=0, atol=GOLDEN_ATOL_F64)
  np.testing.assert_allclose(frames.max(axis=(1, 2)), d["sai_frame_max"], rtol=0, atol=GOLDEN_ATOL_F64)


def test_jit_equals_eager():
  nap = random_nap(0)
  eager = sai.sai_frames(nap, SMALL)
  jitted = jax.jit(sai.sai_frames, static_argnames="params")(nap, params=SMALL)
  assert eager.shape == (3, 8, 16)
  np.testing.assert_allclose(np.asarray(jitted), np.asarray(eager), rtol=0, atol=TRANSFORM_ATOL)


def test_vmap_equals_per_item():
  naps = np.stack([random_nap(1), random_nap(2)])
  batched = jax.vmap(lambda x: sai.sai_frames(x, SMALL))(naps)
  for i in range(2):
    np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(sai.sai_frames(naps[i], SMALL)),
                               rtol=0, atol=TRANSFORM_ATOL)
  assert not np.allclose(batched[0], batched[1])  # the items really differ


def test_chunked_equals_unchunked_and_steps():
  nap = random_nap(3, n_samp=4 * SMALL.input_segment_width)
  whole = sai.sai_frames(nap, SMALL)
  state = sai.init_sai_state(SMALL)
  first, state = sai.sai_run(state, nap[:40], SMALL)
  second, _ = sai.sai_run(state, nap[40:], SMALL)
  np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=0, atol=TRANSFORM_ATOL)
  state = sai.init_sai_state(SMALL)
  for i in range(4):
    frame, state = sai.sai_step(state, nap[20 * i:20 * (i + 1)], SMALL)
    np.testing.assert_allclose(frame, whole[i], rtol=0, atol=TRANSFORM_ATOL)


def test_trailing_partial_segment_is_dropped():
  nap = random_nap(4, n_samp=3 * SMALL.input_segment_width + 13)
  frames = sai.sai_frames(nap, SMALL)
  assert frames.shape == (3, 8, 16)
  np.testing.assert_array_equal(frames, sai.sai_frames(nap[:60], SMALL))


def test_gradient_matches_finite_differences(x64):
  nap = jnp.asarray(random_nap(5))
  assert nap.dtype == jnp.float64
  f = lambda x: sai.sai_frames(x, SMALL)
  check_grads(f, (nap,), order=1, modes=("rev",), eps=GRAD_EPS, atol=GRAD_TOL, rtol=GRAD_TOL)


def test_forward_mode_is_refused_with_a_type_error(x64):
  """The image blend has a hand-written reverse pass only (module docstring)."""
  nap = jnp.asarray(random_nap(6))
  with pytest.raises(TypeError, match="forward-mode"):
    jax.jvp(lambda x: sai.sai_frames(x, SMALL), (nap,), (jnp.ones_like(nap),))


def test_gradient_of_alpha_reaches_the_trigger_sample(x64):
  # One channel, one trigger window, one pulse of height h: frame[zero lag] = alpha(h w) * h, so
  # its derivative is alpha + h * w * alpha'(h w); without gradient through alpha it would be alpha.
  p = sai.SaiParams(num_channels=1, sai_width=16, future_lags=7, num_triggers_per_frame=1,
                    trigger_window_width=24, input_segment_width=20)  # buffer 40 samples
  window_start = p.buffer_width - p.future_lags - p.trigger_window_width  # buffer sample 9
  t = window_start + 11 - (p.buffer_width - p.input_segment_width)  # window index 11 = NAP sample 0
  h, w = 0.7, np.sin(np.pi * 12 / 24)  # pulse height; window weight at index 11
  nap = np.zeros((p.input_segment_width, 1))
  nap[t, 0] = h
  frame_at_zero = lambda x: sai.sai_frames(x, p)[0, 0, p.past_lags]
  alpha = (0.025 + h * w) / (0.5 + h * w)
  assert float(frame_at_zero(nap)) == pytest.approx(alpha * h, rel=1e-12)
  grad = jax.grad(frame_at_zero)(nap)
  assert float(grad[t, 0]) == pytest.approx(alpha + h * w * 0.475 / (0.5 + h * w) ** 2, rel=1e-12)


def test_zero_nap_has_finite_gradients():
  nap = jnp.zeros((3 * SMALL.input_segment_width, SMALL.num_channels))
  loss = lambda x: jnp.sum(sai.sai_frames(x, SMALL) ** 2) + jnp.sum(sai.sai_frames(x, SMALL))
  grad = jax.grad(loss)(nap)
  assert np.all(np.isfinite(grad))
  assert np.any(grad != 0)  # the frame is linear in the NAP values around the fallback triggers


@pytest.mark.parametrize("period", [50, 73, 100])
def test_pulse_train_peaks_at_zero_and_period(period):
  p = sai.sai_params_for(SR, 2)
  n = np.arange(3 * p.input_segment_width)
  pulses = np.maximum(0.0, np.cos(2 * np.pi * n / period)) ** 20  # narrow pulses, period samples
  nap = np.stack([pulses, 0.5 * pulses], axis=1)
  frame = np.asarray(sai.sai_frames(nap, p))[-1]
  z = p.past_lags
  for row in frame:
    top = row.max()
    assert top > 0.3
    assert row[z] == pytest.approx(top, rel=1e-5)  # zero lag is a (shared) maximum
    assert row[z - 1] < row[z] and row[z + 1] < row[z]  # ... and exactly at column past_lags
    for lag in (-period, period):
      win = slice(z + lag - period // 2, z + lag + period // 2)
      assert np.argmax(row[win]) + win.start == z + lag
      assert row[z + lag] == pytest.approx(top, rel=1e-5)
    assert row[z + period // 2] < 0.01 * top and row[z - period // 2] < 0.01 * top


def test_lags_axis():
  p = sai.sai_params_for(SR, 71)
  lags = sai.sai_lags_s(p, SR)
  assert lags.shape == (441,)
  assert lags[p.past_lags] == 0.0
  assert lags[0] == pytest.approx(-220 / SR) and lags[-1] == pytest.approx(220 / SR)
  np.testing.assert_allclose(np.diff(lags), 1 / SR)
  with pytest.raises(ParameterError, match="sr"):
    sai.sai_lags_s(p, 0.0)


def test_params_for_other_rates_and_long_frames():
  p = sai.sai_params_for(16000, 65)
  assert (p.sai_width, p.future_lags, p.trigger_window_width, p.input_segment_width) == (320, 159, 640, 1600)
  long = sai.sai_params_for(SR, 71, frame_ms=250.0)  # needs more trigger windows to cover the hop
  assert long.num_triggers_per_frame > sai.DEFAULT_NUM_TRIGGERS
  assert long.buffer_width > long.input_segment_width


@pytest.mark.parametrize("changes, match", [
    (dict(sai_width=0), "sai_width"),
    (dict(num_channels=0), "num_channels"),
    (dict(future_lags=441), "future_lags"),
    (dict(future_lags=-1), "future_lags"),
    (dict(trigger_window_width=441), "trigger_window_width"),
    (dict(num_triggers_per_frame=0), "num_triggers_per_frame"),
    (dict(input_segment_width=2646), "input_segment_width.*buffer_width=2646"),
    (dict(sai_width=441.0), "sai_width: expected an int"),
    (dict(num_channels=True), "num_channels: expected an int"),
])
def test_bad_params_raise(changes, match):
  good = dict(num_channels=71, sai_width=441, future_lags=220, num_triggers_per_frame=4,
              trigger_window_width=882, input_segment_width=2205)
  sai.SaiParams(**good)  # the baseline is valid
  with pytest.raises(ParameterError, match=match):
    sai.SaiParams(**{**good, **changes})


@pytest.mark.parametrize("kwargs, match", [
    (dict(sr=0.0, n_ch=71), "sr"),
    (dict(sr=SR, n_ch=71, width_ms=0.01), "width_ms"),
    (dict(sr=SR, n_ch=71, frame_ms=float("nan")), "frame_ms"),
    (dict(sr=SR, n_ch=71, future_ms=-1.0), "future_ms"),
    (dict(sr=SR, n_ch=71, future_ms=20.0), "future_lags"),
    (dict(sr=SR, n_ch=0), "num_channels"),
    (dict(sr=SR, n_ch=71, width_ms=0.125), r"1\.\.64 trigger windows per frame, got \d+ \(a 0\.125 ms "
                                           r"image on 100 ms frames needs that many"),
    (dict(sr=SR, n_ch=71, num_triggers=65), r"1\.\.64 trigger windows per frame, got 65$"),
    (dict(sr=SR, n_ch=71, num_triggers=2.5), "num_triggers"),
])
def test_bad_params_for_raise(kwargs, match):
  with pytest.raises(ParameterError, match=match):
    sai.sai_params_for(**kwargs)


def test_bad_shapes_raise():
  with pytest.raises(ParameterError, match=r"nap: expected shape \[n_samp, num_channels=8\]"):
    sai.sai_frames(np.zeros((60, 7)), SMALL)
  with pytest.raises(ParameterError, match="nap: expected at least input_segment_width=20"):
    sai.sai_frames(np.zeros((19, 8)), SMALL)
  with pytest.raises(ParameterError, match="nap: expected finite values"):
    sai.sai_frames(np.full((60, 8), np.nan), SMALL)
  with pytest.raises(ParameterError, match="segment: expected 20 samples"):
    sai.sai_step(sai.init_sai_state(SMALL), np.zeros((21, 8)), SMALL)
  with pytest.raises(ParameterError, match="multiple of input_segment_width=20"):
    sai.sai_run(sai.init_sai_state(SMALL), np.zeros((30, 8)), SMALL)
  other = dataclasses.replace(SMALL, num_triggers_per_frame=3)
  with pytest.raises(ParameterError, match="state: expected"):
    sai.sai_step(sai.init_sai_state(other), np.zeros((20, 8)), SMALL)


@pytest.mark.parametrize("n", [1, 31, 32, 33, 640, 882])
def test_trigger_search_finds_the_first_maximum_as_argmax(n):
  """The blocked trigger search equals jnp.argmax, ties (first index wins) and padding included."""
  rng = np.random.default_rng(n)
  coarse = rng.integers(0, 4, (n, 5)).astype(np.float32)  # many ties
  cases = [coarse, -coarse - 1, np.zeros((n, 5), np.float32), rng.standard_normal((n, 5, 3))]
  for x in cases:
    got = sai._argmax_first(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(got), np.argmax(x, axis=0))


def test_blend_backward_equals_autodiff_of_the_blend_scan(x64):
  """The hand-written backward of the image blend equals JAX's gradient of the plain scan, for
  the starting image, the runs and alpha, one waveform and under vmap."""
  rng = np.random.default_rng(7)
  frames, triggers, n_ch, width = 3, 2, 4, 5
  args = (rng.uniform(0, 1, (n_ch, width)), rng.uniform(-0.2, 1, (frames, triggers, n_ch, width)),
          rng.uniform(0.05, 1, (frames, triggers, n_ch)))
  weights = rng.standard_normal((frames, n_ch, width))
  plain = lambda f, r, a: jax.lax.scan(
      lambda im, xs: (sai._blend_frame(im, *xs),) * 2, f, (r, a))[1]
  for blend in (sai._blend, plain):
    np.testing.assert_array_equal(blend(*args), plain(*args))
  loss = lambda blend: (lambda *a: jnp.sum(jnp.tanh(blend(*a)) * weights))
  want = jax.grad(loss(plain), argnums=(0, 1, 2))(*args)
  got = jax.grad(loss(sai._blend), argnums=(0, 1, 2))(*args)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=BLEND_GRAD_RTOL, atol=BLEND_GRAD_ATOL)
  batch = [np.stack([a, a[::-1] * 0.9]) for a in args]
  vloss = lambda blend: (lambda *a: jnp.sum(jax.vmap(loss(blend))(*a)))
  got = jax.grad(vloss(sai._blend), argnums=(0, 1, 2))(*batch)
  want = jax.grad(vloss(plain), argnums=(0, 1, 2))(*batch)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=BLEND_GRAD_RTOL, atol=BLEND_GRAD_ATOL)


def test_run_of_an_empty_nap_keeps_the_state():
  state = sai.SaiState(buffer=jnp.asarray(random_nap(3, SMALL.buffer_width), jnp.float32),
                       frame=jnp.ones((SMALL.num_channels, SMALL.sai_width), jnp.float32))
  frames, after = sai.sai_run(state, np.zeros((0, SMALL.num_channels), np.float32), SMALL)
  assert frames.shape == (0, SMALL.num_channels, SMALL.sai_width)
  np.testing.assert_array_equal(after.buffer, state.buffer)
  np.testing.assert_array_equal(after.frame, state.frame)
