"""finite.has_nonfinite and the public functions that use it: concrete values are checked, also
when a function being traced closes over them; traced values are left to the eager call."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dal_widgets.aid.seanet import SeanetConfig, apply_seanet, init_seanet
from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import sai
from dal_widgets.errors import ParameterError
from dal_widgets.finite import has_nonfinite
from dal_widgets.loop import metrics

SR = 16000.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("kind", [list, np.asarray, jnp.asarray])
def test_nonfinite_values_are_found_in_lists_numpy_and_jax_arrays(kind, bad):
  assert has_nonfinite(kind([0.0, bad, 1.0]))
  assert not has_nonfinite(kind([0.0, 2.0, 1.0]))


def test_traced_values_are_not_checked_and_closed_over_constants_are():
  seen = []
  constant = jnp.asarray([1.0, np.nan])

  def f(x):
    seen.append(has_nonfinite(x))  # a tracer: unknown values
    seen.append(has_nonfinite(constant))  # a concrete array that the traced function closes over
    return x

  jax.jit(f)(jnp.zeros(3))
  assert seen == [False, True]


def test_seanet_sai_carfac_and_metrics_work_under_jit_on_closed_over_inputs():
  x = jnp.asarray(0.01 * np.random.default_rng(0).standard_normal(1600), jnp.float32)
  cfg = SeanetConfig(base_channels=4, strides=(2,), dilations=(1,))
  params = init_seanet(jax.random.PRNGKey(0), cfg)
  y = jax.jit(lambda p: apply_seanet(p, cfg, x))(params)
  np.testing.assert_allclose(np.asarray(y), np.asarray(apply_seanet(params, cfg, x)), atol=1e-6)

  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=SR, style="v3"))
  nap = cf.run(x, hypers, coeffs, weights, state)[0].nap
  nap_jit = jax.jit(lambda w: cf.run(x, hypers, coeffs, w, state)[0].nap)(weights)
  np.testing.assert_allclose(np.asarray(nap_jit), np.asarray(nap), atol=1e-6)

  params_sai = sai.sai_params_for(SR, hypers.n_ch)
  frames = jax.jit(lambda s: s * sai.sai_frames(nap, params_sai))(1.0)
  np.testing.assert_allclose(np.asarray(frames), np.asarray(sai.sai_frames(nap, params_sai)),
                             atol=1e-6)
  assert float(jax.jit(lambda s: s * metrics.nap_l1(nap, nap))(1.0)) == 0.0


def test_closed_over_nonfinite_inputs_raise_under_jit_too():
  x = jnp.asarray(np.r_[np.zeros(800), np.nan, np.zeros(799)], jnp.float32)
  cfg = SeanetConfig(base_channels=4, strides=(2,), dilations=(1,))
  params = init_seanet(jax.random.PRNGKey(0), cfg)
  with pytest.raises(ParameterError, match="finite"):
    jax.jit(lambda p: apply_seanet(p, cfg, x))(params)
  hypers, coeffs, weights, state = cf.design_carfac(cf.CarfacParams(sr=SR, style="v3"))
  with pytest.raises(ParameterError, match="NaN"):
    jax.jit(lambda w: cf.run(x, hypers, coeffs, w, state)[0].nap)(weights)
  nap = jnp.full((1600, hypers.n_ch), jnp.nan)
  with pytest.raises(ParameterError, match="finite"):
    jax.jit(lambda s: s * sai.sai_frames(nap, sai.sai_params_for(SR, hypers.n_ch)))(1.0)
  with pytest.raises(ParameterError, match="finite"):
    jax.jit(lambda s: s * metrics.nap_l1(nap, nap))(1.0)


def test_integer_pcm_is_refused_at_the_public_entries_and_small_integers_pass():
  # int16 counts read as digital units would be a 190 dB SPL sound (rms 1.0 is 100 dB SPL)
  from dal_widgets.aid.wdrc import master_hearing_aid
  from dal_widgets.audio.io import validate
  from dal_widgets.cochlea.designs import cochleagram
  from dal_widgets.hearing.presets import preset
  pcm = (3000 * np.sin(np.arange(1600) * 0.1)).astype(np.int16)
  cfg = SeanetConfig(base_channels=4, strides=(2,), dilations=(1,))
  params = init_seanet(jax.random.PRNGKey(0), cfg)
  for run in (lambda x: validate(x, SR), lambda x: cochleagram(x, SR),
              lambda x: master_hearing_aid(x, SR, preset("N3")),
              lambda x: apply_seanet(params, cfg, x)):
    with pytest.raises(ParameterError, match=r"x: expected float samples.*int16.*x / 32768"):
      run(pcm)
  impulse = np.zeros(1600, np.int64)
  impulse[0] = 1
  assert validate(impulse, SR)[0] == 1.0
  assert np.all(np.isfinite(cochleagram(impulse, SR).nap))
