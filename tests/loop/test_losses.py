"""DAL loss: identity start = no hearing aid, gradients, L1/L2, compression, SAI, level, spectra."""
import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_widgets.aid.seanet import SeanetConfig, init_seanet
from dal_widgets.audio import db_spl_to_rms
from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import designs, sai
from dal_widgets.errors import ParameterError
from dal_widgets.loop import losses
from dal_widgets.loop.config import DataConfig, LossConfig
from dal_widgets.loop.data import SpeechSource

SR = 16000
TINY = SeanetConfig(base_channels=4, strides=(2, 4))  # a few thousand parameters
DATA = DataConfig(clip_s=0.1, snr_db_range=(0.0, 0.0), noise_kinds=("white",), noise_probs=(1.0,))
LOSS = LossConfig(w_sai=0.5, w_level=1.0, w_spectral=0.1)  # every term on
SAME_PROGRAM_RTOL = 1e-5  # one float32 loss evaluated by two differently fused XLA programs


@pytest.fixture(scope="module")
def ears():
  normal = designs.designed(float(SR), "v3")
  impaired = normal._replace(weights=cf.make_weights(normal.hypers, ohc_health=0.5))
  return tuple(normal), tuple(impaired)


@pytest.fixture(scope="module")
def batch():
  return SpeechSource(DATA).make_batch(0, 2)


@pytest.fixture(scope="module")
def at_init(ears, batch):
  """(loss, aux), grads of the DAL loss at the identity start, and the unaided loss."""
  normal, impaired = ears
  params = init_seanet(jax.random.PRNGKey(0), TINY)

  @jax.jit
  def value_and_grad(params, batch):
    target = losses.targets(batch.clean, normal, LOSS)
    fn = partial(losses.dal_loss, model_cfg=TINY, loss_cfg=LOSS, normal=normal,
                 impaired=impaired, target=target)
    return jax.value_and_grad(fn, has_aux=True)(params, batch)

  @jax.jit
  def unaided(batch):
    target = losses.targets(batch.clean, normal, LOSS)
    return losses.loss_of_aided(batch.noisy, batch.clean, target, impaired, LOSS)

  return value_and_grad(params, batch), unaided(batch)


def test_loss_at_identity_start_equals_the_no_hearing_aid_loss(at_init):
  ((loss, aux), _), (unaided_loss, unaided_aux) = at_init
  assert float(loss) == pytest.approx(float(unaided_loss), rel=SAME_PROGRAM_RTOL)
  for term in ("nap", "sai", "level", "spectral"):
    assert float(aux[term]) == pytest.approx(float(unaided_aux[term]), rel=SAME_PROGRAM_RTOL,
                                             abs=1e-7)
  # the impaired ear hears the noisy speech differently from the normal ear hearing clean speech
  assert float(aux["nap"]) > 0.1 and float(aux["sai"]) > 0.1 and float(aux["spectral"]) > 0.1
  expected = (LOSS.w_nap * aux["nap"] + LOSS.w_sai * aux["sai"] + LOSS.w_level * aux["level"]
              + LOSS.w_spectral * aux["spectral"])
  assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_gradients_are_finite_and_reach_the_last_seanet_layer(at_init):
  (_, grads), _ = at_init
  leaves = jax.tree_util.tree_leaves(grads)
  assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
  last = grads["output_conv"]
  assert float(jnp.max(jnp.abs(last["kernel"]))) > 0
  assert float(jnp.abs(last["bias"][0])) > 0


def test_the_loss_jits_with_a_numpy_batch_closed_over(ears, batch, at_init):
  # a numpy batch from SpeechSource, captured by the jitted function instead of passed to it
  normal, impaired = ears
  params = init_seanet(jax.random.PRNGKey(0), TINY)
  loss = jax.jit(lambda params: losses.dal_loss(params, batch, model_cfg=TINY, loss_cfg=LOSS,
                                                normal=normal, impaired=impaired)[0])(params)
  (want, _), _ = at_init[0]
  assert float(loss) == pytest.approx(float(want), rel=SAME_PROGRAM_RTOL)


def test_targets_carry_no_gradient(ears, batch):
  normal, _ = ears
  grad = jax.jit(jax.grad(lambda clean: jnp.sum(losses.targets(clean, normal, LOSS).nap)))(
      jnp.asarray(batch.clean))
  assert float(jnp.max(jnp.abs(grad))) == 0.0


def test_l1_and_l2_distances_give_known_values():
  a, b = jnp.asarray([0.0, 2.0, 1.0]), jnp.asarray([1.0, 0.0, 1.0])
  assert float(losses.distance(a, b, "l1")) == pytest.approx(1.0)  # (1 + 2 + 0) / 3
  assert float(losses.distance(a, b, "l2")) == pytest.approx(5.0 / 3.0)  # (1 + 4 + 0) / 3
  assert float(losses.distance(a, a, "l1")) == 0.0


def test_compressions_known_values_and_clip_negative_naps():
  nap = jnp.asarray([-1e-3, 0.0, 0.1 * (np.e - 1.0), 1.0])
  log = losses.compress(nap, LossConfig(compress="log", compress_scale=0.1))
  np.testing.assert_allclose(log[:3], [0.0, 0.0, 1.0], atol=1e-6)
  power = losses.compress(nap, LossConfig(compress="power", compress_power=0.5))
  expected = np.sqrt(1.0 + losses.POWER_EPS) - np.sqrt(losses.POWER_EPS)
  np.testing.assert_allclose(power, [0.0, 0.0, power[2], expected], atol=1e-6)
  assert bool(jnp.all(jnp.diff(power) >= 0))
  np.testing.assert_array_equal(losses.compress(nap, LossConfig(compress="none")), nap)
  slope = jax.grad(lambda v: losses.compress(v, LossConfig(compress="power")))(0.0)
  assert np.isfinite(float(slope)) and float(slope) > 0


def test_sai_term_is_zero_for_equal_naps_and_grows_when_the_nap_changes():
  params = sai.sai_params_for(SR, 4, frame_ms=LOSS.sai_frame_ms, width_ms=LOSS.sai_width_ms)
  t = np.arange(2 * params.input_segment_width)
  pulses = (t % 80 == 0).astype(np.float32)  # a 200 Hz pulse train in every channel
  nap = jnp.asarray(np.tile(pulses[None, :, None], (1, 1, 4)))
  changed = jnp.asarray(np.tile(((t % 64) == 0).astype(np.float32)[None, :, None], (1, 1, 4)))
  image = losses.ear_sai(nap, params)
  assert image.shape == (1, 2, 4, params.sai_width)
  assert float(losses.distance(image, losses.ear_sai(nap, params), "l1")) == 0.0
  assert float(losses.distance(image, losses.ear_sai(changed, params), "l1")) > 1e-3


def test_level_regulariser_is_zero_below_the_ceiling_and_known_above():
  ceiling = 85.0
  tone = np.sin(2 * np.pi * 1000 * np.arange(SR // 10) / SR)
  at = lambda level: jnp.asarray(tone / np.sqrt(np.mean(tone ** 2)) * db_spl_to_rms(level))[None]
  assert float(losses.level_penalty(at(65.0), ceiling)) == 0.0
  assert float(losses.level_penalty(at(ceiling - 0.1), ceiling)) == 0.0
  # 10 dB over the ceiling costs (10 / LEVEL_SCALE_DB)^2 = 1
  assert float(losses.level_penalty(at(ceiling + 10.0), ceiling)) == pytest.approx(1.0, rel=1e-3)
  np.testing.assert_allclose(losses.level_db_spl(at(70.0)), [70.0], atol=1e-3)


def test_spectral_distance_is_zero_for_equal_signals_and_sees_a_gain():
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 2048)).astype(np.float32) * 0.02)
  distance = jax.jit(partial(losses.spectral_distance, fft_sizes=LOSS.spectral_fft_sizes))
  assert float(distance(x, x)) == 0.0
  # a 6 dB gain shifts every log magnitude by log(2)
  assert float(distance(2 * x, x)) == pytest.approx(np.log(2.0), rel=1e-3)


def test_sai_term_needs_a_nap_of_at_least_one_frame(ears):
  params = losses.sai_params(LOSS, ears[0][0])
  short = jnp.zeros((1, params.input_segment_width - 1, params.num_channels))
  with pytest.raises(ParameterError, match="input_segment_width"):
    losses.ear_sai(short, params)


@pytest.mark.parametrize("field, value, match", [
    ("kind", "l3", "kind"), ("compress", "cube", "compress"), ("w_sai", -1.0, "w_sai"),
    ("compress_power", 1.5, "compress_power"), ("spectral_fft_sizes", (4,), "spectral_fft_sizes")])
def test_bad_loss_config_raises(field, value, match):
  with pytest.raises(ParameterError, match=match):
    dataclasses.replace(LossConfig(), **{field: value})


def test_gain_free_spectral_term_ignores_fixed_gain_but_not_noise():
  from dal_widgets.loop.losses import spectral_distance
  rng = np.random.default_rng(7)
  clean = jnp.asarray(0.02 * rng.standard_normal((1, 4000)), jnp.float32)
  louder = 10.0 * clean
  noisy = clean + jnp.asarray(0.02 * rng.standard_normal((1, 4000)), jnp.float32)
  sizes = (128, 256)
  assert float(spectral_distance(louder, clean, sizes, ignore_fixed_gain=True)) < 1e-4
  assert float(spectral_distance(louder, clean, sizes)) > 2.0  # ln(10) per bin
  assert float(spectral_distance(noisy, clean, sizes, ignore_fixed_gain=True)) > 0.1


def test_a_target_of_other_clips_is_refused_not_broadcast_over_the_batch(ears, batch):
  normal, impaired = ears
  one_clip = losses.targets(batch.clean[:1], normal, LOSS)
  # a target of clip 0 was broadcast against both aided clips and gave a loss
  with pytest.raises(ParameterError, match=r"aided, clean, target: expected one shape.*"
                                           r"target \(its clean speech\) \(1, 1600\)"):
    losses.loss_of_aided(batch.noisy, batch.clean, one_clip, impaired, LOSS)
  with pytest.raises(ParameterError, match="aided, clean, target"):  # a jnp broadcast TypeError
    losses.loss_of_aided(batch.noisy[:1, :800], batch.clean[:1], one_clip, impaired, LOSS)
  with pytest.raises(ParameterError,
                     match=r"x: expected waveforms of shape \[batch, n_samp\].*x\[None\]"):
    losses.targets(batch.clean[0], normal, LOSS)
