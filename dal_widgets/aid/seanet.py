"""SEANet: a waveform-to-waveform 1-D convolutional UNet hearing aid (flax linen).

Tagliasacchi, Li, Misiunas & Roblek 2020, "SEANet: A Multi-modal Speech Enhancement Network"
(Interspeech): encoder blocks of residual units (dilated convs, dilations 1, 3, 9, ELU) followed
by a strided conv that doubles the channels; a bottleneck conv; a mirrored decoder with
transposed-conv upsampling and skip connections from the encoder.

Our choices:
- Skip connections are *added* (not concatenated): the encoder features taken just before each
  downsampling are added to the decoder features right after the matching upsampling.
- Identity start: y = x + f(x) with the last conv of f zero-initialised (kernel and bias), so at
  initialisation y == x exactly ("no hearing aid" at step 0).
- Any input length: the waveform is zero-padded on the right to a multiple of prod(strides) and
  the output is cropped back.
- causal=True pads every conv on the left only, so output sample t never depends on input
  samples after t (a streaming hearing aid); causal=False centres the kernels.
- Optional FiLM conditioning (film.py) of every encoder and decoder block by a listener vector.
- checkerboard_free=True: every transposed conv is constrained so that a constant input gives a
  constant output (its `stride` polyphase components have equal sums; Sugawara, Shiota & Kiya
  2019, "Checkerboard artifacts free convolutional neural networks", APSIPA Trans.). An
  unconstrained one turns any steady part of its input, silence included, into tones at
  multiples of sr / (product of the strides below it) (Odena, Dumoulin & Olah 2016,
  "Deconvolution and checkerboard artifacts"): the first bundled aid whistled at 2 kHz at about
  55 dB SPL in silence, which the DAL loss of an impaired ear hardly sees.
- dc_block=True: the residual f(x) goes through a DC blocker (dc_blocker.py), so the aid adds no
  constant offset, which the loss cannot see either (CARFAC passes no DC).
"""
import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dal_widgets.aid.dc_blocker import dc_block, settle_samples
from dal_widgets.aid.film import Film
from dal_widgets.aid.prescription import check_time_last
from dal_widgets.errors import ParameterError
from dal_widgets.finite import check_not_pcm, has_nonfinite
from dal_widgets.hearing.audiogram import Audiogram

# Audiometric frequencies of the conditioning vector (the standard clinical set, 250-8000 Hz).
CONDITION_FREQS_HZ = (250.0, 500.0, 1000.0, 2000.0, 3000.0, 4000.0, 6000.0, 8000.0)
CONDITION_DIM = len(CONDITION_FREQS_HZ)
CONDITION_SCALE_DB_HL = 100.0  # thresholds / 100 -> condition values of order 1
# Std of a standard normal truncated to [-2, 2]; dividing by it restores unit variance
# (as flax/jax `variance_scaling(..., "truncated_normal")` does).
LECUN_TRUNCATION_STD = 0.87962566103423978
# `apply_to_recording` pads every recording with silence up to a multiple of this many samples
# (rounded up to whole hops), so that recordings of similar length share one compilation: on 2 CPU
# cores the small model takes about 0.4 s to compile for each new length (dal evaluate, session 9).
RECORDING_QUANTUM = 4096


@dataclasses.dataclass(frozen=True)
class SeanetConfig:
  """Static architecture of a SEANet (hashable; only ints, bools and tuples).

  Attributes:
    base_channels: Channels of the first conv; doubled by every encoder block.
    strides: Downsampling factor of each encoder block; the strided conv has kernel 2*stride.
    kernel_size: Kernel of the dilated residual convs and of the first/bottleneck/last convs.
    dilations: Dilations of the residual units inside each block.
    causal: Left-only padding everywhere (output at t depends on input up to t only).
    film_dim: Length of the FiLM conditioning vector; 0 means no conditioning.
    checkerboard_free: Constrain the decoder's transposed convs to map a constant to a constant
      (module docstring). False: the plain transposed conv of the paper (aids trained before
      this option existed).
    dc_block: High-pass the residual f(x) with a DC blocker (module docstring).
  """
  base_channels: int = 32  # SEANet paper
  strides: tuple = (2, 4, 5, 8)  # SEANet paper: total downsampling 320
  kernel_size: int = 7  # SEANet paper
  dilations: tuple = (1, 3, 9)  # SEANet paper
  causal: bool = False
  film_dim: int = 0
  checkerboard_free: bool = True
  dc_block: bool = True

  def __post_init__(self):
    positive = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1
    for name in ("base_channels", "kernel_size"):
      if not positive(getattr(self, name)):
        raise ParameterError(f"{name}: expected an int >= 1, got {getattr(self, name)!r}")
    for name in ("strides", "dilations"):
      value = getattr(self, name)
      if not (isinstance(value, tuple) and value and all(positive(v) for v in value)):
        raise ParameterError(f"{name}: expected a non-empty tuple of ints >= 1, got {value!r}")
    for name in ("causal", "checkerboard_free", "dc_block"):
      if not isinstance(getattr(self, name), bool):
        raise ParameterError(f"{name}: expected True or False, got {getattr(self, name)!r}")
    if isinstance(self.film_dim, bool) or not isinstance(self.film_dim, int) or self.film_dim < 0:
      raise ParameterError(f"film_dim: expected an int >= 0, got {self.film_dim!r}")

  @property
  def hop(self) -> int:
    """Total downsampling factor prod(strides); inputs are padded to a multiple of it."""
    return int(math.prod(self.strides))


SEANET_SIZES = {
    # cheap enough for a 2-core laptop: one 1 s training step in tens of milliseconds
    "small": SeanetConfig(base_channels=8, strides=(2, 4, 5)),
    # Tagliasacchi et al. 2020
    "paper": SeanetConfig(base_channels=32, strides=(2, 4, 5, 8)),
}


def _conv(features, kernel, *, causal, stride=1, dilation=1, name=None, zero_init=False):
  """1-D conv whose padding keeps length L -> L / stride (causal: all padding on the left)."""
  span = (kernel - 1) * dilation + 1
  if causal:
    padding = ((span - 1, 0),)
  else:
    total = span - stride
    padding = ((total // 2, total - total // 2),)
  init = {}
  if zero_init:
    init = dict(kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros)
  return nn.Conv(features, (kernel,), strides=(stride,), kernel_dilation=(dilation,),
                 padding=padding, name=name, **init)


def checkerboard_free_kernel(kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
  """The kernel nearest (least squares) to `kernel` whose transposed conv at `stride` maps a
  constant input to a constant output: taps k, k + stride, k + 2 stride, ... feed one output
  phase, and every phase gets the same sum of taps (per input and output channel).

  Args:
    kernel: Transposed-conv kernel, shape [taps, in, out], taps a multiple of stride.
    stride: Upsampling factor.
  Returns:
    The constrained kernel, same shape.
  """
  taps = kernel.shape[0]
  phases = kernel.reshape((taps // stride, stride) + kernel.shape[1:])
  sums = phases.sum(axis=0, keepdims=True)
  shift = (sums.mean(axis=1, keepdims=True) - sums) / (taps // stride)
  return (phases + shift).reshape(kernel.shape)


class Upsampler(nn.Module):
  """Transposed conv, kernel 2 * stride, VALID: [batch, T, in] -> [batch, (T + 1) stride, out].

  Parameters `kernel` [2 stride, in, out] and `bias` [out], made as flax's nn.ConvTranspose makes
  them, so aids saved before read back unchanged. Computed in polyphase form: output sample
  n stride + r is x[n-1] kernel[stride-1-r] + x[n] kernel[2 stride-1-r] + bias (x zero outside),
  two matrix products and a reshape. The values are nn.ConvTranspose's to float rounding; XLA:CPU
  ran the kernel gradient of nn.ConvTranspose 2.5-9x slower (strides 2-5, bench/RESULTS.md).
  """
  features: int
  stride: int
  checkerboard_free: bool

  @nn.compact
  def __call__(self, x):
    s, n_in, n_out = self.stride, x.shape[-1], self.features
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (2 * s, n_in, n_out))
    bias = self.param("bias", nn.initializers.zeros, (n_out,))
    if self.checkerboard_free:
      kernel = checkerboard_free_kernel(kernel, s)
    # taps[t][:, r n_out + o] = kernel[(t + 1) s - 1 - r, :, o]: tap 0 reads x[n-1], tap 1 x[n]
    taps = kernel[::-1].reshape(2, s, n_in, n_out)[::-1]
    taps = jnp.moveaxis(taps, 1, 2).reshape(2, n_in, s * n_out)
    padded = jnp.pad(x, ((0, 0), (1, 1), (0, 0)))
    y = padded[:, :-1] @ taps[0] + padded[:, 1:] @ taps[1]
    return y.reshape(x.shape[0], (x.shape[1] + 1) * s, n_out) + bias


class ResidualUnit(nn.Module):
  """x + conv1x1(elu(conv_dilated(elu(x)))), channels unchanged."""
  channels: int
  kernel_size: int
  dilation: int
  causal: bool

  @nn.compact
  def __call__(self, x):
    h = _conv(self.channels, self.kernel_size, causal=self.causal, dilation=self.dilation,
              name="dilated")(nn.elu(x))
    h = _conv(self.channels, 1, causal=self.causal, name="pointwise")(nn.elu(h))
    return x + h


class Seanet(nn.Module):
  """SEANet waveform-to-waveform UNet (see module docstring).

  Attributes:
    config: The architecture.
  """
  config: SeanetConfig

  @nn.compact
  def __call__(self, x: jnp.ndarray, condition: jnp.ndarray | None = None) -> jnp.ndarray:
    """Runs the network.

    Args:
      x: Waveform, shape [batch, time] or [time], float32 (digital units).
      condition: FiLM vector, shape [batch, film_dim] (or [film_dim] for unbatched x);
        required when config.film_dim > 0, ignored otherwise.

    Returns:
      Waveform of the same shape as x.
    """
    cfg = self.config
    unbatched = x.ndim == 1
    if unbatched:
      x = x[None]
      condition = None if condition is None else condition[None]
    n_samp = x.shape[-1]
    xp = jnp.pad(x, ((0, 0), (0, (-n_samp) % cfg.hop)))
    use_film = cfg.film_dim > 0
    if use_film and condition is None:
      raise ParameterError(f"condition: expected shape [batch, {cfg.film_dim}] because "
                           "film_dim > 0, got None")
    k, causal = cfg.kernel_size, cfg.causal

    h = _conv(cfg.base_channels, k, causal=causal, name="input_conv")(xp[..., None])
    channels = cfg.base_channels
    skips = []
    for i, stride in enumerate(cfg.strides):
      for d in cfg.dilations:
        h = ResidualUnit(channels, k, d, causal, name=f"enc{i}_res_d{d}")(h)
      if use_film:
        h = Film(channels, name=f"enc{i}_film")(h, condition)
      skips.append(h)
      h = _conv(2 * channels, 2 * stride, causal=causal, stride=stride,
                name=f"enc{i}_down")(nn.elu(h))
      channels *= 2

    h = _conv(channels, k, causal=causal, name="bottleneck")(nn.elu(h))

    for i in reversed(range(len(cfg.strides))):
      stride, skip = cfg.strides[i], skips[i]
      channels //= 2
      up = Upsampler(channels, stride, cfg.checkerboard_free, name=f"dec{i}_up")(nn.elu(h))
      start = 0 if causal else stride // 2  # causal: drop the look-ahead tail only
      h = up[:, start:start + skip.shape[1]] + skip
      for d in cfg.dilations:
        h = ResidualUnit(channels, k, d, causal, name=f"dec{i}_res_d{d}")(h)
      if use_film:
        h = Film(channels, name=f"dec{i}_film")(h, condition)

    residual = _conv(1, k, causal=causal, name="output_conv", zero_init=True)(nn.elu(h))[..., 0]
    if cfg.dc_block:
      residual = dc_block(residual)
    y = (xp + residual)[:, :n_samp]
    return y[0] if unbatched else y


def _check_config(config):
  if not isinstance(config, SeanetConfig):  # its fields are checked when it is made
    raise ParameterError(f"config: expected a SeanetConfig, got {type(config).__name__}")


def _check_inputs(config, x, condition):
  if x.ndim not in (1, 2) or x.shape[-1] < 1:
    raise ParameterError(f"x: expected shape [batch, time] or [time] with time >= 1, "
                         f"got shape {tuple(x.shape)}")
  check_time_last(x)
  if has_nonfinite(x):
    raise ParameterError("x: expected finite samples, got NaN or inf")
  if config.film_dim == 0:
    if condition is not None:
      raise ParameterError("condition: this model has no FiLM conditioning (film_dim=0); "
                           "pass condition=None")
    return
  want = (config.film_dim,) if x.ndim == 1 else (x.shape[0], config.film_dim)
  if condition is None or tuple(jnp.shape(condition)) != want:
    got = None if condition is None else tuple(jnp.shape(condition))
    raise ParameterError(f"condition: expected shape {want} (film_dim={config.film_dim}), "
                         f"got {got}")
  if has_nonfinite(condition):  # FiLM would turn every output sample into NaN
    raise ParameterError("condition: expected finite values, got NaN or inf")


def init_seanet(rng: jax.Array, config: SeanetConfig, n_samples: int | None = None) -> dict:
  """Initialises SEANet parameters (the output equals the input at initialisation).

  Same distributions as flax's defaults: conv and dense kernels LeCun-normal (truncated normal,
  variance 1 / fan_in), biases zero, and the output conv and every FiLM layer all zero. The
  values come from one random draw split over the layers, because flax's per-layer initialisers
  compile one random program per layer (about 10 s on a 2-core CPU; this takes well under 1 s).

  Args:
    rng: A jax PRNG key.
    config: The architecture.
    n_samples: Length of the dummy input used to trace the shapes; any length gives the same
      parameters (default: config.hop).

  Returns:
    The `params` collection, a nested dict of float32 arrays.

  Raises:
    ParameterError: if config or n_samples is invalid.
  """
  _check_config(config)
  n_samples = config.hop if n_samples is None else n_samples
  if int(n_samples) < 1:
    raise ParameterError(f"n_samples: expected an int >= 1, got {n_samples!r}")
  return _lecun_init(rng, param_shapes(config, int(n_samples)))


@functools.lru_cache(maxsize=32)
def param_shapes(config: SeanetConfig, n_samples: int | None = None) -> dict:
  """The `params` tree a config needs, as jax.ShapeDtypeStructs (no values are computed)."""
  _check_config(config)
  x = jax.ShapeDtypeStruct((1, config.hop if n_samples is None else n_samples), jnp.float32)
  condition = jax.ShapeDtypeStruct((1, config.film_dim), jnp.float32) if config.film_dim else None
  return jax.eval_shape(Seanet(config).init, jax.random.key(0), x, condition)["params"]


def _check_params(params, config):
  """ParameterError unless `params` has exactly the layers and shapes `config` needs."""
  name = lambda path: "/".join(str(getattr(p, "key", p)) for p in path)
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  odd = [f"{name(path)} = {type(leaf).__name__}" for path, leaf in leaves
         if not hasattr(leaf, "shape")]
  if odd:
    raise ParameterError(f"params: expected a tree of arrays from init_seanet, got {odd[0]}")
  got = {name(path): tuple(leaf.shape) for path, leaf in leaves}
  want = {name(path): leaf.shape
          for path, leaf in jax.tree_util.tree_flatten_with_path(param_shapes(config))[0]}
  if got == want:
    return
  missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
  wrong = [f"{k} has shape {got[k]}, the config needs {want[k]}"
           for k in sorted(want.keys() & got.keys()) if got[k] != want[k]]
  detail = wrong[:1] + [f"missing {k}" for k in missing[:1]] + [f"unknown {k}" for k in extra[:1]]
  raise ParameterError(f"params: made for another SeanetConfig than {config} "
                       f"({len(wrong)} shapes differ, {len(missing)} layers missing, "
                       f"{len(extra)} unknown; e.g. {'; '.join(detail)})")


def _starts_at_zero(path) -> bool:
  """Leaves initialised to zero: biases, the output conv and FiLM (see Seanet, Film)."""
  names = [str(getattr(p, "key", p)) for p in path]
  return names[-1] == "bias" or names[0] == "output_conv" or names[0].endswith("_film")


def _lecun_init(rng, shapes):
  """Values for a tree of ShapeDtypeStructs from one truncated-normal draw (see init_seanet)."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
  layout = tuple((tuple(leaf.shape), not _starts_at_zero(path)) for path, leaf in leaves)
  return jax.tree_util.tree_unflatten(tree, _lecun_values(rng, layout))


@functools.partial(jax.jit, static_argnums=1)
def _lecun_values(rng, layout: tuple) -> list:
  """One array per (shape, is_random) of `layout`. Jitted as one program: run op by op, the
  slices and scalings of each layer compiled one tiny program each (2.6 s for the small SEANet
  on a 2-core CPU)."""
  total = sum(math.prod(shape) for shape, is_random in layout if is_random)
  draw = jax.random.truncated_normal(rng, -2.0, 2.0, (total,), jnp.float32)
  out, start = [], 0
  for shape, is_random in layout:
    if not is_random:
      out.append(jnp.zeros(shape, jnp.float32))
      continue
    size = math.prod(shape)
    std = math.sqrt(1.0 / math.prod(shape[:-1])) / LECUN_TRUNCATION_STD  # fan_in
    out.append(std * draw[start:start + size].reshape(shape))
    start += size
  return out


def apply_seanet(params: dict, config: SeanetConfig, x: jnp.ndarray,
                 condition: jnp.ndarray | None = None) -> jnp.ndarray:
  """Runs SEANet: y = x + f(x).

  Validates shapes in Python, then runs a jitted forward pass (compiled once per config and
  input shape). Inside your own jitted code, pass config as a static argument
  (e.g. `jax.jit(apply_seanet, static_argnums=1)`).

  Args:
    params: From `init_seanet` (or training).
    config: The architecture the params were built for.
    x: Waveform, shape [batch, time] or [time], float32 digital units.
    condition: FiLM vector, shape [batch, film_dim] or [film_dim]; required iff film_dim > 0.

  Returns:
    Aided waveform, same shape as x.

  Raises:
    ParameterError: if the params, x or condition do not match the config, or x is integer
      PCM counts or laid out (time, channels).
  """
  _check_config(config)
  _check_params(params, config)
  check_not_pcm(x)
  x = jnp.asarray(x, jnp.float32)
  _check_inputs(config, x, condition)
  if config.film_dim == 0:
    condition = None
  else:
    condition = jnp.asarray(condition, jnp.float32)
  return _apply_jit(params, config, x, condition)


@functools.partial(jax.jit, static_argnums=1)
def _apply_jit(params, config, x, condition):
  return Seanet(config).apply({"params": params}, x, condition)


def receptive_field(config: SeanetConfig) -> int:
  """Input samples that one output sample can depend on, a bound: the span of the deepest path
  (through the bottleneck), summing (taps - 1) x spacing over its convs, counting each
  transposed conv's taps at its output spacing."""
  _check_config(config)
  k, span, spacing = config.kernel_size, 1 + 2 * (config.kernel_size - 1), 1  # in and out convs
  residual = sum((k - 1) * d for d in config.dilations)
  for stride in config.strides:  # encoder and decoder levels at this spacing
    span += 2 * (residual + 2 * stride - 1) * spacing  # residual units, down- and upsampling
    spacing *= stride
  return span + (k - 1) * spacing  # bottleneck


def context_samples(config: SeanetConfig) -> int:
  """Silence added before and after a recording by `apply_to_recording`, in whole hops: the
  receptive field, plus the time the DC blocker takes to settle on the network's own response
  to the start of that silence."""
  need = receptive_field(config) + (settle_samples() if config.dc_block else 0)
  return -(-need // config.hop) * config.hop


def apply_to_recording(params: dict, config: SeanetConfig, x, condition=None) -> jnp.ndarray:
  """`apply_seanet` on a whole recording, as if silence surrounded it.

  Every conv pads its own input with zeros, which is not what silence looks like inside the
  network (a layer's response to silence is a constant set by its biases), so a recording run
  as it is starts and ends with a transient: 60-70 dB SPL over about 25 ms with the bundled aid.
  Here the recording gets `context_samples` of silence on each side, and the output is cut back.
  More silence after the end brings the length to a multiple of `recording_quantum(config)`, so
  that recordings of similar length reuse one compilation; it is beyond the receptive field of
  every kept sample, and the DC blocker is causal, so the kept output does not depend on it.

  Args, Returns, Raises: as `apply_seanet`; x of shape [time] or [batch, time].
  """
  check_not_pcm(x)
  x = jnp.asarray(x, jnp.float32)
  _check_config(config)
  _check_inputs(config, x, condition)
  pad = context_samples(config)
  tail = pad + (-(x.shape[-1] + 2 * pad)) % recording_quantum(config)
  widths = [(0, 0)] * (x.ndim - 1) + [(pad, tail)]
  return apply_seanet(params, config, jnp.pad(x, widths), condition)[..., pad:pad + x.shape[-1]]


def recording_quantum(config: SeanetConfig) -> int:
  """`apply_to_recording` runs the network on a multiple of this many samples: RECORDING_QUANTUM
  rounded up to whole hops."""
  return -(-RECORDING_QUANTUM // config.hop) * config.hop


def count_params(params) -> int:
  """Total number of scalar parameters in a pytree of arrays (or of jax.ShapeDtypeStructs)."""
  return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def condition_from_audiogram(audiogram: Audiogram) -> np.ndarray:
  """FiLM vector of a listener: thresholds at CONDITION_FREQS_HZ in dB HL / 100.

  Args:
    audiogram: The listener's Audiogram (read with `.at`, flat beyond its measured range).

  Returns:
    float32 array of shape [CONDITION_DIM] (use film_dim=CONDITION_DIM in SeanetConfig).

  Raises:
    ParameterError: if audiogram is not an Audiogram.
  """
  if not isinstance(audiogram, Audiogram):
    raise ParameterError(f"audiogram: expected an Audiogram, got {type(audiogram).__name__}")
  thresholds_db_hl = np.asarray(audiogram.at(np.asarray(CONDITION_FREQS_HZ)), np.float64)
  return (thresholds_db_hl / CONDITION_SCALE_DB_HL).astype(np.float32)
