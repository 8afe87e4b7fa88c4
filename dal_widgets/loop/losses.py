"""The DAL loss: an impaired cochlea hearing the aided sound should match a normal one hearing
clean speech.

    y = SEANet(noisy)
    loss = w_nap * L(c(NAP_imp(y)), c(NAP_norm(clean)))
         + w_sai * L(c(SAI_imp(y)), c(SAI_norm(clean)))
         + w_level * mean_clips(((level_db_spl(y) - ceiling)+ / 10 dB)^2)
         + w_spectral * mean_sizes(L1(log|STFT(y)|, log|STFT(clean)|))

L is L1 or L2 (mean over all values), c the compression of LossConfig. The target side (normal
ear, clean speech) carries no gradient: `targets` computes it once per batch, outside
`value_and_grad`. An ear is the tuple (hypers, coeffs, weights, state) of a designed CARFAC;
hypers are static Python, so jit the callers with the ears closed over or with hypers static.
Every function here is pure and jit-able; shapes are checked in Python (they are static).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from dal_widgets.aid.seanet import apply_seanet
from dal_widgets.audio.calibration import FULL_SCALE_RMS_DB_SPL
from dal_widgets.cochlea import carfac as cf
from dal_widgets.cochlea import sai as sai_lib
from dal_widgets.errors import ParameterError

POWER_EPS = 1e-3  # keeps the power-law slope finite at NAP 0 (0.3 * 1e-3**-0.7 ~ 38)
RMS_EPS = 1e-10  # digital power floor of the level estimate (-100 dB re full scale: silence)
LEVEL_SCALE_DB = 10.0  # 10 dB over the ceiling costs 1 (times w_level)
SPECTRAL_EPS = 1e-5  # magnitude floor of the log spectra (~ -100 dB re full scale)


class Target(NamedTuple):
  """What the normal ear hears in the clean speech, already compressed (no gradient).

  Attributes:
    nap: Compressed NAP, shape [batch, n_samp, n_ch].
    sai: Compressed SAI frames, shape [batch, n_frames, n_ch, sai_width]; None when w_sai == 0.
  """
  nap: jnp.ndarray
  sai: jnp.ndarray | None


def compress(v, loss_cfg):
  """Compression of NAP / SAI values before comparing (LossConfig.compress); any shape."""
  if loss_cfg.compress == "none":
    return v
  v = jnp.maximum(v, 0.0)  # v3 NAPs dip a little below 0 (~-4e-4); rates are >= 0
  if loss_cfg.compress == "log":
    return jnp.log1p(v / loss_cfg.compress_scale)
  return (v + POWER_EPS) ** loss_cfg.compress_power - POWER_EPS ** loss_cfg.compress_power


def distance(a, b, kind: str):
  """Mean absolute ("l1") or mean squared ("l2") difference over all elements (a scalar)."""
  diff = a - b
  return jnp.mean(jnp.abs(diff)) if kind == "l1" else jnp.mean(jnp.square(diff))


def ear_nap(x, ear):
  """NAP of a batch of waveforms through one ear, each from the ear's state.

  Args:
    x: Waveforms, shape [batch, n_samp], digital units (rms 1.0 = 100 dB SPL).
    ear: (hypers, coeffs, weights, state) of a designed CARFAC.

  Returns:
    NAP, shape [batch, n_samp, n_ch].

  Raises:
    ParameterError: x not 2-D (a single waveform needs a batch axis: x[None]).
  """
  if jnp.ndim(x) != 2:
    raise ParameterError(f"x: expected waveforms of shape [batch, n_samp], got shape "
                         f"{jnp.shape(x)}" + ("; add a batch axis with x[None]" if jnp.ndim(x) == 1
                                              else ""))
  hypers, coeffs, weights, state = ear
  return jax.vmap(lambda xi: cf.run(xi, hypers, coeffs, weights, state, bm=False)[0].nap)(x)


def sai_params(loss_cfg, hypers) -> sai_lib.SaiParams:
  """The SAI design the loss uses for an ear designed with `hypers`."""
  return sai_lib.sai_params_for(hypers.sr, hypers.n_ch, frame_ms=loss_cfg.sai_frame_ms,
                                width_ms=loss_cfg.sai_width_ms)


def ear_sai(nap, params: sai_lib.SaiParams):
  """SAI frames of a batch of NAPs [batch, n_samp, n_ch] -> [batch, n_frames, n_ch, width]."""
  return jax.vmap(lambda n: sai_lib.sai_frames(n, params))(nap)


def targets(clean, normal, loss_cfg) -> Target:
  """The normal ear's compressed NAP (and SAI) of the clean speech, without gradient.

  Args:
    clean: Clean speech, shape [batch, n_samp], digital units.
    normal: The normal ear (hypers, coeffs, weights, state).
    loss_cfg: LossConfig.

  Returns:
    Target.
  """
  nap = jax.lax.stop_gradient(ear_nap(clean, normal))
  sai = None
  if loss_cfg.w_sai > 0:
    sai = compress(ear_sai(nap, sai_params(loss_cfg, normal[0])), loss_cfg)
  return Target(nap=compress(nap, loss_cfg), sai=sai)


def level_db_spl(y):
  """rms level of each waveform of y [batch, n_samp], dB SPL, shape [batch] (smooth at 0)."""
  power = jnp.mean(jnp.square(y), axis=-1) + RMS_EPS
  return FULL_SCALE_RMS_DB_SPL + 10.0 * jnp.log10(power)


def level_penalty(y, ceiling_db_spl: float):
  """Mean over clips of ((level - ceiling)+ / LEVEL_SCALE_DB)^2: 0 at or below the ceiling."""
  excess = jax.nn.relu(level_db_spl(y) - ceiling_db_spl)
  return jnp.mean(jnp.square(excess / LEVEL_SCALE_DB))


def _log_stft(x, fft_size: int):
  """log |STFT| with a periodic Hann window, hop fft_size / 4: [batch, n_frames, fft_size/2+1]."""
  hop = fft_size // 4
  n_frames = 1 + (x.shape[-1] - fft_size) // hop
  index = jnp.arange(n_frames)[:, None] * hop + jnp.arange(fft_size)[None, :]
  window = 0.5 - 0.5 * jnp.cos(2 * jnp.pi * jnp.arange(fft_size) / fft_size)
  return jnp.log(jnp.abs(jnp.fft.rfft(x[..., index] * window, axis=-1)) + SPECTRAL_EPS)


def spectral_distance(y, clean, fft_sizes, *, ignore_fixed_gain: bool = False):
  """Multi-resolution L1 distance of log STFT magnitudes, averaged over the sizes that fit.

  With ignore_fixed_gain, each frequency bin's mean log-magnitude difference over time is removed
  first: a fixed per-frequency gain (what a prescription does) costs nothing, while noise and
  time-varying distortion of the spectro-temporal envelope (what STOI measures) still do.
  """
  y, clean = jnp.asarray(y), jnp.asarray(clean)  # numpy cannot be indexed by traced frames
  usable = [n for n in fft_sizes if n <= y.shape[-1]]
  if not usable:
    return jnp.zeros((), y.dtype)
  total = jnp.zeros((), y.dtype)
  for n in usable:
    diff = _log_stft(y, n) - _log_stft(clean, n)
    if ignore_fixed_gain:
      diff = diff - jnp.mean(diff, axis=-2, keepdims=True)
    total = total + jnp.mean(jnp.abs(diff))
  return total / len(usable)


def loss_of_aided(aided, clean, target: Target, impaired, loss_cfg):
  """The DAL loss of a given aided waveform (no network involved).

  With aided = noisy this is the "no hearing aid" loss.

  Args:
    aided: Waveforms the impaired ear hears, shape [batch, n_samp], digital units.
    clean: Clean speech, shape [batch, n_samp] (only used by the spectral term).
    target: From `targets(clean, normal, loss_cfg)`.
    impaired: The impaired ear (hypers, coeffs, weights, state).
    loss_cfg: LossConfig (static).

  Returns:
    (loss, aux): scalar loss and a dict of its unweighted terms "nap", "sai", "level",
    "spectral" (0.0 for terms whose weight is 0) and "level_db_spl" (mean output level).

  Raises:
    ParameterError: aided, clean and the target's clean speech of different shapes (a target of
      one clip was broadcast over a whole batch), or aided not 2-D.
  """
  shapes = {"aided": jnp.shape(aided), "clean": jnp.shape(clean),
            "target (its clean speech)": jnp.shape(target.nap)[:2]}  # static under jit
  if len(set(shapes.values())) > 1:
    raise ParameterError("aided, clean, target: expected one shape [batch, n_samp], got "
                         + ", ".join(f"{name} {shape}" for name, shape in shapes.items()))
  nap = ear_nap(aided, impaired)
  zero = jnp.zeros((), aided.dtype)
  terms = {"nap": distance(compress(nap, loss_cfg), target.nap, loss_cfg.kind),
           "sai": zero, "level": zero, "spectral": zero}
  if loss_cfg.w_sai > 0:
    sai = compress(ear_sai(nap, sai_params(loss_cfg, impaired[0])), loss_cfg)
    terms["sai"] = distance(sai, target.sai, loss_cfg.kind)
  if loss_cfg.w_level > 0:
    terms["level"] = level_penalty(aided, loss_cfg.level_ceiling_db_spl)
  if loss_cfg.w_spectral > 0:
    terms["spectral"] = spectral_distance(aided, clean, loss_cfg.spectral_fft_sizes,
                                          ignore_fixed_gain=loss_cfg.spectral_ignore_fixed_gain)
  loss = (loss_cfg.w_nap * terms["nap"] + loss_cfg.w_sai * terms["sai"]
          + loss_cfg.w_level * terms["level"] + loss_cfg.w_spectral * terms["spectral"])
  aux = dict(terms, level_db_spl=jnp.mean(level_db_spl(aided)))
  return loss, aux


def dal_loss(params, batch, *, model_cfg, loss_cfg, normal, impaired, target=None,
             condition=None):
  """The DAL loss of SEANet parameters on a batch, for `jax.value_and_grad(has_aux=True)`.

  Args:
    params: SEANet parameters (from aid.seanet.init_seanet or training).
    batch: Object with `noisy` and `clean`, each shape [batch, n_samp] (data.Batch).
    model_cfg: SeanetConfig (static).
    loss_cfg: LossConfig (static).
    normal, impaired: The two ears, each (hypers, coeffs, weights, state).
    target: Precomputed `targets(batch.clean, normal, loss_cfg)`; computed here (without
      gradient) when None.
    condition: FiLM vector [film_dim] for a conditioned model (model_cfg.film_dim > 0).

  Returns:
    (loss, aux) as `loss_of_aided`.
  """
  if target is None:
    target = targets(batch.clean, normal, loss_cfg)
  if condition is not None:
    condition = jnp.broadcast_to(condition, (batch.noisy.shape[0], jnp.shape(condition)[-1]))
  aided = apply_seanet(params, model_cfg, batch.noisy, condition)
  return loss_of_aided(aided, batch.clean, target, impaired, loss_cfg)
