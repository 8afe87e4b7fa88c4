"""CARFAC's CPU fast path: the model as one compiled C loop, called from JAX.

XLA:CPU runs CARFAC's per-sample work as dozens of tiny kernels and dispatch sets the pace
(bench/RESULTS.md). On the CPU `carfac.run` therefore calls native/carfac_kernel.c as a host
function inside the program (host_call.py; `jax.experimental.buffer_callback` where jaxlib lacks
the XLA FFI headers): the same model sample by sample (the ripple as a serial loop over
channels), with a hand-written adjoint under `jax.custom_vjp`, so `jit`, `vmap` and `grad` work
as before.
Gradients reach the input, `ohc_health`, `ihc_gain` and the initial state; asking for one with
respect to the designed coefficients raises ParameterError (run with `native=False` for those).

The C source is compiled on first use with the system C compiler into a per-user cache
(`DAL_NATIVE_CACHE`, default ~/.cache/dal_widgets) and loaded with ctypes; without a compiler the
pure-JAX path runs. `DAL_NATIVE=0` turns the fast path off.
"""
import ctypes
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import custom_derivatives
from jax.experimental import buffer_callback

from dal_widgets import cpu_cores, malloc_tuning
from dal_widgets.cochlea import host_call
from dal_widgets.cochlea import ihc as ihc_lib
from dal_widgets.errors import ParameterError

log = logging.getLogger(__name__)
malloc_tuning.execute_in_calling_thread()  # before JAX's CPU client exists, where possible

SOURCE = Path(__file__).with_name("native") / "carfac_kernel.c"
HOST_CALL_SOURCE = SOURCE.with_name("host_call.c")
FFI_HEADER = "xla/ffi/api/c_api.h"
HOST_HANDLER = "carfac"  # this module's handler name in host_call
MAX_STAGES = 8  # AGC stages the kernel supports (CARFAC has 4)
# Row layouts shared with the C source (prepended to it as #defines at build time).
COEF_ROWS = ("r1", "a0", "c0", "h", "zr", "ga", "gb", "gc", "ohc_health", "ihc_gain",
             "nf0", "nf1", "nf2")
STATE_ROWS = ("z1", "z2", "za", "zb", "g", "ac", "cap1", "cap2", "ilpf",
              "res0", "res1", "res2", "slpf0", "slpf1", "slpf2")
SCALARS = ("velocity_scale", "v_offset", "ac_coeff", "ihc_lpf", "out1_rate", "in1_rate",
           "out2_rate", "in2_rate", "output_gain", "rest_output", "rest_cap1",
           "v_half0", "v_half1", "v_half2", "v_width0", "v_width1", "v_width2", "a1", "a2",
           "agc_w0", "agc_w1", "agc_w2", "spont_sub", "res_coeff", "syn_lpf", "detect_scale",
           "stage_gain")
SEG = 64  # samples per gradient checkpoint of the adjoint
# Waveforms run in lockstep by one forward call: the ripple then runs across lanes in vector
# registers (16 float32 = one AVX-512 register) instead of one serial chain per waveform.
MAX_LANES = 16
# Rows are padded with zero channels to whole 32-byte vectors, so that no channel loop ends in a
# scalar remainder (measured, one float32 waveform: 71 -> 72 channels, 9.6 -> 7.6-8.3 ms per s).
VECTOR_BYTES = 32
# -O3 and fast math let the compiler vectorise the channel loops (exp included, via libmvec). Fast
# math only when compiling: linking with it would add crtfastmath (GCC < 13), which turns on
# flush-to-zero for the whole Python process.
CFLAGS = ("-O3", "-ffast-math", "-fPIC", "-std=c99")
LDFLAGS = ("-shared",)
ARCH_FLAGS = ("-march=native",)  # tuned for this CPU; the cache key includes the CPU's flags
_TYPES = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


def _defines() -> str:
  lines = [f"#define DETECT_OFFSET {ihc_lib.DETECT_OFFSET!r}", f"#define MAX_STAGES {MAX_STAGES}",
           f"#define MAX_LANES {MAX_LANES}", f"#define SEG {SEG}",
           f"#define N_STATE_ROWS {len(STATE_ROWS)}", f"#define N_COEF_ROWS {len(COEF_ROWS)}"]
  lines += [f"#define CO_{name.upper()} {i}" for i, name in enumerate(COEF_ROWS)]
  lines += [f"#define ROW_{name.upper()} {i}" for i, name in enumerate(STATE_ROWS)]
  lines += [f"#define SC_{name.upper()} {i}" for i, name in enumerate(SCALARS)]
  return "\n".join(lines) + "\n"


def _cache_dir() -> Path:
  root = os.environ.get("DAL_NATIVE_CACHE") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "dal_widgets")
  return Path(root)


def _compiler() -> str | None:
  for cc in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc", "gcc", "clang"):
    if cc and shutil.which(cc.split()[0]):
      return cc
  return None


def _ffi_include() -> str | None:
  """jaxlib's folder of XLA FFI headers, or None when it lacks them (then no host_call.c)."""
  try:
    include = jax.ffi.include_dir()
  except AttributeError:
    return None
  return include if (Path(include) / FFI_HEADER).is_file() else None


def _compile(cc: str, source: str, out: Path, arch: tuple) -> None:
  """Compiles the kernel twice (float32 and float64), and the FFI handler of host_call.py when
  jaxlib has its headers, into one shared library at `out`."""
  with tempfile.TemporaryDirectory() as tmp:
    src = Path(tmp) / "carfac_kernel.c"
    src.write_text(source)
    objs, jobs = [], []
    include = _ffi_include()
    if include:
      objs.append(str(Path(tmp) / "host_call.o"))
      cmd = [*cc.split(), *CFLAGS, "-c", "-I", include, str(HOST_CALL_SOURCE), "-o", objs[-1]]
      jobs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)))
    for real, exp, suffix in (("float", "expf", "f32"), ("double", "exp", "f64")):
      objs.append(str(Path(tmp) / f"kernel_{suffix}.o"))
      cmd = [*cc.split(), *CFLAGS, *arch, "-c", f"-DREAL={real}", f"-DEXP={exp}",
             f"-DSUFFIX={suffix}", str(src), "-o", objs[-1]]
      # both precisions at once: the one-time build takes half as long on two cores
      jobs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True)))
    for cmd, job in jobs:
      stdout, stderr = job.communicate()
      if job.returncode:
        raise subprocess.CalledProcessError(job.returncode, cmd, stdout, stderr)
    tmp_lib = out.with_name(f"{out.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    for libs in (["-lmvec", "-lm"], ["-lm"]):  # libmvec: glibc's vector exp
      res = subprocess.run([*cc.split(), *LDFLAGS, *objs, *libs, "-o", str(tmp_lib)],
                           capture_output=True, text=True)
      if res.returncode == 0:
        break
    else:
      raise RuntimeError(res.stderr)
    os.replace(tmp_lib, out)  # atomic: concurrent builders never see half a library


@functools.lru_cache(maxsize=1)
def library():
  """The compiled kernel (ctypes.CDLL), or None when disabled or it cannot be built."""
  if os.environ.get("DAL_NATIVE", "1") == "0":
    return None
  cc = _compiler()
  if cc is None:
    log.warning("dal_widgets: no C compiler found; CARFAC runs as pure JAX on the CPU (slower)")
    return None
  source = _defines() + SOURCE.read_text()
  include = _ffi_include()
  ffi = [HOST_CALL_SOURCE.read_text(), (Path(include) / FFI_HEADER).read_text()] if include else []
  key = hashlib.sha256("\0".join([source, *ffi, cc, *CFLAGS, *LDFLAGS, cpu_cores.cpu_signature()]).encode())
  key = key.hexdigest()
  out = _cache_dir() / f"carfac_kernel_{key[:16]}.so"
  try:
    if not out.exists():
      log.info("dal_widgets: building the CARFAC CPU kernel (once per machine) into %s", out)
      out.parent.mkdir(parents=True, exist_ok=True)
      try:
        _compile(cc, source, out, ARCH_FLAGS)
      except (subprocess.CalledProcessError, RuntimeError):
        _compile(cc, source, out, ())  # a compiler without -march=native
    lib = ctypes.CDLL(str(out))
  except (OSError, subprocess.CalledProcessError, RuntimeError) as err:
    detail = getattr(err, "stderr", "") or err
    log.warning("dal_widgets: building the CARFAC kernel failed (%s); using pure JAX", detail)
    return None
  ptr = ctypes.c_void_p
  for suffix in _TYPES.values():
    fwd = getattr(lib, f"carfac_forward_{suffix}")
    fwd.restype = ctypes.c_int
    fwd.argtypes = [ctypes.c_int] * 5 + [ptr] * 12
    adj = getattr(lib, f"carfac_adjoint_{suffix}")
    adj.restype = ctypes.c_int
    adj.argtypes = [ctypes.c_int] * 4 + [ptr] * 15
  malloc_tuning.tune()  # batches' large outputs: reuse freed memory, not fresh zeroed pages
  host_call.install(lib)  # programs calling the kernel can then be cached (host_call.py)
  return lib


def available(dtype=jnp.float32) -> bool:
  """Whether the kernel is built here and handles arrays of `dtype`."""
  return np.dtype(dtype) in _TYPES and library() is not None


def default(dtype=jnp.float32) -> bool:
  """Whether `carfac.run` takes the native path by default: JAX's default backend is the CPU
  and the kernel is available for `dtype`."""
  return jax.default_backend() == "cpu" and available(dtype)


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static shape of one native call (hashable: it keys the traced callbacks)."""
  n_samp: int
  n_ch: int
  use_synapse: bool
  linear: bool
  decimation: tuple
  n_taps: tuple
  iterations: tuple
  phase: int  # AGC phase at the start
  dtype: str
  bm: bool = True  # False: no BM output (an empty [0, n_ch] array), less memory and time

  @property
  def n_updates(self) -> int:
    return (self.phase + self.n_samp) // self.decimation[0]

  @property
  def n_pad(self) -> int:
    """Channels of one waveform's padded rows (gradient path)."""
    return _n_pad(self.n_ch, 1, np.dtype(self.dtype).itemsize)

  @property
  def checkpoint_size(self) -> int:
    n_stages = len(self.decimation)
    per = (len(STATE_ROWS) + 2 * n_stages + 2) * self.n_pad + 1
    return -(-self.n_samp // SEG) * per

  def ints(self) -> np.ndarray:
    return np.asarray([self.use_synapse, self.linear, *self.decimation, *self.n_taps,
                       *self.iterations], np.int32)


# Synapse coefficients the kernel reads as scalars: one per fibre class, or one in all.
SYN_SCALAR_SIZES = {"v_halfs": 3, "v_widths": 3, "agc_weights": 3, "a1": 1, "a2": 1,
                    "spont_sub": 1, "res_coeff": 1, "lpf_coeff": 1}


def unsupported(hypers, coeffs) -> str | None:
  """Why the kernel cannot run this design (None when it can): more AGC stages than MAX_STAGES,
  or per-channel synapse coefficients (designs have one value per fibre class)."""
  if len(hypers.agc.decimation) > MAX_STAGES:
    return f"{len(hypers.agc.decimation)} AGC stages (the kernel has room for {MAX_STAGES})"
  if hypers.use_synapse:
    for name, size in SYN_SCALAR_SIZES.items():
      if np.size(getattr(coeffs.syn, name)) != size:
        return (f"synapse coefficient {name} of shape {np.shape(getattr(coeffs.syn, name))} "
                f"(the kernel takes {size} value{'s' * (size > 1)}, one per fibre class)")
  return None


def pack(coeffs, weights, state, use_synapse: bool):
  """Arrays the kernel reads, from CARFAC pytrees (jnp, traceable).

  Returns (consts, weights [2, n_ch], state_rows [N_STATE_ROWS, n_ch], agc_rows
  [2 n_stages + 2, n_ch], count []): consts = (coef_rows [11, n_ch], scalars, agc_coeffs).
  """
  car, ihc, syn, agc = coeffs.car, coeffs.ihc, coeffs.syn, coeffs.agc
  dtype = car.r1.dtype
  n_ch = car.r1.shape[-1]
  zeros3 = jnp.zeros((3, n_ch), dtype)
  nf = syn.n_fibers if use_synapse else zeros3
  coef = jnp.stack([car.r1, car.a0, car.c0, car.h, car.zr, car.ga, car.gb, car.gc, *nf])
  s = lambda v: jnp.reshape(jnp.asarray(v, dtype), (-1,))
  if use_synapse:
    syn_scalars = [s(syn.v_halfs), s(syn.v_widths), s(syn.a1), s(syn.a2), s(syn.agc_weights),
                   s(syn.spont_sub), s(syn.res_coeff), s(syn.lpf_coeff)]
  else:
    syn_scalars = [jnp.ones((6,), dtype), jnp.zeros((8,), dtype)]  # unused by v2
  scalars = jnp.concatenate(
      [s(car.velocity_scale), s(car.v_offset), s(car.ac_coeff), s(ihc.lpf_coeff), s(ihc.out1_rate),
       s(ihc.in1_rate), s(ihc.out2_rate), s(ihc.in2_rate), s(ihc.output_gain), s(ihc.rest_output),
       s(ihc.rest_cap1), *syn_scalars, s(agc.detect_scale), s(agc.stage_gain)])
  agc_coeffs = jnp.concatenate([agc.epsilon, jnp.reshape(agc.fir, (-1,))])
  consts = (coef, scalars, agc_coeffs)
  w = jnp.stack([weights.ohc_health, weights.ihc_gain])
  sstate = state.syn
  rows = [state.car.z1, state.car.z2, state.car.za, state.car.zb, state.car.g,
          state.car.ac_coupler, state.ihc.cap1, state.ihc.cap2, state.ihc.lpf,
          *(sstate.reservoirs if use_synapse else zeros3), *(sstate.lpf if use_synapse else zeros3)]
  agc_rows = jnp.concatenate([state.agc.memory, state.agc.accum,
                              state.car.dzb[None], state.car.dg[None]])
  return consts, w, jnp.stack(rows), agc_rows, state.agc.n_updates


def unpack(state, state_rows, agc_rows, count, phase: int, use_synapse: bool):
  """The CARFAC state pytree after a native call (inverse of `pack`'s state part)."""
  n_stages = state.agc.memory.shape[0]
  r = dict(zip(STATE_ROWS, state_rows))
  car = dataclasses.replace(state.car, z1=r["z1"], z2=r["z2"], za=r["za"], zb=r["zb"], g=r["g"],
                            ac_coupler=r["ac"], dzb=agc_rows[2 * n_stages],
                            dg=agc_rows[2 * n_stages + 1])
  ihc = dataclasses.replace(state.ihc, cap1=r["cap1"], cap2=r["cap2"], lpf=r["ilpf"])
  syn = state.syn
  if use_synapse:
    syn = dataclasses.replace(syn, reservoirs=state_rows[9:12], lpf=state_rows[12:15])
  agc = dataclasses.replace(state.agc, memory=agc_rows[:n_stages],
                            accum=agc_rows[n_stages:2 * n_stages], n_updates=count, phase=phase)
  return dataclasses.replace(state, car=car, ihc=ihc, agc=agc, syn=syn)


def _ptr(a):
  return None if a is None else a.ctypes.data_as(ctypes.c_void_p)


def _coefficients(spec: Spec, coef, scalars, agc_coeffs, w):
  """Contiguous kernel inputs: coefficient rows with the weights spliced in (COEF_ROWS)."""
  dt = np.dtype(spec.dtype)
  coef = np.concatenate([coef[:8], w, coef[8:]]).astype(dt, copy=False)
  return coef, np.ascontiguousarray(scalars, dt), np.ascontiguousarray(agc_coeffs, dt)


def _n_pad(n_ch: int, lanes: int, itemsize: int) -> int:
  """Channels per lane once rows of n_ch * lanes values are padded to whole vectors."""
  multiple = VECTOR_BYTES // math.gcd(VECTOR_BYTES, lanes * itemsize)
  return -(-n_ch // multiple) * multiple


def _pad(a, n_ch: int, n_pad: int, lanes: int):
  """[..., n_ch * lanes] (lane fastest) -> [..., n_pad * lanes] with zero pad channels."""
  out = np.zeros(a.shape[:-1] + (n_pad, lanes), a.dtype)
  out[..., :n_ch, :] = a.reshape(a.shape[:-1] + (n_ch, lanes))
  return out.reshape(a.shape[:-1] + (n_pad * lanes,))


def _unpad(a, n_ch: int, n_pad: int, lanes: int):
  """Inverse of `_pad`."""
  return a.reshape(a.shape[:-1] + (n_pad, lanes))[..., :n_ch, :].reshape(a.shape[:-1] + (-1,))


def _kernel_forward(spec: Spec, lanes: int, coef, scalars, agc_coeffs, x, state, agc, count: int,
                    nap, bm, agc_out, cps=None) -> int:
  """Calls carfac_forward on contiguous arrays (rows [.., n_ch * lanes]; state and agc updated in
  place); returns the AGC count after the run. The kernel sees rows padded to whole vectors."""
  counters = np.asarray([spec.phase, count], np.int32)
  ints = spec.ints()  # every array handed to C stays referenced until the call returns
  n_pad = _n_pad(spec.n_ch, lanes, np.dtype(spec.dtype).itemsize)
  assert cps is None or (lanes == 1 and cps.size == spec.checkpoint_size)  # laid out for n_pad
  coef_p, state_p, agc_p = (_pad(a, spec.n_ch, n_pad, lanes) for a in (coef, state, agc))
  fn = getattr(library(), f"carfac_forward_{_TYPES[np.dtype(spec.dtype)]}")
  n_up = fn(spec.n_samp, spec.n_ch, n_pad, lanes, len(spec.decimation), _ptr(ints), _ptr(coef_p),
            _ptr(scalars), _ptr(agc_coeffs), _ptr(x), _ptr(state_p), _ptr(agc_p), _ptr(counters),
            _ptr(nap), _ptr(bm if bm.size else None), _ptr(agc_out), _ptr(cps))
  if n_up < 0:
    raise MemoryError("the CARFAC kernel could not allocate its scratch memory")
  assert n_up == spec.n_updates and counters[0] == (spec.phase + spec.n_samp) % spec.decimation[0]
  state[...] = _unpad(state_p, spec.n_ch, n_pad, lanes)
  agc[...] = _unpad(agc_p, spec.n_ch, n_pad, lanes)
  return int(counters[1])


def _forward_into(spec: Spec, outs, x, coef, scalars, agc_coeffs, w, state_rows, agc_rows, count):
  """One waveform through the kernel, writing into `outs` (nap, bm, agc_out, state_rows,
  agc_rows, count, checkpoints; numpy views; an empty checkpoints array skips them)."""
  nap, bm, agc_out, state, agc, count_out, cps = outs
  coef, scalars, agc_coeffs = _coefficients(spec, coef, scalars, agc_coeffs, w)
  np.copyto(state, state_rows)  # the kernel updates the state in place
  np.copyto(agc, agc_rows)
  count_out[...] = _kernel_forward(spec, 1, coef, scalars, agc_coeffs,
                                   np.ascontiguousarray(x, spec.dtype), state, agc, int(count),
                                   nap, bm, agc_out, cps if cps.size else None)


def _adjoint_into(spec: Spec, used: tuple, outs, x, coef, scalars, agc_coeffs, w, count, cps,
                  *bars):
  """The kernel's adjoint for one waveform, writing (x_b, w_b, state_b, agc_b) into `outs`.
  bars: those of (nap, bm, agc_out) flagged in `used` (the others are zero), state, agc state."""
  x_b, w_b, state_b_out, agc_b_out = outs
  given = iter(bars)
  nap_b, bm_b, agc_out_b = (next(given) if u else None for u in used)
  state_b, agc_b = given
  dt = np.dtype(spec.dtype)
  coef, scalars, agc_coeffs = _coefficients(spec, coef, scalars, agc_coeffs, w)
  n_pad = spec.n_pad
  pad = lambda a: _pad(np.asarray(a, dt), spec.n_ch, n_pad, 1)
  coef, state_b, agc_b = pad(coef), pad(state_b), pad(agc_b)  # bars of the final state in
  counters = np.asarray([spec.phase, int(count)], np.int32)
  c = lambda a: None if a is None else np.ascontiguousarray(a, dt)
  ints, x, cps, nap_b, bm_b = spec.ints(), c(x), c(cps), c(nap_b), c(bm_b)
  agc_out_b = c(agc_out_b) if spec.n_updates else None
  fn = getattr(library(), f"carfac_adjoint_{_TYPES[dt]}")
  status = fn(spec.n_samp, spec.n_ch, n_pad, len(spec.decimation), _ptr(ints), _ptr(coef),
              _ptr(scalars), _ptr(agc_coeffs), _ptr(x), _ptr(counters), _ptr(cps), _ptr(nap_b),
              _ptr(bm_b), _ptr(agc_out_b), _ptr(state_b), _ptr(agc_b), _ptr(x_b),
              _ptr(w_b[0]), _ptr(w_b[1]))
  if status < 0:
    raise MemoryError("the CARFAC kernel could not allocate its gradient scratch memory")
  state_b_out[...] = _unpad(state_b, spec.n_ch, n_pad, 1)  # bars of the initial state out
  agc_b_out[...] = _unpad(agc_b, spec.n_ch, n_pad, 1)


def _forward_lanes(spec: Spec, outs, x, coef, scalars, agc_coeffs, w, state_rows, agc_rows,
                   count):
  """A group of waveforms (leading axis) through the kernel in lockstep, one lane each; falls
  back to one call per waveform when they do not share coefficients, scalars and AGC count."""
  lanes = x.shape[0]
  shared = all(np.array_equal(a[0], a[i]) for a in (coef, scalars, agc_coeffs, count)
               for i in range(1, lanes))
  if lanes == 1 or not shared:
    for i in range(lanes):
      _forward_into(spec, [o[i, ...] for o in outs], x[i], coef[i], scalars[i], agc_coeffs[i],
                    w[i], state_rows[i], agc_rows[i], count[i])
    return
  nap, bm, agc_out, state_out, agc_state_out, count_out, _ = outs
  dt = np.dtype(spec.dtype)
  # [lanes, ..., n_ch] -> [..., n_ch * lanes]: lane fastest, as the kernel reads rows
  interleave = lambda a: np.ascontiguousarray(np.moveaxis(np.asarray(a, dt), 0, -1)).reshape(
      a.shape[1:-1] + (-1,))
  coef = np.repeat(np.asarray(coef[0], dt), lanes, axis=-1)  # shared rows, one copy per lane
  coef, scalars, agc_coeffs = _coefficients(spec, coef, scalars[0], agc_coeffs[0], interleave(w))
  state, agc = interleave(state_rows), interleave(agc_rows)
  count_out[...] = _kernel_forward(spec, lanes, coef, scalars, agc_coeffs,
                                   np.ascontiguousarray(np.asarray(x, dt).T), state, agc,
                                   int(count[0]), nap, bm, agc_out)
  unlane = lambda a: np.moveaxis(a.reshape(a.shape[:-1] + (spec.n_ch, lanes)), -1, 0)
  state_out[...] = unlane(state)
  agc_state_out[...] = unlane(agc)


def _lane_groups(size: int, workers: int) -> list:
  """Contiguous (lo, hi) lane groups of a batch, per worker: one near-equal share of the batch
  each, cut into power-of-two groups of at most MAX_LANES (the kernel's vector ripples; three
  lanes would run as scalars)."""
  shares = np.linspace(0, size, workers + 1).round().astype(int)
  per_worker = []
  for lo, hi in zip(shares[:-1], shares[1:]):
    groups = []
    while lo < hi:
      k = min(MAX_LANES, 1 << (int(hi - lo).bit_length() - 1))
      groups.append((int(lo), int(lo + k)))
      lo += k
    per_worker.append(groups)
  return [g for g in per_worker if g]


def _host_map(fn, outs, *args, group=None):
  """Runs `fn(outs, *args)` for every waveform of a batch (the leading axes of `args[0]`, the
  waveform; `broadcast_all` gives every argument and output them), writing into `outs` (XLA's
  own output buffers), on one thread per core; the kernel releases the GIL. With `group`, each
  thread runs `group(outs, *args)` on the lane groups of its share (`_lane_groups`; leading axis
  = the group)."""
  outs = [np.asarray(o) for o in outs]
  args = [np.asarray(a) for a in args]
  batch_shape = args[0].shape[:-1]
  if not batch_shape:
    fn(outs, *args)
    return
  size = math.prod(batch_shape)
  flat_args = [np.reshape(a, (size,) + a.shape[len(batch_shape):]) for a in args]
  flat_outs = [np.reshape(o, (size,) + o.shape[len(batch_shape):]) for o in outs]
  assert all(np.shares_memory(f, o) for f, o in zip(flat_outs, outs) if o.size)
  workers = min(size, cpu_cores.usable_cores())
  if group is None:
    jobs = [(lambda i=i: fn([o[i, ...] for o in flat_outs], *(a[i] for a in flat_args)))
            for i in range(size)]  # views
  else:
    run_groups = lambda groups: [group([o[lo:hi] for o in flat_outs],
                                       *(a[lo:hi] for a in flat_args)) for lo, hi in groups]
    jobs = [functools.partial(run_groups, g) for g in _lane_groups(size, workers)]
  with ThreadPoolExecutor(workers) as pool:
    list(pool.map(lambda job: job(), jobs))


def _forward_shapes(spec: Spec, checkpoints: bool):
  dt, sds = np.dtype(spec.dtype), jax.ShapeDtypeStruct
  n, c, n_stages = spec.n_samp, spec.n_ch, len(spec.decimation)
  return (sds((n, c), dt), sds((n if spec.bm else 0, c), dt), sds((spec.n_updates, c), dt),
          sds((len(STATE_ROWS), c), dt), sds((2 * n_stages + 2, c), dt), sds((), np.int32),
          sds((spec.checkpoint_size if checkpoints else 0,), dt))


def _host_fns(op: str, spec: Spec, flag):
  """The host functions of one call for `_host_map`: (per waveform, per lane group or None).
  op "forward" (flag: with checkpoints, then one lane) or "adjoint" (flag: the `used` bars)."""
  if op == "forward":
    return (functools.partial(_forward_into, spec),
            None if flag else functools.partial(_forward_lanes, spec))
  return functools.partial(_adjoint_into, spec, tuple(flag)), None


@functools.lru_cache(maxsize=256)
def _decode(payload: str):
  call = json.loads(payload)
  spec = {k: tuple(v) if isinstance(v, list) else v for k, v in call["spec"].items()}
  flag = call["flag"]
  return _host_fns(call["op"], Spec(**spec), tuple(flag) if isinstance(flag, list) else flag)


def _handle(payload: str, outs, args):
  """host_call's handler: one forward or adjoint call described by `payload` (`_callback`)."""
  fn, group = _decode(payload)
  _host_map(fn, outs, *args, group=group)


host_call.register(HOST_HANDLER, _handle)


def _callback(op: str, spec: Spec, flag, shapes, *args):
  """The kernel on the host as an XLA custom call that writes into its output buffers in place
  (no copies, and no JAX calls inside: pure_callback's device_put can deadlock when several CPU
  programs wait in callbacks at once). Through host_call, so that JAX's persistent compilation
  cache keeps the program; jax's buffer_callback where jaxlib lacks the FFI headers."""
  if host_call.installed():
    payload = json.dumps({"op": op, "spec": dataclasses.asdict(spec), "flag": flag},
                         sort_keys=True)
    return host_call.call(HOST_HANDLER, payload, shapes, *args)
  fn, group = _host_fns(op, spec, flag)
  host = lambda ctx, outs, *a: _host_map(fn, outs, *a, group=group)
  return buffer_callback.buffer_callback(host, shapes, vmap_method="broadcast_all")(*args)


def _forward_callback(spec: Spec, checkpoints: bool, x, consts, w, state_rows, agc_rows, count):
  return _callback("forward", spec, checkpoints, _forward_shapes(spec, checkpoints),
                   x, *consts, w, state_rows, agc_rows, count)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _run(spec, x, consts, w, state_rows, agc_rows, count):
  return _forward_callback(spec, False, x, consts, w, state_rows, agc_rows, count)[:6]


def _run_fwd(spec, x, consts, w, state_rows, agc_rows, count):
  primal = lambda a: isinstance(a, custom_derivatives.CustomVJPPrimal)  # symbolic_zeros wraps
  if any(a.perturbed for a in jax.tree.leaves(consts, is_leaf=primal)):
    raise ParameterError("gradients with respect to CARFAC's designed coefficients need the "
                         "pure-JAX loop: carfac.run(..., native=False); the CPU kernel "
                         "differentiates the input, the weights and the state")
  x, consts, w, state_rows, agc_rows, count = jax.tree.map(
      lambda a: a.value, (x, consts, w, state_rows, agc_rows, count), is_leaf=primal)
  out = _forward_callback(spec, True, x, consts, w, state_rows, agc_rows, count)
  return out[:6], (x, consts, w, count, out[6])


def _run_bwd(spec, res, bars):
  """The adjoint. Bars of outputs the loss does not use (symbolic zeros, e.g. BM when only the NAP
  counts) are not materialised: the kernel reads them as zeros."""
  x, consts, w, count, cps = res
  nap_b, bm_b, agc_out_b, state_b, agc_b, _ = bars
  zero = lambda b: isinstance(b, custom_derivatives.SymbolicZero)
  state_b, agc_b = (jnp.zeros(b.shape, b.dtype) if zero(b) else b for b in (state_b, agc_b))
  used = tuple(not zero(b) for b in (nap_b, bm_b, agc_out_b))
  out_bars = [b for b, u in zip((nap_b, bm_b, agc_out_b), used) if u]
  shapes = tuple(jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (x, w, state_b, agc_b))
  x_b, w_b, s_b, a_b = _callback("adjoint", spec, used, shapes, x, *consts, w, count, cps,
                                 *out_bars, state_b, agc_b)
  return x_b, None, w_b, s_b, a_b, None


_run.defvjp(_run_fwd, _run_bwd, symbolic_zeros=True)


def run(x, hypers, coeffs, weights, state, linear: bool, bm: bool = True):
  """`carfac.run` through the kernel: (CarfacOutput fields nap, bm, agc; new CarfacState); bm
  None when not asked for (then never written: half the output memory).

  Raises:
    ParameterError: the kernel is unavailable here, `x`'s dtype is not float32/float64, or the
      design is one it cannot run (`unsupported`).
  """
  if jax.default_backend() != "cpu":
    raise ParameterError(f"the native CARFAC kernel runs on the CPU backend, not "
                         f"{jax.default_backend()}; use native=False (the default picks it)")
  if not available(x.dtype):
    raise ParameterError(f"the native CARFAC kernel is unavailable for {np.dtype(x.dtype).name} "
                         "input (DAL_NATIVE=0, no C compiler, or not float32/float64); "
                         "use native=False")
  why = unsupported(hypers, coeffs)
  if why:
    raise ParameterError(f"the native CARFAC kernel cannot run this design: {why}; "
                         "use native=False (the default picks it)")
  agc_h = hypers.agc
  spec = Spec(n_samp=int(x.shape[0]), n_ch=hypers.n_ch, use_synapse=hypers.use_synapse,
              linear=bool(linear), decimation=tuple(agc_h.decimation), n_taps=tuple(agc_h.n_taps),
              iterations=tuple(agc_h.iterations), phase=int(state.agc.phase),
              dtype=np.dtype(x.dtype).name, bm=bool(bm))
  consts, w, state_rows, agc_rows, count = pack(coeffs, weights, state, hypers.use_synapse)
  if isinstance(x, jax.core.Tracer):
    # Under jit, vmap over a numpy array that the function closes over hands that raw array to
    # the custom_vjp's outer trace, which refuses it (jax 0.10: "non-canonical constant"). A
    # bound no-op makes it a traced value (convert_element_type to its own dtype is skipped).
    x = jax.lax.optimization_barrier(x)
  nap, bm_out, agc_out, state_rows, agc_rows, count = _run(spec, x, consts, w, state_rows,
                                                           agc_rows, count)
  phase = (spec.phase + spec.n_samp) % spec.decimation[0]
  outputs = (nap, bm_out if bm else None, agc_out)
  return outputs, unpack(state, state_rows, agc_rows, count, phase, hypers.use_synapse)
