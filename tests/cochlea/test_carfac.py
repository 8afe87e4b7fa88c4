"""CARFAC: golden parity, streaming, batching, gradients, known answers and input errors."""
import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import designs
from dal_widgets.errors import ParameterError

# Tolerances (float32 run, independent float64 design): golden README, "Expected agreement".
NAP_ATOL = 2e-3  # NAP peaks ~9.2; float32 vs float64 CAR design alone moves it by ~5e-4
BM_ATOL = 5e-4  # BM peaks ~8
AGC_ATOL = 1e-4  # stage-1 AGC state, values ~0.1-0.5
CAR_STATE_ATOL = 2e-4  # final g, zb: the reference fits g(u) in float32 (ga, gb, gc differ ~3e-4)
# float64 run on the reference's own (float32) CAR coefficients: only arithmetic order differs.
NAP_ATOL_EXACT = 2e-5
# One-shot vs segmented: the same arithmetic grouped differently at segment edges; the nonlinear
# feedback loop amplifies float32 rounding (rel. 1e-7) to ~1e-5 of the NAP peak, float64 stays ~1e-14.
STREAM_ATOL_F32 = 2e-4
STREAM_ATOL_F64 = 1e-10

GOLDEN_CASES = [  # file, style, sr, ohc_health
    ("carfac_golden_a_v3_22050.npz", "v3", 22050, None),
    ("carfac_golden_a_v2_22050.npz", "v2", 22050, None),
    ("carfac_golden_b_v3_16000.npz", "v3", 16000, None),
    ("carfac_golden_c_v3_22050_ohc_slope.npz", "v3", 22050, np.linspace(0.1, 1.0, 71)),
]


# Both implementations of `run`: the compiled CPU kernel (cochlea/native.py) and the JAX loop
# (what runs on GPUs). Each must match the reference on its own.
CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu", reason="the kernel is CPU-only")
PATHS = [pytest.param(True, id="native", marks=CPU_ONLY), pytest.param(False, id="jax")]


def _run(model, x, weights=None, linear=False, native=None):
  hypers, coeffs, w, state = model
  f = jax.jit(partial(cf.run, hypers=hypers, linear=linear, native=native))
  return f(x, coeffs=coeffs, weights=weights if weights is not None else w, state=state)


@pytest.mark.parametrize("sr,n_ch", [(8000, 53), (16000, 65), (22050, 71), (44100, 83), (48000, 84)])
def test_channel_count_and_cf_order(sr, n_ch):
  cf_hz = designs.cf_hz(sr)
  assert cf_hz.shape == (n_ch,)
  assert np.all(np.diff(cf_hz) < 0), "channel 0 must be the highest CF"
  assert cf_hz[0] == pytest.approx(0.85 * sr / 2, rel=1e-6)
  assert 30 < cf_hz[-1] < 50


@pytest.mark.parametrize("native", PATHS)
@pytest.mark.parametrize("name,style,sr,health", GOLDEN_CASES)
def test_golden_parity(load_golden, name, style, sr, health, native):
  g = load_golden(name)
  model = cf.design_carfac(cf.CarfacParams(sr=sr, style=style))
  np.testing.assert_array_equal(np.asarray(model.coeffs.pole_hz), g["pole_freqs"])
  for key in ("r1", "a0", "c0", "h", "zr"):
    np.testing.assert_allclose(getattr(model.coeffs.car, key), g[f"car_{key}_coeffs"], atol=2e-6)
  weights = None if health is None else cf.make_weights(model.hypers, ohc_health=health)
  out, state = _run(model, g["x"], weights, native=native)
  np.testing.assert_allclose(out.nap, g["nap"], atol=NAP_ATOL)
  np.testing.assert_allclose(out.bm, g["bm"], atol=BM_ATOL)
  np.testing.assert_allclose(out.agc, g["agc_stage1_memory"], atol=AGC_ATOL)
  np.testing.assert_allclose(state.agc.memory, g["final_agc_memory"], atol=AGC_ATOL)
  np.testing.assert_allclose(state.car.g, g["final_car_g"], atol=CAR_STATE_ATOL)
  np.testing.assert_allclose(state.car.zb, g["final_car_zb"], atol=CAR_STATE_ATOL)


@pytest.mark.slow
@pytest.mark.parametrize("native", PATHS)
@pytest.mark.parametrize("name,style,sr", [GOLDEN_CASES[0][:3], GOLDEN_CASES[2][:3]])
def test_golden_exact_in_float64_with_reference_coefficients(load_golden, name, style, sr, native):
  """With the reference's own float32 CAR coefficients, float64 arithmetic agrees to ~1e-6."""
  g = load_golden(name)
  with jax.enable_x64(True):
    hypers, coeffs, weights, _ = cf.design_carfac(cf.CarfacParams(sr=sr, style=style), dtype=jnp.float64)
    car = coeffs.car
    car = type(car)(**{**car.__dict__, **{k: jnp.asarray(g[f"car_{k}_coeffs"], jnp.float64)
                                         for k in ("r1", "a0", "c0", "h", "zr", "ga", "gb", "gc", "g0")}})
    coeffs = type(coeffs)(car=car, ihc=coeffs.ihc, agc=coeffs.agc, syn=coeffs.syn, pole_hz=coeffs.pole_hz)
    state = cf.init_state(hypers, coeffs)
    out, _ = _run((hypers, coeffs, weights, state), jnp.asarray(g["x"], jnp.float64),
                  native=native)
    assert out.nap.dtype == jnp.float64
    np.testing.assert_allclose(out.nap, g["nap"], atol=NAP_ATOL_EXACT)
    np.testing.assert_allclose(out.bm, g["bm"], atol=NAP_ATOL_EXACT)


@pytest.mark.parametrize("native", PATHS)
@pytest.mark.parametrize("cuts", [(1000,), (3, 8, 700, 701), (5, 13, 2000)])
@pytest.mark.parametrize("dtype,atol", [(jnp.float64, STREAM_ATOL_F64), (jnp.float32, STREAM_ATOL_F32)])
def test_segments_equal_one_shot(cuts, dtype, atol, native):
  with jax.enable_x64(dtype == jnp.float64):
    model = cf.design_carfac(cf.CarfacParams(sr=16000, style="v3"), dtype=dtype)
    x = jnp.asarray(0.05 * np.random.default_rng(1).standard_normal(3000), dtype)
    whole, whole_state = _run(model, x, native=native)
    hypers, coeffs, weights, state = model
    naps, bms = [], []
    for part in jnp.split(x, cuts):
      out, state = _run((hypers, coeffs, weights, state), part, native=native)
      naps.append(out.nap)
      bms.append(out.bm)
    np.testing.assert_allclose(np.concatenate(naps), whole.nap, atol=atol)
    np.testing.assert_allclose(np.concatenate(bms), whole.bm, atol=atol)
    np.testing.assert_allclose(state.agc.memory, whole_state.agc.memory, atol=atol)


@pytest.mark.parametrize("native", PATHS)
def test_vmap_batch_equals_single_runs(native):
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000))
  xs = 0.03 * np.random.default_rng(2).standard_normal((3, 1200)).astype(np.float32)
  xs[1] *= 0.1
  batched = jax.vmap(lambda x: cf.run(x, hypers, coeffs, weights, state, native=native)[0].nap)(xs)
  for i in range(3):
    single, _ = _run((hypers, coeffs, weights, state), xs[i], native=native)
    np.testing.assert_allclose(batched[i], single.nap, atol=1e-6)


def test_compiler_options_change_speed_not_results():
  model = cf.design_carfac(cf.CarfacParams(sr=16000))
  x = 0.03 * np.random.default_rng(3).standard_normal(1600).astype(np.float32)
  jax_loop = lambda x: cf.run(x, *model, native=False)[0].nap
  plain = jax.jit(jax_loop)(x)
  tuned = jax.jit(jax_loop, compiler_options=cf.compiler_options("cpu"))(x)
  assert cf.compiler_options("cpu") == cf.COMPILER_OPTIONS["cpu"]
  assert cf.compiler_options("no-such-backend") == {}
  np.testing.assert_allclose(tuned, plain, atol=1e-6)


def test_changing_weights_or_input_does_not_recompile():
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000))
  f = jax.jit(partial(cf.run, hypers=hypers))
  x = np.zeros(800, np.float32)
  f(x, coeffs=coeffs, weights=weights, state=state)
  f(x + 0.01, coeffs=coeffs, weights=cf.make_weights(hypers, ohc_health=0.3), state=state)
  assert f._cache_size() == 1


def test_lower_ohc_health_lowers_gain_at_cf():
  sr = 16000
  cf_hz = designs.cf_hz(sr)
  ch = int(np.argmin(np.abs(cf_hz - 2000)))
  t = np.arange(4000) / sr
  x = (1e-3 * np.sin(2 * np.pi * cf_hz[ch] * t)).astype(np.float32)  # ~40 dB SPL
  bm_rms = [float(np.sqrt(np.mean(np.square(designs.cochleagram(x, sr, ohc_health=h).bm[2000:, ch]))))
            for h in (1.0, 0.5, 0.0)]
  assert bm_rms[0] > bm_rms[1] > bm_rms[2]
  assert 20 * np.log10(bm_rms[0] / bm_rms[2]) > 20  # dB of cochlear gain lost with no OHCs


def test_compression_at_cf_is_less_than_one_db_per_db():
  sr = 16000
  cf_hz = designs.cf_hz(sr)
  ch = int(np.argmin(np.abs(cf_hz - 1000)))
  t = np.arange(4000) / sr
  tone = np.sin(2 * np.pi * cf_hz[ch] * t).astype(np.float32)
  levels_db = np.array([40.0, 60.0, 80.0])
  amps = 1e-4 * 10 ** ((levels_db - 20) / 20)
  out_db = [20 * np.log10(np.sqrt(np.mean(np.square(
      designs.cochleagram(a * tone, sr).bm[2000:, ch])))) for a in amps]
  slopes = np.diff(out_db) / np.diff(levels_db)
  assert np.all(slopes < 0.75) and np.all(slopes > 0.05)


def test_linear_impulse_response_peaks_near_pole_frequency():
  """Known answer: each channel's BM impulse response peaks within 15% of its pole frequency
  (measured: 4-11% above it at full undamping), and peak frequency falls with channel index."""
  sr = 22050
  x = np.zeros(4096, np.float32)
  x[0] = 1e-4
  out = designs.cochleagram(x, sr, linear=True)
  spectrum = np.abs(np.fft.rfft(np.asarray(out.bm), axis=0))
  freqs = np.fft.rfftfreq(4096, 1 / sr)
  peaks = freqs[np.argmax(spectrum, axis=0)]
  cf_hz = designs.cf_hz(sr)
  np.testing.assert_allclose(peaks[:-2], cf_hz[:-2], rtol=0.15)
  assert np.all(np.diff(peaks) <= 0)


def _small_model_f64():
  return cf.design_carfac(cf.CarfacParams(sr=8000, style="v3"), dtype=jnp.float64)


@pytest.mark.slow
@pytest.mark.parametrize("native", PATHS)
def test_gradients_match_finite_differences_float64(native):
  with jax.enable_x64(True):
    hypers, coeffs, weights, state = _small_model_f64()
    rng = np.random.default_rng(3)
    x = jnp.asarray(0.02 * rng.standard_normal(160))
    probe = jnp.asarray(rng.standard_normal((160, hypers.n_ch)))
    health = jnp.asarray(rng.uniform(0.3, 0.9, hypers.n_ch))

    def loss(x, health):
      w = cf.CarfacWeights(ohc_health=health, ihc_gain=weights.ihc_gain)
      return jnp.sum(cf.run(x, hypers, coeffs, w, state, native=native)[0].nap * probe)

    grad_x, grad_h = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, health)
    f = jax.jit(loss)
    # Central differences: truncation error ~eps^2, rounding noise ~1e-14 * |f| / eps (|f| ~ 30
    # here); 1e-5 keeps both below 1e-8 (1e-6 puts the noise at the 1e-7 tolerance).
    eps = 1e-5
    for i in (10, 40, 41, 120):
      e = jnp.zeros_like(x).at[i].set(eps)
      fd = (f(x + e, health) - f(x - e, health)) / (2 * eps)
      np.testing.assert_allclose(grad_x[i], fd, rtol=1e-5, atol=1e-7)
    for c in (5, 20, 40):
      e = jnp.zeros_like(health).at[c].set(eps)
      fd = (f(x, health + e) - f(x, health - e)) / (2 * eps)
      np.testing.assert_allclose(grad_h[c], fd, rtol=1e-5, atol=1e-7)
    assert np.abs(np.asarray(grad_h)).max() > 0


@pytest.mark.parametrize("native", PATHS)
@pytest.mark.parametrize("kind", ["silence", "full_scale_noise", "health_zero"])
def test_gradients_are_finite(kind, native):
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=16000))
  x = np.zeros(1600, np.float32)
  if kind == "full_scale_noise":
    x = np.clip(np.random.default_rng(4).standard_normal(1600), -1, 1).astype(np.float32)
  if kind == "health_zero":
    x = 0.01 * np.random.default_rng(5).standard_normal(1600).astype(np.float32)
    weights = cf.make_weights(hypers, ohc_health=0.0)
  def loss(x, health):
    w = cf.CarfacWeights(ohc_health=health, ihc_gain=weights.ihc_gain)
    return jnp.mean(cf.run(x, hypers, coeffs, w, state, native=native)[0].nap)
  gx, gh = jax.jit(jax.grad(loss, argnums=(0, 1)))(x, weights.ohc_health)
  assert np.all(np.isfinite(gx)) and np.all(np.isfinite(gh))


@pytest.mark.parametrize("x,match", [
    (np.zeros((2, 100), np.float32), "mono waveform"),
    (np.zeros(0, np.float32), "empty"),
    (np.array([0.0, np.nan, 0.0], np.float32), "NaN"),
    (np.array([0.0, np.inf], np.float32), "NaN or inf"),
    (np.array([0.0, 1e300]), "beyond the float32 range"),  # finite, but inf once run in float32
    (np.ones(10, complex), "real numbers .* complex128"),
    (["a", "b"], "real numbers"),
])
def test_bad_input_raises(x, match):
  with pytest.raises(ParameterError, match=match):
    designs.cochleagram(x, 16000)


@pytest.mark.parametrize("sr", [4000, 96000])
def test_unsupported_sample_rate_raises(sr):
  with pytest.raises(ParameterError, match="sr must be within"):
    cf.design_carfac(cf.CarfacParams(sr=sr))


def test_non_numeric_rates_and_weights_raise():
  with pytest.raises(ParameterError, match="sr must be a number of Hz, got 'abc'"):
    cf.design_carfac(cf.CarfacParams(sr="abc"))
  with pytest.raises(ParameterError, match="ohc_health must be numbers"):
    cf.make_weights(designs.designed(16000).hypers, ohc_health="a")


def test_unknown_style_raises():
  with pytest.raises(ParameterError, match="style must be one of"):
    cf.design_carfac(cf.CarfacParams(style="v9"))


@pytest.mark.parametrize("health,match", [(1.5, "within \\[0, 1\\]"), (-0.1, "within \\[0, 1\\]"),
                                          (np.ones(3), "shape \\(65,\\)")])
def test_bad_health_raises(health, match):
  with pytest.raises(ParameterError, match=match):
    designs.cochleagram(np.zeros(100, np.float32), 16000, ohc_health=health)


def test_sample_rate_mismatch_raises():
  hypers = designs.designed(16000).hypers
  with pytest.raises(ParameterError, match="differs from the design rate"):
    cf.check_input(np.zeros(10, np.float32), hypers, sr=22050)


@pytest.mark.parametrize("part", ["coeffs", "weights", "state"])
@pytest.mark.parametrize("native", PATHS)
def test_parts_of_another_design_raise(part, native):
  mine, other = designs.designed(16000), designs.designed(22050)
  parts = mine._replace(**{part: getattr(other, part)})
  with pytest.raises(ParameterError, match=f"{part}.*has shape \\(71,\\).*65 channels"):
    cf.run(np.zeros(100, np.float32), *parts, native=native)
  batched = jax.vmap(lambda x: cf.run(x, *parts, native=native)[0].nap)
  with pytest.raises(ParameterError, match="65 channels"):
    batched(np.zeros((2, 100), np.float32))


def test_a_list_is_one_waveform():
  samples = list(0.01 * np.sin(np.arange(400) / 5))
  np.testing.assert_array_equal(designs.cochleagram(samples, 16000).nap,
                                designs.cochleagram(np.asarray(samples), 16000).nap)


def test_a_design_first_made_inside_jit_stays_usable_outside():
  sr = 12345.0  # a rate no other test designs, so that the cache is filled inside the trace
  nap = jax.jit(lambda x: cf.run(x, *designs.designed(sr))[0].nap)(np.zeros(64, np.float32))
  model = designs.designed(sr)
  assert not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(model))
  np.testing.assert_array_equal(designs.cochleagram(np.zeros(64, np.float32), sr).nap, nap)


def test_cochleagram_runs_inside_jit_grad_and_vmap():
  x = jnp.asarray(0.05 * np.sin(2 * np.pi * 1000 * np.arange(800) / 16000), jnp.float32)
  eager = designs.cochleagram(x, 16000, ohc_health=0.5, bm=False).nap
  jitted = jax.jit(lambda x: designs.cochleagram(x, 16000, ohc_health=0.5, bm=False).nap)(x)
  np.testing.assert_allclose(jitted, eager, atol=1e-6)
  mean_nap = lambda h: designs.cochleagram(x, 16000, ohc_health=h, bm=False).nap.mean()
  eps = 1e-2  # float32: the mean NAP moves ~1e-3 across 2 eps, 1e-7 of rounding
  fd = (mean_nap(0.5 + eps) - mean_nap(0.5 - eps)) / (2 * eps)
  np.testing.assert_allclose(jax.grad(mean_nap)(0.5), fd, rtol=2e-3)
  np.testing.assert_allclose(jax.vmap(mean_nap)(jnp.array([0.2, 0.5])),
                             [mean_nap(0.2), mean_nap(0.5)], rtol=1e-5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the kernel is CPU-only")
def test_the_kernel_refuses_gradients_for_coefficients_the_jax_loop_gives_them():
  hypers, coeffs, weights, state = designs.designed(16000)
  x = jnp.asarray(0.01 * np.random.default_rng(6).standard_normal(200), jnp.float32)

  def loss(r1, native):
    changed = dataclasses.replace(coeffs, car=dataclasses.replace(coeffs.car, r1=r1))
    return cf.run(x, hypers, changed, weights, state, native=native)[0].nap.sum()
  with pytest.raises(ParameterError, match="designed coefficients need .* native=False"):
    jax.grad(loss)(coeffs.car.r1, True)
  assert np.abs(jax.grad(loss)(coeffs.car.r1, False)).max() > 0
  # Gradients for the input and the weights alone still take the kernel.
  jax.grad(lambda x: cf.run(x, hypers, coeffs, weights, state, native=True)[0].nap.sum())(x)


def test_a_cochleagram_too_large_for_memory_raises_before_running(monkeypatch):
  monkeypatch.setattr(designs, "available_memory_bytes", lambda: 10_000_000)
  with pytest.raises(ParameterError, match="needs about 32 MB .* 10 MB is available"):
    designs.cochleagram(np.zeros(16000 * 3, np.float32), 16000)  # 3 s: 2 x 12.5 MB of outputs
  monkeypatch.setattr(designs, "available_memory_bytes", lambda: None)  # unknown: no check
  assert designs.cochleagram(np.zeros(1600, np.float32), 16000).nap.shape == (1600, 65)


def test_design_refuses_other_dtypes_and_params_and_cached_designs_refuse_unhashable_rates():
  # float16 ran to NaN within the first 800 samples; int32 failed inside lax.scan
  for dtype in (jnp.float16, jnp.int32, "bogus"):
    with pytest.raises(ParameterError, match="dtype must be float32 or float64"):
      cf.design_carfac(cf.CarfacParams(sr=16000), dtype=dtype)
  with pytest.raises(ParameterError, match="params must be CarfacParams, got dict"):
    cf.design_carfac({"sr": 16000})
  x = np.zeros(100, np.float32)
  for sr in ([16000], jnp.asarray(16000.0)):  # a TypeError "unhashable type" from the cache
    with pytest.raises(ParameterError, match="sr must be a number of Hz"):
      designs.cochleagram(x, sr)
  with pytest.raises(ParameterError, match="style must be one of"):
    designs.designed(16000, ["v3"])
