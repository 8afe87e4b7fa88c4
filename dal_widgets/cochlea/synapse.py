"""SYN: the three-class IHC synapse of CARFAC v3 (Lyon, Schonberger, Slaney et al. 2024,
"CARFAC v3: a Cochlear Model with Synaptic Detail"; google/carfac).

The receptor potential drives a sigmoidal transmitter release for three fibre classes (high,
medium and low spontaneous rate); each class has a transmitter reservoir that depletes and refills.
The NAP is the fibre-weighted firing rate relative to the healthy spontaneous rate.
"""
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from dal_widgets.pytree import pytree_dataclass

IHCS_PER_CHANNEL = 10  # inner hair cells represented by one channel (google/carfac default)


@dataclasses.dataclass(frozen=True)
class SynParams:
  """Synapse parameters (google/carfac IhcSynParams defaults)."""
  healthy_n_fibers: tuple = (50 * IHCS_PER_CHANNEL, 35 * IHCS_PER_CHANNEL, 25 * IHCS_PER_CHANNEL)
  spont_rates_hz: tuple = (50.0, 6.0, 1.0)  # spontaneous rates of the three classes
  sat_rate_hz: float = 200.0  # saturated firing rate
  sat_reservoir: float = 0.2  # reservoir level at saturation
  v_width: float = 0.02  # sigmoid width, receptor-potential units
  tau_lpf_s: float = 80e-6  # firing-probability smoothing
  reservoir_tau_s: float = 0.02  # reservoir refill time constant
  agc_weight: float = 1.2 / 22050 / IHCS_PER_CHANNEL  # per fibre, per sample at 22050 Hz


@pytree_dataclass
class SynCoeffs:
  """Designed synapse coefficients; the class axis comes first (class-major [3, n_ch] layout keeps
  every per-sample operation elementwise over channels, so XLA fuses it)."""
  n_fibers: jnp.ndarray  # [3, n_ch] fibres per class and channel (synaptopathy lowers it)
  v_halfs: jnp.ndarray  # [3, 1] sigmoid midpoints
  v_widths: jnp.ndarray  # [3, 1]
  a1: jnp.ndarray  # reservoir feedback gain, shape []
  a2: jnp.ndarray  # release -> firing probability per sample, shape []
  agc_weights: jnp.ndarray  # [3, 1] fibre-rate weights of the NAP
  spont_p: jnp.ndarray  # [3, 1] spontaneous firing probability per sample
  spont_sub: jnp.ndarray  # [] healthy spontaneous NAP, subtracted so the NAP rests at 0
  res_init: jnp.ndarray  # [3, 1] resting reservoir level
  res_coeff: jnp.ndarray  # []
  lpf_coeff: jnp.ndarray  # []


@pytree_dataclass
class SynState:
  """Synapse state, each shape [3, n_ch]."""
  reservoirs: jnp.ndarray
  lpf: jnp.ndarray


def design_synapse(params: SynParams, sr: float, n_ch: int, dtype=jnp.float32) -> SynCoeffs:
  """Designs the synapse so a 50%-duty saturating sigmoid gives `sat_rate_hz` and rest gives spont."""
  p_sat = params.sat_rate_hz / sr
  p_spont = np.asarray(params.spont_rates_hz, np.float64) / sr
  q_sat = 1 - params.sat_reservoir
  r_sat = 0.5 * params.sat_reservoir
  a1 = q_sat / r_sat
  a2 = p_sat / r_sat
  r_rest = p_spont / a2
  q_rest = r_rest * a1
  s_rest = r_rest / (1 - q_rest)
  v_widths = np.full(3, params.v_width)
  v_halfs = np.log((1 - s_rest) / s_rest) * v_widths
  spont_p = a2 * (1 - q_rest) * s_rest
  agc_weights = np.full(3, sr * params.agc_weight)
  healthy = np.asarray(params.healthy_n_fibers, np.float64)
  f = lambda v: jnp.asarray(v, dtype)
  col = lambda v: f(np.reshape(v, (-1, 1)))
  return SynCoeffs(
      n_fibers=f(np.tile(healthy[:, None], (1, n_ch))), v_halfs=col(v_halfs), v_widths=col(v_widths),
      a1=f(a1), a2=f(a2), agc_weights=col(agc_weights), spont_p=col(spont_p),
      spont_sub=f(np.dot(healthy * spont_p, agc_weights)), res_init=col(q_rest),
      res_coeff=f(1 - math.exp(-1 / (params.reservoir_tau_s * sr))),
      lpf_coeff=f(1 - math.exp(-1 / (params.tau_lpf_s * sr))))


def init_synapse_state(coeffs: SynCoeffs, n_ch: int) -> SynState:
  """Resting synapse state."""
  ones = jnp.ones((1, n_ch), coeffs.a1.dtype)
  return SynState(reservoirs=ones * coeffs.res_init, lpf=ones * coeffs.spont_p)


def synapse_step(v_recep, coeffs: SynCoeffs, state: SynState):
  """One sample of the synapse.

  Args:
    v_recep: receptor potential relative to rest, shape [n_ch].
  Returns:
    (nap, state): NAP shape [n_ch] (0 at healthy spontaneous rate); the new state.
  """
  release = jax.nn.sigmoid((v_recep - coeffs.v_halfs) / coeffs.v_widths)
  r = (1 - state.reservoirs) * release
  lpf = state.lpf + coeffs.lpf_coeff * (coeffs.a2 * r - state.lpf)
  reservoirs = state.reservoirs + coeffs.res_coeff * (coeffs.a1 * r - state.reservoirs)
  weighted = coeffs.n_fibers * lpf * coeffs.agc_weights
  nap = weighted[0] + weighted[1] + weighted[2] - coeffs.spont_sub  # explicit: fuses, unlike a dot
  return nap, SynState(reservoirs=reservoirs, lpf=lpf)
