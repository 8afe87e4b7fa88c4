"""SEANet: shapes, identity start, parameter counts, causality, FiLM, gradients, errors, no tones
or offset from silence (checkerboard-free upsampling, DC blocker)."""
import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from dal_widgets.aid.dc_blocker import DC_BLOCK_POLE, SETTLED_DB, dc_block, settle_samples
from dal_widgets.aid.seanet import (CONDITION_DIM, SEANET_SIZES, Seanet, SeanetConfig,
                                    Upsampler, apply_seanet, apply_to_recording,
                                    checkerboard_free_kernel, condition_from_audiogram,
                                    context_samples, count_params, init_seanet, receptive_field)
from dal_widgets.errors import ParameterError
from dal_widgets.hearing.audiogram import Audiogram

TINY = SeanetConfig(base_channels=4, strides=(2, 3), kernel_size=7)  # hop 6, fast to run
CAUSAL_ATOL = 1e-6  # float32 re-evaluation of identical inputs; a leak would be O(0.1)
SMALL_PARAMS = 144_385  # pinned: changes only if the architecture changes
PAPER_PARAMS = 11_018_241


def _randomise(params, seed, scale=0.3, only=None):
  """Params with leaves under keys containing `only` (or all) replaced by normal noise."""
  flat, tree = jax.tree_util.tree_flatten_with_path(params)
  rng = np.random.default_rng(seed)
  out = []
  for path, leaf in flat:
    name = "/".join(str(getattr(p, "key", p)) for p in path)
    if only is None or only in name:
      leaf = jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype)
    out.append(leaf)
  return jax.tree_util.tree_unflatten(tree, out)


def _noise(n, *, batch=None, seed=0):
  shape = (n,) if batch is None else (batch, n)
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("n_samp", [1, 6, 7, 25])
def test_output_shape_matches_input_for_any_length(n_samp):
  params = _randomise(init_seanet(jax.random.PRNGKey(0), TINY), 1,
                      only="output_conv")
  y_batch = apply_seanet(params, TINY, _noise(n_samp, batch=2))
  y_single = apply_seanet(params, TINY, _noise(n_samp))
  assert y_batch.shape == (2, n_samp) and y_batch.dtype == jnp.float32
  assert y_single.shape == (n_samp,)
  assert bool(jnp.all(jnp.isfinite(y_batch)))


def test_small_size_runs_on_a_length_not_multiple_of_its_hop():
  cfg = SEANET_SIZES["small"]
  n_samp = 3 * cfg.hop + 17
  params = init_seanet(jax.random.PRNGKey(0), cfg)
  assert apply_seanet(params, cfg, _noise(n_samp, batch=1)).shape == (1, n_samp)


@pytest.mark.parametrize("cfg", [SEANET_SIZES["small"], TINY,
                                 SeanetConfig(4, (2, 3), causal=True, film_dim=CONDITION_DIM)])
def test_output_equals_input_exactly_at_init(cfg):
  params = init_seanet(jax.random.PRNGKey(3), cfg)
  x = _noise(2 * cfg.hop + 3, batch=2)
  condition = np.ones((2, cfg.film_dim), np.float32) if cfg.film_dim else None
  np.testing.assert_array_equal(np.asarray(apply_seanet(params, cfg, x, condition)), x)


def test_parameter_counts_are_stable_and_small_is_much_smaller():
  counts = {name: count_params(init_seanet(jax.random.PRNGKey(0), cfg))
            for name, cfg in SEANET_SIZES.items()}
  assert counts == {"small": SMALL_PARAMS, "paper": PAPER_PARAMS}
  assert counts["small"] * 50 < counts["paper"]


def _expected_count(cfg):
  """Parameter count written out from the architecture description (weights + biases)."""
  k, c, film = cfg.kernel_size, cfg.base_channels, cfg.film_dim
  conv = lambda c_in, c_out, width: width * c_in * c_out + c_out
  residual_units = lambda ch: len(cfg.dilations) * (conv(ch, ch, k) + conv(ch, ch, 1))
  film_layer = lambda ch: (film * 2 * ch + 2 * ch) if film else 0
  total = conv(1, c, k) + conv(c, 1, k)  # input and output convs
  for stride in cfg.strides:
    total += 2 * (residual_units(c) + film_layer(c))  # encoder and decoder blocks
    total += conv(c, 2 * c, 2 * stride) + conv(2 * c, c, 2 * stride)  # down and up
    c *= 2
  return total + conv(c, c, k)  # bottleneck


@pytest.mark.parametrize("cfg", [TINY, SEANET_SIZES["small"],
                                 SeanetConfig(6, (4, 2), kernel_size=5, dilations=(1, 2),
                                              film_dim=3)])
def test_parameter_count_matches_the_architecture(cfg):
  assert count_params(init_seanet(jax.random.PRNGKey(0), cfg)) == _expected_count(cfg)


@pytest.mark.parametrize("t0", [9, 12, 31])
def test_causal_output_does_not_depend_on_future_input(t0):
  cfg = SeanetConfig(4, (2, 3), causal=True)
  params = _randomise(init_seanet(jax.random.PRNGKey(0), cfg), 5)
  x = _noise(48)
  x_changed = x.copy()
  x_changed[t0:] += _noise(48 - t0, seed=1)
  y, y_changed = (np.asarray(apply_seanet(params, cfg, v)) for v in (x, x_changed))
  np.testing.assert_allclose(y_changed[:t0], y[:t0], atol=CAUSAL_ATOL, rtol=0)
  assert np.max(np.abs(y_changed[t0:] - y[t0:])) > 100 * CAUSAL_ATOL


def test_non_causal_output_does_look_ahead():
  """The causality test above can fail: the centred network reacts before a change."""
  params = _randomise(init_seanet(jax.random.PRNGKey(0), TINY), 5)
  x = _noise(48)
  x_changed = x.copy()
  x_changed[24:] += 1.0
  y, y_changed = (np.asarray(apply_seanet(params, TINY, v)) for v in (x, x_changed))
  assert np.max(np.abs(y_changed[:24] - y[:24])) > 100 * CAUSAL_ATOL


def test_film_changes_output_only_when_its_layers_are_trained():
  cfg = SeanetConfig(4, (2, 3), film_dim=3)
  params = _randomise(init_seanet(jax.random.PRNGKey(0), cfg), 2,
                      only="output_conv")
  x = _noise(30, batch=2)
  cond_a = np.zeros((2, 3), np.float32)
  cond_b = np.array([[0.3, 0.5, 0.9], [0.1, 0.2, 0.0]], np.float32)
  y_a, y_b = (np.asarray(apply_seanet(params, cfg, x, c)) for c in (cond_a, cond_b))
  assert np.max(np.abs(y_a - x)) > 1e-3  # the net is not the identity
  np.testing.assert_array_equal(y_a, y_b)  # gamma = 1, beta = 0 for every condition
  trained = _randomise(params, 4, only="film")
  y_a, y_b = (np.asarray(apply_seanet(trained, cfg, x, c)) for c in (cond_a, cond_b))
  assert np.max(np.abs(y_a - y_b)) > 1e-3


def test_gradients_are_finite_and_reach_every_layer_once_the_output_conv_is_nonzero():
  cfg = SeanetConfig(4, (2, 3), film_dim=3)
  params = init_seanet(jax.random.PRNGKey(0), cfg)
  x = _noise(60, batch=2)
  condition = np.array([[0.2, 0.4, 0.6], [0.1, 0.0, 0.5]], np.float32)
  grad = jax.jit(jax.grad(
      lambda p: jnp.mean((apply_seanet(p, cfg, x, condition) - 0.5 * x) ** 2)))
  grads = grad(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
  assert float(jnp.max(jnp.abs(grads["output_conv"]["kernel"]))) > 0  # identity start learns
  stepped = _randomise(params, 1, scale=0.05, only="output_conv")
  grads = grad(stepped)
  for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
    assert bool(jnp.all(jnp.isfinite(g))), path
    assert float(jnp.max(jnp.abs(g))) > 0, path


def test_jit_with_static_config_matches_eager():
  params = _randomise(init_seanet(jax.random.PRNGKey(0), TINY), 1)
  x = _noise(40, batch=2)
  jitted = jax.jit(apply_seanet, static_argnums=1)
  np.testing.assert_allclose(jitted(params, TINY, x), apply_seanet(params, TINY, x),
                             rtol=1e-5, atol=1e-6)


def test_condition_from_audiogram_reads_thresholds_over_100():
  # Bisgaard N3; 8 kHz lies beyond the last point (6 kHz) so it is held flat at 65 dB HL
  n3 = Audiogram((250, 375, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000),
                 (35, 35, 35, 35, 40, 45, 50, 55, 60, 65))
  expected = np.array([35, 35, 40, 50, 55, 60, 65, 65], np.float32) / 100
  condition = condition_from_audiogram(n3)
  assert condition.shape == (CONDITION_DIM,) and condition.dtype == np.float32
  np.testing.assert_allclose(condition, expected, rtol=1e-6)


def test_hop_is_product_of_strides():
  assert SEANET_SIZES["paper"].hop == math.prod((2, 4, 5, 8)) == 320


def test_errors_name_the_argument():
  params = init_seanet(jax.random.PRNGKey(0), TINY)
  with pytest.raises(ParameterError, match="x: expected shape"):
    apply_seanet(params, TINY, np.zeros((1, 2, 30), np.float32))
  with pytest.raises(ParameterError, match="x: expected finite samples"):
    apply_seanet(params, TINY, np.full((2, 30), np.nan, np.float32))
  with pytest.raises(ParameterError, match="condition: this model has no FiLM"):
    apply_seanet(params, TINY, np.zeros((2, 30), np.float32), np.zeros((2, 3)))
  film_cfg = SeanetConfig(4, (2, 3), film_dim=3)
  film_params = init_seanet(jax.random.PRNGKey(0), film_cfg)
  with pytest.raises(ParameterError, match=r"condition: expected shape \(2, 3\)"):
    apply_seanet(film_params, film_cfg, np.zeros((2, 30), np.float32))
  with pytest.raises(ParameterError, match="condition: expected shape"):
    apply_seanet(film_params, film_cfg, np.zeros((2, 30), np.float32), np.zeros((2, 4)))
  for run in (apply_seanet, apply_to_recording):
    with pytest.raises(ParameterError, match="condition: expected finite values"):
      run(film_params, film_cfg, np.zeros(30, np.float32), np.array([0.2, np.nan, 0.4]))
  with pytest.raises(ParameterError, match="config: expected a SeanetConfig"):
    init_seanet(jax.random.PRNGKey(0), {"base_channels": 4})
  for fields, match in [((0, (2,)), "base_channels: expected an int >= 1"),
                        ((4, ()), "strides: expected a non-empty tuple"),
                        ((4, (2,), 7, (1, 0)), "dilations: expected a non-empty tuple of ints >= 1"),
                        ((4, [2, 3]), "strides: expected a non-empty tuple")]:
    with pytest.raises(ParameterError, match=match):
      SeanetConfig(*fields)
  with pytest.raises(ParameterError, match="film_dim: expected an int >= 0"):
    SeanetConfig(film_dim=-1)
  with pytest.raises(ParameterError, match="n_samples"):
    init_seanet(jax.random.PRNGKey(0), TINY, n_samples=0)
  with pytest.raises(ParameterError, match="audiogram: expected an Audiogram"):
    condition_from_audiogram({"freqs_hz": (1000,), "thresholds_db_hl": (20,)})


@pytest.mark.parametrize("other", [SeanetConfig(8, (2, 3)), SeanetConfig(4, (2, 3, 2)),
                                   SeanetConfig(4, (2, 3), film_dim=3)],
                         ids=["wider", "deeper", "with film"])
def test_params_of_another_config_are_refused_by_name(other):
  x = np.zeros((1, 36), np.float32)
  params = init_seanet(jax.random.PRNGKey(0), other)
  with pytest.raises(ParameterError, match="params: made for another SeanetConfig"):
    apply_seanet(params, TINY, x)
  with pytest.raises(ParameterError, match="params: made for another SeanetConfig"):
    jax.jit(apply_seanet, static_argnums=1)(params, TINY, x)  # shapes are known when traced
  with pytest.raises(ParameterError, match="params: expected a tree of arrays"):
    apply_seanet([object()], TINY, x)


def test_init_kernels_are_lecun_normal_and_biases_zero():
  params = init_seanet(jax.random.PRNGKey(0), SEANET_SIZES["paper"])
  kernel = np.asarray(params["bottleneck"]["kernel"])  # shape [7, 512, 512]
  fan_in = kernel.shape[0] * kernel.shape[1]
  assert abs(kernel.std() * math.sqrt(fan_in) - 1.0) < 0.01  # 1.8M samples: std error ~0.1%
  assert np.max(np.abs(kernel)) <= 2.0 / 0.87962566103423978 / math.sqrt(fan_in) + 1e-9
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = "/".join(str(p.key) for p in path)
    zero = name.endswith("bias") or name.startswith("output_conv")
    assert (float(np.max(np.abs(leaf))) == 0.0) == zero, name


@pytest.mark.slow
def test_flax_own_init_has_zeros_exactly_where_init_seanet_has():
  """init_seanet replaces flax's per-layer initialisers (speed); the zero set must agree."""
  from dal_widgets.aid.seanet import Seanet  # pylint: disable=import-outside-toplevel
  cfg = SeanetConfig(2, (2,), film_dim=2)
  ours = init_seanet(jax.random.PRNGKey(0), cfg)
  theirs = Seanet(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4)), jnp.zeros((1, 2)))["params"]
  zero = lambda tree: jax.tree_util.tree_map(lambda a: bool(np.all(np.asarray(a) == 0)), tree)
  assert zero(ours) == zero(theirs)


def _periodic_part(y, period):
  """RMS of the part of y that repeats every `period` samples (phase means minus their mean)."""
  phases = y[: len(y) // period * period].reshape(-1, period).mean(axis=0)
  return float(np.sqrt(np.mean((phases - phases.mean()) ** 2)))


@pytest.mark.parametrize("stride", [2, 4, 5])
def test_checkerboard_free_kernel_gives_every_phase_the_same_sum_and_is_a_projection(stride):
  kernel = jnp.asarray(np.random.default_rng(stride).standard_normal((2 * stride, 3, 5)),
                       jnp.float32)
  free = checkerboard_free_kernel(kernel, stride)
  sums = np.asarray(free[:stride] + free[stride:])  # output phase p gets taps p and p + stride
  np.testing.assert_allclose(sums, np.broadcast_to(sums.mean(0), sums.shape), atol=1e-5)
  np.testing.assert_allclose(checkerboard_free_kernel(free, stride), free, atol=1e-6)
  # the nearest such kernel: what it removes is orthogonal to what it keeps
  assert abs(float(jnp.vdot(kernel - free, free))) < 1e-4 * float(jnp.vdot(kernel, kernel))


@pytest.mark.parametrize("checkerboard_free", [False, True])
@pytest.mark.parametrize("stride", [2, 4, 5, 8])
def test_upsampler_is_flax_conv_transpose_with_the_same_parameters(stride, checkerboard_free):
  with jax.enable_x64(True):  # float64: the two forms agree to rounding
    rng = np.random.default_rng(stride)
    x = jnp.asarray(rng.standard_normal((2, 9, 6)), jnp.float64)
    ours = Upsampler(4, stride, checkerboard_free)
    params = ours.init(jax.random.PRNGKey(stride), x)["params"]
    theirs = nn.ConvTranspose(4, (2 * stride,), strides=(stride,), padding="VALID")
    flax_params = theirs.init(jax.random.PRNGKey(stride), x)["params"]
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, flax_params)
    params = {"kernel": jnp.asarray(rng.standard_normal((2 * stride, 6, 4))),
              "bias": jnp.asarray(rng.standard_normal(4))}

    def reference(p, x):
      kernel = checkerboard_free_kernel(p["kernel"], stride) if checkerboard_free else p["kernel"]
      return theirs.apply({"params": dict(p, kernel=kernel)}, x)

    ours_fn = lambda p, x: ours.apply({"params": p}, x)
    np.testing.assert_allclose(ours_fn(params, x), reference(params, x), atol=1e-12)
    loss = lambda f: lambda p, x: jnp.sum(jnp.sin(f(p, x)))
    got, want = (jax.grad(loss(f), argnums=(0, 1))(params, x) for f in (ours_fn, reference))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_allclose(a, b, atol=1e-12)


def test_a_trained_looking_aid_whistles_in_silence_only_without_the_checkerboard_constraint():
  """Random weights and biases everywhere (as after training): the plain transposed convs turn
  the steady activations of silence into a tone at sr / 6 (hop 6), the constrained ones do not,
  and the DC blocker removes the constant the network still adds."""
  silence = np.zeros(6000, np.float32)
  out = {}
  for free in (False, True):
    cfg = dataclasses.replace(TINY, checkerboard_free=free, dc_block=free)
    params = _randomise(init_seanet(jax.random.PRNGKey(0), cfg), 3)
    out[free] = np.asarray(apply_seanet(params, cfg, silence))[3000:4000]  # past the DC transient, far from the ends
  assert _periodic_part(out[False], TINY.hop) > 0.01
  assert _periodic_part(out[True], TINY.hop) < 1e-4 * _periodic_part(out[False], TINY.hop)
  assert abs(out[True].mean()) < 1e-3 * abs(out[False].mean())


def test_constrained_aid_maps_a_constant_to_a_constant_before_its_dc_blocker():
  cfg = dataclasses.replace(TINY, dc_block=False)
  params = _randomise(init_seanet(jax.random.PRNGKey(0), cfg), 4)
  y = np.asarray(apply_seanet(params, cfg, np.full(6000, 0.2, np.float32)))[2500:3500]
  assert np.ptp(y) < 1e-4 and abs(y.mean() - 0.2) > 1e-3  # constant, and not merely the input


def test_dc_blocker_matches_scipy_and_removes_an_offset():
  x = np.random.default_rng(0).standard_normal((2, 4000)).astype(np.float32) + 0.5
  y = np.asarray(dc_block(jnp.asarray(x)))
  b, a = [1, -1], [1, -DC_BLOCK_POLE]
  start = signal.lfilter_zi(b, a)[None] * x[:, :1]  # the steady state of the first sample
  np.testing.assert_allclose(y, signal.lfilter(b, a, x, axis=-1, zi=start)[0], atol=1e-4)
  assert abs(y[:, 2000:].mean()) < 0.02 < 0.5
  assert not np.any(dc_block(jnp.full(100, 0.3)))  # an offset from the start: no thump
  step = np.asarray(dc_block(jnp.concatenate([jnp.zeros(100), jnp.ones(3000)])))
  assert step[100] == 1.0 and abs(step[-1]) < 1e-5  # a later step's offset decays away


@pytest.mark.parametrize("causal", [False, True])
def test_receptive_field_bounds_what_one_output_sample_depends_on(causal):
  cfg = dataclasses.replace(SEANET_SIZES["small"], causal=causal, dc_block=False)  # DC: IIR
  params = _randomise(init_seanet(jax.random.PRNGKey(0), cfg), 5, scale=0.05)
  n = 3 * context_samples(cfg)
  t = n // 2
  out_t = lambda x: Seanet(cfg).apply({"params": params}, x)[t]
  reach = np.flatnonzero(np.asarray(jax.grad(out_t)(jnp.full(n, 0.01))))
  assert reach.max() - reach.min() + 1 <= receptive_field(cfg) <= context_samples(cfg)
  assert reach.max() - reach.min() + 1 > 0.9 * receptive_field(cfg)  # a bound, and a tight one


def test_a_recording_is_aided_as_if_silence_surrounded_it():
  """Without the added silence every conv's zero padding makes a transient at both ends."""
  params = _randomise(init_seanet(jax.random.PRNGKey(0), TINY), 3)
  silence = np.zeros(900, np.float32)
  transient = np.abs(np.asarray(apply_seanet(params, TINY, silence))).max()
  assert transient > 0.1
  # what is left is the DC blocker's settling on the added silence, down by SETTLED_DB
  left = np.abs(np.asarray(apply_to_recording(params, TINY, silence))).max()
  assert left < 10 ** (-SETTLED_DB / 20) * transient
  x = _noise(3000, batch=2)
  inside = slice(context_samples(TINY), 3000 - context_samples(TINY))  # beyond both ends' reach
  np.testing.assert_allclose(np.asarray(apply_to_recording(params, TINY, x))[:, inside],
                             np.asarray(apply_seanet(params, TINY, x))[:, inside], atol=1e-4)
  with pytest.raises(ParameterError, match=r"x: expected shape .* got shape \(\)"):
    apply_to_recording(params, TINY, np.float32(1))


def test_recordings_of_similar_length_share_one_compilation_and_keep_their_output(monkeypatch):
  from dal_widgets.aid import seanet
  params = _randomise(init_seanet(jax.random.PRNGKey(0), TINY), 3)
  quantum, pad = seanet.recording_quantum(TINY), context_samples(TINY)
  assert quantum % TINY.hop == 0 and quantum >= seanet.RECORDING_QUANTUM
  plain = {}
  for n in (2 * quantum - 2 * pad - 500, 2 * quantum - 2 * pad, 2 * quantum - 2 * pad + 1):
    x = _noise(n, seed=n)
    # the recording with exactly `pad` of silence after it: the extra silence changes nothing
    plain[n] = (x, np.asarray(apply_seanet(params, TINY, np.pad(x, (pad, pad))))[pad:pad + n])
  run_lengths = []
  run = seanet.apply_seanet

  def counted(p, c, x, cond=None):
    run_lengths.append(x.shape[-1])
    return run(p, c, x, cond)

  monkeypatch.setattr(seanet, "apply_seanet", counted)
  for n, (x, expected) in plain.items():
    y = np.asarray(apply_to_recording(params, TINY, x))
    assert y.shape == (n,)
    np.testing.assert_allclose(y, expected, atol=CAUSAL_ATOL)
  assert run_lengths == [2 * quantum, 2 * quantum, 3 * quantum]  # one more sample: next quantum


def test_time_channels_audio_is_refused_not_run_as_a_batch_of_short_rows():
  # (time, channels) from audio.load(mono=False): as [batch, time] it is thousands of two-sample
  # rows; apply_to_recording pads each row by its context, which ran a 16000 x 2 array out of
  # memory and killed the process
  params = init_seanet(jax.random.PRNGKey(0), TINY)
  stereo = np.zeros((600, 2), np.float32)
  for run in (apply_seanet, apply_to_recording):
    with pytest.raises(ParameterError, match=r"x: shape \(600, 2\).*x\.T"):
      run(params, TINY, stereo)
    assert run(params, TINY, stereo.T).shape == (2, 600)


def test_dc_blocker_refuses_an_unstable_pole_and_integer_input():
  x = jnp.asarray(np.random.default_rng(6).standard_normal(2000), jnp.float32)
  for pole in (1.0, 1.5, float("nan"), "0.995"):  # 1.5 and nan gave NaN output, 1.0 no high-pass
    with pytest.raises(ParameterError, match="pole: expected a number in"):
      dc_block(x, pole)
    with pytest.raises(ParameterError, match="pole: expected a number in"):
      settle_samples(pole)
  with pytest.raises(ParameterError, match="x: expected a float array"):
    dc_block(jnp.arange(10))  # int32: the pole was truncated to 0, leaving a plain difference
  assert settle_samples(0.0) == 1
