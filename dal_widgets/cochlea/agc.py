"""AGC: CARFAC's four-stage automatic gain control (Lyon 2017 ch. 19; google/carfac).

The NAP, decimated by 8, 16, 32 and 64, is smoothed in time (time constants 2, 8, 32, 128 ms) and
across channels (a 3- or 5-tap FIR, designed by moment matching); each slower stage feeds the
faster one with gain 2. Stage 1's output reduces the CAR undamping: the fast-acting compression.
"""
import dataclasses
import math

import jax.numpy as jnp
import numpy as np

from dal_widgets.errors import ParameterError
from dal_widgets.pytree import pytree_dataclass, static_field

MAX_SPATIAL_ITERATIONS = 16  # design gives up beyond this many FIR passes (google/carfac)


@dataclasses.dataclass(frozen=True)
class AgcParams:
  """AGC knobs (google/carfac AgcParams defaults)."""
  time_constants_s: tuple = (0.002, 0.008, 0.032, 0.128)  # one per stage
  decimation: tuple = (8, 2, 2, 2)  # decimation of each stage relative to the previous one
  stage_gain: float = 2.0  # gain from each stage into the next faster one
  agc1_scales: tuple = tuple(math.sqrt(2) ** k for k in range(4))  # spread toward apex, channels
  agc2_scales: tuple = tuple(1.65 * math.sqrt(2) ** k for k in range(4))  # spread toward base


@dataclasses.dataclass(frozen=True)
class AgcHypers:
  """Static AGC structure: drives compilation."""
  decimation: tuple  # per stage
  n_taps: tuple  # 3 or 5 per stage
  iterations: tuple  # FIR passes per stage


@pytree_dataclass
class AgcCoeffs:
  """Designed AGC arrays."""
  epsilon: jnp.ndarray  # [n_stages] fraction of new input taken per update
  fir: jnp.ndarray  # [n_stages, 3] spatial FIR (outer taps are used twice for 5 taps)
  detect_scale: jnp.ndarray  # [] reciprocal of the total DC gain of the stages
  stage_gain: jnp.ndarray  # []


@pytree_dataclass
class AgcState:
  """AGC state. `memory` [n_stages, n_ch] holds each stage's output (stage 0 drives the CAR)."""
  memory: jnp.ndarray
  accum: jnp.ndarray  # [n_stages, n_ch] input sums of the stages awaiting decimation
  n_updates: jnp.ndarray  # [] int32, stage-1 updates so far, modulo the slowest stage's period
  phase: int = static_field(default=0)  # samples into the current block of decimation[0]


def _fir_for(n_taps: int, variance: float, mean: float):
  """Spatial FIR [outer_left, centre, outer_right] matching mean and variance; (fir, ok)."""
  if n_taps == 3:
    a = (variance + mean * mean - mean) / 2
    b = (variance + mean * mean + mean) / 2
    fir = (a, 1 - a - b, b)
    return fir, fir[1] >= 0.25
  # 5 taps [a/2, a/2, 1-a-b, b/2, b/2]: second moment of the outer pairs is 2.5x larger.
  a = ((variance + mean * mean) * 2 / 5 - mean * 2 / 3) / 2
  b = ((variance + mean * mean) * 2 / 5 + mean * 2 / 3) / 2
  fir = (a / 2, 1 - a - b, b / 2)
  return fir, fir[1] >= 0.15


def design_agc(params: AgcParams, sr: float, dtype=jnp.float32):
  """Designs the AGC for sample rate `sr` (Hz). Returns (AgcHypers, AgcCoeffs)."""
  n_stages = len(params.time_constants_s)
  epsilons, firs, taps, iters = [], [], [], []
  decim = 1
  for stage in range(n_stages):
    tau = params.time_constants_s[stage]
    decim *= params.decimation[stage]
    epsilons.append(1 - math.exp(-decim / (tau * sr)))
    n_smooth = tau * sr / decim  # smoothing passes within one time constant
    mean = (params.agc2_scales[stage] - params.agc1_scales[stage]) / n_smooth
    variance = (params.agc1_scales[stage] ** 2 + params.agc2_scales[stage] ** 2) / n_smooth
    # Try 3 taps once, then 5 taps once, then 5 taps with more passes until the centre tap is
    # large enough to keep the smoother positive (the 16 kHz design needs 5 taps).
    for n_taps, n_iter in [(3, 1)] + [(5, k) for k in range(1, MAX_SPATIAL_ITERATIONS + 1)]:
      fir, ok = _fir_for(n_taps, variance / n_iter, mean / n_iter)
      if ok:
        break
    else:
      raise ParameterError(f"AGC stage {stage}: no spatial smoother fits at sr={sr} Hz")
    firs.append(fir)
    taps.append(n_taps)
    iters.append(n_iter)
  total_dc_gain = sum(params.stage_gain**k for k in range(n_stages))
  hypers = AgcHypers(decimation=tuple(params.decimation), n_taps=tuple(taps),
                     iterations=tuple(iters))
  coeffs = AgcCoeffs(epsilon=jnp.asarray(epsilons, dtype), fir=jnp.asarray(np.array(firs), dtype),
                     detect_scale=jnp.asarray(1 / total_dc_gain, dtype),
                     stage_gain=jnp.asarray(params.stage_gain, dtype))
  return hypers, coeffs


def init_agc_state(n_stages: int, n_ch: int, dtype=jnp.float32) -> AgcState:
  zeros = jnp.zeros((n_stages, n_ch), dtype)
  return AgcState(memory=zeros, accum=zeros, n_updates=jnp.zeros((), jnp.int32), phase=0)


def _shift(s, k: int):
  """s shifted by k channels with the reference's edge rule: |k| = 1 repeats the edge value;
  |k| = 2 fills with the two edge values ([s0, s1, s0, ...] / [..., s_last, s_last-1])."""
  if k == 1:
    return jnp.concatenate([s[..., :1], s[..., :-1]], axis=-1)
  if k == -1:
    return jnp.concatenate([s[..., 1:], s[..., -1:]], axis=-1)
  if k == 2:
    return jnp.concatenate([s[..., :2], s[..., :-2]], axis=-1)
  return jnp.concatenate([s[..., 2:], s[..., -1:], s[..., -2:-1]], axis=-1)


def spatial_smooth(s, fir, n_taps: int, iterations: int):
  """Smooths `s` (shape [..., n_ch]) across channels with a 3- or 5-tap FIR, `iterations` times."""
  for _ in range(iterations):
    if n_taps == 3:
      s = fir[0] * _shift(s, 1) + fir[1] * s + fir[2] * _shift(s, -1)
    else:
      s = fir[0] * (_shift(s, 2) + _shift(s, 1)) + fir[1] * s + fir[2] * (_shift(s, -1) + _shift(s, -2))
  return s


def agc_update(stage1_input, coeffs: AgcCoeffs, hypers: AgcHypers, state: AgcState) -> AgcState:
  """One update of stage 1 (every decimation[0] samples) and of the slower stages that are due.

  Args:
    stage1_input: decimated detector input of stage 1, shape [n_ch] (mean NAP * detect_scale).
  Returns:
    The new state (phase unchanged; the caller owns the within-block phase).
  """
  n_stages = len(hypers.decimation)
  count = (state.n_updates + 1) % math.prod(hypers.decimation[1:])  # stays small in long runs
  # Decimated inputs reaching each stage, and whether that stage updates now.
  inputs, due, accum = [stage1_input], [True], [state.accum[0]]
  period = 1
  for stage in range(1, n_stages):
    period *= hypers.decimation[stage]
    summed = state.accum[stage] + inputs[-1]
    is_due = jnp.logical_and(due[-1], count % period == 0)
    inputs.append(summed / hypers.decimation[stage])
    accum.append(jnp.where(is_due, 0.0, jnp.where(due[-1], summed, state.accum[stage])))
    due.append(is_due)
  memory = [None] * n_stages
  for stage in reversed(range(n_stages)):
    target = inputs[stage]
    if stage + 1 < n_stages:
      target = target + coeffs.stage_gain * memory[stage + 1]
    old = state.memory[stage]
    new = spatial_smooth(old + coeffs.epsilon[stage] * (target - old), coeffs.fir[stage],
                         hypers.n_taps[stage], hypers.iterations[stage])
    memory[stage] = new if stage == 0 else jnp.where(due[stage], new, old)
  return AgcState(memory=jnp.stack(memory), accum=jnp.stack(accum), n_updates=count,
                  phase=state.phase)
