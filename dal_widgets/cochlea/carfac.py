"""CARFAC in JAX: design from parameters, then run a waveform to NAP and BM (Lyon 2017, ch. 15-19).

Four-part split of the model's data (after google/carfac's JAX port):
- `CarfacParams`  user knobs in physical units (frozen, hashable);
- `CarfacHypers`  static structure (ints, bools, tuples): drives compilation;
- `CarfacCoeffs`  designed arrays; `CarfacWeights` the per-channel knobs a fit or a gradient may
  change (`ohc_health`, `ihc_gain`); `CarfacState` everything that evolves in time.
Changing weights, coefficients, state or the input never recompiles a jitted `run`.

Speed: the within-sample ripple down the cascade is solved with cumulative products and sums
(car.ripple), and the time loop is a `lax.scan` over blocks of `decimation[0]` (8) samples, each
block unrolled and closed by one AGC update, so there are no conditionals per sample. On the CPU,
`run` calls the same model compiled as one C loop instead (cochlea/native.py, about 4x faster
forward and 7x for the gradient); this JAX loop is what runs on GPUs and the tests' oracle.
"""
import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from dal_widgets.cochlea import agc as agc_lib
from dal_widgets.cochlea import car as car_lib
from dal_widgets.cochlea import ihc as ihc_lib
from dal_widgets.cochlea import native as native_lib
from dal_widgets.cochlea import synapse as syn_lib
from dal_widgets.errors import ParameterError
from dal_widgets.finite import check_not_pcm, has_nonfinite, overflows
from dal_widgets.pytree import pytree_dataclass

SR_MIN_HZ, SR_MAX_HZ = 8000.0, 48000.0  # design range we test (channel counts 65 @16k .. 84 @48k)
# Loop shape per backend (measured with bench/bench_cochlea.py; see bench/RESULTS.md):
# samples unrolled per inner-loop step, and whether blocks are rematerialised in the backward pass.
LOOP_SETTINGS = {"cpu": (4, True), "gpu": (8, False)}
# XLA compiler options per backend for jitting CARFAC (pass to jax.jit via `compiler_options()`).
# CPU: 512-bit vectors for the per-sample kernels (measured on the 2-core AMD EPYC CI kind with
# AVX-512: forward 1 s 50 -> 43 ms, gradient 358 -> 326 ms, batch 8 329 -> 299 ms, bit-identical
# output; on CPUs without AVX-512 LLVM falls back to the widest legal vectors).
COMPILER_OPTIONS = {"cpu": {"xla_cpu_prefer_vector_width": 512}}
STYLES = {"v2": "two_cap", "two_cap": "two_cap", "v3": "two_cap_with_syn",
          "two_cap_with_syn": "two_cap_with_syn"}


@dataclasses.dataclass(frozen=True)
class CarfacParams:
  """User knobs. `style`: "v3" (two-cap IHC + 3-class synapse, NAP = synapse output) or "v2"."""
  sr: float = 22050.0  # sample rate, Hz
  style: str = "v3"
  car: car_lib.CarParams = car_lib.CarParams()
  agc: agc_lib.AgcParams = agc_lib.AgcParams()
  ihc: ihc_lib.IhcParams = ihc_lib.IhcParams()
  syn: syn_lib.SynParams = syn_lib.SynParams()


@dataclasses.dataclass(frozen=True)
class CarfacHypers:
  """Static structure of a designed CARFAC (hashable by value)."""
  sr: float
  n_ch: int
  use_synapse: bool
  agc: agc_lib.AgcHypers


@pytree_dataclass
class CarfacCoeffs:
  car: car_lib.CarCoeffs
  ihc: ihc_lib.IhcCoeffs
  agc: agc_lib.AgcCoeffs
  syn: Optional[syn_lib.SynCoeffs]
  pole_hz: jnp.ndarray  # [n_ch] pole frequencies, Hz, highest first (nominal CFs)


@pytree_dataclass
class CarfacWeights:
  """Per-channel hearing knobs, shape [n_ch], 1.0 = healthy, in [0, 1]."""
  ohc_health: jnp.ndarray  # scales the AGC-controlled undamping: outer hair cell function
  ihc_gain: jnp.ndarray  # scales BM drive into the inner hair cell: IHC / synaptic sensitivity


@pytree_dataclass
class CarfacState:
  car: car_lib.CarState
  ihc: ihc_lib.IhcState
  agc: agc_lib.AgcState
  syn: Optional[syn_lib.SynState]


class CarfacOutput(NamedTuple):
  """Outputs of `run`. nap, bm: [n_samp, n_ch]; agc: [n_updates, n_ch] stage-1 AGC output after
  each AGC update in this call (compression: undamping is (1 - agc) * ohc_health)."""
  nap: jnp.ndarray
  bm: jnp.ndarray
  agc: jnp.ndarray


class Carfac(NamedTuple):
  """A designed model: unpack as `hypers, coeffs, weights, state = design_carfac(params)`."""
  hypers: CarfacHypers
  coeffs: CarfacCoeffs
  weights: CarfacWeights
  state: CarfacState


def compiler_options(backend: Optional[str] = None) -> dict:
  """XLA options for `jax.jit(..., compiler_options=...)` of code that runs CARFAC on `backend`
  (default: JAX's default backend). Options never change results, only speed."""
  return dict(COMPILER_OPTIONS.get(backend or jax.default_backend(), {}))


def design_carfac(params: CarfacParams = CarfacParams(), *, dtype=jnp.float32) -> Carfac:
  """Designs CARFAC for `params` (plain Python; float64 design arithmetic). Its arrays are
  concrete even when called inside `jax.jit`, so a design can be cached and reused anywhere.

  Args:
    params: CarfacParams.
    dtype: float32 or float64, the dtype of the designed arrays and of the runs.

  Raises:
    ParameterError: params not CarfacParams, unknown style, a sample rate outside
      8000..48000 Hz, or another dtype (float16 overflows to NaN within a few ms).
  """
  if not isinstance(params, CarfacParams):
    raise ParameterError(f"params must be CarfacParams, got {type(params).__name__}")
  try:
    dtype_ok = np.dtype(dtype) in (np.float32, np.float64)
  except TypeError:
    dtype_ok = False
  if not dtype_ok:
    raise ParameterError(f"dtype must be float32 or float64, got {dtype!r}")
  with jax.ensure_compile_time_eval():
    return _design_carfac(params, dtype)


def _design_carfac(params: CarfacParams, dtype) -> Carfac:
  if params.style not in STYLES:
    raise ParameterError(f"style must be one of {sorted(STYLES)}, got {params.style!r}")
  if isinstance(params.sr, bool) or not isinstance(params.sr, (int, float, np.integer, np.floating)):
    raise ParameterError(f"sr must be a number of Hz, got {params.sr!r}")
  sr = float(params.sr)
  if not SR_MIN_HZ <= sr <= SR_MAX_HZ:
    raise ParameterError(f"sr must be within {SR_MIN_HZ:.0f}..{SR_MAX_HZ:.0f} Hz, got {params.sr!r}")
  pole_hz = car_lib.pole_frequencies(params.car, sr)
  n_ch = len(pole_hz)
  use_synapse = STYLES[params.style] == "two_cap_with_syn"
  agc_hypers, agc_coeffs = agc_lib.design_agc(params.agc, sr, dtype)
  car = car_lib.design_car(params.car, sr, pole_hz, dtype)
  ihc = ihc_lib.design_ihc(params.ihc, sr, dtype)
  syn = syn_lib.design_synapse(params.syn, sr, n_ch, dtype) if use_synapse else None
  hypers = CarfacHypers(sr=sr, n_ch=n_ch, use_synapse=use_synapse, agc=agc_hypers)
  coeffs = CarfacCoeffs(car=car, ihc=ihc, agc=agc_coeffs, syn=syn,
                        pole_hz=jnp.asarray(pole_hz, dtype))
  ones = jnp.ones((n_ch,), dtype)
  weights = CarfacWeights(ohc_health=ones, ihc_gain=ones)
  return Carfac(hypers, coeffs, weights, init_state(hypers, coeffs))


def init_state(hypers: CarfacHypers, coeffs: CarfacCoeffs) -> CarfacState:
  """Quiet state at rest (healthy undamping until the first AGC update, as in the reference)."""
  dtype = coeffs.car.r1.dtype
  syn = syn_lib.init_synapse_state(coeffs.syn, hypers.n_ch) if hypers.use_synapse else None
  return CarfacState(car=car_lib.init_car_state(coeffs.car),
                     ihc=ihc_lib.init_ihc_state(coeffs.ihc, hypers.n_ch),
                     agc=agc_lib.init_agc_state(len(hypers.agc.decimation), hypers.n_ch, dtype),
                     syn=syn)


def make_weights(hypers: CarfacHypers, *, ohc_health=1.0, ihc_gain=1.0, dtype=jnp.float32):
  """CarfacWeights from scalars or [n_ch] arrays; traced values too (e.g. `jax.grad` with respect
  to `ohc_health`). Concrete values are validated: numbers in [0, 1]."""
  def full(name, v):
    if not hasattr(v, "dtype"):
      try:
        v = np.asarray(v)
      except ValueError as err:  # a ragged list
        raise ParameterError(f"{name} must be a number or an array of numbers in [0, 1], "
                             f"got {v!r}") from err
    if np.dtype(v.dtype).kind not in "biuf":
      raise ParameterError(f"{name} must be numbers in [0, 1], got {v!r}")
    v = jnp.asarray(v, dtype)
    if v.ndim == 0:
      v = jnp.broadcast_to(v, (hypers.n_ch,))
    if v.shape != (hypers.n_ch,):
      raise ParameterError(f"{name} must be a scalar or shape ({hypers.n_ch},), got shape {v.shape}")
    return v
  weights = CarfacWeights(ohc_health=full("ohc_health", ohc_health), ihc_gain=full("ihc_gain", ihc_gain))
  check_weights(weights)
  return weights


def check_weights(weights: CarfacWeights) -> None:
  """Raises ParameterError if concrete weights leave [0, 1] or are not finite (skipped under jit)."""
  for name in ("ohc_health", "ihc_gain"):
    v = getattr(weights, name)
    if isinstance(v, jax.core.Tracer):
      continue
    v = np.asarray(v)
    if not np.all(np.isfinite(v)) or v.min() < 0 or v.max() > 1:
      raise ParameterError(f"{name} must be finite and within [0, 1], got min {v.min():.3g}, "
                           f"max {v.max():.3g}")


def check_parts(hypers: CarfacHypers, coeffs: CarfacCoeffs, weights: CarfacWeights,
                state: CarfacState) -> None:
  """Raises ParameterError when coefficients, weights or state do not have the design's
  channels (e.g. parts of two designs mixed); per waveform, so it also holds inside vmap."""
  parts = {"coeffs": coeffs.car.r1, "weights.ohc_health": weights.ohc_health,
           "weights.ihc_gain": weights.ihc_gain, "state": state.car.z1}
  for name, v in parts.items():
    if np.shape(v) != (hypers.n_ch,):
      raise ParameterError(f"{name} has shape {np.shape(v)}, the design (hypers: sr {hypers.sr:g} "
                           f"Hz) has {hypers.n_ch} channels; use parts of one design_carfac call")


def check_input(x, hypers: Optional[CarfacHypers] = None, sr: Optional[float] = None,
                dtype=None) -> None:
  """Raises ParameterError for input CARFAC cannot run: not 1-D, empty, not real numbers,
  integer PCM counts (int16 beyond +-1), NaN/inf or beyond the range of the float `dtype` it is
  run in (when concrete), or a sample rate `sr` different from the design rate."""
  ndim = np.ndim(x)
  if ndim != 1:
    raise ParameterError(f"x must be a mono waveform of shape (n_samp,), got shape {np.shape(x)}; "
                         "batch with jax.vmap")
  if np.shape(x)[0] == 0:
    raise ParameterError("x is empty (0 samples)")
  x_dtype = np.dtype(x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype)
  if x_dtype.kind not in "biuf":
    raise ParameterError(f"x must hold real numbers (samples), got dtype {x_dtype.name}")
  check_not_pcm(x)
  if sr is not None and hypers is not None and float(sr) != hypers.sr:
    raise ParameterError(f"sr={sr} Hz differs from the design rate {hypers.sr} Hz; resample first")
  if has_nonfinite(x):
    raise ParameterError("x contains NaN or inf samples")
  wider = dtype is not None and x_dtype.kind == "f" and x_dtype.itemsize > np.dtype(dtype).itemsize
  if wider and overflows(x, dtype):  # e.g. float64 samples run in float32
    raise ParameterError(f"x holds samples beyond the {np.dtype(dtype).name} range (CARFAC units: "
                         "rms 1.0 is 100 dB SPL, see dal_widgets.audio.calibration)")


def _sample(x_t, ramp_t, coeffs: CarfacCoeffs, weights: CarfacWeights, car, ihc, syn, linear):
  """One sample: CAR -> IHC -> (synapse). Returns (nap, bm, car, ihc, syn)."""
  bm, car = car_lib.car_step(x_t, coeffs.car, car, ramp_t.g, ramp_t.zb, ramp_t.gain_to,
                             ramp_t.inv_gain_before, linear=linear)
  ihc_out, v_recep, ihc = ihc_lib.ihc_step(bm * weights.ihc_gain, coeffs.ihc, ihc)
  if syn is None:
    return ihc_out, bm, car, ihc, None
  nap, syn = syn_lib.synapse_step(v_recep, coeffs.syn, syn)
  return nap, bm, car, ihc, syn


def _close_loop(coeffs: CarfacCoeffs, weights: CarfacWeights, car, agc_memory, decim: int):
  """Sets the ramps that take the CAR to the damping demanded by AGC stage 1 over `decim` samples."""
  undamping = (1 - agc_memory[0]) * weights.ohc_health
  dzb = (coeffs.car.zr * undamping - car.zb) / decim
  dg = (car_lib.stage_gain(coeffs.car, undamping) - car.g) / decim
  return dataclasses.replace(car, dzb=dzb, dg=dg)


def _run_partial(x, hypers, coeffs, weights, state: CarfacState, linear):
  """Runs fewer samples than complete the current AGC block (or exactly complete it)."""
  decim = hypers.agc.decimation[0]
  def step(carry, inputs):
    car, ihc, syn = carry
    nap, bm, car, ihc, syn = _sample(*inputs, coeffs, weights, car, ihc, syn, linear)
    return (car, ihc, syn), (nap, bm)
  ramp = car_lib.ramp(state.car, x.shape[0])
  (car, ihc, syn), (nap, bm) = jax.lax.scan(step, (state.car, state.ihc, state.syn), (x, ramp))
  agc = state.agc
  accum0 = agc.accum[0] + coeffs.agc.detect_scale * jnp.sum(nap, axis=0)
  phase = agc.phase + x.shape[0]
  updates = jnp.zeros((0, hypers.n_ch), nap.dtype)
  if phase == decim:
    agc = agc_lib.agc_update(accum0 / decim, coeffs.agc, hypers.agc,
                             dataclasses.replace(agc, accum=agc.accum.at[0].set(0.0)))
    car = _close_loop(coeffs, weights, car, agc.memory, decim)
    updates, phase = agc.memory[:1], 0
  else:
    agc = dataclasses.replace(agc, accum=agc.accum.at[0].set(accum0))
  agc = dataclasses.replace(agc, phase=phase)
  return CarfacOutput(nap, bm, updates), CarfacState(car=car, ihc=ihc, agc=agc, syn=syn)


def _run_blocks(x_blocks, hypers, coeffs, weights, state: CarfacState, linear):
  """Runs whole AGC blocks, x_blocks shape [n_blocks, decim]; state must be at phase 0."""
  decim = hypers.agc.decimation[0]
  unroll, remat = LOOP_SETTINGS.get(jax.default_backend(), LOOP_SETTINGS["cpu"])
  def block(carry, xb):
    car, ihc, syn, agc = carry
    def sample(c, inputs):
      nap, bm, car, ihc, syn = _sample(*inputs, coeffs, weights, *c, linear)
      return (car, ihc, syn), (nap, bm)
    (car, ihc, syn), (naps, bms) = jax.lax.scan(
        sample, (car, ihc, syn), (xb, car_lib.ramp(car, decim)), unroll=unroll)
    # Barrier: materialise the block's outputs once. Without it XLA re-fuses the whole unrolled
    # IHC chain into every consumer of the AGC input (measured: about 2x slower on CPU).
    nap_block, bm_block, car, ihc, syn = jax.lax.optimization_barrier(
        (naps, bms, car, ihc, syn))
    # The block's detector sum joins what accum[0] holds (0 for states made by `run`; a state
    # built by hand may carry some), as in _run_partial and the native kernel.
    stage1_input = (agc.accum[0] + coeffs.agc.detect_scale * jnp.sum(nap_block, axis=0)) / decim
    agc = dataclasses.replace(agc, accum=agc.accum.at[0].set(0.0))
    agc = agc_lib.agc_update(stage1_input, coeffs.agc, hypers.agc, agc)
    car = _close_loop(coeffs, weights, car, agc.memory, decim)
    return (car, ihc, syn, agc), (nap_block, bm_block, agc.memory[0])
  carry = (state.car, state.ihc, state.syn, state.agc)
  # Rematerialise each block in the backward pass: gradient memory is then the per-block state,
  # not every intermediate of every sample (1 s at 22050 Hz: 19 MB instead of 290 MB).
  (car, ihc, syn, agc), (nap, bm, agc1) = jax.lax.scan(jax.checkpoint(block) if remat else block,
                                                       carry, x_blocks)
  n_ch = hypers.n_ch
  out = CarfacOutput(nap.reshape(-1, n_ch), bm.reshape(-1, n_ch), agc1)
  return out, CarfacState(car=car, ihc=ihc, agc=agc, syn=syn)


def run(x, hypers: CarfacHypers, coeffs: CarfacCoeffs, weights: CarfacWeights,
        state: CarfacState, *, linear: bool = False, native: Optional[bool] = None,
        bm: bool = True):
  """Runs CARFAC on a mono waveform; pure and jit-able with `hypers` static.

  Successive calls with the returned state give the result of one call on the joined input:
  bitwise on the CPU kernel; in the JAX loop up to float rounding that its feedback amplifies
  (about 1e-5 of the NAP's peak in float32, 1e-14 in float64). Batch with `jax.vmap` over `x` and
  `state`.

  Args:
    x: waveform, shape [n_samp], at `hypers.sr`; CARFAC units (amplitude 1e-4 ~ 20-30 dB SPL,
      see dal_widgets.audio.calibration).
    hypers, coeffs, weights, state: from `design_carfac` (weights may be replaced, e.g. by
      `make_weights(hypers, ohc_health=...)`; state from a previous call to continue a stream).
    linear: bypass the OHC velocity nonlinearity (AGC still acts).
    native: run the compiled CPU kernel (cochlea/native.py): None = when JAX's default backend is
      the CPU, the kernel builds and it runs this design (`native.unsupported`); False = the
      pure-JAX loop (also differentiates coefficients).
    bm: also return the BM output. False: CarfacOutput.bm is None, and the CPU kernel does not
      write it (half the output memory; a batch of 8 one-second clips 5% faster).
  Returns:
    (CarfacOutput, CarfacState): nap and bm of shape [n_samp, n_ch], channel 0 the highest CF.
  Raises:
    ParameterError: x not 1-D, empty, non-finite or integer PCM counts; parts of another design;
      weights outside [0, 1] (checks on concrete values).
  """
  check_input(x, hypers, dtype=coeffs.car.r1.dtype)
  check_parts(hypers, coeffs, weights, state)
  check_weights(weights)
  x = jnp.asarray(x, coeffs.car.r1.dtype)
  if native is None:
    native = native_lib.default(x.dtype) and native_lib.unsupported(hypers, coeffs) is None
  if native:
    out, state = native_lib.run(x, hypers, coeffs, weights, state, linear, bm)
    return CarfacOutput(*out), state
  decim = hypers.agc.decimation[0]
  n = x.shape[0]
  head = min((decim - state.agc.phase) % decim, n)
  n_blocks = (n - head) // decim
  outputs = []
  if head:
    out, state = _run_partial(x[:head], hypers, coeffs, weights, state, linear)
    outputs.append(out)
  if n_blocks:
    body = x[head:head + n_blocks * decim].reshape(n_blocks, decim)
    out, state = _run_blocks(body, hypers, coeffs, weights, state, linear)
    outputs.append(out)
  if head + n_blocks * decim < n:
    out, state = _run_partial(x[head + n_blocks * decim:], hypers, coeffs, weights, state, linear)
    outputs.append(out)
  out = outputs[0] if len(outputs) == 1 else CarfacOutput(
      *(jnp.concatenate(parts) for parts in zip(*outputs)))
  return (out if bm else out._replace(bm=None)), state  # unused, the loop's BM is compiled away
