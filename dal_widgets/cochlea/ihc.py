"""IHC: the two-capacitor inner-hair-cell model of CARFAC v2 (Lyon 2017 §18.3; google/carfac).

A sigmoidal detection nonlinearity turns BM motion into a receptor conductance; two capacitors
model fast (receptor potential) and slower (transmitter) depletion; one low-pass smooths the output.
"""
import dataclasses
import math

import jax.numpy as jnp

from dal_widgets.pytree import pytree_dataclass

DETECT_OFFSET = 0.175  # low-end tail offset: 20% DC response threshold at 0.1 (Lyon 2017 §18.3)


@dataclasses.dataclass(frozen=True)
class IhcParams:
  """Time constants of the two-cap IHC, seconds (google/carfac IhcTwoCapParams defaults)."""
  tau_lpf_s: float = 80e-6  # output smoothing
  tau1_out_s: float = 0.5e-3  # receptor-capacitor depletion
  tau1_in_s: float = 0.2e-3  # receptor-capacitor recovery
  tau2_out_s: float = 1e-3  # transmitter depletion
  tau2_in_s: float = 10e-3  # transmitter recovery


@pytree_dataclass
class IhcCoeffs:
  """Designed IHC scalars (shape [])."""
  lpf_coeff: jnp.ndarray
  out1_rate: jnp.ndarray
  in1_rate: jnp.ndarray
  out2_rate: jnp.ndarray
  in2_rate: jnp.ndarray
  output_gain: jnp.ndarray
  rest_output: jnp.ndarray
  rest_cap1: jnp.ndarray
  rest_cap2: jnp.ndarray


@pytree_dataclass
class IhcState:
  """IHC state, each shape [n_ch]."""
  cap1: jnp.ndarray
  cap2: jnp.ndarray
  lpf: jnp.ndarray


def ihc_detect(x):
  """Receptor conductance for BM displacement `x`, in about [0, 1.34]."""
  z = jnp.maximum(0.0, x + DETECT_OFFSET)
  z2 = z * z
  return z2 * z / (z2 * z + z2 + 0.1)


def design_ihc(params: IhcParams, sr: float, dtype=jnp.float32) -> IhcCoeffs:
  """Designs the two-cap IHC for sample rate `sr` in Hz (float64 arithmetic)."""
  g1_max = _detect_py(10.0)  # receptor conductance at a very high level
  r1_min = 1 / g1_max
  c1 = params.tau1_out_s * g1_max
  r1 = params.tau1_in_s / c1
  rest_current1 = 1 / (r1 + 1 / _detect_py(0.0))
  rest_cap1 = 1 - rest_current1 * r1
  g2_max = r1 / (r1_min + r1)  # receptor voltage divider at saturation
  r2_min = 1 / g2_max
  c2 = params.tau2_out_s * g2_max
  r2 = params.tau2_in_s / c2
  saturation_current2 = 1 / (2 * r2_min + r2)  # 50% duty cycle at saturation
  rest_current2 = 1 / (r2 + 1 / (r1 * rest_current1))
  rest_cap2 = 1 - rest_current2 * r2
  f = lambda v: jnp.asarray(v, dtype)
  return IhcCoeffs(
      lpf_coeff=f(1 - math.exp(-1 / (params.tau_lpf_s * sr))),
      out1_rate=f(r1_min / (params.tau1_out_s * sr)), in1_rate=f(1 / (params.tau1_in_s * sr)),
      out2_rate=f(r2_min / (params.tau2_out_s * sr)), in2_rate=f(1 / (params.tau2_in_s * sr)),
      output_gain=f(1 / (saturation_current2 - rest_current2)),
      rest_output=f(rest_current2 / (saturation_current2 - rest_current2)),
      rest_cap1=f(rest_cap1), rest_cap2=f(rest_cap2))


def _detect_py(x: float) -> float:
  """ihc_detect in Python floats, for design."""
  z = max(0.0, x + DETECT_OFFSET)
  return z**3 / (z**3 + z**2 + 0.1)


def init_ihc_state(coeffs: IhcCoeffs, n_ch: int) -> IhcState:
  """Resting IHC state."""
  ones = jnp.ones((n_ch,), coeffs.lpf_coeff.dtype)
  return IhcState(cap1=coeffs.rest_cap1 * ones, cap2=coeffs.rest_cap2 * ones,
                  lpf=coeffs.rest_output * ones)


def ihc_step(bm, coeffs: IhcCoeffs, state: IhcState):
  """One sample of the IHC.

  Args:
    bm: BM displacement, shape [n_ch].
  Returns:
    (ihc_out, v_recep, state): the v2 NAP (rest level removed), the receptor potential relative
    to rest (input of the v3 synapse), both shape [n_ch]; the new state.
  """
  receptor_current = ihc_detect(bm) * state.cap1
  cap1 = state.cap1 - receptor_current * coeffs.out1_rate + (1 - state.cap1) * coeffs.in1_rate
  transmitter = (1 - cap1) * state.cap2
  cap2 = state.cap2 - transmitter * coeffs.out2_rate + (1 - state.cap2) * coeffs.in2_rate
  lpf = state.lpf + coeffs.lpf_coeff * (transmitter * coeffs.output_gain - state.lpf)
  return lpf - coeffs.rest_output, coeffs.rest_cap1 - cap1, IhcState(cap1=cap1, cap2=cap2, lpf=lpf)
