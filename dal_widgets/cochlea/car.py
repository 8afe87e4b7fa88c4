"""CAR: the cascade of asymmetric resonators (Lyon 2017, "Human and Machine Hearing", ch. 16-17).

Each channel is a two-pole two-zero stage in coupled form; its pole radius r is modulated by the
outer-hair-cell (OHC) velocity nonlinearity and by the AGC feedback ("undamping"). Channel 0 has the
highest characteristic frequency; the signal ripples from channel 0 toward the apex within one sample.
"""
import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from dal_widgets.pytree import pytree_dataclass


@dataclasses.dataclass(frozen=True)
class CarParams:
  """User knobs of the filter cascade (defaults: Lyon 2017 / google/carfac v2)."""
  velocity_scale: float = 0.1  # OHC nonlinearity input scale (Lyon 2017 §17.2)
  v_offset: float = 0.04  # offset gives the nonlinearity a quadratic part
  min_zeta: float = 0.10  # minimum damping factor in mid-frequency channels
  max_zeta: float = 0.35  # maximum damping factor (fully damped, no OHC undamping)
  first_pole_theta: float = 0.85 * math.pi  # highest pole angle, radians per sample
  zero_ratio: float = math.sqrt(2)  # zero frequency / pole frequency
  high_f_damping_compression: float = 0.5  # 0..1, compresses zeta at high theta
  erb_per_step: float = 0.5  # channel spacing in Glasberg & Moore ERBs
  min_pole_hz: float = 30.0  # lowest pole frequency, Hz
  erb_break_freq_hz: float = 165.3  # Greenwood map break frequency, Hz
  erb_q: float = 1000 / (24.7 * 4.37)  # Glasberg & Moore 1990 high-CF quality factor
  ac_corner_hz: float = 20.0  # high-pass corner of the BM output AC coupler, Hz


@pytree_dataclass
class CarCoeffs:
  """Designed per-channel CAR coefficients, each shape [n_ch] (scalars shape [])."""
  r1: jnp.ndarray  # pole radius at maximum damping
  a0: jnp.ndarray  # cos(theta)
  c0: jnp.ndarray  # sin(theta)
  h: jnp.ndarray  # zero placement: c0 * (zero_ratio**2 - 1)
  zr: jnp.ndarray  # radius change per unit of relative undamping
  ga: jnp.ndarray  # stage gain g(u) = ga*u**2 + gb*u + gc, a quadratic fit in undamping u
  gb: jnp.ndarray
  gc: jnp.ndarray
  g0: jnp.ndarray  # exact unity-DC-gain stage gain at full undamping (initial state)
  velocity_scale: jnp.ndarray
  v_offset: jnp.ndarray
  ac_coeff: jnp.ndarray  # one-pole AC-coupler coefficient


@pytree_dataclass
class CarState:
  """CAR state, each shape [n_ch]."""
  z1: jnp.ndarray
  z2: jnp.ndarray
  za: jnp.ndarray  # previous z2, for the OHC "velocity"
  zb: jnp.ndarray  # current undamping term of the pole radius
  dzb: jnp.ndarray  # per-sample ramp of zb toward the AGC target
  g: jnp.ndarray  # current stage gain
  dg: jnp.ndarray  # per-sample ramp of g
  ac_coupler: jnp.ndarray  # low-passed output removed by the AC coupler


def erb_hz(cf_hz, params: CarParams):
  """Equivalent rectangular bandwidth in Hz (Glasberg & Moore 1990, Greenwood break)."""
  return (params.erb_break_freq_hz + cf_hz) / params.erb_q


def pole_frequencies(params: CarParams, sr: float) -> np.ndarray:
  """Pole frequencies in Hz, shape [n_ch], highest first, spaced erb_per_step ERBs apart.

  Rounded to float32 as the reference implementation does (google/carfac design_carfac).
  """
  poles = []
  pole_hz = params.first_pole_theta * sr / (2 * math.pi)
  while pole_hz > params.min_pole_hz:
    poles.append(pole_hz)
    pole_hz = pole_hz - params.erb_per_step * erb_hz(pole_hz, params)
  return np.asarray(poles, np.float32)


def _stage_g_exact(r1, zr, a0, c0, h, undamping):
  """Stage gain giving unity DC gain for a relative undamping (Lyon 2017 §17.4)."""
  r = r1 + zr * undamping
  return (1 - 2 * r * a0 + r**2) / (1 - 2 * r * a0 + h * r * c0 + r**2)


def design_car(params: CarParams, sr: float, pole_hz: np.ndarray, dtype=jnp.float32) -> CarCoeffs:
  """Designs the cascade for poles `pole_hz` (Hz, shape [n_ch]) at sample rate `sr` (Hz).

  Design arithmetic is float64 numpy; the coefficients are returned as `dtype` arrays.
  """
  pole_hz = np.asarray(pole_hz, np.float64)
  theta = pole_hz * (2 * math.pi / sr)
  c0, a0 = np.sin(theta), np.cos(theta)
  x = theta / math.pi
  zr_max = math.pi * (x - params.high_f_damping_compression * x**3)
  r1 = 1 - zr_max * params.max_zeta
  # Minimum damping is pulled 25% of the way toward ERB/CF, where channels are spaced wider.
  min_zetas = params.min_zeta + 0.25 * (erb_hz(pole_hz, params) / pole_hz - params.min_zeta)
  zr = zr_max * (params.max_zeta - min_zetas)
  h = c0 * (params.zero_ratio**2 - 1)
  g_at = lambda u: _stage_g_exact(r1, zr, a0, c0, h, u)
  g_0, g_half, g_1 = g_at(0.0), g_at(0.5), g_at(1.0)
  f32 = lambda v: jnp.asarray(v, dtype)
  return CarCoeffs(
      r1=f32(r1), a0=f32(a0), c0=f32(c0), h=f32(h), zr=f32(zr),
      ga=f32(2 * (g_0 + g_1 - 2 * g_half)), gb=f32(4 * g_half - 3 * g_0 - g_1), gc=f32(g_0),
      g0=f32(g_1), velocity_scale=f32(params.velocity_scale), v_offset=f32(params.v_offset),
      ac_coeff=f32(2 * math.pi * params.ac_corner_hz / sr))


def init_car_state(coeffs: CarCoeffs) -> CarState:
  """Quiet, fully undamped state (the reference's initial state, whatever the OHC health)."""
  zeros = jnp.zeros_like(coeffs.r1)
  return CarState(z1=zeros, z2=zeros, za=zeros, zb=coeffs.zr, dzb=zeros, g=coeffs.g0, dg=zeros,
                  ac_coupler=zeros)


def stage_gain(coeffs: CarCoeffs, undamping):
  """Stage gain for relative undamping `undamping` (shape [n_ch]), quadratic approximation."""
  return (coeffs.ga * undamping + coeffs.gb) * undamping + coeffs.gc


def ohc_nonlinearity(velocity, coeffs: CarCoeffs):
  """OHC velocity nonlinearity in (0, 1]: less undamping at high BM velocity (Lyon 2017 §17.2)."""
  return 1.0 / (1.0 + (velocity * coeffs.velocity_scale + coeffs.v_offset) ** 2)


def prefix_sum(v):
  """Inclusive cumulative sum over the last axis by log2(n) shifted adds (Hillis & Steele 1986).

  Unlike jnp.cumsum (a reduce-window on CPU), shifts and adds fuse with the elementwise work
  around them into one kernel, which is what makes the per-sample body cheap.
  """
  n = v.shape[-1]
  shift = 1
  while shift < n:
    pad = jnp.zeros(v.shape[:-1] + (shift,), v.dtype)
    v = v + jnp.concatenate([pad, v[..., :-shift]], axis=-1)
    shift *= 2
  return v


def prefix_product(v):
  """Inclusive cumulative product over the last axis (shifted multiplies, see prefix_sum)."""
  n = v.shape[-1]
  shift = 1
  while shift < n:
    pad = jnp.ones(v.shape[:-1] + (shift,), v.dtype)
    v = v * jnp.concatenate([pad, v[..., :-shift]], axis=-1)
    shift *= 2
  return v


@pytree_dataclass
class Ramp:
  """Per-sample stage gains and undamping for the next n samples, each shape [n, n_ch].

  Between AGC updates g and zb follow linear ramps that do not depend on the signal, so the
  cumulative gain products the ripple needs are computed once per block, not once per sample.
  """
  g: jnp.ndarray  # stage gain at each sample
  zb: jnp.ndarray  # undamping term at each sample
  gain_to: jnp.ndarray  # prod_{k<=c} g[k]: DC gain from the input to the output of channel c
  inv_gain_before: jnp.ndarray  # 1 / prod_{k<c} g[k]


def ramp(state: CarState, n: int) -> Ramp:
  """The ramps of g and zb over the next `n` samples (static n)."""
  steps = jnp.arange(1, n + 1, dtype=state.g.dtype)[:, None]
  g = state.g + steps * state.dg
  gain_to = prefix_product(g)
  return Ramp(g=g, zb=state.zb + steps * state.dzb, gain_to=gain_to, inv_gain_before=g / gain_to)


def ripple(x, zy, gain_to, inv_gain_before):
  """Runs the within-sample cascade: y[c] = g[c] * (y[c-1] + zy[c]), y[-1] = x.

  The recurrence is linear in the channel index, so it is solved in closed form instead of a
  serial loop over channels: y[c] = P[c] * (x + sum_{j<=c} zy[j] / P[j-1]), P[c] = prod_{k<=c} g[k].
  Rounding errors stay relative to the cascade's DC gain (P[c]/P[j] <= 1 since g <= 1).

  Args:
    x: input sample, shape [].
    zy: stage-local outputs h * z2, shape [n_ch].
    gain_to, inv_gain_before: P and 1 / P[c-1] (from `ramp`), shape [n_ch].
  Returns:
    (y, stage_inputs): both shape [n_ch]; stage_inputs[c] = y[c-1] with stage_inputs[0] = x.
  """
  y = gain_to * (x + prefix_sum(zy * inv_gain_before))
  stage_inputs = jnp.concatenate([jnp.reshape(x, (1,)), y[:-1]])
  return y, stage_inputs


def car_step(x, coeffs: CarCoeffs, state: CarState, g, zb, gain_to, inv_gain_before, *,
             linear: bool = False):
  """One sample through the cascade.

  Args:
    x: input sample, shape [] (scalar), CARFAC units.
    coeffs: designed coefficients.
    state: state before this sample (its g and zb are replaced by this sample's ramp values).
    g, zb, gain_to, inv_gain_before: this sample's row of `ramp(state, n)`, shape [n_ch].
    linear: skip the OHC nonlinearity (for tests of the linear filter).
  Returns:
    (bm, state): BM displacement after the AC coupler, shape [n_ch]; the new state.
  """
  nlf = 1.0 if linear else ohc_nonlinearity(state.z2 - state.za, coeffs)
  r = coeffs.r1 + zb * nlf
  z1 = r * (coeffs.a0 * state.z1 - coeffs.c0 * state.z2)
  z2 = r * (coeffs.c0 * state.z1 + coeffs.a0 * state.z2)
  y, stage_inputs = ripple(x, coeffs.h * z2, gain_to, inv_gain_before)
  bm = y - state.ac_coupler
  new_state = CarState(z1=z1 + stage_inputs, z2=z2, za=state.z2, zb=zb, dzb=state.dzb, g=g,
                       dg=state.dg, ac_coupler=state.ac_coupler + coeffs.ac_coeff * bm)
  return bm, new_state
